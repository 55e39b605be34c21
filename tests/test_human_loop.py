"""The human path end to end: ``rlhf control train --teacher human`` on Pendulum-v1.

The command starts the labelling page in-process (:func:`rlhfkit.app.start_human_teacher`) and
prints its URL; the Christiano loop asks the :class:`~rlhfkit.feedback.human.HumanTeacher` for labels.
A scripted person in real headless Chromium watches each clip pair on the page and answers with
the arrow keys from the true reward of what is shown (looked up from the fragments behind the
query, as a person would judge the clips). The agent must end up better on the true reward than
a random policy, and the store must hold exactly the answers the loop trained on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from conftest import random_policy_returns
from rlhfkit.feedback import Outcome
from rlhfkit.feedback.human import load_query_pair
from rlhfkit.feedback.store import Store, store_url
from test_browser import launch


def scripted_person(url: str, store, stop: threading.Event, errors: list, answered: list) -> None:
    """A browser user who prefers the clip with the higher true return (↓ on equal returns)."""
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            acks = 0
            while not stop.is_set():
                try:
                    page.wait_for_selector("body[data-state='ready']", timeout=250)
                except Exception:  # noqa: BLE001 - nothing to label yet
                    continue
                shown = store.show(int(page.get_attribute("#query", "data-show-id")))
                left, right = load_query_pair(store, shown.query)
                r = [left.true_return, right.true_return]
                r_left, r_right = r[shown.order[0]], r[shown.order[1]]  # what is on screen, left and right
                key = "ArrowLeft" if r_left > r_right else "ArrowRight" if r_right > r_left else "ArrowDown"
                page.keyboard.press(key)
                acks += 1
                page.wait_for_selector(f"body[data-acks='{acks}']", timeout=15_000)
                answered.append(shown.query.id)
            browser.close()
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append(repr(e))


def test_rlhf_control_train_teacher_human_learns_pendulum_from_a_person_in_the_browser(tmp_path: Path) -> None:
    seed, episodes, out = 0, 20, tmp_path / "run"
    # PPO pinned (imitation's tuned Pendulum setting: 10 epochs per update, lr 2e-3) so the test does not move
    # with the preset; 60 labels and 32k steps take the agent from about -1,180 to about -750.
    cmd = [sys.executable, "-m", "rlhfkit.cli", "control", "train", "--teacher", "human", "--env", "Pendulum-v1",
           "--labels", "60", "--steps", "32768", "--fragment-length", "25", "--seed", str(seed), "--out", str(out),
           "--port", "0", "--label-timeout", "120", "--set", f"eval_episodes={episodes}",
           "--set", "ppo.n_epochs=10", "--set", "ppo.lr=2e-3",
           "--label-set", "grace_s=0", "--label-set", "poll_s=0.05", "--label-set", "frame_skip=5",
           "--label-set", "max_size=128", "--label-set", "render_workers=2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "RLHF_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    url = None
    for line in proc.stdout:  # the command prints the page's URL before it waits for answers
        lines.append(line)
        m = re.search(r"Label at:\s*(http://\S+)", line)
        if m:
            url = m.group(1)
            break
    assert url is not None, "".join(lines)
    store = Store(store_url(out / "labels.sqlite"))
    stop, errors, answered = threading.Event(), [], []
    person = threading.Thread(target=scripted_person, args=(url, store, stop, errors, answered), daemon=True)
    person.start()
    try:
        rest, _ = proc.communicate(timeout=150)
        lines.append(rest)
        assert proc.returncode == 0, "".join(lines)
        stop.set()
        person.join(30)
        assert errors == []
        labels, queries = store.labels(), {q.id: q for q in store.queries()}
        assert len(labels) == 60 and len(answered) == 60
        assert all(q.kind == "clip_pair" and q.status == "closed" for q in queries.values())
        assert all((store.media_dir / it["media"]).is_file() for q in queries.values() for it in q.items)
        for lab in labels:  # the store holds the true-reward answer to each pair, in canonical terms
            left, right = load_query_pair(store, queries[lab.query_id])
            truth = (Outcome.LEFT if left.true_return > right.true_return else
                     Outcome.RIGHT if right.true_return > left.true_return else Outcome.TIE)
            assert lab.pair_outcome is truth
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        store.close()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == 60
    random = float(np.mean(random_policy_returns("Pendulum-v1", episodes, 1_000_000 + 1000 * seed)))
    learned = summary["mean_true_return"]
    assert learned > random + 150, f"learned {learned:.0f} vs random {random:.0f} (true return, {episodes} episodes)"
    assert time.monotonic() - start < 150
