"""Tests of clip rendering (rlhfkit.feedback.clips) and the human teacher over the store (rlhfkit.feedback.human).

The store itself is tested on both backends in test_store.py; the teacher only needs one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlhfkit.feedback import Fragment, Outcome, Teacher
from rlhfkit.feedback.clips import ClipRenderer, state_setter_for
from rlhfkit.feedback.human import HumanTeacher, combine_outcomes, comparisons_from_store, load_query_pair
from rlhfkit.feedback.store import Store


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "labels.sqlite", seed=0)
    yield s
    s.close()


# -- clips ---------------------------------------------------------------------------------------------


def rollout(env_id: str, steps: int, seed: int = 0) -> tuple[Fragment, list]:
    """A fragment of random actions and the env's true internal state at each of its steps."""
    import rlhfkit.control.envs  # noqa: F401  (registers rlhfkit/CartPoleCos-v0)

    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    o, a, r, states = [], [], [], []
    inner = env.unwrapped
    for _ in range(steps):
        states.append(np.concatenate([inner.data.qpos, inner.data.qvel]) if hasattr(inner, "data")
                      else np.array(inner.state, dtype=np.float64))
        act = env.action_space.sample()
        o.append(obs)
        a.append(act)
        obs, rew, *_ = env.step(act)
        r.append(rew)
    env.close()
    return Fragment(np.array(o), np.array(a), np.array(r)), states


@pytest.mark.filterwarnings("ignore:.*terminated = True")
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1", "rlhfkit/CartPoleCos-v0", "HalfCheetah-v5"])
def test_state_setters_restore_the_true_state(env_id: str) -> None:
    frag, states = rollout(env_id, 20)
    env = gym.make(env_id)
    env.reset(seed=1)
    inner = env.unwrapped
    setter = state_setter_for(env_id)
    for t in range(len(frag)):
        setter(inner, frag.obs[t], frag.acts[t])
        if hasattr(inner, "data"):  # MuJoCo: everything but the root x position
            got = np.concatenate([inner.data.qpos, inner.data.qvel])
            np.testing.assert_allclose(got[1:], states[t][1:], atol=1e-5)
        elif env_id.startswith("Pendulum"):
            th, thdot = states[t]
            np.testing.assert_allclose([np.cos(inner.state[0]), np.sin(inner.state[0]), inner.state[1]],
                                       [np.cos(th), np.sin(th), thdot], atol=1e-5)
        else:
            np.testing.assert_allclose(inner.state, states[t], atol=1e-5)
    env.close()


def test_unknown_env_has_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no state setter.*register_state_setter"):
        state_setter_for("FrozenLake-v1")


def test_clip_is_a_playable_h264_mp4(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    frag, _ = rollout("Pendulum-v1", 12)
    renderer = ClipRenderer("Pendulum-v1", frame_skip=2, max_size=128, min_seconds=0)
    try:
        path = renderer.render(frag, tmp_path / "clip.mp4")
        slow = ClipRenderer("Pendulum-v1", frame_skip=2, max_size=128).render(frag, tmp_path / "slow.mp4")
    finally:
        renderer.close()
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp*"))
    reader = imageio.get_reader(path, format="FFMPEG")
    meta = reader.get_meta_data()
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 6 and frames[0].shape == (124, 124, 3)  # 500 px / 4, made even
    assert meta["codec"] == "h264" and meta["fps"] == pytest.approx(15.0)  # real time: 30 fps / frame_skip
    # a clip of 0.4 s real time is slowed to last min_seconds (1.5 s): 6 frames at 4 fps
    reader = imageio.get_reader(slow, format="FFMPEG")
    assert reader.get_meta_data()["fps"] == pytest.approx(4.0) and len([f for f in reader]) == 6
    reader.close()


def test_clips_render_without_sdl_complaints(tmp_path: Path) -> None:
    """On a headless machine pygame's SDL printed "XDG_RUNTIME_DIR is invalid or not set" per run."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "DISPLAY")}
    code = ("import numpy as np; from rlhfkit.feedback import Fragment; from rlhfkit.feedback.clips import render_clip; "
            "f = Fragment(np.tile([1.0, 0.0, 0.0], (4, 1)), np.zeros((4, 1)), np.zeros(4)); "
            f"render_clip('Pendulum-v1', f, {str(tmp_path / 'c.mp4')!r})")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "XDG_RUNTIME_DIR" not in res.stderr + res.stdout


# -- the human teacher's store side ----------------------------------------------------------------


def test_combine_outcomes() -> None:
    L, R, T, S, BB, CT = (Outcome.LEFT, Outcome.RIGHT, Outcome.TIE, Outcome.SKIP, Outcome.BOTH_BAD,
                          Outcome.CANT_TELL)
    assert combine_outcomes([L]) is L
    assert combine_outcomes([L, L, R]) is L
    assert combine_outcomes([L, R]) is T
    assert combine_outcomes([L, S, CT]) is L
    assert combine_outcomes([S, CT]) is CT and combine_outcomes([S]) is S
    assert combine_outcomes([BB, BB, L]) is BB
    assert Outcome.BOTH_BAD.target == 0.5 and Outcome.CANT_TELL.target is None
    with pytest.raises(ValueError):
        combine_outcomes([])


def pairs_with_known_order(n: int) -> list[tuple[Fragment, Fragment]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = Fragment(rng.normal(size=(4, 3)), rng.normal(size=(4, 1)), np.full(4, float(i)), episode=i, start=0)
        b = Fragment(rng.normal(size=(4, 3)), rng.normal(size=(4, 1)), np.full(4, float(i % 3)), episode=i, start=4)
        out.append((a, b))
    return out


def scripted_labeller(store: Store, name: str, stop: threading.Event) -> threading.Thread:
    """Answers every query from the true returns of the fragments behind it (through the store API)."""
    lab = store.labeller_for_token(store.add_labeller(name)).id

    def run() -> None:
        while not stop.is_set():
            shown = store.next_query(lab)
            if shown is None:
                time.sleep(0.02)
                continue
            left, right = load_query_pair(store, shown.query)
            r = [left.true_return, right.true_return]
            r_shown = [r[i] for i in shown.order]
            answer = "LEFT" if r_shown[0] > r_shown[1] else "RIGHT" if r_shown[1] > r_shown[0] else "TIE"
            store.submit_label(lab, shown.query.id, shown.show_id, answer)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_human_teacher_returns_the_people_s_answers(store: Store) -> None:
    pairs = pairs_with_known_order(7)
    teacher = HumanTeacher(store, render=False, grace_s=0.0, poll_s=0.02, show_progress=False, labels_per_query=2)
    assert isinstance(teacher, Teacher) and teacher.name == "human"  # the loop's Teacher protocol
    stop = threading.Event()
    threads = [scripted_labeller(store, name, stop) for name in ("ann", "bob")]
    try:
        outcomes = teacher.label(pairs)
    finally:
        stop.set()
        for t in threads:
            t.join()
    expected = [Outcome.LEFT if a.true_return > b.true_return else Outcome.RIGHT if a.true_return < b.true_return
                else Outcome.TIE for a, b in pairs]
    assert outcomes == expected
    assert len(store.labels()) == 14 and {q.status for q in store.queries()} == {"closed"}
    rebuilt = comparisons_from_store(store)  # from the store alone: fragments file + answers
    assert [c.outcome for c in rebuilt] == expected and rebuilt[0].teacher == "ann+bob"
    assert all(np.array_equal(c.left.obs, a.obs) for c, (a, _) in zip(rebuilt, pairs))


def test_human_teacher_renders_clips(store: Store) -> None:
    frags = [rollout("Pendulum-v1", 8, seed=i)[0] for i in range(2)]
    pairs = [(frags[0], frags[1]), (frags[1], frags[0])]
    teacher = HumanTeacher(store, env_id="Pendulum-v1", frame_skip=4, max_size=64, grace_s=0.0, poll_s=0.02,
                           show_progress=False)
    stop = threading.Event()
    t = scripted_labeller(store, "ann", stop)
    try:
        outcomes = teacher.label(pairs)
    finally:
        stop.set()
        t.join()
        teacher.close()
    better = Outcome.LEFT if frags[0].true_return > frags[1].true_return else Outcome.RIGHT
    assert outcomes == [better, Outcome.RIGHT if better is Outcome.LEFT else Outcome.LEFT]
    qs = store.queries()
    assert [q.kind for q in qs] == ["clip_pair", "clip_pair"] and qs[0].priority > qs[1].priority
    for q in qs:
        assert all((store.media_dir / it["media"]).is_file() for it in q.items)
        left, _ = load_query_pair(store, q)
        assert np.array_equal(left.obs, pairs[q.payload["index"]][0].obs)
    rebuilt = comparisons_from_store(store)
    assert [c.outcome for c in rebuilt] == outcomes and rebuilt[0].teacher == "ann"


def test_human_teacher_timeout(store: Store) -> None:
    pairs = pairs_with_known_order(2)
    teacher = HumanTeacher(store, render=False, timeout_s=0.3, poll_s=0.02, show_progress=False)
    with pytest.raises(TimeoutError, match="0/2 queries .* kept in the store"):
        teacher.label(pairs)
    assert {q.status for q in store.queries()} == {"cancelled"}  # no longer served
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    assert store.next_query(ann) is None
    teacher.on_timeout = "skip"

    def answer_one() -> None:
        while (s := store.next_query(ann)) is None:
            time.sleep(0.02)
        store.submit_label(ann, s.query.id, s.show_id, "LEFT" if s.order[0] == 0 else "RIGHT")

    t = threading.Thread(target=answer_one, daemon=True)
    t.start()
    out = teacher.label(pairs)
    t.join()
    assert out == [Outcome.LEFT, Outcome.SKIP]  # the first (highest priority) was answered


def test_human_teacher_tells_the_page_what_the_run_is_doing(store: Store) -> None:
    teacher = HumanTeacher(store, render=False, grace_s=0.0, poll_s=0.02, show_progress=False, label_budget=10)
    assert teacher.status() == {"state": "starting", "labelled": 0, "budget": 10}
    states: list[str] = []
    teacher.on_progress = lambda info: states.append(teacher.status()["state"])
    stop = threading.Event()
    t = scripted_labeller(store, "ann", stop)
    try:
        teacher.label(pairs_with_known_order(3))
    finally:
        stop.set()
        t.join()
    assert states and set(states) == {"labelling"}
    assert teacher.status() == {"state": "training", "labelled": 3, "budget": 10}
    resumed = HumanTeacher(store, render=False, show_progress=False, label_budget=10)  # a resumed run
    assert resumed.status()["labelled"] == 3
    teacher.close()
    assert teacher.status()["state"] == "finished"
