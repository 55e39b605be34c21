"""The human path end to end: the Christiano loop on Pendulum-v1 taught through the web page.

:func:`rlhfkit.app.start_human_teacher` opens the store, serves the page and returns a
:class:`~rlhfkit.feedback.human.HumanTeacher`; :func:`rlhfkit.control.train` asks it for labels.
A scripted person in real headless Chromium watches each clip pair on the page and answers with
the arrow keys from the true reward of what is shown (looked up from the fragments behind the
query, as a person would judge the clips). The agent must end up better on the true reward than
a random policy, and the store must hold exactly the answers the loop trained on.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rlhfkit.app import start_human_teacher
from rlhfkit.control import PPOConfig, make_config, train
from rlhfkit.feedback import Outcome
from rlhfkit.feedback.human import load_query_pair
from test_browser import launch


def random_policy_returns(env_id: str, episodes: int, seed: int) -> list[float]:
    """True returns of uniformly random actions on the evaluation seeds the loop uses."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    out = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(r)
            done = terminated or truncated
        out.append(total)
    env.close()
    return out


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


def test_pendulum_learns_from_a_person_in_the_browser(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    seed, episodes = 0, 20
    # PPO pinned (imitation's tuned Pendulum setting, 10 epochs per update) so the test does not move
    # with the preset; 60 labels and 32k steps take the agent from about -1,180 to about -750.
    ppo = PPOConfig(n_envs=8, n_steps=256, batch_size=64, n_epochs=10, lr=2e-3, gamma=0.97, gae_lambda=0.95,
                    clip_range=0.1, ent_coef=0.01, hidden_sizes=(32, 32))
    config = make_config("Pendulum-v1", total_labels=60, total_steps=32_768, fragment_length=25, seed=seed,
                         eval_episodes=episodes, teacher="human", ppo=ppo)
    teacher, url, stop_server = start_human_teacher(
        None, tmp_path / "run", "Pendulum-v1", port=0, timeout_s=120, grace_s=0.0, poll_s=0.05,
        show_progress=False, frame_skip=5, max_size=128, render_workers=2)
    store = teacher.store
    stop, errors, answered = threading.Event(), [], []
    person = threading.Thread(target=scripted_person, args=(url, store, stop, errors, answered), daemon=True)
    person.start()
    start = time.monotonic()
    try:
        result = train(config, str(tmp_path / "run"), teacher=teacher)
        stop.set()
        person.join(30)
        assert errors == []
        labels, queries = store.labels(), {q.id: q for q in store.queries()}
        assert result.labels == 60 and len(labels) == 60 and len(answered) == 60
        assert all(q.kind == "clip_pair" and q.status == "closed" for q in queries.values())
        assert all((store.media_dir / it["media"]).is_file() for q in queries.values() for it in q.items)
        for lab in labels:  # the store holds the true-reward answer to each pair, in canonical terms
            left, right = load_query_pair(store, queries[lab.query_id])
            truth = (Outcome.LEFT if left.true_return > right.true_return else
                     Outcome.RIGHT if right.true_return > left.true_return else Outcome.TIE)
            assert lab.pair_outcome is truth
    finally:
        stop.set()
        stop_server()
    random = float(np.mean(random_policy_returns("Pendulum-v1", episodes, 1_000_000 + 1000 * seed)))
    learned = result.mean_return
    assert learned > random + 150, f"learned {learned:.0f} vs random {random:.0f} (true return, {episodes} episodes)"
    assert time.monotonic() - start < 120
