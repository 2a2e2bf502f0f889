"""Error bars of benchmark scores, over problems.

A score is the mean of one value per problem (its correctness, its pass@1 estimate c/n over n samples,
its pass@k or maj@k). Its standard error is the sample standard deviation of those values over the square
root of the number of problems, which for n samples per problem is the variance of the unbiased pass@1
estimator itself (within-problem sampling noise included). The 95% interval is Wilson's score interval
with the effective sample size p(1-p)/SE² (the number of problems for plain right/wrong answers): unlike
p ± 1.96·SE it stays inside [0, 1] and does not shrink to a point at 0 or 1.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Estimate:
    score: float
    stderr: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"score": self.score, "stderr": self.stderr, "ciLow": self.low, "ciHigh": self.high}


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion p observed over n (possibly effective) trials."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n))) / denominator
    # At p = 0 (or 1) the bound is exactly 0 (or 1); the formula leaves rounding noise there.
    return (0.0 if p <= 0 else max(0.0, center - half)), (1.0 if p >= 1 else min(1.0, center + half))


def estimate(values: Sequence[float]) -> Estimate:
    """The mean of per-problem values in [0, 1], its standard error and 95% interval."""
    m = len(values)
    if m == 0:
        return Estimate(0.0, 0.0, 0.0, 1.0)
    p = statistics.fmean(values)
    stderr = math.sqrt(statistics.variance(values) / m) if m > 1 else 0.0
    effective = p * (1 - p) / (stderr * stderr) if stderr > 0 and 0 < p < 1 else m
    low, high = wilson(p, effective)
    return Estimate(p, stderr, low, high)
