"""`cambatch.runner.ray_decode`: Ray's decode task gives the plain loader's inputs as columns, rows never shift
(that it runs without torch: `test_imports.py`).
"""

from __future__ import annotations

import pickle

import numpy as np
from conftest import SAMPLES

from cambatch.data.inputs import Preprocess
from cambatch.data.preprocess import Failure, ImageFiles
from cambatch.runner.ray_decode import decode_batch
from cambatch.sources.discover import ImageSource


def test_a_batch_gives_the_plain_loaders_pixels_sizes_and_failures_row_for_row(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    sources = [
        ImageSource(SAMPLES / "chelsea.png", SAMPLES, "chelsea.png"),
        ImageSource(tmp_path / "empty.jpg", tmp_path, "empty.jpg"),
        ImageSource(SAMPLES / "rocket.jpg", SAMPLES, "rocket.jpg"),
    ]
    prep = Preprocess(image_size=64, overlays=True, max_side=80)
    columns = decode_batch({"source": np.array([pickle.dumps(s) for s in sources], dtype=object)}, prep)
    plain = ImageFiles(sources, prep)
    assert list(columns["error"]) == ["", plain[1].error, ""] and isinstance(plain[1], Failure)
    assert columns["pixels"].shape == (3, 3, 64, 64) and not columns["pixels"][1].any()  # a blank keeps the row
    for i in (0, 2):
        sample = plain[i]
        np.testing.assert_array_equal(columns["pixels"][i], sample.pixels.numpy())
        np.testing.assert_array_equal(columns["photo"][i], sample.photo.numpy())
        assert (columns["width"][i], columns["height"][i]) == (sample.width, sample.height)
        assert columns["orientation"][i] == sample.orientation
    assert [pickle.loads(raw).rel for raw in columns["source"]] == ["chelsea.png", "empty.jpg", "rocket.jpg"]
    assert "photo" not in decode_batch({"source": columns["source"][:1]}, Preprocess(image_size=64))
