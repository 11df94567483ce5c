"""The run's images: those of its INPUTs and of its list, found before anything else.

Torch-free on purpose: the pipeline finds them, and may start decoding them (`runner.read_ahead`),
before it imports torch.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..errors import UsageError
from ..sources.discover import ImageSource, discover
from ..sources.identity import distinct
from ..sources.lists import read_list


def find_sources(config: RunConfig, out: Path) -> list[ImageSource]:
    """The images of the INPUTs (output folders excluded) and of the list; `UsageError` when there is none."""
    source = config.source
    found = (
        discover(list(config.inputs), exclude=out, labels_from_dirs=source.labels_from_dirs) if config.inputs else []
    )
    if source.from_list is not None:
        found += read_list(source.from_list)
    if not found:
        given = [str(p) for p in config.inputs] + ([str(source.from_list)] if source.from_list is not None else [])
        raise UsageError(
            f"no images found in {', '.join(given)} (image files, .tar shards, Parquet files of images; "
            f"cambatch output folders, {out} included, are never read as input)"
        )
    return distinct(found)
