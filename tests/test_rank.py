"""Tests for rlhfkit.rank and `rlhf rank`: recovery of known strengths, hand-checked
probabilities, the data readers' errors, and the command line end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rlhfkit.choice import LEFT, RIGHT, TIE
from rlhfkit.cli.rank import app
from rlhfkit.rank import (
    Comparisons,
    RankConfig,
    RankDataError,
    Rankings,
    Ratings,
    covariate_features,
    fit_bradley_terry,
    fit_plackett_luce,
    read_comparisons,
    read_rankings,
    recency_weights,
    simulate_season,
    spearman,
)

DATA = Path(__file__).parent / "data"
ATP_2022, ATP_2023 = DATA / "atp_sample_2022.csv", DATA / "atp_sample_2023.csv"
TINY = 1e-6  # a prior precision small enough that MAP ≈ maximum likelihood


def _pairs(*games: tuple[str, str]) -> Comparisons:
    return Comparisons.from_names([w for w, _ in games], [l for _, l in games])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------
# Hand-checked fits
# ----------------------------------------------------------------------------------------------


def test_two_items_maximum_likelihood_is_the_win_fraction():
    # A beat B 3 times of 4. With two items the model is saturated: σ(s_A - s_B) = 3/4,
    # so s_A - s_B = log 3 = 1.0986…
    r = fit_bradley_terry(_pairs(("A", "B"), ("A", "B"), ("A", "B"), ("B", "A")), RankConfig(prior_precision=TINY))
    assert r.predict_proba("A", "B")[0] == pytest.approx(0.75, abs=1e-4)
    assert r.strengths[0] - r.strengths[1] == pytest.approx(math.log(3), abs=1e-3)
    assert r.strengths.sum() == pytest.approx(0.0, abs=1e-6)  # the prior centres them


def test_prior_shrinks_towards_even_odds_by_the_stationarity_equation():
    # With prior λ, s_A = -s_B = d/2 and the MAP solves 4σ(d) - 3 + λ d / 2 = 0 (derivative of
    # -3 log σ(d) - log σ(-d) + λ d²/4). Solve by bisection and compare.
    lam = 2.0
    lo, hi = 0.0, 5.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 4 / (1 + math.exp(-mid)) - 3 + lam * mid / 2 < 0 else (lo, mid)
    r = fit_bradley_terry(_pairs(("A", "B"), ("A", "B"), ("A", "B"), ("B", "A")), RankConfig(prior_precision=lam))
    assert r.strengths[0] - r.strengths[1] == pytest.approx(lo, abs=1e-5)
    assert 0.5 < r.predict_proba("A", "B")[0] < 0.75


def test_davidson_fit_reproduces_the_outcome_frequencies():
    # A-B: A won 2, B won 1, tied 1. Two parameters (d, ν) for three frequencies summing to 1:
    # saturated, so P = (2/4, 1/4, 1/4): π_A/π_B = 2 → d = log 2; ν√2 = P_tie/P_B = 1 → ν = 1/√2.
    c = Comparisons.from_names(["A", "A", "B", "A"], ["B", "B", "A", "B"], ties=[False, False, False, True])
    r = fit_bradley_terry(c, RankConfig(prior_precision=TINY))
    assert r.nu == pytest.approx(1 / math.sqrt(2), abs=1e-3)
    assert r.predict_outcomes("A", "B")[0] == pytest.approx([0.5, 0.25, 0.25], abs=1e-4)
    assert r.ties.tolist() == [1, 1] and r.wins.tolist() == [2, 1]
    half = fit_bradley_terry(c, RankConfig(prior_precision=TINY, tie_model="half"))
    # Tie = half a win: A has 2.5 of 4 → σ(d) = 5/8.
    assert half.nu == 0.0 and half.predict_proba("A", "B")[0] == pytest.approx(5 / 8, abs=1e-4)


def test_home_advantage_is_recovered_exactly_when_saturated():
    # A at home beats B 3 of 4; B at home beats A 3 of 4 → equal strengths, σ(h) = 3/4, h = log 3.
    games = [("A", "B", 1.0)] * 3 + [("B", "A", -1.0)] + [("B", "A", 1.0)] * 3 + [("A", "B", -1.0)]
    c = Comparisons.from_names([g[0] for g in games], [g[1] for g in games], home=np.array([g[2] for g in games]))
    r = fit_bradley_terry(c, RankConfig(prior_precision=TINY, coef_precision=1e-8))
    assert r.home_advantage == pytest.approx(math.log(3), abs=1e-3)
    assert r.strengths[0] == pytest.approx(r.strengths[1], abs=1e-4)
    assert r.predict_proba("A", "B", home=np.array([1.0]))[0] == pytest.approx(0.75, abs=1e-4)
    assert r.predict_proba("A", "B")[0] == pytest.approx(0.5, abs=1e-4)  # neutral venue


def test_plackett_luce_on_pairs_equals_bradley_terry():
    games = [("A", "B"), ("B", "C"), ("A", "C"), ("C", "A"), ("B", "A"), ("A", "B")]
    bt = fit_bradley_terry(_pairs(*games), RankConfig(prior_precision=0.5))
    pl = fit_plackett_luce(Rankings.from_lists([list(g) for g in games]), RankConfig(prior_precision=0.5))
    assert bt.names == pl.names
    np.testing.assert_allclose(pl.strengths, bt.strengths, atol=1e-5)


def test_plackett_luce_recovers_the_order_of_multiway_rankings():
    rng = np.random.default_rng(0)
    truth = np.linspace(2, -2, 8)
    lists = []
    for _ in range(150):  # sample Plackett-Luce rankings of 4 random items
        items = list(rng.choice(8, size=4, replace=False))
        order = []
        while items:
            w = np.exp(truth[items])
            order.append(items.pop(int(rng.choice(len(items), p=w / w.sum()))))
        lists.append([f"i{k}" for k in order])
    r = fit_plackett_luce(Rankings.from_lists(lists), RankConfig(prior_precision=0.1))
    fitted = np.array([r.strengths[r.names.index(f"i{k}")] for k in range(8)])
    assert spearman(fitted, truth) > 0.9
    assert r.wins.sum() == r.losses.sum() == 150 * 6  # each list of 4 implies 6 pairs


# ----------------------------------------------------------------------------------------------
# Simulated seasons, recency, covariates, bootstrap
# ----------------------------------------------------------------------------------------------


def test_simulated_season_recovers_strengths_better_than_win_counts():
    for seed in (0, 1):
        comps, truth = simulate_season(seed, home_advantage=0.3)
        assert len(comps) == 1230 and len(comps.names) == 30
        r = fit_bradley_terry(comps)
        rho_bt = spearman(r.strengths, truth)
        rho_wins = spearman(r.wins, truth)
        assert rho_bt > 0.8
        assert rho_bt > rho_wins + 0.05
        assert 0.1 < r.home_advantage < 0.5  # true 0.3; s.e. ≈ 0.06 with 1,230 games


def test_nba_schedule_shape():
    comps, _ = simulate_season(3, schedule="nba")
    games = np.bincount(comps.left, minlength=30) + np.bincount(comps.right, minlength=30)
    assert len(comps) == 1230 and set(games.tolist()) == {82}
    with pytest.raises(ValueError, match="schedule must be one of"):
        simulate_season(0, schedule="nfl")


def test_recency_weights_and_their_effect():
    assert recency_weights(np.array([0.0, 10.0, 20.0]), 10.0).tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert recency_weights(np.array([0.0, 5.0]), None).tolist() == [1.0, 1.0]
    # A beat B twice long ago; B beat A once, recently.
    c = Comparisons.from_names(["A", "A", "B"], ["B", "B", "A"], time=np.array([0.0, 0.0, 100.0]))
    assert fit_bradley_terry(c, RankConfig()).predict_proba("A", "B")[0] > 0.5
    assert fit_bradley_terry(c, RankConfig(half_life=10.0)).predict_proba("A", "B")[0] < 0.5
    with pytest.raises(ValueError, match="half_life needs"):
        fit_bradley_terry(_pairs(("A", "B")), RankConfig(half_life=10.0))


def test_covariate_prior_predicts_unseen_items():
    # True strength = 0.8 · x; items 0..39 play, items 40..49 are never seen.
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    a, b = rng.integers(0, 40, 3000), rng.integers(0, 40, 3000)
    keep = a != b
    a, b = a[keep], b[keep]
    left_won = rng.random(len(a)) < 1 / (1 + np.exp(-0.8 * (x[a] - x[b])))
    w, l = np.where(left_won, a, b), np.where(left_won, b, a)
    feats = lambda idx: np.stack([x[idx], np.zeros(len(idx))], axis=1)  # noqa: E731
    c = Comparisons(names=tuple(f"p{i}" for i in range(50)), left=w, right=l, outcome=np.zeros(len(w)),
                    features_left=feats(w), features_right=feats(l), feature_names=("x", "missing"))
    r = fit_bradley_terry(c, RankConfig(prior_precision=10.0))
    assert r.coef[0] == pytest.approx(0.8, abs=0.1)
    # Two unseen items: strength = offset 0 + coef · (their x - training mean).
    p = r.predict_proba(["new1"], ["new2"], features_a=np.array([[1.0, 0.0]]), features_b=np.array([[-1.0, 0.0]]))
    assert p[0] == pytest.approx(1 / (1 + math.exp(-2 * r.coef[0])), abs=1e-9)
    # Unseen without covariates: the prior mean, so even odds between two of them.
    assert r.predict_proba(["new1"], ["new2"])[0] == pytest.approx(0.5)


def test_bootstrap_intervals_cover_the_estimate_and_reflect_sample_size():
    comps, _ = simulate_season(0)
    # Add a team with only 4 games: its interval must be much wider.
    extra = Comparisons.from_names(
        [*(comps.names[i] for i in comps.left), "rookie", "rookie", "team00", "team01"],
        [*(comps.names[i] for i in comps.right), "team02", "team03", "rookie", "rookie"],
    )
    cfg = RankConfig(n_bootstrap=40, seed=3)
    r = fit_bradley_terry(extra, cfg)
    lo, hi = r.intervals[:, 0], r.intervals[:, 1]
    assert np.all(lo <= r.strengths + 1e-9) and np.all(r.strengths <= hi + 1e-9)
    width = hi - lo
    rookie = r.names.index("rookie")
    assert width[rookie] > 2 * np.median(np.delete(width, rookie))
    np.testing.assert_array_equal(fit_bradley_terry(extra, cfg).intervals, r.intervals)  # seeded


def test_spearman_hand_value_and_ties():
    # d = (0, 1, -1): ρ = 1 - 6 Σd² / (n(n² - 1)) = 1 - 12/24 = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2], [1, 2, 3])


# ----------------------------------------------------------------------------------------------
# Records and config: bad input
# ----------------------------------------------------------------------------------------------


def test_records_reject_bad_input():
    with pytest.raises(ValueError, match="compared with itself"):
        Comparisons(names=("a", "b"), left=[0, 1], right=[1, 1], outcome=[0, 0])
    with pytest.raises(ValueError, match="not an index into names"):
        Comparisons(names=("a", "b"), left=[0], right=[2], outcome=[0])
    with pytest.raises(ValueError, match="outcome codes"):
        Comparisons(names=("a", "b"), left=[0], right=[1], outcome=[3])
    with pytest.raises(ValueError, match=r"home must be \+1"):
        Comparisons(names=("a", "b"), left=[0], right=[1], outcome=[0], home=[2.0])
    with pytest.raises(ValueError, match="weight must be >= 0"):
        Comparisons(names=("a", "b"), left=[0], right=[1], outcome=[0], weight=[-1.0])
    with pytest.raises(ValueError, match="finite"):
        Comparisons(names=("a", "b"), left=[0], right=[1], outcome=[0], time=[math.nan])
    with pytest.raises(ValueError, match="names must be unique"):
        Comparisons(names=("a", "a"), left=[0], right=[1], outcome=[0])
    with pytest.raises(ValueError, match=r"features_left must have shape \(1, 2\)"):
        Comparisons(names=("a", "b"), left=[0], right=[1], outcome=[0], features_left=np.zeros((1, 3)),
                    features_right=np.zeros((1, 2)), feature_names=("x", "y"))
    with pytest.raises(ValueError, match="padding"):
        Rankings(names=("a", "b", "c"), items=[[0, -1, 1]])
    with pytest.raises(ValueError, match="lists an item twice"):
        Rankings(names=("a", "b"), items=[[0, 0]])
    with pytest.raises(ValueError, match="no comparisons"):
        fit_bradley_terry(_pairs())
    with pytest.raises(ValueError, match="prior_precision must be > 0"):
        RankConfig(prior_precision=0.0)
    with pytest.raises(ValueError, match="tie_model must be one of"):
        RankConfig(tie_model="ignore")
    with pytest.raises(ValueError, match="log transform needs values > 0"):
        covariate_features([3.0, 0.0])


def test_select_keeps_only_the_items_that_remain():
    c = _pairs(("A", "B"), ("C", "D"), ("B", "C"))
    sub = c.select(np.array([True, False, True]))
    assert c.names == ("A", "C", "B", "D")  # winners first, in order of appearance
    assert sub.names == ("A", "C", "B") and len(sub) == 2
    assert [sub.names[i] for i in sub.left] == ["A", "B"]


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def test_read_the_atp_sample_and_rank_it():
    c = read_comparisons(ATP_2022, winner="winner_name", loser="loser_name", date="tourney_date",
                         covariates=[("winner_rank_points", "loser_rank_points")])
    assert len(c) == 127 and len(c.names) == 128  # a 128-player knock-out
    assert c.feature_names == ("log(winner_rank_points|loser_rank_points)",
                               "missing(winner_rank_points|loser_rank_points)")
    plain = fit_bradley_terry(read_comparisons(ATP_2022, winner="winner_name", loser="loser_name"))
    top = plain.table()[0]
    assert (top["name"], top["wins"], top["losses"]) == ("Rafael Nadal", 7, 0)  # the 2022 champion
    # Predict the 2023 tournament from 2022: better than a coin on log-loss and accuracy.
    t23 = read_comparisons(ATP_2023, winner="winner_name", loser="loser_name")
    p = plain.predict_proba([t23.names[i] for i in t23.left], [t23.names[i] for i in t23.right])
    assert -np.log(p).mean() < math.log(2)
    assert np.mean((p > 0.5) + 0.5 * (p == 0.5)) > 0.55


def test_read_comparisons_errors_name_file_line_and_column(tmp_path):
    good = "w,l,t,h,d,rw,rl\nA,B,0,A,20220101,1,2\n"
    with pytest.raises(RankDataError, match=r"no column 'loser_nam'\. Did you mean 'loser_name'\?"):
        read_comparisons(ATP_2022, winner="winner_name", loser="loser_nam")
    with pytest.raises(RankDataError, match="the file is empty"):
        read_comparisons(_write(tmp_path / "empty.csv", ""), winner="w", loser="l")
    with pytest.raises(RankDataError, match="header but no data rows"):
        read_comparisons(_write(tmp_path / "header.csv", "w,l\n"), winner="w", loser="l")
    with pytest.raises(RankDataError, match=r"self\.csv, line 3: 'B' plays against themself"):
        read_comparisons(_write(tmp_path / "self.csv", "w,l\nA,B\nB,B\n"), winner="w", loser="l")
    with pytest.raises(RankDataError, match=r"cell\.csv, line 2, column 'l': empty value"):
        read_comparisons(_write(tmp_path / "cell.csv", "w,l\nA,\n"), winner="w", loser="l")
    with pytest.raises(RankDataError, match=r"line 2, column 't': 'maybe' is not true/false"):
        read_comparisons(_write(tmp_path / "tie.csv", good.replace(",0,", ",maybe,")), winner="w", loser="l", tie="t")
    with pytest.raises(RankDataError, match=r"line 2, column 'h': 'Z' is neither side's name"):
        read_comparisons(_write(tmp_path / "home.csv", good.replace(",A,2022", ",Z,2022")), winner="w", loser="l", home="h")
    with pytest.raises(RankDataError, match=r"line 2, column 'd': '2022-13-45' is not a date"):
        read_comparisons(_write(tmp_path / "date.csv", good.replace("20220101", "2022-13-45")), winner="w", loser="l", date="d")
    with pytest.raises(RankDataError, match=r"line 2, column 'rl': '-2' is not a number > 0"):
        read_comparisons(_write(tmp_path / "cov.csv", good.replace(",1,2", ",1,-2")), winner="w", loser="l",
                         covariates=[("rw", "rl")])
    with pytest.raises(RankDataError, match="cannot open"):
        read_comparisons(tmp_path / "missing.csv", winner="w", loser="l")


def test_read_comparisons_ties_home_and_dates(tmp_path):
    path = _write(tmp_path / "games.csv",
                  "home,away,hw,tie,date\nA,B,A,0,2022-01-01\nB,C,true,draw,20220111\nC,A,,no,3\n")
    c = read_comparisons(path, winner="home", loser="away", home="hw", tie="tie", date="date")
    assert c.outcome.tolist() == [LEFT, TIE, LEFT]
    assert c.home.tolist() == [1.0, 1.0, 0.0]
    assert c.time.tolist() == [18993.0, 19003.0, 3.0]  # days since 1970-01-01; a plain number is days
    assert RIGHT not in c.outcome.tolist()


def test_read_rankings(tmp_path):
    path = _write(tmp_path / "races.csv", "race,order\n1,a > b > c\n2,b>a\n")
    r = read_rankings(path, ranking="order")
    assert r.names == ("a", "b", "c") and r.items.tolist() == [[0, 1, 2], [1, 0, -1]]
    with pytest.raises(RankDataError, match=r"line 2, column 'order': a name appears twice"):
        read_rankings(_write(tmp_path / "dup.csv", "order\na>a\n"), ranking="order")
    with pytest.raises(RankDataError, match="at least two names"):
        read_rankings(_write(tmp_path / "one.csv", "order\na\n"), ranking="order")


def test_ratings_save_load_and_csv(tmp_path):
    r = fit_bradley_terry(Comparisons.from_names(["A", "A", "B"], ["B", "C", "C"], ties=[False, False, True]),
                          RankConfig(n_bootstrap=5))
    r.save(tmp_path / "r.json")
    back = Ratings.load(tmp_path / "r.json")
    np.testing.assert_allclose(back.strengths, r.strengths)
    np.testing.assert_allclose(back.predict_outcomes(["A"], ["C"]), r.predict_outcomes(["A"], ["C"]))
    r.to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "rank,name,strength,lower,upper,games,wins,losses,ties"
    assert lines[1].startswith("1,A,")
    with pytest.raises(RankDataError, match="not a ratings file"):
        Ratings.load(_write(tmp_path / "bad.json", json.dumps({"names": []})))


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def test_cli_fit_and_predict(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(app, ["fit", "--data", str(ATP_2022), "--winner", "winner_name", "--loser", "loser_name",
                              "--bootstrap", "10", "--out", str(out), "--top", "5"])
    assert res.exit_code == 0, res.output
    assert "Rafael Nadal" in res.output
    for name in ("ratings.csv", "ratings.json", "config.json", "strengths.png", "head_to_head.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["rank_config"]["n_bootstrap"] == 10
    res = runner.invoke(app, ["predict", "--model", str(out / "ratings.json"), "Rafael Nadal", "Someone New"])
    assert res.exit_code == 0, res.output
    assert "unseen" in res.output
    pred = tmp_path / "pred.csv"
    res = runner.invoke(app, ["predict", "--model", str(out / "ratings.json"), "--data", str(ATP_2023),
                              "--left", "winner_name", "--right", "loser_name", "--out", str(pred)])
    assert res.exit_code == 0, res.output
    assert len(pred.read_text().splitlines()) == 128


def test_cli_fits_a_simulated_season_with_home_advantage(tmp_path):
    comps, truth = simulate_season(5, home_advantage=0.4)
    rows = ["winner,loser,home"] + [
        f"{comps.names[w]},{comps.names[l]},{comps.names[w] if h > 0 else comps.names[l]}"
        for w, l, h in zip(comps.left, comps.right, comps.home)
    ]
    season = _write(tmp_path / "season.csv", "\n".join(rows) + "\n")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["fit", "--data", str(season), "--winner", "winner", "--loser", "loser",
                                   "--home", "home", "--bootstrap", "0", "--no-plots", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "home advantage +0.3" in res.output or "home advantage +0.4" in res.output
    fitted = Ratings.load(out / "ratings.json")
    assert spearman(fitted.strengths, truth[[int(n[4:]) for n in fitted.names]]) > 0.9


def test_cli_rankings_and_errors(tmp_path):
    runner = CliRunner()
    races = _write(tmp_path / "races.csv", "order\na>b>c\nb>c>a\na>c\n")
    res = runner.invoke(app, ["fit", "--data", str(races), "--ranking", "order", "--bootstrap", "0",
                              "--no-plots", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    bad = _write(tmp_path / "bad.csv", "w,l\nA,B\nC,C\n")
    res = runner.invoke(app, ["fit", "--data", str(bad), "--winner", "w", "--loser", "l", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "line 3" in res.output and "against themself" in res.output
    res = runner.invoke(app, ["fit", "--data", str(bad), "--winner", "w"])
    assert res.exit_code == 2 and "--winner and --loser" in res.output
    res = runner.invoke(app, ["fit", "--data", str(bad), "--winner", "w", "--loser", "nope"])
    assert res.exit_code == 2 and "no column 'nope'" in res.output


def test_cli_names_options_and_catches_misspelt_names(tmp_path):
    runner = CliRunner()
    games = _write(tmp_path / "g.csv", "w,l\nRafael Nadal,Novak Djokovic\nNovak Djokovic,[red]Bob[/red]\n"
                                       "Rafael Nadal,[red]Bob[/red]\n")
    res = runner.invoke(app, ["fit", "--data", str(games), "--winner", "w", "--loser", "l", "--bootstrap", "-1",
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--bootstrap must be >= 0" in res.output and "n_bootstrap" not in res.output
    res = runner.invoke(app, ["fit", "--data", str(games), "--winner", "w", "--loser", "l", "--half-life", "-3",
                              "--date", "w", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "half_life" not in res.output
    res = runner.invoke(app, ["fit", "--data", str(games), "--winner", "w", "--loser", "l", "--bootstrap", "0",
                              "--no-plots", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0 and "[red]Bob[/red]" in res.output  # a name is printed as written
    model = str(tmp_path / "o" / "ratings.json")
    res = runner.invoke(app, ["predict", "--model", model, "Rafael Nadl", "Novak Djokovic"])
    assert res.exit_code == 2 and "did you mean 'Rafael Nadal'" in " ".join(res.output.split())
    res = runner.invoke(app, ["predict", "--model", model, "rafael nadal", "Novak Djokovic"])
    assert res.exit_code == 2 and "did you mean 'Rafael Nadal'" in " ".join(res.output.split())
    res = runner.invoke(app, ["predict", "--model", model, "Rafael Nadl", "Novak Djokovic", "--allow-unseen"])
    assert res.exit_code == 0 and "predicted with the prior" in " ".join(res.output.split())
    res = runner.invoke(app, ["predict", "--model", model, "Someone New", "Novak Djokovic"])
    assert res.exit_code == 0 and "unseen (prior)" in res.output  # a new name, not a typo: the prior, said so
