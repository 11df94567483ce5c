"""What produced a report's rows, declared once: `RunSettings`.

A run records its settings in every report part's Parquet metadata and in its manifest
(`OUT/runs/<run_id>.json`). Each field says whether a resume compares it (`resume`: the run option
whose flag a refusal names) and whether it belongs to a run's summary (a manifest's top level, the
gallery's header). Readers get the settings back as a plain dict, written by any earlier version of
cambatch, so the comparisons below work on dicts and tolerate keys that older parts lack.

Torch-free: the runner writes these, and inspection reads them.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

# The `resume` of a setting the model's own config fixes (its preprocessing), not an option.
PREPROCESSING = "preprocessing"
# Options compared only when the new run writes overlays: they change the overlays, never a row.
OVERLAY_OPTIONS = ("overlays", "colormap", "alpha", "max_side")


def setting(*, resume: str | None = None, summary: bool = False, default: Any = MISSING) -> Any:
    """A field of `RunSettings`: `resume` the option a resume compares it by, `summary` shown in run summaries."""
    return field(default=default, metadata={"resume": resume, "summary": summary})


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Every setting a run records (the keys of a part's metadata and of a manifest's `settings`)."""

    run_id: str = setting()
    cambatch_version: str = setting(summary=True)
    torch_version: str = setting()
    model: str = setting(resume="model", summary=True)
    weights: str | None = setting(resume="weights", summary=True)
    weights_sha256: str | None = setting(resume="weights", summary=True)
    method: str = setting(resume="method", summary=True)
    layer: str | None = setting(resume="layer", summary=True)
    scorecam_batch: int | None = setting(default=None)  # a speed option: never changes a map
    activation: str = setting(resume="activation")
    threshold: float | None = setting(resume="threshold")  # None unless multi-label
    topk: int = setting(resume="topk", summary=True)
    classes: list[int] | None = setting(resume="classes")
    explain_label: bool = setting(resume="explain_label")
    # A resume adds no embedding to the images done before: the slices would miss them without saying so.
    embeddings: bool = setting(resume="embeddings", default=False)
    # The ground truth fills every row's ground-truth columns: a resume that adds, drops or swaps it is
    # refused rather than leaving the finished images as they were (the refusal says: --overwrite, or another
    # --out). Labels are compared image by image instead (`runner.resume.plan` redoes a relabelled image).
    annotations: str | None = setting(resume="annotations")
    input_size: int = setting(resume="image_size", summary=True)
    resize: str = setting()
    interpolation: str = setting(resume=PREPROCESSING)
    mean: list[float] = setting(resume=PREPROCESSING)
    std: list[float] = setting(resume=PREPROCESSING)
    device: str = setting(summary=True)
    shard: str = setting()
    class_names: list[str] = setting()
    options: dict[str, Any] = setting()  # every run option by its flat name (`RunConfig.options`)
    inputs: list[str] = setting()

    def as_dict(self) -> dict[str, Any]:
        """The settings as a report part's metadata and a manifest record them (a `scorecam_batch` only for
        scorecam).
        """
        values = asdict(self)
        if values["scorecam_batch"] is None:
            del values["scorecam_batch"]
        return values


def summary_of(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run's summary shows (a manifest's top level, the gallery's header), of those recorded."""
    return {f.name: settings.get(f.name) for f in fields(RunSettings) if f.metadata["summary"]}


def resume_option(name: str) -> str | None:
    """The run option a resume compares setting `name` by (`PREPROCESSING` for the model's preprocessing)."""
    found = {f.name: f.metadata["resume"] for f in fields(RunSettings)}
    return found.get(name, name if name in OVERLAY_OPTIONS else None)


def comparable(settings: dict[str, Any], *, with_overlays: bool) -> dict[str, Any]:
    """The values of `settings` that a resume compares (overlay options only `with_overlays`)."""
    values = {f.name: settings[f.name] for f in fields(RunSettings) if f.metadata["resume"] and f.name in settings}
    if "model" in settings:  # parts written before --explain-label and --embeddings existed had neither
        values["explain_label"] = bool(settings.get("explain_label", False))
        values["embeddings"] = bool(settings.get("embeddings", False))
    if values.get("classes") is not None:
        values.pop("topk", None)  # chosen classes: the top-k is not what picked the rows
    if values.get("weights_sha256"):
        values.pop("weights", None)  # a file is its content: the same file elsewhere is the same weights
    options = settings.get("options") or {}
    if with_overlays:
        values.update({name: options[name] for name in OVERLAY_OPTIONS if name in options})
    return values


def differences(before: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each compared setting whose value in `before` (a part's, a live shard's) differs from `now`: (then, now)."""
    overlays = bool((now.get("options") or {}).get("overlays", True))
    old, new = comparable(before, with_overlays=overlays), comparable(now, with_overlays=overlays)
    if overlays and (before.get("options") or {}).get("overlays") is False:
        old["overlays"] = False
    return {
        name: (_shown(old[name]), _shown(value))
        for name, value in new.items()
        if name in old and _plain(old[name]) != _plain(value)
    }


def _plain(value: Any) -> Any:
    """JSON round trip: a tuple read back from a part's metadata is a list."""
    return json.loads(json.dumps(value, default=str))


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)
