"""Fingerprints of a run's outputs, to compare runs made by different versions of cambatch.

`tests/golden/` holds those of `cambatch run sample_images --out OUT` (see tests/test_golden.py for
which version made them and why): the report, and the size and a 32 x 32 thumbnail of every overlay.
`python tests/golden_support.py OUT` writes them from a run's folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

GOLDEN = Path(__file__).parent / "golden"
THUMB = 32
# Columns that name the machine, the moment or the checkout, not the result.
UNSTABLE = ("input_root", "mtime_ns", "run_id")


def overlay_prints(out: Path) -> pd.DataFrame:
    """One row per overlay (path relative to OUT): its size and a THUMB x THUMB box-filtered RGB thumbnail."""
    rows = []
    for path in sorted(p for p in (out / "overlays").rglob("*.jpg") if p.is_file()):
        with Image.open(path) as image:
            thumb = np.asarray(image.convert("RGB").resize((THUMB, THUMB), Image.BOX), dtype=np.uint8)
            rows.append(
                {
                    "overlay": path.relative_to(out).as_posix(),
                    "width": image.width,
                    "height": image.height,
                    "thumb": thumb.tobytes(),
                }
            )
    return pd.DataFrame(rows)


def thumbs(prints: pd.DataFrame) -> np.ndarray:
    return np.stack([np.frombuffer(b, np.uint8).reshape(THUMB, THUMB, 3) for b in prints["thumb"]]).astype(np.int16)


def write(out: Path) -> None:
    # The raw maps are checked against the model itself by test_golden's load_map test.
    pd.read_parquet(out / "report").drop(columns=[*UNSTABLE, "map"]).to_parquet(
        GOLDEN / "sample_images_report.parquet", index=False
    )
    overlay_prints(out).to_parquet(GOLDEN / "sample_images_overlays.parquet", index=False)


if __name__ == "__main__":
    write(Path(sys.argv[1]))
