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


def minimise(objective, theta0: np.ndarray, tol: float, max_iter: int, change=None) -> Solution:
    """Minimise `objective` (theta -> (value, gradient)) from `theta0` with L-BFGS-B (10 curvature pairs), optionally
    in variables theta' given by `change` (tasks.training.preconditioner.Whitening: to_theta, to_prime,
    gradient_to_prime). Converged means the largest component of the gradient w.r.t. theta itself is at most `tol`,
    whatever the variables the solver moved in (scikit-learn's criterion for its lbfgs)."""
    before = getattr(objective, "passes", 0)
    last: dict = {}

    def value_and_gradient(point: np.ndarray):
        theta = change.to_theta(point) if change else point
        value, gradient = objective(theta)
        last.update(point=point.copy(), gradient=gradient)
        return value, change.gradient_to_prime(gradient) if change else gradient

    def stop_when_converged(intermediate_result):
        if np.array_equal(intermediate_result.x, last.get("point")) and np.abs(last["gradient"]).max() <= tol:
            raise StopIteration

    start = change.to_prime(theta0) if change else np.asarray(theta0, np.float64)
    with one_blas_thread():
        res = minimize(value_and_gradient, start, jac=True, method="L-BFGS-B", callback=stop_when_converged,
                       options={"maxiter": max_iter, "gtol": 0.0 if change else tol, "ftol": 1e-12, "maxls": 50})
        if not np.array_equal(res.x, last.get("point")):
            value_and_gradient(res.x)
    grad_norm = float(np.abs(last["gradient"]).max())
    theta = change.to_theta(res.x) if change else res.x
    return Solution(theta, int(res.nit), getattr(objective, "passes", 0) - before, grad_norm, grad_norm <= tol,
                    str(res.message))
