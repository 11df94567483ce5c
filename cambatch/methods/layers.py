"""Which layer a method looks at: found with one dummy forward pass, or named with `--layer`.

A layer qualifies when its output keeps a spatial grid: a `[B, C, h, w]` or `[B, h, w, C]` map
that is not 1 x 1, or a `[B, prefix + h*w, D]` sequence of tokens that maps back onto the grid
(a ViT's patch grid, or a square one such as a Swin window's). The layout is read off the output
shape, never assumed from the model (`cambatch.model.grids`); a shape that two layouts fit is
settled by a second pass on a wider input, or by the module's type, or refused. The automatic
choice is the last such layer to finish in the forward pass (as torchcam's
`locate_candidate_layer` does), except for vision transformers, see `_vit_default`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..model.grids import (
    AMBIGUOUS,
    TOKENS,
    TokenGrid,
    layout_from_module,
    layout_from_wider,
    layout_of,
    square_tokens,
)
from .hooks import TargetLayer, network_as_is

CANDIDATES_SHOWN = 12


@dataclass(frozen=True)
class LayerOutput:
    """A module and the shape of its output in the dummy forward pass."""

    name: str
    shape: torch.Size


def probe_layers(network: nn.Module, input_size: int, width: int | None = None) -> list[LayerOutput]:
    """Every submodule's output shape from one dummy forward pass of one image `input_size` high
    and `width` (default: `input_size`) wide, in the order the modules finished (a module called
    twice keeps its last place). Hooks are removed and the network's modes restored, even on error.
    """
    finished: dict[str, torch.Size] = {}

    def record(_module: nn.Module, _inputs: tuple, output: object, name: str) -> None:
        if isinstance(output, Tensor):
            finished.pop(name, None)
            finished[name] = output.shape

    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    width = width or input_size
    handles = []
    try:
        with network_as_is(network), torch.inference_mode():
            for name, module in network.named_modules():
                if name:
                    handles.append(module.register_forward_hook(partial(record, name=name)))
            network(torch.zeros(1, 3, input_size, width, device=device))
    except Exception as exc:  # noqa: BLE001 - the user's model: any failure means we cannot inspect it
        raise UsageError(f"a dummy forward pass at {input_size}x{width} failed ({type(exc).__name__}: {exc})") from None
    finally:
        for handle in handles:
            handle.remove()
    return [LayerOutput(name, shape) for name, shape in finished.items()]


def token_grid(network: nn.Module, input_size: int | None = None) -> TokenGrid | None:
    """The patch grid of a timm vision transformer (`vit_*`, `deit_*`, ...); None for other models.

    A ViT built with `dynamic_img_size` lays its patches out by the input it is given: pass `input_size`.
    """
    patch_embed = getattr(network, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    prefix = getattr(network, "num_prefix_tokens", None)
    if grid is None or prefix is None:
        return None
    # timm keeps the flag on the model (`VisionTransformer.dynamic_img_size`), its patch embedding then unchecked.
    if input_size is not None and getattr(network, "dynamic_img_size", False):
        grid = patch_embed.dynamic_feat_size((input_size, input_size))
    return TokenGrid(int(prefix), int(grid[0]), int(grid[1]))


def has_grid(shape: torch.Size, input_size: int, tokens: TokenGrid | None = None) -> bool:
    """Whether the output `shape` of a dummy pass at `input_size` keeps a spatial grid, in some layout."""
    return layout_of(shape, input_size, tokens) is not None


def locate_layer(network: nn.Module, input_size: int, name: str | None = None) -> TargetLayer:
    """The layer `name`, checked; or, without a name, the last layer whose output keeps a spatial grid.

    Raises `UsageError` for an unknown name (listing close names and the candidates), for a
    layer whose output has no spatial grid, or for one whose layout cannot be told.
    """
    tokens = token_grid(network, input_size)
    outputs = probe_layers(network, input_size)
    candidates = [out for out in outputs if has_grid(out.shape, input_size, tokens)]
    modules = dict(network.named_modules())
    if name is None:
        name = _vit_default(network, tokens, candidates)
        if name is None:
            if not candidates:
                raise UsageError("no layer of this model outputs a spatial feature map; give --layer NAME")
            name = candidates[-1].name
    elif name not in modules or not name:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"unknown layer {name!r}{hint} (layers with a spatial output, last first: {_listing(candidates)})"
        )
    else:
        shape = next((out.shape for out in outputs if out.name == name), None)
        if shape is None or not has_grid(shape, input_size, tokens):
            what = f"outputs shape {tuple(shape)}" if shape is not None else "returns no tensor (or never runs)"
            raise UsageError(
                f"layer {name!r} {what}: no spatial grid (layers with one, last first: {_listing(candidates)})"
            )
    shape = next(out.shape for out in outputs if out.name == name)
    layout = layout_of(shape, input_size, tokens)
    if layout == AMBIGUOUS:
        layout = _settle_layout(network, input_size, name, modules[name], shape)
    if layout == TOKENS:
        return TargetLayer(name, modules[name], tokens or square_tokens(shape[1], input_size), TOKENS)
    return TargetLayer(name, modules[name], None, layout)


def _settle_layout(network: nn.Module, input_size: int, name: str, module: nn.Module, shape: torch.Size) -> str:
    """The layout of a layer whose output two layouts fit: the axis that grows with a wider input,
    else the module's type, else refused (a wrong guess would draw a transposed map).
    """
    try:
        wider = next((out.shape for out in probe_layers(network, input_size, 2 * input_size) if out.name == name), None)
    except UsageError:  # a model built for square inputs only (Swin's windows): ask the module
        wider = None
    layout = (layout_from_wider(shape, wider) if wider is not None else None) or layout_from_module(module, shape)
    if layout is None:
        raise UsageError(
            f"layer {name!r} outputs shape {tuple(shape)}, which reads as channels-first and as channels-last alike, "
            "and neither a wider input nor the module's type tells which; give another --layer"
        )
    return layout


def _vit_default(network: nn.Module, tokens: TokenGrid | None, candidates: list[LayerOutput]) -> str | None:
    """In a ViT, the input of the last block's attention (`blocks.N.norm1`), as pytorch-grad-cam advises.

    With class-token pooling, the patch tokens of any later layer never reach the logits (each
    token's MLP and the final norm act on it alone): their gradients are zero and every
    gradient method would draw an empty map. Before the last attention, they do reach the class token.
    """
    blocks = getattr(network, "blocks", None)
    if tokens is None or not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        return None
    name = f"blocks.{len(blocks) - 1}.norm1"
    return name if any(out.name == name for out in candidates) else None


def _listing(candidates: list[LayerOutput]) -> str:
    shown = [f"{out.name} {list(out.shape[1:])}" for out in reversed(candidates[-CANDIDATES_SHOWN:])]
    more = len(candidates) - len(shown)
    return ", ".join(shown) + (f", ... ({more} earlier)" if more > 0 else "") if shown else "(none)"
