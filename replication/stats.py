"""Small statistics shared by the analyses and the tables."""
from __future__ import annotations

import math


def ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (NaN half-width for a single value)."""
    from scipy import stats
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
