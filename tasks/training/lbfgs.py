"""Full-batch L-BFGS on an objective that streams its data: scipy's L-BFGS-B, as scikit-learn's logistic regression.

BLAS runs on one thread while a head is fitted (`one_blas_thread`). Measured on 2 cores: with OpenBLAS's default of
one thread per core, every small vector operation of L-BFGS-B and every chunk product synchronises two spinning
threads; on a machine with other work running, the same fit (2,698 x 1280 Fashion-MNIST features, 98 iterations)
took 36.7 s with two threads and 2.6 s with one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


@dataclass(frozen=True)
class Solution:
    """Where the solver stopped and whether that is a minimum to `tol` (the largest gradient component)."""

    theta: np.ndarray
    iterations: int
    passes: int
    grad_norm: float
    converged: bool
    message: str


def one_blas_thread():
    """A context in which numpy's and scipy's BLAS use one thread (module docstring: why)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def minimise(objective, theta0: np.ndarray, tol: float, max_iter: int) -> Solution:
    """Minimise `objective` (theta -> (value, gradient)) from `theta0` with L-BFGS-B (10 curvature pairs). Converged
    means the largest gradient component is at most `tol`; a line search that cannot improve the float32-summed loss
    any further with the gradient already below 10 x tol also counts (the loss is only exact to ~1e-7)."""
    before = getattr(objective, "passes", 0)
    with one_blas_thread():
        res = minimize(objective, np.asarray(theta0, np.float64), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12, "maxls": 50})
    grad_norm = float(np.abs(res.jac).max()) if res.jac is not None else float("nan")
    converged = bool(res.success) and grad_norm <= tol * 10 or grad_norm <= tol
    return Solution(res.x, int(res.nit), getattr(objective, "passes", 0) - before, grad_norm, converged,
                    str(res.message))
