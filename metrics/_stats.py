"""Statistics behind every aggregate: Wilson intervals for rates, clustered BCa bootstrap, curve areas.

Every aggregate row carries its numerator and denominator (``k``, ``n``), its value and a 95% interval, so a
reader can recompute it. Undefined values are NaN (or the word ``undefined`` in reports), never 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "Interval",
    "aoc",
    "bootstrap_ci",
    "bootstrap_rows",
    "clustered_mean_ci",
    "paired_one_sided_test",
    "wilson",
]

Z95 = 1.959963984540054


def wilson(k: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate ``k/n`` (NaN, NaN when ``n == 0``).

    lo, hi = (p + z²/2n ∓ z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n), p = k/n (Wilson 1927).
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"a rate needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at k = 0 (k = n) the lower (upper) end is exactly 0 (1); the formula leaves a rounding error there
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


class Interval(tuple):
    """A 95% interval ``(lo, hi)`` (unpacks as a pair) that also says how it was made.

    ``method``: ``bca``; ``percentile`` (where BCa is undefined, or conditional on the resamples where the statistic
    is defined); ``point`` (a statistic with no spread: both ends are the point estimate); ``none`` (no interval:
    the point estimate is undefined or there are fewer than two clusters). ``undefined_share``: the share of
    resamples on which the statistic was undefined (left out of a conditional percentile interval), NaN when no
    resampling was done.
    """

    method: str
    undefined_share: float

    def __new__(
        cls, lo: float, hi: float, method: str = "none", undefined_share: float = math.nan
    ) -> Interval:
        self = super().__new__(cls, (float(lo), float(hi)))
        self.method = method
        self.undefined_share = float(undefined_share)
        return self

    @property
    def lo(self) -> float:
        return self[0]

    @property
    def hi(self) -> float:
        return self[1]


_NO_INTERVAL = (math.nan, math.nan, "none")


def bootstrap_rows(
    statistic: Callable[[np.ndarray], float],
    n_rows: int,
    *,
    clusters: Sequence | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """BCa interval (``scipy.stats.bootstrap``) of ``statistic(row_indices)``, resampling whole clusters.

    ``statistic`` gets the indices of the rows in a resample (with repeats) and returns a number; it is recomputed
    from scratch on each resample, so weights or per-group means inside it are re-estimated too. With ``clusters``
    (e.g. item ids where an item has several traces or samples) clusters are drawn, not rows. Degenerate data
    (fewer than two clusters) gives NaN; a statistic with no spread gives the point estimate at both ends; where
    BCa is undefined (no jackknife spread) the percentile interval is used. Where the statistic is undefined on some
    resamples (a ratio whose denominator is 0 in them), the interval is the percentile interval of the resamples
    where it is defined (conditional on definedness) and :attr:`Interval.undefined_share` says how many were not:
    never a NaN interval for a defined value.
    """
    if n_rows == 0:
        return Interval(*_NO_INTERVAL)
    cl = np.arange(n_rows) if clusters is None else np.asarray([str(c) for c in clusters], dtype=object)
    if len(cl) != n_rows:
        raise ValueError(f"got {len(cl)} cluster labels for {n_rows} rows")
    labels, inverse = np.unique(cl.astype(str), return_inverse=True)
    if len(labels) < 2:
        return Interval(*_NO_INTERVAL)
    members = [np.flatnonzero(inverse == c) for c in range(len(labels))]

    def stat_clusters(cluster_idx: np.ndarray) -> float:
        return float(statistic(np.concatenate([members[int(c)] for c in np.asarray(cluster_idx)])))

    point = stat_clusters(np.arange(len(labels)))
    if not math.isfinite(point):
        return Interval(*_NO_INTERVAL)
    jack = [stat_clusters(np.delete(np.arange(len(labels)), j)) for j in range(min(len(labels), 50))]
    if np.allclose(jack, point) and np.allclose(
        [stat_clusters(np.array([c])) for c in range(len(labels))], point, equal_nan=False
    ):
        return Interval(point, point, "point", 0.0)

    def run(method: str):
        # scipy warns where BCa is undefined (degenerate jackknife or undefined resamples); handled below
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            return stats.bootstrap(
                (np.arange(len(labels)),),
                stat_clusters,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                vectorized=False,
                random_state=np.random.default_rng(seed),
            )

    res = run("BCa")
    draws = np.asarray(res.bootstrap_distribution, dtype=float)
    defined = np.isfinite(draws)
    share = 1.0 - float(defined.mean())
    if share > 0:
        if not defined.any():
            return Interval(math.nan, math.nan, "none", share)
        tail = (1 - confidence) / 2 * 100
        lo, hi = np.percentile(draws[defined], [tail, 100 - tail])
        return Interval(float(lo), float(hi), "percentile", share)
    out = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    if all(math.isfinite(v) for v in out):
        return Interval(*out, "bca", 0.0)
    res = run("percentile")
    return Interval(
        float(res.confidence_interval.low), float(res.confidence_interval.high), "percentile", 0.0
    )


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    clusters: Sequence | None = None,
    weights: Sequence[float] | None = None,
    **kw,
) -> Interval:
    """BCa interval of the (weighted) mean of finite ``values``, resampling clusters (see :func:`bootstrap_rows`)."""
    x = np.asarray(values, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = np.isfinite(x)
    cl = None if clusters is None else [c for c, k in zip(clusters, keep, strict=True) if k]
    x, w = x[keep], w[keep]

    def mean(idx: np.ndarray) -> float:
        return float(np.sum(w[idx] * x[idx]) / np.sum(w[idx])) if len(idx) else math.nan

    return bootstrap_rows(mean, len(x), clusters=cl, **kw)


def clustered_mean_ci(
    values: Sequence[float], clusters: Sequence | None = None, **kw
) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of finite values and its clustered BCa interval."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    mean = float(finite.mean()) if len(finite) else math.nan
    lo, hi = bootstrap_ci(x, clusters=clusters, **kw)
    return mean, lo, hi


def aoc(fractions: Sequence[float], curve: Sequence[float]) -> float:
    """Area over a curve on [0, 1]: ``1 − ∫ s(x) dx`` by the trapezoidal rule over the given points.

    Lanham et al. 2023 leave the integration rule unstated; the trapezoid over x = k/n, k = 0..n (all points of a
    CoT of n sentences) is this toolkit's documented choice. Points must start at 0 and end at 1.
    """
    x = np.asarray(fractions, dtype=float)
    y = np.asarray(curve, dtype=float)
    if len(x) < 2 or not math.isclose(x[0], 0.0) or not math.isclose(x[-1], 1.0):
        raise ValueError("an area over a curve needs points from x=0 to x=1")
    if np.any(np.diff(x) <= 0):
        raise ValueError("curve points must be in increasing order of x")
    if not np.all(np.isfinite(y)):
        return math.nan
    return float(1.0 - np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def paired_one_sided_test(treated: Sequence[float], control: Sequence[float]) -> tuple[float, float]:
    """(t, p) of the one-sided paired t-test that ``treated − control > 0`` (``scipy.stats.ttest_rel``).

    Turpin et al. 2023 test the per-item difference in bias-consistency between biased and unbiased contexts.
    NaN when fewer than two pairs or the differences have no spread.
    """
    a, b = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired test needs equal lengths, got {len(a)} and {len(b)}")
    d = a - b
    if len(d) < 2 or np.allclose(d, d[0]):
        return (math.nan, math.nan)
    res = stats.ttest_rel(a, b, alternative="greater")
    return float(res.statistic), float(res.pvalue)
