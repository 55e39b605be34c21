"""Benchmark `rlhfkit.rank` against `choix` and two naive rankings.

1. ATP tennis, fit on 2022, evaluate on 2023 (Jeff Sackmann / Tennis Abstract data, CC BY-NC-SA
   4.0): log-loss, accuracy and seconds for
   - ours: Bradley-Terry MAP with a covariate known at match time — the ATP rank or the ATP
     ranking points, whichever validates better — as the prior mean of each player's strength,
     a Gaussian prior on each player's own offset, and recency weighting;
   - ours, plain: the same without the covariate (names only, like choix);
   - choix ``ilsr_pairwise`` (alpha 0.01, unseen players at 0), run in bench/.venv-choix;
   - "the better-ranked player wins" (ATP ranking) — accuracy only.
   Hyper-parameters (covariate, prior precision, half-life) are chosen on 2022 data only: fit
   on Jan–Jun and on Jan–Sep 2022, validate on Jul–Dec and on Oct–Dec 2022, pooled log-loss.
   2023 is used once, for the table. A player unseen in 2022 gets the prior: own offset 0 (the
   prior mean) plus, for ours, the covariate effect at his 2023 match-time value — the ATP
   rank/points, known before the match, are an informative prior for newcomers.
   Timing: fit + predict, each model in a fresh process (first call, and median of --repeats),
   excluding interpreter and import start-up (~2-3 s for either on the test machine). Both
   run with one BLAS/OpenMP thread: on a busy 2-core machine threaded BLAS made choix 30×
   slower (3.7 s instead of 0.11 s); rlhfkit.rank fits on one thread by design.
2. Simulated seasons like the course's (30 teams, strengths N(0, 1), 1,230 games, uneven
   schedules): Spearman correlation with the true strengths for Bradley-Terry, win count and
   win percentage.

Usage:  bash bench/peers/setup_choix.sh && .venv/bin/python bench/rank.py [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHOIX_PY = HERE / ".venv-choix" / "bin" / "python"


# ----------------------------------------------------------------------------------------------
# Workers: run in a fresh process, read a JSON job on stdin, write JSON on stdout.
# ----------------------------------------------------------------------------------------------


def _worker_choix(job: dict) -> dict:
    import choix  # only in bench/.venv-choix

    train = [tuple(p) for p in job["train"]]
    a, b = np.array(job["test_a"]), np.array(job["test_b"])
    seconds, probs = [], None
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        params = choix.ilsr_pairwise(job["n_items"], train, alpha=job["alpha"])
        s = np.append(params, 0.0)  # index -1 (unseen) -> strength 0
        probs = 1 / (1 + np.exp(-(s[a] - s[b])))
        seconds.append(time.perf_counter() - t0)
    return {"probs": probs.tolist(), "seconds": seconds}


def _worker_ours(job: dict) -> dict:
    from rlhfkit.rank import Comparisons, RankConfig, fit_bradley_terry

    tr, te = job["train"], job["test"]
    feats = job["features"]
    ratings = None
    seconds, probs = [], None
    for _ in range(job["repeats"]):
        t0 = time.perf_counter()
        comps = Comparisons(
            names=tuple(tr["names"]), left=np.array(tr["left"]), right=np.array(tr["right"]),
            outcome=np.zeros(len(tr["left"]), dtype=np.int64), time=np.array(tr["time"]),
            **({"features_left": np.array(tr["fl"]), "features_right": np.array(tr["fr"]),
                "feature_names": tuple(tr["feature_names"])} if feats else {}),
        )
        ratings = fit_bradley_terry(comps, RankConfig(**job["config"]))
        kw = {"features_a": np.array(te["fl"]), "features_b": np.array(te["fr"])} if feats else {}
        probs = ratings.predict_proba(te["a"], te["b"], **kw)
        seconds.append(time.perf_counter() - t0)
    return {"probs": probs.tolist(), "seconds": seconds, "coef": ratings.coef.tolist()}


# One BLAS / OpenMP thread for both (see the module docstring).
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run_worker(python: Path, kind: str, job: dict) -> dict:
    out = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--worker", kind],
        input=json.dumps(job), capture_output=True, text=True, check=False,
        env={**os.environ, **_ONE_THREAD},
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr}")
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------------------------
# Tennis
# ----------------------------------------------------------------------------------------------


def _days(yyyymmdd: int) -> float:
    y, m, d = yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100
    return float((dt.date(y, m, d) - dt.date(1970, 1, 1)).days)


def _metrics(p_winner: np.ndarray) -> tuple[float, float]:
    """Log-loss and accuracy from P[actual winner wins]; a 0.5 prediction (to 1e-9: rounding of
    σ(0) for two identical unseen players) counts half right."""
    p = np.clip(p_winner, 1e-12, 1.0)
    even = np.abs(p_winner - 0.5) < 1e-9
    return float(-np.mean(np.log(p))), float(np.mean(np.where(even, 0.5, p_winner > 0.5)))


def _atp_heuristic(rows: list[dict]) -> np.ndarray:
    """Per-match credit of "the better-ranked player wins": 1 right, 0 wrong, 0.5 when both are
    unranked; an unranked player counts as worse than any ranked one."""
    credit = []
    for r in rows:
        w, l = r["winner_rank"], r["loser_rank"]
        credit.append(float(int(w) < int(l)) if w and l else float(bool(w)) if w or l else 0.5)
    return np.array(credit)


def _calibration(p_winner: np.ndarray, bins: int = 10) -> list[tuple[str, int, float, float]]:
    """Bins of the favourite's predicted win probability (0.5–1): n, mean predicted, observed."""
    fav = np.maximum(p_winner, 1 - p_winner)
    fav_won = p_winner >= 0.5  # an even match counts as won by the favourite, in the first bin
    edges = np.linspace(0.5, 1.0, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (fav >= lo) & ((fav < hi) | (hi == 1.0))
        if sel.any():
            out.append((f"{lo:.2f}–{hi:.2f}", int(sel.sum()), float(fav[sel].mean()), float(fav_won[sel].mean())))
    return out


def tennis(data_dir: Path, repeats: int) -> None:
    from rlhfkit.rank import RankConfig, fit_bradley_terry, read_comparisons

    paths = {y: data_dir / f"atp_matches_{y}.csv" for y in (2022, 2023)}
    for p in paths.values():
        if not p.exists():
            raise SystemExit(f"{p} not found; pass --data DIR holding atp_matches_2022.csv and 2023.csv")
    base = dict(winner="winner_id", loser="loser_id", date="tourney_date")
    covariates = {"rank": ("winner_rank", "loser_rank"), "points": ("winner_rank_points", "loser_rank_points")}
    train = {k: read_comparisons(paths[2022], **base, covariates=[c]) for k, c in covariates.items()}
    test = {k: read_comparisons(paths[2023], **base, covariates=[c]) for k, c in covariates.items()}
    plain = read_comparisons(paths[2022], **base)
    with open(paths[2023], newline="") as fh:
        rows23 = list(csv.DictReader(fh))
    any_test = next(iter(test.values()))
    test_a = [any_test.names[i] for i in any_test.left]
    test_b = [any_test.names[i] for i in any_test.right]
    seen = set(plain.names)
    unseen = np.array([not (a in seen and b in seen) for a, b in zip(test_a, test_b)])

    # --- hyper-parameters, on 2022 only --------------------------------------------------------
    splits = [(_days(20220701), "Jan–Jun → Jul–Dec"), (_days(20221001), "Jan–Sep → Oct–Dec")]
    grid = [(lam, hl) for lam in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0) for hl in (None, 30.0, 60.0, 120.0, 240.0, 365.0)]
    candidates = {"plain": [(None, lam, hl) for lam, hl in grid],
                  "covariate": [(cov, lam, hl) for cov in covariates for lam, hl in grid]}
    chosen = {}
    t0 = time.perf_counter()
    for model, configs in candidates.items():
        scores = []
        for cov, lam, hl in configs:
            data = plain if cov is None else train[cov]
            nll, n = 0.0, 0
            for cut, _ in splits:
                fit_part, val = data.select(data.time < cut), data.select(data.time >= cut)
                r = fit_bradley_terry(fit_part, RankConfig(prior_precision=lam, half_life=hl))
                kw = {"features_a": val.features_left, "features_b": val.features_right} if cov else {}
                p = r.predict_proba([val.names[i] for i in val.left], [val.names[i] for i in val.right], **kw)
                nll += -np.log(p).sum()
                n += len(p)
            scores.append(nll / n)
        chosen[model] = configs[int(np.argmin(scores))]
        print(f"validation on 2022 only ({'; '.join(s for _, s in splits)}), {model} — best pooled log-loss:")
        for i in sorted(range(len(configs)), key=scores.__getitem__)[:3]:
            cov, lam, hl = configs[i]
            print(f"    covariate={str(cov):<6} prior_precision={lam:<5} half_life={str(hl):<6} log-loss {scores[i]:.4f}")
    n_fits = sum(len(c) for c in candidates.values()) * len(splits)
    print(f"    ({n_fits} fits in {time.perf_counter() - t0:.1f} s)\n")

    # --- 2022 -> 2023, each model in a fresh process -------------------------------------------
    results = {}
    for model, label in (("covariate", "ours: BT + covariate prior + recency"), ("plain", "ours: plain BT + recency")):
        cov, lam, hl = chosen[model]
        tr = plain if cov is None else train[cov]
        te = None if cov is None else test[cov]
        job = {
            "repeats": repeats, "features": cov is not None, "config": {"prior_precision": lam, "half_life": hl},
            "train": {"names": list(tr.names), "left": tr.left.tolist(), "right": tr.right.tolist(),
                      "time": tr.time.tolist(), "feature_names": list(tr.feature_names),
                      "fl": tr.features_left.tolist() if cov else None,
                      "fr": tr.features_right.tolist() if cov else None},
            "test": {"a": test_a, "b": test_b, "fl": te.features_left.tolist() if cov else None,
                     "fr": te.features_right.tolist() if cov else None},
        }
        res = _run_worker(Path(sys.executable), "ours", job)
        results[label] = (np.array(res["probs"]), res["seconds"], f"{cov or 'no'} covariate, λ={lam}, half-life={hl} d")
        if cov:
            coef, coef_names = res["coef"], tr.feature_names
    if CHOIX_PY.exists():
        index = {n: i for i, n in enumerate(plain.names)}
        job = {
            "repeats": repeats, "alpha": 0.01, "n_items": len(plain.names),
            "train": [[int(w), int(l)] for w, l in zip(plain.left, plain.right)],
            "test_a": [index.get(a, -1) for a in test_a], "test_b": [index.get(b, -1) for b in test_b],
        }
        res = _run_worker(CHOIX_PY, "choix", job)
        results["choix ilsr_pairwise"] = (np.array(res["probs"]), res["seconds"], "alpha=0.01, unseen at 0")
    else:
        print(f"(choix skipped: {CHOIX_PY} missing — run bash bench/peers/setup_choix.sh)\n")

    print(f"ATP 2022 → 2023: {len(plain)} training matches, {len(test_a)} test matches, "
          f"{int(unseen.sum())} of them with a player unseen in 2022")
    head = f"{'model':<38} {'log-loss':>8} {'accuracy':>8} {'s first':>8} {'s median':>8}  {'unseen: ll / acc':>17}  settings"
    print(head)
    print("-" * len(head))
    for label, (p, secs, note) in results.items():
        ll, acc = _metrics(p)
        ull, uacc = _metrics(p[unseen])
        print(f"{label:<38} {ll:8.4f} {acc:8.4f} {secs[0]:8.3f} {float(np.median(secs)):8.3f}  "
              f"{ull:8.4f} / {uacc:.4f}  {note}")
    atp = _atp_heuristic(rows23)
    print(f"{'ATP ranking: better-ranked player wins':<38} {'—':>8} {atp.mean():8.4f}")
    ours = results["ours: BT + covariate prior + recency"][0]
    ours_right = np.where(np.abs(ours - 0.5) < 1e-9, 0.5, (ours > 0.5).astype(float))
    print(f"\nours (covariate) vs the ATP ranking, match by match: ours right and the ranking wrong in "
          f"{int((ours_right > atp).sum())}, the reverse in {int((ours_right < atp).sum())} of {len(atp)}")
    print("\ncovariate coefficients (ours): " + ", ".join(f"{n} {c:+.3f}" for n, c in zip(coef_names, coef)))
    label = "ours: BT + covariate prior + recency"
    print(f"\ncalibration, {label} (favourite's predicted win probability):")
    print(f"    {'bin':<11} {'n':>5} {'predicted':>9} {'observed':>9}")
    for name, n, pred, obs in _calibration(results[label][0]):
        print(f"    {name:<11} {n:5d} {pred:9.3f} {obs:9.3f}")


# ----------------------------------------------------------------------------------------------
# Simulated seasons
# ----------------------------------------------------------------------------------------------


def seasons(n: int) -> None:
    from rlhfkit.rank import RankConfig, fit_bradley_terry, simulate_season, spearman

    print(f"\nsimulated seasons: 30 teams, strengths N(0,1), 1,230 games, home advantage 0.3; {n} seasons")
    print(f"{'schedule':<8} {'Bradley-Terry':>15} {'win count':>15} {'win %':>15}  BT better than count / win %")
    for schedule in ("uneven", "nba"):
        rho = []
        for seed in range(n):
            comps, truth = simulate_season(seed, schedule=schedule, home_advantage=0.3)
            r = fit_bradley_terry(comps, RankConfig(prior_precision=1.0))
            rho.append((spearman(r.strengths, truth), spearman(r.wins, truth),
                        spearman(r.wins / (r.wins + r.losses), truth)))
        rho = np.array(rho)
        cells = " ".join(f"{m:.3f} ± {s:.3f}".rjust(15) for m, s in zip(rho.mean(0), rho.std(0)))
        print(f"{schedule:<8} {cells}  {int((rho[:, 0] > rho[:, 1]).sum())}/{n} / {int((rho[:, 0] > rho[:, 2]).sum())}/{n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "tennis",
                        help="folder with atp_matches_2022.csv and atp_matches_2023.csv (default ../shared/data/tennis)")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per model")
    parser.add_argument("--seasons", type=int, default=50, help="simulated seasons")
    parser.add_argument("--worker", choices=["ours", "choix"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(sys.stdin.read())
        print(json.dumps({"ours": _worker_ours, "choix": _worker_choix}[args.worker](job)))
        return
    tennis(args.data, args.repeats)
    seasons(args.seasons)


if __name__ == "__main__":
    main()
