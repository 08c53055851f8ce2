"""Full-batch L-BFGS on an objective that streams its data: scipy's L-BFGS-B, as scikit-learn's logistic regression."""

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


def minimise(objective, theta0: np.ndarray, tol: float, max_iter: int) -> Solution:
    """Minimise `objective` (theta -> (value, gradient)) from `theta0` with L-BFGS-B (10 curvature pairs). Converged
    means the largest gradient component is at most `tol`; a line search that cannot improve the float32-summed loss
    any further with the gradient already below 10 x tol also counts (the loss is only exact to ~1e-7)."""
    before = getattr(objective, "passes", 0)
    res = minimize(objective, np.asarray(theta0, np.float64), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12, "maxls": 50})
    grad_norm = float(np.abs(res.jac).max()) if res.jac is not None else float("nan")
    converged = bool(res.success) and grad_norm <= tol * 10 or grad_norm <= tol
    return Solution(res.x, int(res.nit), getattr(objective, "passes", 0) - before, grad_norm, converged,
                    str(res.message))
