"""`cambatch.bias.mixture`: Domino's mixture, from the confusion initialization."""

from __future__ import annotations

import numpy as np
import pytest

from cambatch.bias.mixture import MAX_COMPONENTS, components_per_cell, fit_mixture


def test_components_per_cell_gives_each_cell_one_per_25_images_and_25_in_all():
    assert components_per_cell(np.array([90, 10])).tolist() == [4, 1]
    many = components_per_cell(np.array([1000, 5, 3000, 40]))
    assert many.sum() <= MAX_COMPONENTS and (many >= 1).all() and many[2] > many[0] > many[3]


def test_a_cluster_of_errors_gets_its_own_component_and_keeps_it():
    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(0, 1, (90, 4)), rng.normal(3, 0.2, (10, 4))]
    cells = np.r_[np.zeros(90, int), np.ones(10, int)]
    mixture, resp = fit_mixture(z, cells, 2)
    assert resp.shape == (100, 5) and np.allclose(resp.sum(1), 1)
    errors = int(np.flatnonzero(mixture.component_cells == 1)[0])
    assert (resp[90:, errors] > 0.99).all() and (resp[:90, errors] < 0.01).all()
    assert mixture.cell_probs[errors, 1] == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(mixture.responsibilities(z, cells), resp, atol=1e-6)


def test_the_outcome_term_splits_images_that_look_alike():
    """Same embeddings, different outcomes: only P(cell | component) can tell them apart, and it does."""
    z = np.random.default_rng(1).normal(0, 1, (60, 3))
    cells = np.r_[np.zeros(40, int), np.ones(20, int)]
    mixture, resp = fit_mixture(z, cells, 2)
    by_cell = mixture.component_cells[resp.argmax(1)]
    assert (by_cell == cells).all()
