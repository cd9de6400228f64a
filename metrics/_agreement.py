"""Agreement between judges: Cohen's kappa, Gwet's AC1/AC2 and Krippendorff's alpha.

Ratings are a units x raters matrix of category labels (any hashable; ``None`` = the rater gave no label, e.g. a
judge reply that failed to validate). Formulas:

- Cohen's kappa (Cohen 1960), two raters, units both rated: κ = (p_o − p_e) / (1 − p_e), p_o the share of units on
  which they agree, p_e = Σ_k p_1k · p_2k from each rater's own marginals.
- Gwet's AC2 (Gwet 2008, "Computing inter-rater reliability and its variance in the presence of high agreement";
  Gwet 2014, Handbook of Inter-Rater Reliability, ch. 2), any number of raters, missing labels allowed. With r_ik the
  raters putting unit i in category k, r_i = Σ_k r_ik and weights w_kl: r*_ik = Σ_l w_kl r_il;
  p_a = mean over units with r_i ≥ 2 of Σ_k r_ik (r*_ik − 1) / (r_i (r_i − 1));
  π_k = mean over all rated units of r_ik / r_i; p_e = T_w / (q (q − 1)) · Σ_k π_k (1 − π_k), T_w = Σ_kl w_kl;
  AC2 = (p_a − p_e) / (1 − p_e). AC1 is AC2 with identity weights (then p_e = Σ_k π_k (1 − π_k) / (q − 1)).
- Krippendorff's alpha (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"): units with at least two
  labels form the coincidence matrix o_ck = Σ_u (number of ordered pairs (c, k) of its labels) / (m_u − 1);
  n_c = Σ_k o_ck, n = Σ_c n_c; α = 1 − (n − 1) Σ_ck o_ck δ_ck / Σ_ck n_c n_k δ_ck, with δ_ck = [c ≠ k] (nominal)
  or (c − k)² (interval).

Every statistic is NaN when it is undefined (no unit rated by two raters, or chance agreement already 1).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from itertools import combinations

import numpy as np
import polars as pl

__all__ = ["agreement_table", "cohen_kappa", "gwet_ac1", "gwet_ac2", "krippendorff_alpha"]

Ratings = Sequence[Sequence[Hashable | None]]


def _categories(ratings: Ratings, categories: Sequence[Hashable] | None) -> list[Hashable]:
    """The label scale: ``categories`` when given; [False, True] for yes/no labels (a judge's scale has both even
    when every judge gave one); otherwise the labels seen."""
    seen = sorted({v for row in ratings for v in row if v is not None}, key=repr)
    if categories is None and seen and all(isinstance(v, bool | np.bool_) for v in seen):
        categories = [False, True]
    if categories is None:
        return seen
    missing = [v for v in seen if v not in categories]
    if missing:
        raise ValueError(f"label(s) {missing!r:.80} are not among the categories {list(categories)!r:.80}")
    return list(categories)


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float:
    """Cohen's kappa of two raters over the units both labelled (see the module docstring)."""
    if len(a) != len(b):
        raise ValueError(f"two raters need the same units, got {len(a)} and {len(b)} labels")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return math.nan
    n = len(pairs)
    cats = {x for p in pairs for x in p}
    po = sum(x == y for x, y in pairs) / n
    pe = sum((sum(x == c for x, _ in pairs) / n) * (sum(y == c for _, y in pairs) / n) for c in cats)
    if math.isclose(pe, 1.0):
        return math.nan
    return (po - pe) / (1 - pe)


def _weights(q: int, kind: str) -> np.ndarray:
    k = np.arange(q)
    d = np.abs(k[:, None] - k[None, :]).astype(float)
    if kind == "identity" or q < 2:
        return np.eye(q)
    if kind == "linear":
        return 1 - d / (q - 1)
    if kind == "quadratic":
        return 1 - (d / (q - 1)) ** 2
    raise ValueError(f"unknown weights {kind!r}; choose identity, linear or quadratic")


def gwet_ac2(
    ratings: Ratings, *, categories: Sequence[Hashable] | None = None, weights: str | np.ndarray = "linear"
) -> float:
    """Gwet's AC2 of a units x raters matrix; ``categories`` is the label scale, in the order of ordinal labels
    (default: [False, True] for yes/no labels, else the labels seen, sorted). The scale counts even where no rater
    used a label: when every rater gives one label, AC1 = AC2 = 1 (irrCAC agrees), not NaN.

    ``weights``: ``identity`` (= AC1), ``linear``, ``quadratic``, or a q x q matrix.
    """
    cats = _categories(ratings, categories)
    q = len(cats)
    if q < 2:
        return math.nan
    w = np.asarray(weights, dtype=float) if not isinstance(weights, str) else _weights(q, weights)
    if w.shape != (q, q):
        raise ValueError(f"weights must be {q} x {q} for {q} categories, got {w.shape}")
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros((len(ratings), q))
    for i, row in enumerate(ratings):
        for v in row:
            if v is not None:
                counts[i, index[v]] += 1
    r = counts.sum(axis=1)
    rated = r >= 1
    multi = r >= 2
    if not multi.any():
        return math.nan
    star = counts @ w.T
    pa = float(np.mean((counts[multi] * (star[multi] - 1)).sum(axis=1) / (r[multi] * (r[multi] - 1))))
    pi = (counts[rated] / r[rated][:, None]).mean(axis=0)
    pe = float(w.sum() / (q * (q - 1)) * (pi * (1 - pi)).sum())
    if math.isclose(pe, 1.0):
        return math.nan
    return (pa - pe) / (1 - pe)


def gwet_ac1(ratings: Ratings, *, categories: Sequence[Hashable] | None = None) -> float:
    """Gwet's AC1 (nominal labels): :func:`gwet_ac2` with identity weights."""
    return gwet_ac2(ratings, categories=categories, weights="identity")


def krippendorff_alpha(ratings: Ratings, *, level: str = "nominal") -> float:
    """Krippendorff's alpha of a units x raters matrix (``None`` = missing); ``level``: nominal or interval."""
    if level not in ("nominal", "interval"):
        raise ValueError(f"unknown level {level!r}; choose nominal or interval")
    cats = _categories(ratings, None)
    index = {c: i for i, c in enumerate(cats)}
    q = len(cats)
    o = np.zeros((q, q))
    for row in ratings:
        vals = [index[v] for v in row if v is not None]
        m = len(vals)
        if m < 2:
            continue
        for x, y in combinations(vals, 2):
            o[x, y] += 1 / (m - 1)
            o[y, x] += 1 / (m - 1)
    nc = o.sum(axis=1)
    n = nc.sum()
    if n <= 1:
        return math.nan
    if level == "nominal":
        delta = 1 - np.eye(q)
    else:
        v = np.asarray([float(c) for c in cats])  # type: ignore[arg-type]
        delta = (v[:, None] - v[None, :]) ** 2
    expected = float((np.outer(nc, nc) * delta).sum())
    if math.isclose(expected, 0.0):
        return math.nan
    return 1 - (n - 1) * float((o * delta).sum()) / expected


def agreement_table(
    ratings: Ratings, raters: Sequence[str], *, categories: Sequence[Hashable] | None = None
) -> pl.DataFrame:
    """One row per statistic: Cohen's kappa (mean over rater pairs), Gwet's AC1, AC2 (linear weights on the
    label scale ``categories``, default as in :func:`gwet_ac2`) and Krippendorff's alpha (nominal), with the number
    of units two or more raters labelled."""
    if any(len(row) != len(raters) for row in ratings):
        raise ValueError(f"every unit needs one label per rater ({len(raters)} raters)")
    n_units = sum(sum(v is not None for v in row) >= 2 for row in ratings)
    cols = list(zip(*ratings, strict=True)) if ratings else [() for _ in raters]
    kappas = [cohen_kappa(cols[i], cols[j]) for i, j in combinations(range(len(raters)), 2)]
    finite = [k for k in kappas if math.isfinite(k)]
    rows = [
        ("cohen_kappa", float(np.mean(finite)) if finite else math.nan),
        ("gwet_ac1", gwet_ac1(ratings, categories=categories)),
        ("gwet_ac2", gwet_ac2(ratings, categories=categories)),
        ("krippendorff_alpha", krippendorff_alpha(ratings)),
    ]
    return pl.DataFrame(
        {
            "statistic": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "n_units": [n_units] * len(rows),
            "raters": [", ".join(raters)] * len(rows),
        }
    )
