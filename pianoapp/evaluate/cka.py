"""Linear CKA between layers of two encoders (Kornblith et al. 2019), with the unbiased minibatch
HSIC estimator of Nguyen et al. 2021: averaged over minibatches, so any number of samples fits in
memory and the estimate does not drift with the batch size."""

from collections.abc import Sequence

import numpy as np

from pianoapp.errors import BadInputError


def hsic1(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """The unbiased HSIC estimator (Song et al. 2012) of two n×n Gram matrices, n ≥ 4."""
    n = len(gram_x)
    kx, ky = gram_x.copy(), gram_y.copy()
    np.fill_diagonal(kx, 0.0)
    np.fill_diagonal(ky, 0.0)
    trace = float(np.sum(kx * ky))
    sums = float(kx.sum()) * float(ky.sum()) / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * float(kx.sum(axis=0) @ ky.sum(axis=0))
    return (trace + sums - cross) / (n * (n - 3))


def linear_cka(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *, batch_size: int = 128) -> np.ndarray:
    """Minibatch linear CKA between every representation in `xs` and every one in `ys`:
    (len(xs), len(ys)). Row r of every array is the same sample; consecutive rows form the
    minibatches (a last one of fewer than 4 rows is left out)."""
    n = len(xs[0])
    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size) if min(lo + batch_size, n) - lo >= 4]
    if not bounds:
        raise BadInputError("CKA needs at least 4 samples.")
    xx, yy, xy = np.zeros(len(xs)), np.zeros(len(ys)), np.zeros((len(xs), len(ys)))
    for lo, hi in bounds:
        kx = [_gram(x[lo:hi]) for x in xs]
        ky = [_gram(y[lo:hi]) for y in ys]
        xx += [hsic1(k, k) for k in kx]
        yy += [hsic1(k, k) for k in ky]
        xy += [[hsic1(a, b) for b in ky] for a in kx]
    return xy / np.sqrt(np.maximum(np.outer(xx, yy), 1e-30))


def _gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x @ x.T
