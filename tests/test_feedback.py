"""Tests of rlhfkit.feedback: the frozen records and the B-Pref synthetic teachers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.feedback import TEACHERS, Comparison, Fragment, Outcome, Ranking, SyntheticTeacher, Teacher, make_teacher


def frag(rewards, obs_dim: int = 2, discrete: bool = True) -> Fragment:
    """A fragment with the given true rewards and zero observations/actions."""
    T = len(rewards)
    acts = np.zeros(T, dtype=np.int64) if discrete else np.zeros((T, 1), dtype=np.float32)
    return Fragment(obs=np.zeros((T, obs_dim)), acts=acts, true_rewards=np.asarray(rewards, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def fragment_arrays(draw):
    T = draw(st.integers(1, 12))
    d = draw(st.integers(1, 5))
    obs = np.array(draw(st.lists(finite, min_size=T * d, max_size=T * d)), dtype=np.float64).reshape(T, d)
    if draw(st.booleans()):
        acts = np.array(draw(st.lists(st.integers(0, 5), min_size=T, max_size=T)), dtype=np.int32)
    else:
        a = draw(st.integers(1, 3))
        acts = np.array(draw(st.lists(finite, min_size=T * a, max_size=T * a)), dtype=np.float64).reshape(T, a)
    rew = np.array(draw(st.lists(finite, min_size=T, max_size=T)), dtype=np.float64)
    return obs, acts, rew


@settings(max_examples=60, deadline=None)
@given(fragment_arrays())
def test_fragment_accepts_valid_arrays_and_freezes_copies(arrays):
    obs, acts, rew = arrays
    f = Fragment(obs, acts, rew)
    T = obs.shape[0]
    assert len(f) == T
    assert f.obs.shape == obs.shape and f.obs.dtype == np.float32
    assert f.acts.shape == acts.shape
    assert f.acts.dtype == (np.int64 if acts.ndim == 1 else np.float32)
    assert f.true_rewards.shape == (T,) and f.true_rewards.dtype == np.float32
    np.testing.assert_array_equal(f.obs, obs.astype(np.float32))
    np.testing.assert_array_equal(f.acts, acts)
    assert f.true_return == pytest.approx(float(rew.astype(np.float32).sum(dtype=np.float32)), rel=1e-5, abs=1e-3)
    for arr in (f.obs, f.acts, f.true_rewards):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1
    # the fragment owns a copy: changing the caller's arrays afterwards changes nothing
    before = f.obs.copy()
    obs += 1.0
    np.testing.assert_array_equal(f.obs, before)
    with pytest.raises(AttributeError):
        f.obs = obs  # type: ignore[misc]  # frozen dataclass


@settings(max_examples=40, deadline=None)
@given(fragment_arrays(), st.sampled_from(["obs", "acts", "true_rewards"]), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_fragment_rejects_non_finite_values(arrays, field, bad):
    obs, acts, rew = (x.astype(np.float64) for x in arrays)
    target = {"obs": obs, "acts": acts, "true_rewards": rew}[field]
    target.flat[0] = bad
    with pytest.raises(ValueError, match=rf"Fragment\.{field} contains NaN or infinite"):
        Fragment(obs, acts, rew)


@pytest.mark.parametrize(
    "obs,acts,rew,match",
    [
        (np.zeros(3), np.zeros(3), np.zeros(3), r"obs must be \(T, obs_dim\), got shape \(3,\)"),
        (np.zeros((2, 3, 1)), np.zeros(2), np.zeros(2), r"obs must be \(T, obs_dim\)"),
        (np.zeros((0, 3)), np.zeros(0), np.zeros(0), r"at least one step"),
        (np.zeros((3, 2)), np.zeros(4), np.zeros(3), r"acts must be \(T,\) or \(T, act_dim\) with T=3, got shape \(4,\)"),
        (np.zeros((3, 2)), np.zeros((3, 1, 1)), np.zeros(3), r"acts must be"),
        (np.zeros((3, 2)), np.zeros(3), np.zeros(2), r"true_rewards must be \(T,\) with T=3, got shape \(2,\)"),
        (np.zeros((3, 2)), np.zeros(3), np.zeros((3, 1)), r"true_rewards must be \(T,\)"),
    ],
)
def test_fragment_shape_errors(obs, acts, rew, match):
    with pytest.raises(ValueError, match=match):
        Fragment(obs, acts, rew)


def test_comparison_rejects_mismatched_fragments_and_coerces_outcome():
    a = frag([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="equal shapes"):
        Comparison(a, frag([1.0, 2.0]), Outcome.LEFT)  # different T
    with pytest.raises(ValueError, match="equal shapes"):
        Comparison(a, frag([1.0, 2.0, 3.0], obs_dim=3), Outcome.LEFT)  # different obs_dim
    with pytest.raises(ValueError, match="equal shapes"):
        Comparison(a, frag([1.0, 2.0, 3.0], discrete=False), Outcome.LEFT)  # (T,) vs (T, 1) actions
    c = Comparison(a, frag([0.0, 0.0, 0.0]), 1)  # type: ignore[arg-type]
    assert c.outcome is Outcome.RIGHT
    with pytest.raises(ValueError):
        Comparison(a, a, 7)  # type: ignore[arg-type]  # not an Outcome


def test_ranking_requires_a_permutation_of_at_least_two():
    fs = (frag([1.0]), frag([2.0]), frag([3.0]))
    r = Ranking(fs, [2, 0, 1])
    assert r.order.tolist() == [2, 0, 1] and r.order.dtype == np.int64
    assert isinstance(r.fragments, tuple) and len(r.fragments) == 3
    with pytest.raises(ValueError, match="read-only"):
        r.order[0] = 0
    for bad in ([0, 0, 1], [0, 1], [0, 1, 3], [1, 2, 3]):
        with pytest.raises(ValueError, match=r"permutation of 0\.\.2"):
            Ranking(fs, bad)
    with pytest.raises(ValueError, match="at least 2 fragments"):
        Ranking(fs[:1], [0])
    with pytest.raises(ValueError, match="permutation"):
        Ranking(fs)  # the default empty order is not a permutation


def test_outcome_target():
    assert Outcome.LEFT.target == 1.0
    assert Outcome.RIGHT.target == 0.0
    assert Outcome.TIE.target == 0.5
    assert Outcome.SKIP.target is None
    assert Outcome.BOTH_BAD.target == 0.5  # a person's "both bad" trains as a tie
    assert Outcome.CANT_TELL.target is None  # incomparable: not used for training


# --------------------------------------------------------------------------------------------
# Teachers
# --------------------------------------------------------------------------------------------


def _pool_pairs(rewards: np.ndarray, n_pairs: int, seed: int) -> tuple[list, np.ndarray]:
    """Single-step fragments with the given rewards, and ``n_pairs`` random pairs of distinct ones.

    Returns the pairs and ``ΔR = R_left - R_right`` (float64 of the float32-stored rewards).
    """
    pool = [frag([r]) for r in rewards]
    rng = np.random.default_rng(seed)
    i = rng.integers(len(pool), size=n_pairs)
    j = (i + rng.integers(1, len(pool), size=n_pairs)) % len(pool)  # j != i
    stored = rewards.astype(np.float32).astype(np.float64)
    return [(pool[a], pool[b]) for a, b in zip(i, j)], stored[i] - stored[j]


def test_teachers_satisfy_the_protocol_and_answer_nothing_for_no_pairs():
    t = make_teacher("oracle")
    assert isinstance(t, Teacher)
    assert t.name == "oracle"
    assert t.label([]) == []


def test_oracle_is_deterministic_and_ties_exactly_on_equal_returns():
    # [1, 2, 3] and [3, 2, 1] both return exactly 6; [1, 2, 3.0001] returns a little more.
    a, b, c = frag([1.0, 2.0, 3.0]), frag([3.0, 2.0, 1.0]), frag([1.0, 2.0, 3.0001])
    d = frag([-5.0, 0.0, 0.0])
    pairs = [(a, b), (b, a), (a, c), (c, a), (a, d), (d, d)]
    expected = [Outcome.TIE, Outcome.TIE, Outcome.RIGHT, Outcome.LEFT, Outcome.LEFT, Outcome.TIE]
    for seed in (0, 1, 2):
        t = make_teacher("oracle", seed=seed)
        assert t.label(pairs) == expected
        assert t.label(pairs) == expected  # no hidden randomness between calls


def test_mistake_teacher_flips_at_rate_epsilon():
    # 10 000 queries with decided returns; each answer is flipped independently with p = 0.1, so
    # the flip rate has sd sqrt(0.1 · 0.9 / 10 000) = 0.003; 4 sd gives a false failure ≈ 6e-5.
    rewards = np.linspace(-3.0, 3.0, 200)
    pairs, diff = _pool_pairs(rewards, 10_000, seed=1)
    assert np.all(np.abs(diff) > 0)
    t = make_teacher("mistake", seed=3)
    assert t.epsilon == 0.1
    got = np.array([int(o) for o in t.label(pairs)])
    truth = np.where(diff > 0, int(Outcome.LEFT), int(Outcome.RIGHT))
    assert set(np.unique(got)) <= {int(Outcome.LEFT), int(Outcome.RIGHT)}
    rate = float(np.mean(got != truth))
    assert abs(rate - 0.1) < 4 * math.sqrt(0.09 / 10_000)
    # same seed → same answers; another seed → other answers
    assert make_teacher("mistake", seed=3).label(pairs) == t.__class__(epsilon=0.1, seed=3).label(pairs)
    assert make_teacher("mistake", seed=4).label(pairs) != make_teacher("mistake", seed=3).label(pairs)


def test_stochastic_teacher_matches_bradley_terry_in_bins():
    # P[left] = σ(β ΔR) with β = 1. ΔR spread over [-4, 4]; in each of 8 bins the observed
    # fraction of LEFT answers is compared with the bin's mean σ(β ΔR_i). The observed fraction's
    # sd is sqrt(Σ p_i(1-p_i)) / n ≤ 0.5 / sqrt(n) with n ≈ 2 500 per bin (≈ 0.01): 4 sd per bin,
    # 8 bins, false failure ≈ 5e-4. A teacher with β = 2 would miss by up to 0.11 in the bins
    # near 0, i.e. > 10 sd.
    rewards = np.random.default_rng(0).uniform(-2.0, 2.0, size=400)
    pairs, diff = _pool_pairs(rewards, 20_000, seed=2)
    t = SyntheticTeacher(beta=1.0, seed=5, name="stochastic")
    left = np.array([o is Outcome.LEFT for o in t.label(pairs)])
    p = 1.0 / (1.0 + np.exp(-diff))
    edges = np.linspace(-4.0, 4.0, 9)
    checked = 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (diff >= lo) & (diff < hi)
        n = int(in_bin.sum())
        if n < 200:
            continue
        sd = math.sqrt(float(np.sum(p[in_bin] * (1 - p[in_bin])))) / n
        assert abs(left[in_bin].mean() - p[in_bin].mean()) < 4 * sd + 1e-9, (lo, hi)
        checked += 1
    assert checked >= 6
    # make_teacher's stochastic kind scales β to the returns: β = 10 / return_scale
    assert make_teacher("stochastic", return_scale=5.0).beta == pytest.approx(2.0)
    assert make_teacher("stochastic", return_scale=5.0, beta=0.3).beta == 0.3


def test_myopic_teacher_weights_recent_steps_and_can_disagree_with_oracle():
    # γ = 0.5, T = 3: weights γ^(T-1-t) = [0.25, 0.5, 1].
    # left  [4, 0, 0]: oracle 4, myopic 4 · 0.25 = 1
    # right [0, 0, 2]: oracle 2, myopic 2 · 1    = 2  → oracle says LEFT, myopic says RIGHT
    left, right = frag([4.0, 0.0, 0.0]), frag([0.0, 0.0, 2.0])
    myopic = SyntheticTeacher(gamma=0.5, name="myopic")
    assert myopic.returns(left) == 1.0 and myopic.returns(right) == 2.0
    assert myopic.label([(left, right)]) == [Outcome.RIGHT]
    assert make_teacher("oracle").label([(left, right)]) == [Outcome.LEFT]
    # the preset: γ = 0.9, so [1, 1, 1] returns 0.81 + 0.9 + 1 = 2.71
    assert make_teacher("myopic").returns(frag([1.0, 1.0, 1.0])) == pytest.approx(2.71)


def test_skip_threshold_skips_when_both_returns_are_low():
    t = make_teacher("skip", return_scale=2.0)  # skip_threshold = -2
    assert t.skip_threshold == -2.0
    low1, low2, high = frag([-3.0]), frag([-2.5]), frag([-1.0])
    both_low_tie = frag([-3.0])
    out = t.label([(low1, low2), (low1, high), (high, low2), (low1, both_low_tie)])
    assert out == [Outcome.SKIP, Outcome.RIGHT, Outcome.LEFT, Outcome.SKIP]


def test_equal_threshold_answers_tie_within_it():
    t = make_teacher("equal", return_scale=2.0)  # equal_threshold = 0.1 · 2 = 0.2
    assert t.equal_threshold == pytest.approx(0.2)
    base = frag([1.0])
    out = t.label([(base, frag([1.125])), (frag([1.125]), base), (base, frag([1.25])), (frag([1.25]), base)])
    # |ΔR| = 0.125 ≤ 0.2 → tie; |ΔR| = 0.25 > 0.2 → decided
    assert out == [Outcome.TIE, Outcome.TIE, Outcome.RIGHT, Outcome.LEFT]
    # a stochastic teacher with an equal threshold ties the same way
    noisy = SyntheticTeacher(beta=1.0, equal_threshold=0.2)
    assert noisy.label([(base, frag([1.125]))] * 20) == [Outcome.TIE] * 20


def test_make_teacher_errors_and_overrides():
    with pytest.raises(ValueError, match="unknown teacher 'grumpy'; choose one of oracle, stochastic, mistake, skip, equal, myopic"):
        make_teacher("grumpy")
    assert set(TEACHERS) == {"oracle", "stochastic", "mistake", "skip", "equal", "myopic"}
    with pytest.raises(ValueError, match="return_scale must be > 0"):
        make_teacher("equal", return_scale=0.0)
    t = make_teacher("oracle", seed=9, epsilon=0.25, gamma=None)
    assert (t.epsilon, t.gamma, t.seed, t.name) == (0.25, 1.0, 9, "oracle")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beta": 0.0}, "beta must be > 0"),
        ({"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ({"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
        ({"epsilon": 1.2}, r"epsilon must be in \[0, 1\]"),
        ({"equal_threshold": -0.1}, "equal_threshold must be >= 0"),
    ],
)
def test_synthetic_teacher_parameter_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticTeacher(**kwargs)
