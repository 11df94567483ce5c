"""Domino's error-aware mixture model (Eyuboglu et al., "Domino: Discovering Systematic Errors with Cross-Modal
Embeddings", ICLR 2022; `domino/_slice/mixture.py`), in numpy. Torch-free.

Each image i has a reduced embedding z_i (PCA) and a *cell* c_i: its place in the confusion matrix.
Slices are the components s of a mixture that models both,

    P(z, c) = sum_s  P(S = s) N(z; mu_s, diag(sigma_s^2)) P(c | S = s)^gamma,

fitted by expectation-maximization. The P(c | s) term pulls a component towards one kind of outcome
(one true class predicted as one other class), the Gaussian towards images that look alike in the
model's own features, so a slice is a coherent group of images with a common fate.

As in Domino, the fit starts from the confusion matrix (`init_params="confusion"`): each component
is given one cell, and the initial responsibility of component j for image i is 1 + eps when i sits
in j's cell and eps otherwise (eps uniform in (0, `CONFUSION_NOISE`]), normalized. Two choices differ
from Domino's defaults, and why:

- Domino spreads its 25 components round-robin over all |Y|^2 cells of the whole confusion matrix,
  which needs 25 >= |Y|^2 (4 classes at most). cambatch fits one mixture per class (its row or
  column of the matrix, `cambatch.bias.slices`), and gives each cell one component per
  `IMAGES_PER_COMPONENT` of its images (at least one, `MAX_COMPONENTS` in all): a rare error cell
  gets a component of its own instead of sharing its images with a dozen identical ones.
- The variance floor is relative (`VARIANCE_FLOOR` of each dimension's variance over the class)
  instead of sklearn's absolute 1e-6, so it does not depend on the features' scale: near-identical
  images (one stamp, one template) would otherwise give a component a variance of ~0 and a
  likelihood that drowns the outcome term.

Domino's code subclasses private functions of scikit-learn's `GaussianMixture`; the model is stated
here in full instead (diagonal covariances, Domino's recommended kind).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_COMPONENTS = 25  # Domino's n_mixture_components
IMAGES_PER_COMPONENT = 25  # a cell of n images starts with ceil(n / this) components
CONFUSION_NOISE = 1e-3  # Domino's confusion_noise
OUTCOME_WEIGHT = 1.0  # gamma, Domino's y_hat_log_likelihood_weight
VARIANCE_FLOOR = 1e-3
MAX_ITER = 100  # Domino's max_iter
TOLERANCE = 1e-3  # on the mean log-likelihood, as scikit-learn's GaussianMixture
_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Mixture:
    """A fitted mixture: K components over d dimensions and m cells."""

    weights: np.ndarray  # [K]
    means: np.ndarray  # [K, d]
    variances: np.ndarray  # [K, d]
    cell_probs: np.ndarray  # [K, m]: P(cell | component)
    component_cells: np.ndarray  # [K]: the cell each component started from

    def responsibilities(self, z: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """P(component | z, cell) for each row: [n, K], rows summing to 1."""
        return _normalized(self._weighted_log_prob(z, cells))[1]

    def _weighted_log_prob(self, z: np.ndarray, cells: np.ndarray) -> np.ndarray:
        precision = 1.0 / self.variances
        gaussian = -0.5 * (
            z.shape[1] * np.log(2 * np.pi)
            + np.log(self.variances).sum(1)
            + (z**2) @ precision.T
            - 2 * z @ (self.means * precision).T
            + (self.means**2 * precision).sum(1)
        )
        outcome = np.log(self.cell_probs[:, cells].T + _EPS)
        return gaussian + np.log(self.weights) + OUTCOME_WEIGHT * outcome


def components_per_cell(counts: np.ndarray) -> np.ndarray:
    """How many components each cell starts with: one per `IMAGES_PER_COMPONENT` images, at least one,
    scaled down to `MAX_COMPONENTS` in all (every cell keeps one).
    """
    wanted = np.maximum(1, np.ceil(counts / IMAGES_PER_COMPONENT)).astype(int)
    if wanted.sum() <= MAX_COMPONENTS:
        return wanted
    spare = max(MAX_COMPONENTS - len(counts), 0)
    return 1 + np.floor(spare * (wanted - 1) / max((wanted - 1).sum(), 1)).astype(int)


def fit_mixture(z: np.ndarray, cells: np.ndarray, cell_count: int, *, seed: int = 0) -> tuple[Mixture, np.ndarray]:
    """Fit the mixture to z [n, d] and cells [n] (in 0..cell_count-1) by EM from the confusion initialization.

    Returns the mixture and the responsibilities [n, K] of its last E-step.
    """
    z = np.asarray(z, np.float64)
    counts = np.bincount(cells, minlength=cell_count)
    present = np.flatnonzero(counts)
    component_cells = np.repeat(present, components_per_cell(counts[present]))
    rng = np.random.default_rng(seed)
    resp = (cells[:, None] == component_cells[None, :]).astype(np.float64)
    resp /= resp.sum(1, keepdims=True)
    resp += rng.uniform(0, CONFUSION_NOISE, resp.shape)
    resp /= resp.sum(1, keepdims=True)
    floor = VARIANCE_FLOOR * z.var(0) + _EPS
    onehot = np.eye(cell_count)[cells]
    previous = -np.inf
    for _ in range(MAX_ITER):
        mixture = _m_step(z, onehot, resp, floor, component_cells)
        log_norm, resp = _normalized(mixture._weighted_log_prob(z, cells))
        if abs(log_norm.mean() - previous) < TOLERANCE:
            break
        previous = log_norm.mean()
    return mixture, resp


def _m_step(z: np.ndarray, onehot: np.ndarray, resp: np.ndarray, floor: np.ndarray, cells: np.ndarray) -> Mixture:
    size = resp.sum(0) + 10 * _EPS
    means = resp.T @ z / size[:, None]
    variances = np.maximum(resp.T @ z**2 / size[:, None] - means**2, 0) + floor
    return Mixture(size / len(z), means, variances, resp.T @ onehot / size[:, None], cells)


def _normalized(weighted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, log sum_s exp(weighted), and the row as probabilities (log-sum-exp: no overflow)."""
    top = weighted.max(1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(weighted - top).sum(1))
    return log_norm, np.exp(weighted - log_norm[:, None])
