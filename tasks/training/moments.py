"""Per-feature mean and standard deviation, accumulated chunk by chunk (Chan et al.'s pairwise update, float64)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of each feature over the rows seen so far."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        """The moments of one chunk (float32 in, float64 out; the chunk is not copied to float64)."""
        mean = x.mean(axis=0, dtype=np.float64)
        d = x - mean.astype(np.float32)
        return cls(len(x), mean, np.einsum("ij,ij->j", d, d, dtype=np.float64))

    def merge(self, other: "Moments") -> "Moments":
        """The moments of both sets of rows."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.n / n), self.m2 + other.m2 + delta ** 2 * (self.n * other.n / n))

    def std(self) -> np.ndarray:
        """Population standard deviation (ddof 0, as scikit-learn's StandardScaler)."""
        return np.sqrt(self.m2 / max(self.n, 1))


def chunk_moments(chunks) -> Moments:
    """The moments over every (positions, rows) chunk."""
    total = Moments(0, np.zeros(0), np.zeros(0))
    for _, x in chunks:
        total = total.merge(Moments.of(x))
    return total
