"""The contract every registered map method keeps, on a tiny CNN and a tiny ViT.

Iterates `cambatch.methods.registry.METHODS`, so a new method is covered the day it is registered.
For each (method, model): the shapes and dtypes of `ClassMaps`, top-k and explicit classes; the
network left exactly as found (hooks, training flags, grad mode, `.grad`, buffers), also when the
call raises; the `Execution`'s precision seen inside every forward pass; and compilation: the passes
without a layer hook run through the compiled module, the methods that hook every pass refuse it.

`torch.compile` is never really called here (far too slow on a CPU): an autouse fixture makes any
call to it fail, and the compile tests replace it by a recorder.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
from methods_support import bind, cpu_execution, faithfulness_of
from torch import Tensor, nn

from cambatch.errors import UsageError
from cambatch.methods.layers import TokenGrid, token_grid
from cambatch.methods.registry import METHODS, method_class
from cambatch.model.accel import Execution
from cambatch.model.build import CamModel, _check_cam_head, _split

SIZE = 16  # input side of both tiny models
GRID = (4, 4)  # the target layer's grid in both
CLASSES = 5
BATCH = 3
SCORECAM_BATCH = 4  # several masked passes per call
REFUSED = {("cam", "vit"): "features are not a spatial map"}  # CAM needs a GAP -> linear head over a CNN map
PAIRS = [(m, kind) for kind in ("cnn", "vit") for m in METHODS if (m, kind) not in REFUSED]
PAIR_IDS = [f"{m}-{kind}" for m, kind in PAIRS]


# ---------------------------------------------------------------- tiny models


class _CountBackward(torch.autograd.Function):
    """Identity that counts its backward passes, and raises in them when its fault is armed."""

    @staticmethod
    def forward(ctx, x, fault):
        ctx.fault = fault
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.fault.backward_calls += 1
        if ctx.fault.mode == "raise_backward":
            raise RuntimeError("fault: backward")
        return grad, None


class Fault(nn.Module):
    """An identity layer that can fail on demand: raise on its n-th call, return a tuple, or raise in backward."""

    def __init__(self):
        super().__init__()
        self.mode = "ok"  # ok | raise | tuple | raise_backward
        self.explode_at: int | None = None
        self.calls = 0
        self.backward_calls = 0

    def forward(self, x: Tensor):
        self.calls += 1
        if self.mode == "raise" and self.calls == self.explode_at:
            raise RuntimeError(f"fault: forward call {self.calls}")
        if self.mode == "tuple":
            return (x,)
        return _CountBackward.apply(x, self)


class TinyCNN(nn.Module):
    """conv-BN-ReLU, a fault, two stride-2 convs: a [B, 8, 4, 4] map, GAP, then dropout -> linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            Fault(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.late = Fault()  # after the target layer: on the backward path of the gradient methods
        self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.late(self.pool(self.features(x)).flatten(1)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.grid_size = (SIZE // patch, SIZE // patch)  # what `token_grid` reads, as in timm

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """timm's ViT layout in miniature: a class token and a register token (2 prefix tokens), a 4x4 patch grid."""

    num_prefix_tokens = 2

    def __init__(self, dim: int = 16):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        tokens = self.num_prefix_tokens + GRID[0] * GRID[1]
        self.prefix = nn.Parameter(torch.randn(1, self.num_prefix_tokens, dim) * 0.1)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.1)
        self.fault = Fault()  # outputs tokens on the grid: also a valid target layer
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.norm = nn.LayerNorm(dim)
        self.late = Fault()
        self.head_drop = nn.Dropout(0.5)
        self.head = nn.Linear(dim, CLASSES)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.norm(self.blocks(self.fault(x)))

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.head_drop(self.late(self.forward_features(x)[:, 0])))


def make_model(kind: str, seed: int = 0) -> CamModel:
    """A `CamModel` split the way `load_model` splits a network (a refused CAM head keeps its reason)."""
    torch.manual_seed(seed)
    network = (TinyCNN if kind == "cnn" else TinyViT)().eval()
    try:
        features, head = _split(kind, network)
        _check_cam_head(kind, network, features, head, SIZE)
        refusal = None
    except UsageError as exc:
        features, head, refusal = None, None, str(exc)
    return CamModel(
        kind, network, features, head, (0.5,) * 3, (0.25,) * 3, SIZE, [f"c{i}" for i in range(CLASSES)], "none", None,
        cam_refusal=refusal, feature_layer="features" if features is not None else "",
    )  # fmt: skip


def images(seed: int = 1, batch: int = BATCH) -> Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def build(name: str, model: CamModel, execution: Execution | None = None, layer: str | None = None):
    return bind(name, model, layer=layer, scorecam_batch=SCORECAM_BATCH, execution=execution)


def faults(model: CamModel) -> tuple[str, Fault, Fault]:
    """(name of the early fault, the early fault, the late fault): early is before the target layer."""
    name, early = next(
        (n, m) for n, m in model.network.named_modules() if isinstance(m, Fault) and m is not model.network.late
    )
    return name, early, model.network.late


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Intra-op threads only cost here: on a busy 2-core machine they made these tiny passes 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_real_compile(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the real torch.compile was called")

    monkeypatch.setattr(torch, "compile", refuse)


# ---------------------------------------------------------------- the models are what they claim


def test_the_tiny_models_are_what_the_contract_needs():
    cnn, vit = make_model("cnn"), make_model("vit")
    assert cnn.head is cnn.network.fc[1] and cnn.cam_refusal is None
    assert token_grid(cnn.network) is None
    assert token_grid(vit.network) == TokenGrid(prefix=2, height=GRID[0], width=GRID[1])
    assert vit.head is None and "features are not a spatial map" in vit.cam_refusal
    assert build("gradcam", vit).layer == "blocks.1.norm1"  # the ViT default: the last attention's input
    assert build("gradcam", vit).target.tokens is not None
    assert build("gradcam", cnn).layer == "features"  # the last module to finish with a 4x4 map
    assert PAIRS and {m for m, _ in PAIRS} == set(METHODS)


@pytest.mark.parametrize(("pair", "reason"), REFUSED.items(), ids=[f"{m}-{k}" for m, k in REFUSED])
def test_refused_pairs_say_why(pair, reason):
    name, kind = pair
    model = make_model(kind)
    before = hook_state(model.network)
    with pytest.raises(UsageError, match=reason):
        build(name, model)
    assert hook_state(model.network) == before


# ---------------------------------------------------------------- outputs


def reference_logits(model: CamModel, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model.network(x)


def check_shapes(out, k: int) -> None:
    assert out.maps.shape == (BATCH, k, *GRID) and out.maps.dtype == torch.float32
    for name in ("class_index", "rank"):
        value = getattr(out, name)
        assert value.shape == (BATCH, k) and value.dtype == torch.int64, name
    for name in ("probability", "logit"):
        value = getattr(out, name)
        assert value.shape == (BATCH, k) and value.dtype == torch.float32, name
    assert torch.isfinite(out.maps).all() and torch.isfinite(out.probability).all()


@pytest.mark.parametrize(("name", "kind"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("topk", [1, 3, 9])
def test_topk_outputs(name, kind, topk):
    model, x = make_model(kind), images()
    out = build(name, model)(x, topk)
    k = min(topk, CLASSES)
    check_shapes(out, k)
    logits = reference_logits(model, x)
    expected_logit, expected_index = logits.topk(k, dim=1)
    assert torch.equal(out.class_index, expected_index)
    assert torch.equal(out.rank, torch.arange(1, k + 1).expand(BATCH, k))
    torch.testing.assert_close(out.logit, expected_logit, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.probability, logits.softmax(1).gather(1, expected_index), rtol=1e-4, atol=1e-6)
    if not method_class(name).class_specific:  # one map per image, repeated for its K classes
        assert torch.equal(out.maps, out.maps[:, :1].expand_as(out.maps))


@pytest.mark.parametrize(("name", "kind"), PAIRS, ids=PAIR_IDS)
def test_explicit_classes_for_every_image(name, kind):
    model, x = make_model(kind), images()
    classes = torch.tensor([4, 0, 2])
    out = build(name, model)(x, 1, classes)  # topk is ignored: K is the number of classes given
    check_shapes(out, 3)
    assert out.class_index.tolist() == [[4, 0, 2]] * BATCH
    logits = reference_logits(model, x)
    chosen = logits.gather(1, out.class_index)
    torch.testing.assert_close(out.logit, chosen, rtol=1e-4, atol=1e-5)
    assert torch.equal(out.rank, (logits[:, None, :] > chosen[:, :, None]).sum(2) + 1)
    torch.testing.assert_close(out.probability, logits.softmax(1).gather(1, out.class_index), rtol=1e-4, atol=1e-6)
    top = build(name, model)(x, CLASSES)  # the same class gets the same map, whichever way it was asked for
    for b in range(BATCH):
        for j, c in enumerate(classes.tolist()):
            r = top.class_index[b].tolist().index(c)
            torch.testing.assert_close(out.maps[b, j], top.maps[b, r], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the network left as found


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
)


def hook_state(network: nn.Module) -> list:
    """Every hook on every module and parameter, and the global module hooks."""
    from torch.nn.modules import module as module_globals

    per_module = [
        (name, attr, tuple(getattr(m, attr, {}).keys())) for name, m in network.named_modules() for attr in HOOK_DICTS
    ]
    per_param = [(name, tuple((p._backward_hooks or {}).keys())) for name, p in network.named_parameters()]
    global_hooks = [
        tuple(getattr(module_globals, attr).keys())
        for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    ]
    return [per_module, per_param, global_hooks]


def snapshot(model: CamModel) -> dict:
    net = model.network
    return {
        "hooks": hook_state(net),
        "training": [(n, m.training) for n, m in net.named_modules()],
        "features_training": model.features.training if model.features is not None else None,
        "requires_grad": [(n, p.requires_grad) for n, p in net.named_parameters()],
        "grads": [(n, p.grad) for n, p in net.named_parameters()],
        "grad_values": [(n, p.grad.clone() if p.grad is not None else None) for n, p in net.named_parameters()],
        "state": {k: v.clone() for k, v in net.state_dict().items()},
        "grad_enabled": torch.is_grad_enabled(),
        "inference": torch.is_inference_mode_enabled(),
        "autocast": torch.is_autocast_enabled("cpu"),
    }


def assert_as_before(model: CamModel, before: dict) -> None:
    after = snapshot(model)
    assert after["hooks"] == before["hooks"], "a hook was left behind"
    assert after["training"] == before["training"] and after["features_training"] == before["features_training"]
    assert after["requires_grad"] == before["requires_grad"]
    for (name, grad), (_, old) in zip(after["grads"], before["grads"], strict=True):
        assert grad is old, f"{name}.grad was replaced"
    for (name, grad), (_, old) in zip(after["grad_values"], before["grad_values"], strict=True):
        assert (grad is None) == (old is None) and (grad is None or torch.equal(grad, old)), f"{name}.grad changed"
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items()), "parameters or buffers changed"
    assert (after["grad_enabled"], after["inference"], after["autocast"]) == (
        before["grad_enabled"],
        before["inference"],
        before["autocast"],
    )


def user_state(model: CamModel) -> None:
    """A model the way a user might hand it over: training, one part frozen in eval, one .grad already there."""
    net = model.network
    net.train()
    # Its BatchNorm training (a pass in train mode would update its running stats), one part in eval mode.
    (net.fc[0] if isinstance(net, TinyCNN) else net.blocks[0]).eval()
    first = next(net.parameters())
    first.grad = torch.full_like(first, 0.5)
    (net.features[0] if isinstance(net, TinyCNN) else net.patch_embed).requires_grad_(False)  # a frozen layer


GRAD_CONTEXTS = {"no_grad": torch.no_grad, "enable_grad": torch.enable_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize(("name", "kind"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("grad_context", list(GRAD_CONTEXTS))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_network_left_as_found(name, kind, grad_context, precision):
    model = make_model(kind)
    user_state(model)
    with GRAD_CONTEXTS[grad_context]():
        before = snapshot(model)
        method = build(name, model, cpu_execution(precision))  # finding the layer probes the network too
        assert_as_before(model, before)
        out = method(images(), 2)
        assert_as_before(model, before)
    assert out.maps.shape == (BATCH, 2, *GRID)


@pytest.mark.parametrize(("name", "kind"), PAIRS, ids=PAIR_IDS)
def test_every_pass_runs_in_eval_mode(name, kind):
    """A model handed over in train mode: dropout and BatchNorm still run as in eval, in every pass."""
    model, x = make_model(kind), images()
    user_state(model)
    seen: list[tuple[str, bool]] = []
    handles = [
        m.register_forward_pre_hook(lambda module, _inputs, name=n: seen.append((name, module.training)))
        for n, m in model.network.named_modules()
    ]
    try:
        method = build(name, model)
        out = method(x, 2)
        faithfulness_of(model.network, x, out, execution=method.execution)
    finally:
        for handle in handles:
            handle.remove()
    assert len({n for n, _ in seen}) > 5
    assert not [n for n, training in seen if training], "modules ran in train mode"
    assert model.network.training


@pytest.mark.parametrize(("name", "kind"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_network_left_as_found_when_the_call_raises(name, kind, precision):
    """Failures before, during and after the target layer's pass, in later passes and in backward."""
    model = make_model(kind)
    user_state(model)
    early_name, early, late = faults(model)
    execution = cpu_execution(precision)
    x = images()
    method = build(name, model, execution)
    early.calls, late.backward_calls = 0, 0
    method(x, 2)
    passes, backwards = early.calls, late.backward_calls
    assert passes >= 1
    if name == "scorecam":
        assert passes > 2  # the last one is a masked pass
    if name in ("gradcam", "gradcampp", "xgradcam", "layercam"):
        assert backwards == 2  # one per rank, through the late fault
    scenarios = [("raise", 1), ("raise", passes)] + ([("raise_backward", None)] if backwards else [])
    scenarios.append(("tuple", None))  # the target layer returns a tuple (cam's is fixed: its features break)
    for mode, at in scenarios:
        if mode == "tuple" and name != "cam":
            method = build(name, model, execution, layer=early_name)
        fault = late if mode == "raise_backward" else early
        for contexts in (torch.no_grad, torch.enable_grad):
            with contexts():
                before = snapshot(model)
                early.calls = 0
                fault.mode, fault.explode_at = mode, at
                try:
                    with pytest.raises((RuntimeError, UsageError, TypeError)) as raised:
                        method(x, 2)
                finally:
                    fault.mode, fault.explode_at = "ok", None
                if mode == "raise":
                    assert "fault: forward" in str(raised.value)
                elif mode == "raise_backward":
                    assert "fault: backward" in str(raised.value)
                elif name != "cam":
                    assert raised.type is UsageError and f"layer {early_name!r} returns tuple" in str(raised.value)
                assert_as_before(model, before)
    assert build(name, model, execution)(x, 2).maps.shape == (BATCH, 2, *GRID)  # and it still works


# ---------------------------------------------------------------- precision


class PassRecorder:
    """Forward hooks on the network, its convs and linears: autocast state and output dtype inside each pass."""

    def __init__(self, model: CamModel, skip: tuple[nn.Module, ...] = ()):
        self.network_passes: list[bool] = []
        self.layers: list[tuple[str, bool, torch.dtype]] = []
        self.handles = [model.network.register_forward_pre_hook(self._network)]
        for name, module in model.network.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not any(module is s for s in skip):
                self.handles.append(module.register_forward_hook(self._layer(name)))

    def _network(self, _module, _inputs) -> None:
        self.network_passes.append(torch.is_autocast_enabled("cpu"))

    def _layer(self, name: str):
        def hook(_module, _inputs, output) -> None:
            self.layers.append((name, torch.is_autocast_enabled("cpu"), output.dtype))

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize(("name", "kind"), PAIRS, ids=PAIR_IDS)
def test_bf16_runs_every_forward_pass_under_autocast(name, kind):
    model, x = make_model(kind), images()
    method = build(name, model, cpu_execution("bf16"))
    # cam's head is applied to the pooled float32 features outside autocast, by design (exact identity).
    recorder = PassRecorder(model, skip=(model.head,) if name == "cam" else ())
    try:
        out = method(x, 2, None)
        scores = faithfulness_of(model.network, x, out, execution=method.execution)
    finally:
        recorder.remove()
    assert recorder.layers, "no conv or linear ran"
    bad = [(layer, on, dtype) for layer, on, dtype in recorder.layers if not on or dtype != torch.bfloat16]
    assert not bad, f"passes outside bf16 autocast: {bad[:5]}"
    assert all(recorder.network_passes)
    ran = {layer for layer, _, _ in recorder.layers}
    first_conv = "features.0" if kind == "cnn" else "patch_embed.proj"
    calls_of_first = sum(layer == first_conv for layer, _, _ in recorder.layers)
    assert calls_of_first >= 1 + 2  # the method's own passes + faithfulness' 2 (one per rank)
    if kind == "vit":
        assert {"blocks.0.attn.qkv", "blocks.1.mlp.2"} <= ran
    if name == "scorecam":
        assert calls_of_first >= 4  # tap pass, blank pass, masked passes (+ faithfulness)
    check_shapes(out, 2)
    assert out.logit.dtype == out.probability.dtype == torch.float32
    assert scores["masked_probability"].dtype == torch.float32 and torch.isfinite(scores["confidence_drop"]).all()
    assert not torch.is_autocast_enabled("cpu")


def test_fp32_runs_no_pass_under_autocast():
    model = make_model("cnn")
    for name in METHODS:
        method = build(name, model, cpu_execution("fp32"))
        recorder = PassRecorder(model)
        try:
            method(images(), 2)
        finally:
            recorder.remove()
        assert recorder.layers and not any(on for _, on, _ in recorder.layers), name
        assert all(dtype == torch.float32 for _, _, dtype in recorder.layers), name


# ---------------------------------------------------------------- compile


class Compiled(nn.Module):
    """What the fake `torch.compile` returns: forwards to the module and counts the calls and their inputs."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        return self.module(x)


@pytest.fixture
def fake_compile(monkeypatch) -> list[Compiled]:
    made: list[Compiled] = []

    def compile_(module, *args, **kwargs):
        assert not args and not kwargs
        made.append(Compiled(module))
        return made[-1]

    monkeypatch.setattr(torch, "compile", compile_)
    return made


COMPILE_CASES = [(m, kind) for m, kind in PAIRS if method_class(m).compile_refusal is None]
REFUSE_CASES = [(m, kind) for m, kind in PAIRS if method_class(m).compile_refusal is not None]


def test_the_expected_methods_refuse_compile():
    assert {m for m, _ in COMPILE_CASES} >= {"cam", "scorecam"}
    assert {"gradcam", "gradcampp", "xgradcam", "layercam", "eigencam"} <= {m for m, _ in REFUSE_CASES}


@pytest.mark.parametrize(("name", "kind"), REFUSE_CASES, ids=[f"{m}-{k}" for m, k in REFUSE_CASES])
def test_methods_that_hook_every_pass_refuse_compile(name, kind, fake_compile):
    model = make_model(kind)
    before = hook_state(model.network)
    with pytest.raises(UsageError, match=rf"compile \(--compile\) does not apply to {name}: ") as refused:
        build(name, model, cpu_execution(compile=True))
    assert method_class(name).compile_refusal in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not fake_compile and hook_state(model.network) == before
    build(name, model, cpu_execution("bf16"))  # without compile it builds


class NetworkCalls:
    """Counts full passes of the network (a pre-hook fires for compiled-wrapper calls too: the fake forwards to it)."""

    def __init__(self, network: nn.Module):
        self.count = 0
        self.handle = network.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.count += 1


@pytest.mark.parametrize(("name", "kind"), COMPILE_CASES, ids=[f"{m}-{k}" for m, k in COMPILE_CASES])
def test_compiled_passes_go_through_the_compiled_module(name, kind, fake_compile):
    model, x = make_model(kind), images()
    eager = build(name, model)(x, 2)
    method = build(name, model, cpu_execution(compile=True))
    assert not fake_compile  # compiled on first use, not when built
    calls = NetworkCalls(model.network)
    try:
        out = method(x, 2)
        method(x, 2)  # a second batch reuses the compiled modules
    finally:
        calls.handle.remove()
    assert fake_compile, f"{name} compiled nothing"
    compiled_calls = sum(len(c.inputs) for c in fake_compile)
    assert compiled_calls >= 2
    assert len({id(c.module) for c in fake_compile}) == len(fake_compile)  # one compile per module, reused
    wrapped = {id(m) for m in model.network.modules()} | ({id(model.features)} if model.features is not None else set())
    assert all(id(c.module) in wrapped for c in fake_compile)
    network_compiled = sum(len(c.inputs) for c in fake_compile if c.module is model.network)
    assert calls.count - network_compiled <= 2, "more than the one hooked pass per call ran eagerly"
    torch.testing.assert_close(out.maps, eager.maps)  # the fake compiles to the same module: same result
    assert torch.equal(out.class_index, eager.class_index)
    if name == "cam":
        assert [c.module for c in fake_compile] == [model.features]
        assert len(fake_compile[0].inputs) == 2 and calls.count == 0  # its one pass per call, and nothing else
    if name == "scorecam":
        assert [c.module for c in fake_compile] == [model.network]
        assert calls.count - network_compiled == 2  # the tap pass of each call, eager (it needs its hook)
        inputs = fake_compile[0].inputs
        varying = varying_channels(method, x)
        per_call = 1 + math.ceil(varying / SCORECAM_BATCH)  # the blank input + the masked batches
        assert len(inputs) == 2 * per_call
        first_call = inputs[:per_call]
        blank = [t for t in first_call if t.shape[0] == 1 and not t.any()]
        masked = [t for t in first_call if t.any()]
        assert len(blank) == 1 and sum(t.shape[0] for t in masked) == varying
        assert all(t.shape[0] <= SCORECAM_BATCH for t in masked)


def varying_channels(method, x: Tensor) -> int:
    """The (image, channel) pairs of the target layer whose activation is not constant: Score-CAM's masked images."""
    seen = []
    handle = method.target.module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            method.network.eval()(x)
    finally:
        handle.remove()
    grid = method.target.to_grid(seen[0]).float()
    return int((grid.amax((2, 3)) - grid.amin((2, 3)) > 0).sum())


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_faithfulness_passes_go_through_the_compiled_module(kind, fake_compile):
    model, x = make_model(kind), images()
    cams = build("gradcam", model)(x, 2)
    eager = faithfulness_of(model.network, x, cams)
    assert not fake_compile
    calls = NetworkCalls(model.network)
    recorder = PassRecorder(model)
    try:
        compiled = faithfulness_of(model.network, x, cams, execution=cpu_execution("bf16", compile=True))
    finally:
        calls.handle.remove()
        recorder.remove()
    assert [c.module for c in fake_compile] == [model.network]
    assert len(fake_compile[0].inputs) == 2 == calls.count  # one pass per rank, all compiled
    assert all(on and dtype == torch.bfloat16 for _, on, dtype in recorder.layers)  # and under autocast
    assert compiled["masked_probability"].dtype == torch.float32
    torch.testing.assert_close(compiled["masked_probability"], eager["masked_probability"], rtol=0.1, atol=0.02)


def test_compile_refusal_is_checked_before_any_work(fake_compile):
    """A refused method raises at build time, so a run stops before its first batch (see test_runner_precision)."""
    model = make_model("cnn")
    for name in METHODS:
        refusal = method_class(name).compile_refusal
        context = pytest.raises(UsageError, match=name) if refusal else nullcontext()
        with context:
            build(name, model, cpu_execution(compile=True))
    assert not fake_compile
