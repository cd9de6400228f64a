"""A learned sentence-role labeller: multinomial logistic regression on sparse text features.

Trained on the published thought-anchors chunks (``data/thought-anchors``, GPT-4o primary tags) by
``python -m cot.train_roles``; the weights ship in ``cot/role_model.npz``, so nothing is downloaded.

Features of sentence i of a trace (all sparse, hashed with crc32 into a fixed number of buckets so that the
vocabulary needs no file of its own):

- the sentence's lower-cased word unigrams and bigrams (``log1p`` of the counts), its first three words by
  position, its first word and first two words, its last character;
- the rule labeller's role (:class:`cot.RuleLabeller`) of sentences i-1, i and i+1, one-hot;
- relative position i / (n - 1), its square, first / last 5 % of the trace; log length and the count of math
  symbols.

The model is ``softmax(X W + b)`` over the 8 thought-anchors function tags, fitted by L-BFGS on
``sum_i CE_i + ||W||^2 / (2 C)`` (bias unpenalised), from zeros, in float64, then stored as float32.
"""

from __future__ import annotations

import itertools
import math
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cot._roles import ROLES, RuleLabeller, Sentence, _text

__all__ = [
    "ROLE_TAGS",
    "LearnedLabeller",
    "RoleModel",
    "choose_c",
    "fit_role_model",
    "leave_problems_out",
    "load_role_model",
    "role_features",
]

ROLE_TAGS: tuple[str, ...] = tuple(r for r in ROLES if r != "unknown")
"""The 8 thought-anchors function tags the learned labeller predicts (the published labels never use ``unknown``)."""

WEIGHTS = Path(__file__).with_name("role_model.npz")
"""The shipped weights, written by ``python -m cot.train_roles``."""

HASH_BUCKETS = 4096
"""Buckets of the hashed word features."""

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
_MATH_SYMBOL = re.compile(r"[=+\-*/^\\]")
_RULE_INDEX = {r: i for i, r in enumerate(ROLES)}
_DENSE = 3 * len(ROLES) + 6  # rule one-hots (prev, self, next), 4 position and 2 length features
N_FEATURES = HASH_BUCKETS + _DENSE


def _bucket(key: str) -> int:
    return zlib.crc32(key.encode("utf-8")) % HASH_BUCKETS


def _word_features(text: str) -> dict[int, float]:
    toks = _TOKEN.findall(text.lower())
    counts: dict[int, float] = {}

    def add(key: str) -> None:
        b = _bucket(key)
        counts[b] = counts.get(b, 0.0) + 1.0

    for w in toks:
        add("w:" + w)
    for a, b in itertools.pairwise(toks):
        add(f"b:{a} {b}")
    for i, w in enumerate(toks[:3]):
        add(f"f{i}:{w}")
    if toks:
        add("first:" + toks[0])
    if len(toks) > 1:
        add(f"first2:{toks[0]} {toks[1]}")
    add("end:" + text.strip()[-1:])
    return {k: math.log1p(v) for k, v in counts.items()}


def role_features(sentences: Sequence[Sentence | str]) -> Any:
    """The feature matrix (``scipy.sparse.csr_matrix``, float64, one row per sentence) of one trace in order."""
    import numpy as np
    from scipy import sparse

    texts = [_text(s) for s in sentences]
    n = len(texts)
    rules = [_RULE_INDEX[r] for r in RuleLabeller().label(texts)]
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, t in enumerate(texts):
        feats = _word_features(t)
        base = HASH_BUCKETS
        for shift, j in enumerate((i - 1, i, i + 1)):
            if 0 <= j < n:
                feats[base + shift * len(ROLES) + rules[j]] = 1.0
        base += 3 * len(ROLES)
        pos = i / (n - 1) if n > 1 else 0.0
        feats[base] = pos
        feats[base + 1] = pos * pos
        feats[base + 2] = float(pos < 0.05)
        feats[base + 3] = float(pos > 0.95)
        feats[base + 4] = math.log1p(len(t)) / 5.0
        feats[base + 5] = len(_MATH_SYMBOL.findall(t)) / 10.0
        for c in sorted(feats):
            if feats[c] != 0.0:
                rows.append(i)
                cols.append(c)
                vals.append(feats[c])
    return sparse.csr_matrix(
        (
            np.asarray(vals, dtype=np.float64),
            (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
        ),
        shape=(n, N_FEATURES),
    )


@dataclass(frozen=True)
class RoleModel:
    """Weights of the learned labeller: ``softmax(features @ weights + bias)`` over :data:`ROLE_TAGS`."""

    weights: Any
    """float32 array, shape ``(N_FEATURES, len(ROLE_TAGS))``."""
    bias: Any
    """float32 array, shape ``(len(ROLE_TAGS),)``."""
    c: float
    """Inverse L2 strength the model was fitted with."""

    def probabilities(self, sentences: Sequence[Sentence | str]) -> Any:
        """Role probabilities, shape ``(len(sentences), len(ROLE_TAGS))``, columns in :data:`ROLE_TAGS` order."""
        import numpy as np

        if not sentences:
            return np.zeros((0, len(ROLE_TAGS)))
        z = role_features(sentences) @ self.weights.astype(np.float64) + self.bias.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, sentences: Sequence[Sentence | str]) -> list[str]:
        if not sentences:
            return []
        return [ROLE_TAGS[k] for k in self.probabilities(sentences).argmax(axis=1)]

    def save(self, path: str | Path) -> None:
        """Write the weights as an ``.npz`` (atomically)."""
        import numpy as np

        from cot._trace import atomic_write

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.savez_compressed(
                    f,
                    weights=self.weights,
                    bias=self.bias,
                    c=np.float64(self.c),
                    roles=np.asarray(ROLE_TAGS),
                    hash_buckets=np.int64(HASH_BUCKETS),
                )

        atomic_write(path, write)


def load_role_model(path: str | Path | None = None) -> RoleModel:
    """The weights at ``path`` (default: the shipped ``cot/role_model.npz``); read again when the file changes."""
    path = Path(path) if path is not None else WEIGHTS
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no role-model weights at {path}; retrain them with: python -m cot.train_roles --out {path}"
        ) from None
    return _load(str(path.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int = 0, size: int = 0) -> RoleModel:
    import numpy as np

    retrain = f"retrain it with: python -m cot.train_roles --out {path}"
    try:
        with np.load(path, allow_pickle=False) as z:
            roles = tuple(str(r) for r in z["roles"])
            buckets = int(z["hash_buckets"])
            model = RoleModel(weights=z["weights"].copy(), bias=z["bias"].copy(), c=float(z["c"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a role-model .npz ({exc}); {retrain}") from None
    expected = (N_FEATURES, len(ROLE_TAGS))
    if roles != ROLE_TAGS or buckets != HASH_BUCKETS or model.weights.shape != expected:
        raise ValueError(f"{path} was trained for other features or roles; {retrain}")
    return model


C_GRID: tuple[float, ...] = (0.1, 0.3, 1.0)
"""Inverse L2 strengths tried by :func:`choose_c`; the choice among them is made by cross-validation."""


def _targets(tags: Sequence[Sequence[str]]) -> Any:
    import numpy as np

    index = {r: k for k, r in enumerate(ROLE_TAGS)}
    bad = sorted({g for gs in tags for g in gs} - set(index))
    if bad:
        raise ValueError(f"unknown role tag(s) {bad[:5]}; expected one of {', '.join(ROLE_TAGS[:5])}, ...")
    return np.asarray([index[g] for gs in tags for g in gs], dtype=np.int64)


NEWTON_STEPS = 6
"""At most this many Newton steps polish the L-BFGS solution of a shipped model (:func:`_fit` with ``exact``)."""


def _fit(x: Any, y: Any, c: float, exact: bool = False) -> RoleModel:
    """L-BFGS on the penalised cross-entropy, from zeros, in float64; weights stored as float32.

    With ``exact`` the L-BFGS solution is polished by Newton steps (each solved by conjugate gradients on exact
    Hessian-vector products) until the gradient stops shrinking (about 1e-13, against 1e-3 where L-BFGS stops),
    and the biases are centred (softmax does not change when every class's bias moves by one constant, so that
    direction is otherwise left to rounding). The objective is strictly convex in the weights, so the result is
    its one minimum to within rounding: different CPUs' vector kernels (numpy's dispatch, OpenBLAS's) then give
    the same float32 arrays, where the L-BFGS stopping point alone moved by 1e-5 between them. Cross-validation
    fits skip it (only their predictions are used)."""
    import numpy as np
    from scipy.optimize import minimize

    if c <= 0:
        raise ValueError(f"c must be positive (inverse L2 strength), got {c}")
    n, full = x.shape
    k = len(ROLE_TAGS)
    # a feature that never fires in the training data has gradient w / C, so its optimal weight is exactly 0:
    # optimise over the features that fire only
    used = np.flatnonzero(np.asarray((x != 0).sum(axis=0)).ravel())
    x = x[:, used].tocsr()
    d = len(used)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    xt = x.T.tocsr()

    def log_probs(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = theta[: d * k].reshape(d, k)
        z = x @ w + theta[d * k :]
        z -= z.max(axis=1, keepdims=True)
        return w, z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, logp = log_probs(theta)
        loss = -float((logp * onehot).sum()) + float((w * w).sum()) / (2.0 * c)
        g = np.exp(logp) - onehot
        return loss, np.concatenate([(xt @ g + w / c).ravel(), g.sum(axis=0)])

    res = minimize(
        loss_grad,
        np.zeros(d * k + k),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "gtol": 1e-7, "ftol": 1e-12},
    )
    theta = res.x
    if exact:
        theta = _newton_polish(theta, loss_grad, log_probs, x, xt, d, k, c)
    weights = np.zeros((full, k), dtype=np.float32)
    weights[used] = theta[: d * k].reshape(d, k)
    return RoleModel(weights=weights, bias=theta[d * k :].astype(np.float32), c=float(c))


def _newton_polish(theta, loss_grad, log_probs, x, xt, d: int, k: int, c: float):
    """Newton steps from ``theta`` while the largest gradient entry shrinks; the biases centred at the end."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, cg

    def hessian_times(at: np.ndarray, v: np.ndarray) -> np.ndarray:
        p = np.exp(log_probs(at)[1])
        vw, vb = v[: d * k].reshape(d, k), v[d * k :]
        zv = x @ vw + vb
        r = p * (zv - (p * zv).sum(axis=1, keepdims=True))
        # + mean(vb) on the biases: curvature along the all-equal-biases direction, where the loss is flat and
        # the gradient has no component, so the step is unchanged and the system is not singular
        return np.concatenate([(xt @ r + vw / c).ravel(), r.sum(axis=0) + vb.mean()])

    m = theta.size
    best = theta
    best_grad = np.abs(loss_grad(theta)[1]).max()
    for _ in range(NEWTON_STEPS):
        g = loss_grad(best)[1]
        h = LinearOperator((m, m), matvec=lambda v, at=best: hessian_times(at, v), dtype=np.float64)
        step, _ = cg(h, -g, rtol=1e-10, atol=0.0, maxiter=1000)
        candidate = best + step
        grad = np.abs(loss_grad(candidate)[1]).max()
        if not grad < best_grad:
            break
        best, best_grad = candidate, grad
    best = best.copy()
    best[d * k :] -= best[d * k :].mean()
    return best


def fit_role_model(
    traces: Sequence[Sequence[Sentence | str]], tags: Sequence[Sequence[str]], c: float = 1.0
) -> RoleModel:
    """Fit the learned labeller on labelled traces (each a list of sentences in order, with one tag each).

    Deterministic: L-BFGS from zeros, float64, fixed tolerances, then Newton steps to the objective's minimum
    (:func:`_fit` with ``exact``), so the same inputs give the same bytes, on other CPUs too.
    """
    from scipy import sparse

    if len(traces) != len(tags) or any(len(t) != len(g) for t, g in zip(traces, tags, strict=False)):
        raise ValueError("fit_role_model needs one tag per sentence of every trace")
    y = _targets(tags)
    return _fit(sparse.vstack([role_features(t) for t in traces], format="csr"), y, c, exact=True)


def _predict_rows(model: RoleModel, x: Any) -> Any:
    import numpy as np

    return np.asarray(x @ model.weights.astype(np.float64) + model.bias.astype(np.float64)).argmax(axis=1)


class _Folds:
    """Feature matrices of labelled traces computed once, stacked on demand by problem."""

    def __init__(
        self, groups: Sequence[str], traces: Sequence[Sequence[Sentence | str]], tags: Sequence[Sequence[str]]
    ):
        if not (len(groups) == len(traces) == len(tags)):
            raise ValueError("need one group, one trace and one tag list per trace")
        self.groups = list(groups)
        self.x = [role_features(t) for t in traces]
        self.y = [_targets([g]) for g in tags]

    def stack(self, keep: set[str]) -> tuple[Any, Any]:
        import numpy as np
        from scipy import sparse

        idx = [i for i, g in enumerate(self.groups) if g in keep]
        return sparse.vstack([self.x[i] for i in idx], format="csr"), np.concatenate([self.y[i] for i in idx])

    def choose_c(self, problems: Sequence[str], grid: Sequence[float], folds: int) -> float:
        """The C of ``grid`` with the best accuracy in grouped ``folds``-fold CV over ``problems`` (first on ties)."""
        problems = sorted(problems)
        if len(grid) == 1:
            return float(grid[0])
        best, best_acc = float(grid[0]), -1.0
        for c in grid:
            hits = total = 0
            for f in range(folds):
                held = {p for j, p in enumerate(problems) if j % folds == f}
                model = _fit(*self.stack(set(problems) - held), c)
                x, y = self.stack(held)
                hits += int((_predict_rows(model, x) == y).sum())
                total += len(y)
            if hits / total > best_acc:
                best, best_acc = float(c), hits / total
        return best


def choose_c(
    groups: Sequence[str],
    traces: Sequence[Sequence[Sentence | str]],
    tags: Sequence[Sequence[str]],
    grid: Sequence[float] = C_GRID,
    folds: int = 3,
) -> float:
    """The inverse L2 strength of ``grid`` with the best primary-tag accuracy in ``folds``-fold CV by problem
    (``groups[i]`` names the problem of trace i; all traces of a problem share a fold)."""
    data = _Folds(groups, traces, tags)
    return data.choose_c(sorted(set(groups)), grid, folds)


def leave_problems_out(
    groups: Sequence[str],
    traces: Sequence[Sequence[Sentence | str]],
    tags: Sequence[Sequence[str]],
    grid: Sequence[float] = C_GRID,
    inner_folds: int = 3,
) -> tuple[list[list[str]], dict[str, float]]:
    """Held-out predictions: for each problem, a model fitted on all other problems predicts its traces.

    ``C`` is chosen inside each outer fold by :func:`choose_c` on the training problems only (nested CV), so no
    held-out label touches any choice. Returns the predicted tags per trace and the C chosen per held-out problem.
    """
    data = _Folds(groups, traces, tags)
    problems = sorted(set(groups))
    preds: list[list[str]] = [[] for _ in groups]
    chosen: dict[str, float] = {}
    for held in problems:
        train = [p for p in problems if p != held]
        c = data.choose_c(train, grid, inner_folds)
        chosen[held] = c
        model = _fit(*data.stack(set(train)), c)
        for i, g in enumerate(groups):
            if g == held:
                preds[i] = [ROLE_TAGS[k] for k in _predict_rows(model, data.x[i])]
    return preds, chosen


@dataclass
class LearnedLabeller:
    """Offline labeller trained on the published thought-anchors labels (see :mod:`cot._role_model`).

    Predicts one of the 8 function tags per sentence (never ``unknown``, except for blank sentences). Its
    agreement with the published labels on held-out problems is printed by ``python -m cot.published``.
    """

    weights: str | Path | None = None
    """An ``.npz`` written by ``python -m cot.train_roles``; default: the shipped weights."""
    model: RoleModel | None = field(default=None, repr=False)
    """A fitted model to use instead of loading ``weights``."""

    def label(self, sentences: Sequence[Sentence | str]) -> list[str]:
        model = self.model if self.model is not None else load_role_model(self.weights)
        labels = model.predict(sentences)
        return ["unknown" if not _text(s).strip() else r for s, r in zip(sentences, labels, strict=True)]
