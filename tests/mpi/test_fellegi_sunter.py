"""hutong.mpi.fellegi_sunter: EM recovers parameters of data simulated from a known model;
NULLs, term frequencies, persistence and explanations behave as the model says."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from hutong.mpi.fellegi_sunter import (
    NULL,
    ComparisonSpec,
    Model,
    estimate_u,
    expectation_maximisation,
    population_prior,
    score_matrix,
)

COMPS = (
    ComparisonSpec("name", ("exact", "close", "else"), tf=True),
    ComparisonSpec("birth_date", ("exact", "one_edit", "else")),
    ComparisonSpec("id_number", ("exact", "else")),
    ComparisonSpec("phone", ("exact", "else")),
    ComparisonSpec("address", ("exact", "close", "fuzzy", "else"), tf=True),
)
TRUE_M = [[0.85, 0.10, 0.05], [0.90, 0.07, 0.03], [0.80, 0.20], [0.60, 0.40], [0.50, 0.25, 0.15, 0.10]]
TRUE_U = [[0.01, 0.04, 0.95], [0.002, 0.018, 0.98], [0.001, 0.999], [0.05, 0.95], [0.02, 0.05, 0.13, 0.80]]
TRUE_PRIOR = 0.08


def simulate(n: int, prior: float, seed: int, null_rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Pairs drawn from the latent class model: class, then each level independently given the
    class; then values missing completely at random.  Returns (gammas, is_match)."""
    rng = np.random.default_rng(seed)
    match = rng.random(n) < prior
    g = np.empty((n, len(COMPS)), dtype=np.int8)
    for j, (m, u) in enumerate(zip(TRUE_M, TRUE_U, strict=True)):
        g[match, j] = rng.choice(len(m), size=int(match.sum()), p=m)
        g[~match, j] = rng.choice(len(u), size=int((~match).sum()), p=u)
    g[rng.random(g.shape) < null_rate] = NULL
    return g, match


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return simulate(300_000, TRUE_PRIOR, seed=20240601)


@pytest.fixture(scope="module")
def trained(data: tuple[np.ndarray, np.ndarray]) -> Model:
    return expectation_maximisation(Model.initial(COMPS), data[0], fix_u=False, max_iter=500, tol=1e-8)


def close(a: list[list[float]], b: list[list[float]], tol: float) -> float:
    worst = max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    assert worst < tol, (worst, a, b)
    return worst


# -- estimation ----------------------------------------------------------------------------------


def test_em_recovers_m_u_prior(trained: Model) -> None:
    assert trained.trained["converged"] is True
    assert trained.trained["pairs"] == 300_000
    assert trained.trained["patterns"] < 2_000  # identical rows were collapsed
    assert trained.version == 1
    assert abs(trained.prior - TRUE_PRIOR) < 0.003
    close(trained.m, TRUE_M, 0.01)
    close(trained.u, TRUE_U, 0.005)


def test_em_with_fixed_u_recovers_m_and_prior(data: tuple[np.ndarray, np.ndarray]) -> None:
    start = Model(COMPS, Model.initial(COMPS).m, [list(r) for r in TRUE_U], prior=0.5)
    model = expectation_maximisation(start, data[0], fix_u=True)
    assert model.u == TRUE_U
    assert abs(model.prior - TRUE_PRIOR) < 0.003
    close(model.m, TRUE_M, 0.01)


def test_em_far_from_the_truth_without_iterations(data: tuple[np.ndarray, np.ndarray]) -> None:
    # The recovery above is EM's doing, not the starting point's.
    one = expectation_maximisation(Model.initial(COMPS), data[0], fix_u=False, max_iter=1)
    assert one.trained["iterations"] == 1 and one.trained["converged"] is False
    with pytest.raises(AssertionError):
        close(one.m, TRUE_M, 0.01)


def test_em_is_deterministic_and_order_free(data: tuple[np.ndarray, np.ndarray]) -> None:
    g = data[0][:50_000]
    fixed = datetime(2026, 1, 1, tzinfo=UTC)
    a = expectation_maximisation(Model.initial(COMPS), g, now=lambda: fixed)
    b = expectation_maximisation(Model.initial(COMPS), g[::-1].copy(), now=lambda: fixed)
    assert a.trained == b.trained and a.trained["when"] == "2026-01-01T00:00:00+00:00"
    close(a.m, b.m, 1e-12)
    assert a.prior == pytest.approx(b.prior, abs=1e-12)


def test_em_ignores_nulls(data: tuple[np.ndarray, np.ndarray]) -> None:
    g = data[0].copy()
    # Half the phone comparisons missing, and only among matches: if NULLs counted as
    # disagreement (or anything else), m for phone would move far from 0.6/0.4.
    matches = np.flatnonzero(data[1])
    g[matches[::2], 3] = NULL
    model = expectation_maximisation(Model(COMPS, Model.initial(COMPS).m, TRUE_U, 0.5), g)
    assert abs(model.m[3][0] - TRUE_M[3][0]) < 0.02
    # A comparison never observed keeps its parameters.
    g[:, 4] = NULL
    start = Model.initial(COMPS)
    model = expectation_maximisation(start, g, fix_u=False)
    assert model.m[4] == start.m[4] and model.u[4] == start.u[4]


def test_em_smooths_levels_never_seen() -> None:
    g, _ = simulate(20_000, 0.2, seed=7, null_rate=0.0)
    g[g[:, 2] == 1, 2] = 0  # nobody disagrees on id_number
    model = expectation_maximisation(Model.initial(COMPS), g)
    assert 0 < model.m[2][1] < 1e-3
    assert math.isfinite(model.weights()[2][1]) and model.weights()[2][1] < -5


def test_estimate_u_from_random_pairs() -> None:
    g, _ = simulate(400_000, 0.0, seed=11)
    u = estimate_u(COMPS, g)
    close(u, TRUE_U, 0.002)
    for r in u:
        assert sum(r) == pytest.approx(1.0)
    # Laplace smoothing: a level absent from the sample is small but not 0.
    g[:, 2] = 1
    u = estimate_u(COMPS, g)
    assert 0 < u[2][0] < 1e-5


def test_estimate_u_rejects_bad_shapes_and_levels() -> None:
    with pytest.raises(ValueError, match="shape"):
        estimate_u(COMPS, np.zeros((3, 2), dtype=np.int8))
    bad = np.zeros((3, len(COMPS)), dtype=np.int8)
    bad[0, 2] = 2  # id_number has two levels
    with pytest.raises(ValueError, match="id_number"):
        estimate_u(COMPS, bad)


# -- scoring -------------------------------------------------------------------------------------


def test_weights_monotone_for_trained_model(trained: Model) -> None:
    for c, ws in zip(COMPS, trained.weights(), strict=True):
        assert all(a > b for a, b in zip(ws, ws[1:], strict=False)), (c.name, ws)
    assert trained.weights()[2][0] > 8  # agreeing on an id number is strong evidence
    assert trained.weights()[2][1] < -2


def test_match_weight_is_sum_of_log_ratios(trained: Model) -> None:
    gamma = [0, 1, 1, 0, 2]
    expected = math.log2(trained.prior / (1 - trained.prior)) + sum(
        math.log2(trained.m[i][g] / trained.u[i][g]) for i, g in enumerate(gamma)
    )
    assert trained.match_weight(gamma) == pytest.approx(expected)


def test_null_contributes_nothing(trained: Model) -> None:
    full = trained.match_weight([0, 0, 0, 0, 0])
    without_phone = trained.match_weight([0, 0, 0, NULL, 0])
    assert full - without_phone == pytest.approx(trained.weights()[3][0])
    assert trained.match_weight([NULL] * len(COMPS)) == pytest.approx(
        math.log2(trained.prior / (1 - trained.prior))
    )
    with pytest.raises(ValueError):
        trained.match_weight([0, 0, 0, -2, 0])
    with pytest.raises(ValueError):
        trained.match_weight([0, 0, 0])


def test_score_matrix_equals_match_weight(trained: Model, data: tuple[np.ndarray, np.ndarray]) -> None:
    g = data[0][:2_000]
    w = score_matrix(trained, g)
    assert w.shape == (2_000,)
    for row, wi in zip(g.tolist(), w.tolist(), strict=True):
        assert wi == pytest.approx(trained.match_weight(row), abs=1e-9)
    # And the scores separate the simulated classes.
    assert (w[data[1][:2_000]] > 0).mean() > 0.9
    assert (w[~data[1][:2_000]] < 0).mean() > 0.99


def test_tf_adjustment_direction(trained: Model) -> None:
    gamma = [0, 0, 1, 1, 1]
    plain = trained.match_weight(gamma)
    common = trained.match_weight(gamma, [0.05, None, None, None, None])  # 张伟
    rare = trained.match_weight(gamma, [1e-5, None, None, None, None])
    assert rare > plain > common
    assert common == pytest.approx(plain - trained.weights()[0][0] + math.log2(trained.m[0][0] / 0.05))
    # Only exact agreement, only on comparisons marked tf, only when a frequency is given.
    assert trained.match_weight(gamma, [None] * 5) == pytest.approx(plain)
    assert trained.match_weight([1, 0, 1, 1, 1], [0.05, None, None, None, None]) == pytest.approx(
        trained.match_weight([1, 0, 1, 1, 1])
    )
    assert trained.match_weight(gamma, [None, 0.5, None, None, None]) == pytest.approx(plain)  # no tf


def test_probability() -> None:
    assert Model.probability(0.0) == 0.5
    assert Model.probability(1.0) == pytest.approx(2 / 3)
    assert Model.probability(-1.0) == pytest.approx(1 / 3)
    assert Model.probability(5000.0) == 1.0
    assert Model.probability(-5000.0) == 0.0


def test_explain_sums_to_match_weight(trained: Model) -> None:
    gamma = [0, NULL, 0, 1, 3]
    tf_u = [0.001, None, None, None, 0.2]
    terms = trained.explain(gamma, tf_u)
    assert [t[0] for t in terms] == ["prior"] + [c.name for c in COMPS]
    assert terms[2] == ("birth_date", None, 0.0)
    assert terms[1][1] == "exact" and terms[5][1] == "else"
    assert sum(t[2] for t in terms) == pytest.approx(trained.match_weight(gamma, tf_u))
    assert sum(t[2] for t in trained.explain([1, 2, 1, 0, 0])) == pytest.approx(
        trained.match_weight([1, 2, 1, 0, 0])
    )


# -- persistence and construction -------------------------------------------------------------------


def test_json_round_trip(trained: Model) -> None:
    text = json.dumps(trained.to_json(), ensure_ascii=False)
    back = Model.from_json(json.loads(text))
    assert back == trained
    assert back.weights() == trained.weights()
    assert back.trained["iterations"] == trained.trained["iterations"]
    assert back.comparisons[0].tf is True and back.comparisons[1].tf is False
    with pytest.raises(ValueError, match="format"):
        Model.from_json({"comparisons": []})
    broken = trained.to_json()
    broken["comparisons"][1]["m"] = [1.0]
    with pytest.raises(ValueError, match="birth_date"):
        Model.from_json(broken)


def test_initial_model() -> None:
    model = Model.initial(COMPS)
    assert model.prior == 1e-4
    for ms, us in zip(model.m, model.u, strict=True):
        assert sum(ms) == pytest.approx(1) and sum(us) == pytest.approx(1)
        assert all(a > b for a, b in zip(ms, ms[1:], strict=False))
        assert all(a < b for a, b in zip(us, us[1:], strict=False))
    with pytest.raises(ValueError):
        Model(COMPS, model.m, model.u, prior=0.0)
    with pytest.raises(ValueError):
        ComparisonSpec("x", ("only",))


def test_score_matrix_with_tf_equals_match_weight(trained: Model, data: tuple[np.ndarray, np.ndarray]) -> None:
    g = data[0][:2_000]
    rng = np.random.default_rng(3)
    tf = np.where(rng.random(g.shape) < 0.7, rng.uniform(1e-5, 0.1, g.shape), np.nan)
    w = score_matrix(trained, g, tf_u=tf)
    for row, f, wi in zip(g.tolist(), tf.tolist(), w.tolist(), strict=True):
        tf_u = [None if math.isnan(x) else x for x in f]
        assert wi == pytest.approx(trained.match_weight(row, tf_u), abs=1e-9)
    assert not np.allclose(w, score_matrix(trained, g))  # the adjustment did something
    with pytest.raises(ValueError, match="tf_u"):
        score_matrix(trained, g, tf_u=tf[:10])


def test_population_prior_spreads_expected_matches_over_all_pairs(trained: Model) -> None:
    scaled = population_prior(trained, candidates=300_000, population=25_000_000)
    assert scaled.prior == pytest.approx(trained.prior * 300_000 / 25_000_000)
    assert scaled.m == trained.m and scaled.u == trained.u and scaled.version == trained.version + 1
    assert scaled.trained["prior_among_candidates"] == trained.prior
    assert scaled.trained["iterations"] == trained.trained["iterations"]
    # Every score drops by the change in prior log-odds, and nothing else changes.
    shift = math.log2(scaled.prior / (1 - scaled.prior)) - math.log2(trained.prior / (1 - trained.prior))
    assert shift < -6
    gamma = [0, 1, 0, NULL, 2]
    assert scaled.match_weight(gamma) == pytest.approx(trained.match_weight(gamma) + shift)
    with pytest.raises(ValueError):
        population_prior(trained, candidates=10, population=5)
