"""Estimates with 95% confidence intervals: a backend's s/epoch, a speed-up, a change.

The unit of repetition is the round: every backend once, each run a fresh process, in an order
drawn at random per round (mnistbench.repeat). A run's number is the median of its steady
epochs. Variance lives at two levels, between epochs of a run and between runs (a process
settles in a fast or slow mode; the machine drifts between rounds); the run-level numbers
carry both, and rounds are independent, so an interval over rounds accounts for both levels
(Kalibera and Jones 2013: repeat, and summarise, at the highest level that varies).

Times and speed-ups are ratios of positive numbers, so everything is done on logs:

- a backend's s/epoch: the geometric mean of its runs, Student's t interval on their logs;
- a speed-up, A over B: per round, the ratio of the two runs of that round (paired: a slow
  spell of the machine multiplies both and cancels), the geometric mean over rounds, and the
  t interval on the logs of those ratios;
- a change between two result sets taken at different moments (`mnistbench diff`): no pairing
  is possible, so the ratio of the two geometric means with Welch's t interval on the logs.

Why t intervals and not a bootstrap: with the 2 to 8 rounds a run affords, a percentile
bootstrap over rounds has too few distinct resamples (10 for 3 rounds) and covers the truth
far less often than it claims; the t interval on logs keeps its 95% for log-normal noise and
widens honestly when there are few rounds (tests/test_stats.py checks the coverage against a
simulated drifting machine). The precision of an interval is its relative half-width,
high / estimate - 1 (the same as 1 - low / estimate to first order).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95  # every interval's confidence


@dataclass(frozen=True)
class Estimate:
    value: float  # geometric mean (of times, or of per-round ratios)
    low: float | None  # the 95% interval; None with fewer than two values
    high: float | None
    n: int  # values it rests on (rounds, or runs)

    @property
    def precision(self) -> float | None:
        """Relative half-width of the interval (0.05: within +-5%), or None without one."""
        return None if self.high is None else self.high / self.value - 1

    def excludes_one(self) -> bool:
        """True when the interval lies wholly above or below 1 (a ratio that is real)."""
        return self.low is not None and (self.low > 1 or self.high < 1)


def t_quantile(df: float) -> float:
    """Student's t two-sided LEVEL quantile (12.7 for 1 degree of freedom, 1.96 for many)."""
    from scipy.stats import t  # scipy comes with jax; imported only when an interval is made

    return float(t.ppf(0.5 + LEVEL / 2, df))


def geometric(values: Sequence[float]) -> Estimate:
    """Geometric mean of positive values with the t interval on their logs."""
    logs = [math.log(v) for v in values]
    if not logs:
        raise ValueError("no values to estimate from")
    centre = statistics.fmean(logs)
    if len(logs) < 2:
        return Estimate(values[0], None, None, 1)  # the value itself, not exp(log(value))
    half = t_quantile(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return Estimate(math.exp(centre), math.exp(centre - half), math.exp(centre + half), len(logs))


def paired_ratio(
    numerator: Sequence[float | None], denominator: Sequence[float | None]
) -> Estimate:
    """numerator / denominator, paired by round (None: that round has no clean run of one of
    them and is left out). Raises ValueError when no round has both."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True) if a and b]
    return geometric(ratios)


def welch_ratio(a: Sequence[float], b: Sequence[float]) -> Estimate:
    """Geometric mean of b over that of a, unpaired, with Welch's t interval on the logs.
    Without two values on each side there is no interval."""
    la, lb = [math.log(v) for v in a], [math.log(v) for v in b]
    centre = statistics.fmean(lb) - statistics.fmean(la)
    n = min(len(la), len(lb))
    if n < 2:
        return Estimate(math.exp(centre), None, None, n)
    va, vb = statistics.variance(la) / len(la), statistics.variance(lb) / len(lb)
    if va + vb == 0:
        return Estimate(math.exp(centre), math.exp(centre), math.exp(centre), n)
    df = (va + vb) ** 2 / (va**2 / (len(la) - 1) + vb**2 / (len(lb) - 1))
    half = t_quantile(df) * math.sqrt(va + vb)
    return Estimate(math.exp(centre), math.exp(centre - half), math.exp(centre + half), n)
