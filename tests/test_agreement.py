"""Tests of rlhfkit.feedback.agreement on published worked examples and on a real store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.feedback.agreement import agreement_report, cohen_kappa, krippendorff_alpha, majority_agreement
from rlhfkit.feedback.store import QuerySpec, Store


def test_cohen_kappa_textbook_example() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 → p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    # systematic disagreement: p_o = 0, p_e = 0.5 → κ = -1
    assert cohen_kappa(["L", "R"] * 5, ["R", "L"] * 5) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa(["L"] * 4, ["L"] * 4))  # p_e = 1: undefined
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["L"], ["L", "R"])


def test_krippendorff_alpha_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example:
    # 4 coders, 12 units, missing values → α = 0.743.
    N = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
        [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
    ]
    assert krippendorff_alpha(zip(*coders)) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_two_coders_hand_computed() -> None:
    # units (L,L), (L,R), (R,R): o_LL = 2, o_LR = o_RL = 1, o_RR = 2; n_L = n_R = 3, n = 6
    # α = 1 − (n−1)·(o_LR + o_RL) / (2·n_L·n_R) = 1 − 5·2/18 = 4/9
    assert krippendorff_alpha([("L", "L"), ("L", "R"), ("R", "R")]) == pytest.approx(4 / 9)
    assert krippendorff_alpha([("L", "L"), ("R", "R")]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([("L", "L"), ("L", None)]))  # one category only
    assert math.isnan(krippendorff_alpha([("L", None)]))  # nothing pairable


def test_majority_agreement_leave_one_out() -> None:
    answers = {
        1: {"ann": "L", "bob": "L", "cy": "R"},  # ann: others L,R split → not counted; bob same; cy vs L,L → miss
        2: {"ann": "L", "bob": "L", "cy": "L"},  # everyone matches
        3: {"ann": "R", "bob": "L"},              # each vs the other: both miss
        4: {"ann": "L"},                          # single answer: not counted
    }
    got = majority_agreement(answers)
    assert got["ann"] == (pytest.approx(1 / 2), 2)
    assert got["bob"] == (pytest.approx(1 / 2), 2)
    assert got["cy"] == (pytest.approx(1 / 2), 2)


def answer_all(store: Store, name: str, answers: dict[int, str]) -> None:
    """Labeller ``name`` answers query i with canonical outcome ``answers[i]`` (via the shown order)."""
    lab = store.labeller_for_token(store.add_labeller(name)).id
    while (shown := store.next_query(lab)) is not None:
        want = answers.get(shown.query.id, "SKIP")
        if want in ("LEFT", "RIGHT"):  # convert to the side it is shown on
            canonical = 0 if want == "LEFT" else 1
            want = "LEFT" if shown.order[0] == canonical else "RIGHT"
        store.submit_label(lab, shown.query.id, shown.show_id, want)


def test_agreement_report_and_cli_on_a_store(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    store = Store(path, seed=3)
    ids = store.add_queries([QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}], labels_needed=3)
                             for _ in range(6)])
    ann = dict(zip(ids, ["LEFT", "LEFT", "RIGHT", "RIGHT", "TIE", "LEFT"]))
    bob = dict(zip(ids, ["LEFT", "LEFT", "RIGHT", "LEFT", "TIE", "SKIP"]))
    cy = dict(zip(ids, ["RIGHT", "LEFT", "RIGHT", "RIGHT", "BOTH_BAD", "LEFT"]))
    for name, answers in (("ann", ann), ("bob", bob), ("cy", cy)):
        answer_all(store, name, answers)
    rep = agreement_report(store.labels())
    store.close()
    assert rep.labels_per_labeller == {"ann": 6, "bob": 5, "cy": 6}  # bob's SKIP is no answer
    assert rep.multi_labelled == 6
    kappas = {(a, b): (n, k) for a, b, n, k in rep.kappa}
    # ann vs bob on the 5 common queries: L L R R T vs L L R L T → p_o = 4/5,
    # p_e = (2·3 + 2·1 + 1·1) / 25 = 9/25 → κ = (0.8 − 0.36) / 0.64
    assert kappas[("ann", "bob")][0] == 5
    assert kappas[("ann", "bob")][1] == pytest.approx((0.8 - 0.36) / 0.64)
    expected_alpha = krippendorff_alpha([(ann[q], bob[q] if bob[q] != "SKIP" else None, cy[q]) for q in ids])
    assert rep.alpha == pytest.approx(expected_alpha)
    # ann vs the others: q1 (L|L,R) split, q2 (L|L,L) hit, q3 (R|R,R) hit, q4 (R|L,R) split, q5 (T|T,BB) split,
    # q6 (L|cy L, bob skipped) hit
    assert rep.majority["ann"] == (pytest.approx(1.0), 3)

    result = CliRunner().invoke(app, ["label", "stats", "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert "Krippendorff" in result.output and "Cohen" in result.output
    assert f"{rep.alpha:.3f}" in result.output and f"{kappas[('ann', 'bob')][1]:.3f}" in result.output
