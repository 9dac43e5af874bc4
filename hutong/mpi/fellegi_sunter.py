"""Fellegi-Sunter probabilistic record linkage: the scoring model of the master patient index.

A pair of records is compared field by field; each comparison puts the pair at one
*level* (exact, close, ..., else) or at ``NULL`` when either value is missing.  The
vector of levels, gamma, is scored by the log-likelihood ratio

    w(gamma) = sum_i log2( m_i[gamma_i] / u_i[gamma_i] ) + log2( lambda / (1 - lambda) )

where m = P(level | match), u = P(level | non-match) and lambda = P(match)
(Fellegi & Sunter, "A Theory for Record Linkage", JASA 64(328), 1969: the log of
their likelihood ratio m(gamma)/u(gamma), which is a sum over comparisons when they
are conditionally independent given the match status).  NULL comparisons contribute
0: a missing value is evidence neither way.

Parameters are estimated without labels: u from random pairs (almost all non-matches),
m (and lambda) by the EM algorithm on blocked candidate pairs (Winkler, "Using the EM
algorithm for weight computation in the Fellegi-Sunter model of record linkage", 1988;
Jaro, JASA 84(406), 1989).  Agreement on a common value is weaker evidence than on a
rare one: the term-frequency adjustment replaces u for exact agreement by the value's
frequency (Winkler, "Frequency-based matching in Fellegi-Sunter model of record
linkage", 2000; the same device as Splink's tf adjustments).

Everything here is deterministic: callers pass their own samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "NULL",
    "ComparisonSpec",
    "Model",
    "estimate_u",
    "expectation_maximisation",
    "population_prior",
    "score_matrix",
]

NULL: int = -1
"""Comparison level for "either value missing": contributes weight 0."""

# m and u are floored before taking logs so that a level never seen (probability 0)
# gives a large finite weight instead of -inf/+inf.  Estimated values never go this
# low (estimate_u and EM smooth with pseudo-counts), so the floor only guards
# hand-written models.
_FLOOR = 1e-12
# lambda is kept strictly inside (0, 1) so that its log-odds is finite.
_PRIOR_EPS = 1e-12
_FORMAT = "hutong.fellegi_sunter/1"


@dataclass(frozen=True, slots=True)
class ComparisonSpec:
    """One field comparison: its levels, most similar first; the last is "else" (disagree)."""

    name: str
    levels: tuple[str, ...]
    tf: bool = False  # term-frequency adjustment applies to level 0 (exact agreement)

    def __post_init__(self) -> None:
        if len(self.levels) < 2:
            raise ValueError(f"comparison {self.name!r} needs at least two levels (agree, else)")


def _log_odds(p: float) -> float:
    p = min(max(p, _PRIOR_EPS), 1.0 - _PRIOR_EPS)
    return math.log2(p / (1.0 - p))


def _check_shape(comparisons: Sequence[ComparisonSpec], rows: list[list[float]], what: str) -> None:
    if len(rows) != len(comparisons):
        raise ValueError(f"{what} has {len(rows)} comparisons, expected {len(comparisons)}")
    for c, r in zip(comparisons, rows, strict=True):
        if len(r) != len(c.levels):
            raise ValueError(f"{what}[{c.name!r}] has {len(r)} levels, expected {len(c.levels)}")


@dataclass
class Model:
    """A Fellegi-Sunter model: comparisons with m and u per level, and the prior lambda.

    Treat an instance as a value: weights are cached on first use, so change m/u by
    building a new Model (``dataclasses.replace``), as ``expectation_maximisation`` does.

    ``prior`` is lambda, P(match) for a random pair.  EM on blocked candidate pairs
    estimates it among *those* pairs; ``population_prior`` turns that into the random-pair
    value scoring needs.  ``trained`` records where the parameters came from.
    """

    comparisons: tuple[ComparisonSpec, ...]
    m: list[list[float]]
    u: list[list[float]]
    prior: float
    version: int = 0
    trained: dict[str, Any] = field(default_factory=dict)
    _weights: list[list[float]] | None = field(default=None, init=False, repr=False, compare=False)
    _table: npt.NDArray[np.float64] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.comparisons = tuple(self.comparisons)
        _check_shape(self.comparisons, self.m, "m")
        _check_shape(self.comparisons, self.u, "u")
        if not 0.0 < self.prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {self.prior!r}")

    # -- scoring ---------------------------------------------------------------------

    def weights(self) -> list[list[float]]:
        """log2(m/u) per comparison and level (Fellegi & Sunter 1969, per comparison, in log form)."""
        if self._weights is None:
            self._weights = [
                [math.log2(max(mi, _FLOOR) / max(ui, _FLOOR)) for mi, ui in zip(ms, us, strict=True)]
                for ms, us in zip(self.m, self.u, strict=True)
            ]
        return self._weights

    def prior_weight(self) -> float:
        """log2(lambda / (1 - lambda)): the match weight of a pair with every comparison NULL."""
        return _log_odds(self.prior)

    def _level_weight(self, i: int, level: int, tf_u: Sequence[float | None] | None) -> float:
        if level == 0 and tf_u is not None and self.comparisons[i].tf:
            f = tf_u[i]
            if f is not None:
                # Winkler (2000): u for agreeing on this value is the chance that a random
                # pair shares it, i.e. its frequency; m is unchanged.
                return math.log2(max(self.m[i][0], _FLOOR) / max(f, _FLOOR))
        return self.weights()[i][level]

    def _check_gamma(self, gamma: Sequence[int], tf_u: Sequence[float | None] | None) -> None:
        if len(gamma) != len(self.comparisons):
            raise ValueError(f"gamma has {len(gamma)} levels, expected {len(self.comparisons)}")
        if tf_u is not None and len(tf_u) != len(self.comparisons):
            raise ValueError(f"tf_u has {len(tf_u)} entries, expected {len(self.comparisons)}")
        for c, g in zip(self.comparisons, gamma, strict=True):
            if g != NULL and not 0 <= g < len(c.levels):
                raise ValueError(f"level {g} out of range for comparison {c.name!r}")

    def match_weight(self, gamma: Sequence[int], tf_u: Sequence[float | None] | None = None) -> float:
        """Sum of level weights over non-NULL comparisons + log2(prior / (1 - prior)).

        ``tf_u[i]``, when given and ``gamma[i] == 0`` and ``comparisons[i].tf``, replaces u
        for that exact agreement: the value's frequency among records (agreeing on 张伟 is
        weaker evidence than on a rare name).
        """
        self._check_gamma(gamma, tf_u)
        w = self.prior_weight()
        for i, g in enumerate(gamma):
            if g != NULL:
                w += self._level_weight(i, g, tf_u)
        return w

    @staticmethod
    def probability(weight: float) -> float:
        """Match probability of a match weight: 2**w / (1 + 2**w), without overflow."""
        if weight >= 0:
            return 1.0 / (1.0 + math.pow(2.0, -weight))
        z = math.pow(2.0, weight)
        return z / (1.0 + z)

    def explain(
        self, gamma: Sequence[int], tf_u: Sequence[float | None] | None = None
    ) -> list[tuple[str, str | None, float]]:
        """The terms of ``match_weight``: ("prior", "λ=…", log-odds) first, then per comparison
        (name, level label or None for NULL, weight).  The weights sum to ``match_weight``."""
        self._check_gamma(gamma, tf_u)
        out: list[tuple[str, str | None, float]] = [("prior", f"λ={self.prior:.6g}", self.prior_weight())]
        for i, (c, g) in enumerate(zip(self.comparisons, gamma, strict=True)):
            if g == NULL:
                out.append((c.name, None, 0.0))
            else:
                out.append((c.name, c.levels[g], self._level_weight(i, g, tf_u)))
        return out

    def weight_table(self) -> npt.NDArray[np.float64]:
        """Weights as an array (comparisons, max levels + 1); the last column is 0, so that
        indexing with NULL (-1) picks it: the vectorised form of "NULL contributes 0"."""
        if self._table is None:
            width = max(len(c.levels) for c in self.comparisons) + 1
            t = np.zeros((len(self.comparisons), width), dtype=np.float64)
            for i, ws in enumerate(self.weights()):
                t[i, : len(ws)] = ws
            self._table = t
        return self._table

    # -- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": self.version,
            "prior": self.prior,
            "comparisons": [
                {"name": c.name, "levels": list(c.levels), "tf": c.tf, "m": list(mi), "u": list(ui)}
                for c, mi, ui in zip(self.comparisons, self.m, self.u, strict=True)
            ],
            "trained": dict(self.trained),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a {_FORMAT} model: format={data.get('format')!r}")
        comps = tuple(
            ComparisonSpec(str(c["name"]), tuple(str(x) for x in c["levels"]), bool(c.get("tf", False)))
            for c in data["comparisons"]
        )
        return cls(
            comparisons=comps,
            m=[[float(x) for x in c["m"]] for c in data["comparisons"]],
            u=[[float(x) for x in c["u"]] for c in data["comparisons"]],
            prior=float(data["prior"]),
            version=int(data.get("version", 0)),
            trained=dict(data.get("trained") or {}),
        )

    @classmethod
    def initial(cls, comparisons: Sequence[ComparisonSpec], *, prior: float = 1e-4) -> Model:
        """Starting values for EM: m falls and u rises by a factor of 10 per level, so
        every level's weight is below the one before it (agreement is evidence for a match)."""
        m: list[list[float]] = []
        u: list[list[float]] = []
        for c in comparisons:
            n = len(c.levels)
            mm = [0.1**k for k in range(n)]
            uu = [0.1 ** (n - 1 - k) for k in range(n)]
            m.append([x / sum(mm) for x in mm])
            u.append([x / sum(uu) for x in uu])
        return cls(tuple(comparisons), m, u, prior, trained={"method": "initial"})


# -- estimation --------------------------------------------------------------------------


def _as_gammas(comparisons: Sequence[ComparisonSpec], gammas: npt.NDArray[Any]) -> npt.NDArray[np.int8]:
    g = np.asarray(gammas)
    if g.ndim != 2 or g.shape[1] != len(comparisons):
        raise ValueError(f"gammas must have shape (pairs, {len(comparisons)}), got {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"gammas must be integers, got {g.dtype}")
    if g.shape[0]:
        lo = g.min(axis=0)
        hi = g.max(axis=0)
        for c, a, b in zip(comparisons, lo.tolist(), hi.tolist(), strict=True):
            if a < NULL or b >= len(c.levels):
                raise ValueError(f"levels of {c.name!r} must be in [{NULL}, {len(c.levels) - 1}], got {a}..{b}")
    return g.astype(np.int8, copy=False)


def _patterns(
    comparisons: Sequence[ComparisonSpec], g: npt.NDArray[np.int8]
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    """Distinct gamma rows and their counts.

    EM only needs each distinct pattern once with its count.  Rows are packed into one
    int64 (mixed radix, level + 1 per digit) so that np.unique sorts integers, not rows:
    several times faster than np.unique(axis=0) on millions of pairs.
    """
    radices = [len(c.levels) + 1 for c in comparisons]
    if math.prod(radices) >= 2**62:
        uniq, counts = np.unique(g, axis=0, return_counts=True)
        return uniq.astype(np.int8), counts.astype(np.float64)
    code = np.zeros(g.shape[0], dtype=np.int64)
    for j, r in enumerate(radices):
        code = code * r + (g[:, j].astype(np.int64) + 1)
    ucode, counts = np.unique(code, return_counts=True)
    uniq = np.empty((ucode.shape[0], len(radices)), dtype=np.int8)
    for j in range(len(radices) - 1, -1, -1):
        uniq[:, j] = (ucode % radices[j]) - 1
        ucode = ucode // radices[j]
    return uniq, counts.astype(np.float64)


def estimate_u(comparisons: Sequence[ComparisonSpec], gammas: npt.NDArray[Any]) -> list[list[float]]:
    """u from comparison vectors of RANDOM pairs (almost all non-matches).

    Add-one (Laplace) smoothing per level keeps a level never seen among the sample, such
    as agreeing on a unique identifier, at a small positive u (about 1 / sample size)
    instead of 0.  ``gammas``: int array (n_pairs, n_comparisons), NULL = -1, ignored.
    """
    g = _as_gammas(comparisons, gammas)
    out: list[list[float]] = []
    for j, c in enumerate(comparisons):
        col = g[:, j]
        counts = np.bincount(col[col != NULL].astype(np.intp), minlength=len(c.levels)).astype(np.float64)
        out.append(((counts + 1.0) / (counts.sum() + len(c.levels))).tolist())
    return out


def _log_table(p: list[list[float]]) -> npt.NDArray[np.float64]:
    width = max(len(r) for r in p) + 1
    t = np.zeros((len(p), width), dtype=np.float64)  # last column: NULL contributes log 1 = 0
    for i, r in enumerate(p):
        t[i, : len(r)] = np.log(np.maximum(np.asarray(r, dtype=np.float64), _FLOOR))
    return t


def _utcnow() -> datetime:
    return datetime.now(UTC)


def expectation_maximisation(
    model: Model,
    gammas: npt.NDArray[Any],
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    fix_u: bool = True,
    pseudo_count: float = 1.0,
    now: Callable[[], datetime] = _utcnow,
) -> Model:
    """Estimate m (and lambda, and u unless ``fix_u``) by EM from BLOCKED candidate pairs.

    The latent class model of Winkler (1988) / Jaro (1989): each pair is a match with
    probability lambda, and given its class the comparisons are independent (the
    conditional independence of Fellegi & Sunter 1969).  E-step: P(match | gamma) for every
    distinct gamma row; M-step: lambda, m (and u) as posterior-weighted level frequencies.  NULLs
    are left out of the comparison they occur in.  ``pseudo_count`` is added to every
    level's expected count (a Dirichlet prior: the M-step gives the posterior mode), so
    that a level never seen among the matches keeps a finite weight.
    A comparison with no non-NULL value in ``gammas`` keeps its m and u.

    The returned ``prior`` is lambda among the pairs given, i.e. among blocked candidates:
    pass the model through ``population_prior`` before scoring with u from random pairs.

    Identical rows are collapsed with their counts, so millions of pairs take well under a
    second.  Stops when no parameter moves more than ``tol``; returns a new Model whose
    ``version`` is one more and whose ``trained`` records pairs, iterations, convergence.
    """
    comps = model.comparisons
    g = _as_gammas(comps, gammas)
    if g.shape[0] == 0:
        raise ValueError("no pairs to train on")
    uniq, counts = _patterns(comps, g)
    k = len(comps)
    cols = np.arange(k)
    valid = uniq != NULL
    idx = [uniq[valid[:, j], j].astype(np.intp) for j in range(k)]
    has_data = [bool(valid[:, j].any()) for j in range(k)]
    total = float(counts.sum())

    m = [list(r) for r in model.m]
    u = [list(r) for r in model.u]
    lam = min(max(model.prior, _PRIOR_EPS), 1 - _PRIOR_EPS)
    converged = False
    iterations = 0
    log_lik = float("nan")
    while iterations < max_iter:
        iterations += 1
        # E-step, in log space: products of many small m, u underflow.
        lm = _log_table(m)[cols, uniq].sum(axis=1) + math.log(lam)
        lu = _log_table(u)[cols, uniq].sum(axis=1) + math.log(1 - lam)
        hi = np.maximum(lm, lu)
        log_px = hi + np.log(np.exp(lm - hi) + np.exp(lu - hi))
        log_lik = float((counts * log_px).sum())
        post = np.exp(lm - log_px)  # P(match | gamma)
        wm = counts * post
        wu = counts - wm

        # M-step.
        new_lam = min(max(float(wm.sum()) / total, _PRIOR_EPS), 1 - _PRIOR_EPS)
        new_m = [list(r) for r in m]
        new_u = [list(r) for r in u]
        for j, c in enumerate(comps):
            if not has_data[j]:
                continue
            n = len(c.levels)
            sm = np.bincount(idx[j], weights=wm[valid[:, j]], minlength=n) + pseudo_count
            new_m[j] = (sm / sm.sum()).tolist()
            if not fix_u:
                su = np.bincount(idx[j], weights=wu[valid[:, j]], minlength=n) + pseudo_count
                new_u[j] = (su / su.sum()).tolist()

        delta = abs(new_lam - lam)
        for a, b in ((m, new_m), (u, new_u)):
            for ra, rb in zip(a, b, strict=True):
                delta = max(delta, max(abs(x - y) for x, y in zip(ra, rb, strict=True)))
        m, u, lam = new_m, new_u, new_lam
        if delta < tol:
            converged = True
            break

    trained = {
        "method": "em",
        "pairs": int(g.shape[0]),
        "patterns": int(uniq.shape[0]),
        "iterations": iterations,
        "converged": converged,
        "fix_u": fix_u,
        "pseudo_count": pseudo_count,
        "log_likelihood": log_lik,
        "when": now().isoformat(timespec="seconds"),
    }
    return Model(comps, m, u, lam, version=model.version + 1, trained=trained)


def population_prior(model: Model, *, candidates: int, population: int) -> Model:
    """The model with lambda for a random pair, from lambda among ``candidates`` blocked pairs.

    Matches are concentrated among blocked candidates, so EM there finds a large lambda.  But
    with u from random pairs every agreement on a blocking key already earns its full
    log2(m/u), so scoring candidates with the candidates' lambda counts the blocking evidence
    twice.  When blocking depends only on what the comparison vector records and misses
    (almost) no match, P(match | gamma, blocked) = P(match | gamma), whose prior is the
    random-pair one: the lambda * candidates expected matches spread over all ``population``
    pairs (for linking files A and B, |A| * |B|; for deduplicating N records, N(N-1)/2).
    Returns a new Model, version + 1, with the scaling recorded in ``trained``.
    """
    if not 0 < candidates <= population:
        raise ValueError(f"need 0 < candidates <= population, got {candidates}, {population}")
    expected = model.prior * candidates
    trained = dict(model.trained)
    trained["prior_among_candidates"] = model.prior
    trained["candidates"] = candidates
    trained["population"] = population
    prior = min(max(expected / population, _PRIOR_EPS), 1 - _PRIOR_EPS)
    return Model(model.comparisons, [list(r) for r in model.m], [list(r) for r in model.u], prior,
                 version=model.version + 1, trained=trained)


def score_matrix(
    model: Model, gammas: npt.NDArray[Any], *, tf_u: npt.NDArray[np.floating[Any]] | None = None
) -> npt.NDArray[np.float64]:
    """Match weights of many comparison vectors at once: ``Model.match_weight`` row by row.

    ``tf_u``, optional, shaped like ``gammas`` with NaN where there is no frequency, is the
    vectorised term-frequency adjustment (Winkler 2000): on a tf comparison at level 0 it
    replaces u by the value's frequency.  Without it, no tf adjustment is made.
    """
    g = _as_gammas(model.comparisons, gammas)
    t = model.weight_table()
    out: npt.NDArray[np.float64] = t[np.arange(len(model.comparisons)), g].sum(axis=1) + model.prior_weight()
    if tf_u is not None:
        f = np.asarray(tf_u, dtype=np.float64)
        if f.shape != g.shape:
            raise ValueError(f"tf_u must have the shape of gammas {g.shape}, got {f.shape}")
        for j, c in enumerate(model.comparisons):
            if not c.tf:
                continue
            hit = (g[:, j] == 0) & ~np.isnan(f[:, j])
            log_m0 = math.log2(max(model.m[j][0], _FLOOR))
            out[hit] += log_m0 - np.log2(np.maximum(f[hit, j], _FLOOR)) - model.weights()[j][0]
    return out
