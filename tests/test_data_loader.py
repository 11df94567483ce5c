"""`cambatch.data.loader.DecodePool`: the CPU loader's worker processes, their batches, their bound and their end."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS

from cambatch.data import loader
from cambatch.data.inputs import Preprocess, prepare
from cambatch.data.loader import JOIN_TIMEOUT_S, DecodePool

pytestmark = pytest.mark.skipif(not loader.available(), reason="the pool needs memfd and descriptor passing (Linux)")

PREP = Preprocess(image_size=64, overlays=True, max_side=96)


@dataclass
class Logged:
    """A source that notes each read in `log` (one line per read, from whichever process reads), or dies on it."""

    path: Path
    log: Path
    die: bool = False

    def read_bytes(self) -> bytes:
        with self.log.open("a") as log:
            log.write(f"{self.path.name}\n")
        if self.die:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.path.read_bytes()


@pytest.fixture
def sources(tmp_path):
    """The sample photos, twice over, with a broken file and an empty one among them."""
    broken, empty = tmp_path / "broken.jpg", tmp_path / "empty.jpg"
    broken.write_bytes(PHOTOS[0].read_bytes()[:200])
    empty.write_bytes(b"")
    paths = [*PHOTOS, broken, *PHOTOS, empty]
    return [Logged(path, tmp_path / "reads.log") for path in paths]


def reads(sources) -> int:
    log = sources[0].log
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_the_batches_come_in_order_with_each_image_as_prepare_makes_it_and_failures_in_their_batch(sources, workers):
    with DecodePool(sources, PREP, batch_size=3, workers=workers, ahead_bytes=1 << 30) as pool:
        batches = list(pool)
    assert [len(b.images) + len(b.failures) for b in batches] == [3] * (len(sources) // 3) + [len(sources) % 3] * (
        len(sources) % 3 > 0
    )
    seen = [i.index for b in batches for i in b.images] + [index for b in batches for index, _ in b.failures]
    assert sorted(seen) == list(range(len(sources)))
    for batch in batches:
        assert batch.pixels.shape == (len(batch.images), 3, 64, 64)
        for image, plane in zip(batch.images, batch.pixels, strict=True):
            expected = prepare(sources[image.index].path.read_bytes(), PREP)
            assert np.array_equal(image.pixels, expected.pixels) and np.array_equal(plane, expected.pixels)
            assert np.array_equal(image.photo, expected.photo) and image.photo.flags.writeable
            assert (image.width, image.height, image.orientation) == (
                expected.width,
                expected.height,
                expected.orientation,
            )
    failures = dict(f for b in batches for f in b.failures)
    assert set(failures) == {len(PHOTOS), 2 * len(PHOTOS) + 1}
    assert "empty file" in failures[2 * len(PHOTOS) + 1]


def test_without_overlays_no_photo_travels(sources):
    prep = Preprocess(image_size=64, overlays=False)
    with DecodePool(sources[:4], prep, batch_size=2, workers=1, ahead_bytes=1 << 30) as pool:
        assert all(image.photo is None for batch in pool for image in batch.images)


def reads_once_settled(sources, expected: int, *, hold: float = 0.5) -> int:
    """The reads once `expected` have come (10 s at most), then `hold` seconds later: time for any read too many."""
    deadline = time.monotonic() + 10.0
    while reads(sources) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(hold)
    return reads(sources)


def test_a_worker_decodes_no_further_ahead_than_its_share_of_bytes(sources):
    """With a budget smaller than one batch, a worker sends one batch and waits until the run takes it."""
    with DecodePool(sources, PREP, batch_size=2, workers=1, ahead_bytes=1) as pool:
        batches = iter(pool)
        assert reads_once_settled(sources, 2) == 2  # one batch decoded ahead, then it waits
        next(batches)
        assert reads_once_settled(sources, 4) == 4
    with DecodePool(sources, PREP, batch_size=2, workers=1, ahead_bytes=1 << 30) as pool:
        # A budget larger than everything: all decoded before any is taken.
        assert reads_once_settled(sources, 4 + len(sources), hold=0.0) == 4 + len(sources)


def test_a_worker_that_dies_is_an_error_that_names_it_never_a_hang(sources):
    sources[4].die = True
    with DecodePool(sources, PREP, batch_size=2, workers=2, ahead_bytes=1 << 30) as pool:
        batches = iter(pool)
        next(batches), next(batches)  # batch 2 is worker 0's second: sources 4 and 5
        with pytest.raises(RuntimeError, match="a decoding worker died: pid [0-9]+ killed by SIGKILL"):
            next(batches)


def test_closing_stops_workers_that_wait_and_workers_that_decode(sources):
    pool = DecodePool(sources * 20, PREP, batch_size=2, workers=2, ahead_bytes=1)
    next(iter(pool))
    processes = list(pool._processes)
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < JOIN_TIMEOUT_S  # they left on their own, none was killed
    assert all(p.exitcode == 0 for p in processes)
    pool.close()  # twice is harmless


def test_ctrl_c_is_the_runs_to_handle_the_workers_go_on(sources):
    with DecodePool(sources, PREP, batch_size=2, workers=1, ahead_bytes=1) as pool:
        batches = iter(pool)
        first = next(batches)
        os.kill(pool._processes[0].pid, signal.SIGINT)
        rest = list(batches)
    assert len(first.images) + sum(len(b.images) + len(b.failures) for b in rest) + len(first.failures) == len(sources)


def test_a_pool_serves_only_the_same_images_preprocessing_batches_and_workers(sources):
    with DecodePool(sources, PREP, batch_size=2, workers=0, ahead_bytes=0) as pool:
        assert pool.serves(list(sources), PREP, batch_size=2, workers=0)
        assert not pool.serves(sources[:-1], PREP, batch_size=2, workers=0)
        copies = [Logged(s.path, s.log) for s in sources]  # equal, but not the same objects: another listing
        assert not pool.serves(copies, PREP, batch_size=2, workers=0)
        assert not pool.serves(sources, Preprocess(image_size=64, overlays=False), batch_size=2, workers=0)
        assert not pool.serves(sources, PREP, batch_size=3, workers=0)
        assert not pool.serves(sources, PREP, batch_size=2, workers=1)
