"""Tests of rlhfkit.feedback.store (the preference store), clips and the human teacher's store side."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlhfkit.feedback import Fragment, Outcome, Teacher
from rlhfkit.feedback import store as store_mod
from rlhfkit.feedback.clips import ClipRenderer, state_setter_for
from rlhfkit.feedback.human import HumanTeacher, combine_outcomes, comparisons_from_store, load_query_pair
from rlhfkit.feedback.store import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    QuerySpec,
    Store,
    StoreError,
)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "labels.sqlite", seed=0)
    yield s
    s.close()


def text_pair(i: int, priority: float = 0.0, labels_needed: int = 1) -> QuerySpec:
    return QuerySpec("text_pair", [{"text": f"response A{i}"}, {"text": f"response B{i}"}], prompt=f"prompt {i}",
                     priority=priority, labels_needed=labels_needed)


# -- opening, durability settings, schema ----------------------------------------------------------


def test_sqlite_is_opened_durable(store: Store) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("foreign_keys") == 1
    assert store.pragma("busy_timeout") == 30000
    assert store.schema_version() == store_mod.SCHEMA_VERSION
    assert store.media_dir == store.data_dir / "media"


def test_in_memory_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in-memory"):
        Store("sqlite://")
    with pytest.raises(ValueError, match="in-memory"):
        Store("sqlite:///:memory:")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE rlhf_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this rlhfkit"):
        Store(path)


def test_migrations_run_once_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "labels.sqlite"
    s = Store(path)
    tok = s.add_labeller("ann")
    s.close()
    calls = []

    def v1_to_v2(conn) -> None:
        calls.append(1)
        conn.exec_driver_sql("ALTER TABLE labels ADD COLUMN confidence REAL")

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(store_mod.MIGRATIONS, 1, v1_to_v2)
    s = Store(path)
    assert s.upgraded_from == 1 and s.schema_version() == 2 and calls == [1]
    assert s.labeller_for_token(tok).name == "ann"  # data kept
    s.close()
    s = Store(path)  # already at version 2: nothing runs
    assert calls == [1]
    s.close()


def test_foreign_tables_are_not_taken_for_a_store(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE queries (x)")
    with pytest.raises(StoreError, match="not an rlhfkit store"):
        Store(path)


# -- labellers and tokens ------------------------------------------------------------------------------


def test_labellers_and_tokens(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    a = store.add_labeller("ann")
    b = store.add_labeller("bob", token="b" * 20)
    assert len(a) >= 32 and b == "b" * 20
    assert store.labeller_for_token(a).name == "ann"
    assert store.labeller_for_token(b).name == "bob"
    assert store.labeller_for_token("x" * 32) is None and store.labeller_for_token("") is None
    with pytest.raises(ConflictError, match="already exists"):
        store.add_labeller("ann")
    with pytest.raises(InvalidInputError, match="at least 16"):
        store.add_labeller("cy", token="short")
    with pytest.raises(InvalidInputError, match="name"):
        store.add_labeller("   ")
    # every known digest is compared with hmac.compare_digest (no early exit)
    calls = []
    real = store_mod.hmac.compare_digest
    monkeypatch.setattr(store_mod.hmac, "compare_digest", lambda x, y: calls.append(1) or real(x, y))
    assert store.labeller_for_token(a).name == "ann"
    assert len(calls) == 2
    monkeypatch.undo()
    new = store.set_labeller_token("ann")
    assert store.labeller_for_token(new).name == "ann"
    assert store.labeller_for_token(a) is None  # the old URL stops working


# -- serving -----------------------------------------------------------------------------------------


def test_queries_are_served_by_priority(store: Store) -> None:
    ids = store.add_queries([text_pair(0, 1.0), text_pair(1, 5.0), text_pair(2, 3.0), text_pair(3, 5.0)])
    lab = store.labeller_for_token(store.add_labeller("ann"))
    served = []
    while (shown := store.next_query(lab.id)) is not None:
        served.append(shown.query.id)
        store.submit_label(lab.id, shown.query.id, shown.show_id, "LEFT")
    assert served == [ids[1], ids[3], ids[2], ids[0]]  # highest first, oldest first among equals


def test_reload_shows_the_same_query_in_the_same_order(store: Store) -> None:
    store.add_queries([text_pair(i) for i in range(3)])
    lab = store.labeller_for_token(store.add_labeller("ann")).id
    first = store.next_query(lab)
    again = store.next_query(lab)
    assert (again.show_id, again.query.id, again.order) == (first.show_id, first.query.id, first.order)


def test_shown_order_is_random_stored_and_answers_are_canonical(store: Store) -> None:
    store.add_queries([text_pair(i) for i in range(40)])
    lab = store.labeller_for_token(store.add_labeller("ann")).id
    orders = []
    while (shown := store.next_query(lab)) is not None:
        orders.append(shown.order)
        assert shown.items_shown == [shown.query.items[i] for i in shown.order]
        res = store.submit_label(lab, shown.query.id, shown.show_id, "LEFT")  # the item shown on the left
        assert res.label.shown_order == shown.order
        assert res.label.outcome == ("LEFT" if shown.order[0] == 0 else "RIGHT")
    assert set(orders) == {(0, 1), (1, 0)}
    assert 8 <= sum(o == (1, 0) for o in orders) <= 32


def test_lease_expires_after_lease_s(tmp_path: Path) -> None:
    s = Store(tmp_path / "l.sqlite", lease_s=0.3)
    try:
        (qid,) = s.add_queries([text_pair(0)])
        ann = s.labeller_for_token(s.add_labeller("ann")).id
        bob = s.labeller_for_token(s.add_labeller("bob")).id
        assert s.next_query(ann).query.id == qid
        assert s.next_query(bob) is None  # leased to ann
        time.sleep(0.35)
        again = s.next_query(bob)
        assert again is not None and again.query.id == qid  # shown > lease_s ago, unanswered: served again
    finally:
        s.close()


def test_n_labellers_per_query(store: Store) -> None:
    (qid,) = store.add_queries([text_pair(0, labels_needed=2)])
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    bob = store.labeller_for_token(store.add_labeller("bob")).id
    cy = store.labeller_for_token(store.add_labeller("cy")).id
    a, b = store.next_query(ann), store.next_query(bob)
    assert a.query.id == b.query.id == qid
    assert store.next_query(cy) is None  # two leases cover the two labels needed
    store.submit_label(ann, qid, a.show_id, "LEFT")
    assert store.query(qid).status == "open" and store.next_query(ann) is None
    store.submit_label(bob, qid, b.show_id, "TIE")
    assert store.query(qid).status == "done" and store.query(qid).n_labels == 2
    assert store.next_query(cy) is None


def test_retried_answer_is_not_duplicated_and_a_different_one_conflicts(store: Store) -> None:
    store.add_queries([text_pair(0)])
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    shown = store.next_query(ann)
    first = store.submit_label(ann, shown.query.id, shown.show_id, "TIE", reason="close call")
    again = store.submit_label(ann, shown.query.id, shown.show_id, "TIE")
    assert again.duplicate and again.label.id == first.label.id
    with pytest.raises(ConflictError, match="undo it first"):
        store.submit_label(ann, shown.query.id, shown.show_id, "SKIP")
    labels = store.labels()
    assert len(labels) == 1 and labels[0].reason == "close call"


def test_bad_answers_write_nothing(store: Store) -> None:
    (qid, rid) = store.add_queries([text_pair(0), QuerySpec("ranking", [{"text": t} for t in "abc"])])
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    bob = store.labeller_for_token(store.add_labeller("bob")).id
    shown = store.next_query(ann)
    cases = [
        (NotFoundError, "unknown query id", dict(labeller_id=ann, query_id=999, show_id=shown.show_id, outcome="LEFT")),
        (NotFoundError, "unknown show id", dict(labeller_id=ann, query_id=qid, show_id=999, outcome="LEFT")),
        (InvalidInputError, "invalid outcome", dict(labeller_id=ann, query_id=qid, show_id=shown.show_id, outcome="UP")),
        (InvalidInputError, "not a showing", dict(labeller_id=bob, query_id=qid, show_id=shown.show_id, outcome="LEFT")),
        (InvalidInputError, "only for ranking", dict(labeller_id=ann, query_id=qid, show_id=shown.show_id,
                                                     outcome="RANKING", ranking=[0, 1])),
        (InvalidInputError, "at most 2000", dict(labeller_id=ann, query_id=qid, show_id=shown.show_id, outcome="LEFT",
                                                 reason="x" * 2001)),
    ]
    for err, msg, kw in cases:
        with pytest.raises(err, match=msg):
            store.submit_label(**kw)
    assert store.labels(include_retracted=True) == [] and store.query(qid).n_labels == 0


def test_rankings_are_stored_in_canonical_terms(store: Store) -> None:
    (rid,) = store.add_queries([QuerySpec("ranking", [{"text": t} for t in ("a", "b", "c", "d")])])
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    shown = store.next_query(ann)
    with pytest.raises(InvalidInputError, match="permutation"):
        store.submit_label(ann, rid, shown.show_id, "RANKING", ranking=[0, 0, 1, 2])
    with pytest.raises(InvalidInputError, match="ranking query takes"):
        store.submit_label(ann, rid, shown.show_id, "LEFT")
    res = store.submit_label(ann, rid, shown.show_id, "RANKING", ranking=[3, 1, 0, 2])  # display positions
    assert res.label.ranking == tuple(shown.order[p] for p in (3, 1, 0, 2))


def test_undo_keeps_history_and_reshows_the_query(store: Store) -> None:
    store.add_queries([text_pair(0, 2.0), text_pair(1, 1.0)], batch="b")
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    with pytest.raises(NotFoundError, match="nothing to undo"):
        store.undo_last(ann)
    s0 = store.next_query(ann)
    r = store.submit_label(ann, s0.query.id, s0.show_id, "LEFT", want_next=True)
    assert r.next is not None and r.next.query.id != s0.query.id
    undone, again = store.undo_last(ann)
    assert undone.id == r.label.id and undone.retracted_at is not None
    assert again.query.id == s0.query.id and again.order == s0.order
    assert store.query(s0.query.id).status == "open" and store.labels() == []
    assert store.next_query(ann).show_id == again.show_id  # the undone query comes first
    store.submit_label(ann, s0.query.id, again.show_id, "RIGHT")
    labels = store.labels(include_retracted=True)
    assert [(lab.outcome, lab.retracted_at is None) for lab in labels] == [("LEFT", False), ("RIGHT", True)]
    # once a teacher has collected the answer for training, it cannot be undone
    assert set(store.collect("b")) == {s0.query.id}
    with pytest.raises(ConflictError, match="already used for training"):
        store.undo_last(ann)


def test_collect_and_cancel(store: Store) -> None:
    ids = store.add_queries([text_pair(i) for i in range(3)], batch="b")
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    shown = store.next_query(ann)
    store.submit_label(ann, shown.query.id, shown.show_id, "TIE")
    assert store.batch_progress("b")["done"] == 1 and store.batch_progress("b")["total"] == 3
    got = store.collect("b")
    assert list(got) == [shown.query.id] and got[shown.query.id][0].outcome == "TIE"
    assert store.collect("b") == {}
    assert store.cancel("b") == 2
    assert {q.status for q in store.queries(batch="b")} == {"closed", "cancelled"}
    assert store.next_query(ann) is None and len(ids) == 3


def test_group_commit_isolates_each_write(store: Store) -> None:
    """Writes run concurrently share transactions; a failing one rolls back only itself."""
    ids = store.add_queries([text_pair(i) for i in range(60)])
    who = [store.labeller_for_token(store.add_labeller(f"l{i}")).id for i in range(60)]
    shown = [store.next_query(lab) for lab in who]  # each labeller holds a different query
    errors = []

    def answer(i: int) -> None:
        try:  # every third one is invalid
            store.submit_label(who[i], shown[i].query.id, shown[i].show_id, "LEFT" if i % 3 else "NOPE")
        except InvalidInputError as e:
            errors.append(e)

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 20 and len(store.labels()) == 40 and len(ids) == 60


def test_media_paths_are_checked(store: Store) -> None:
    (store.media_dir / "x").mkdir(parents=True)
    (store.media_dir / "x" / "a.mp4").write_bytes(b"0")
    for bad in ("../a.mp4", "/etc/passwd", "x/../../a.mp4"):
        with pytest.raises(InvalidInputError, match="relative"):
            store.add_queries([QuerySpec("clip_pair", [{"media": bad}, {"media": "x/a.mp4"}])])
    with pytest.raises(InvalidInputError, match="is not in"):
        store.add_queries([QuerySpec("clip_pair", [{"media": "x/a.mp4"}, {"media": "x/missing.mp4"}])])
    with pytest.raises(InvalidInputError, match="exactly 2 items"):
        store.add_queries([QuerySpec("text_pair", [{"text": "a"}])])
    with pytest.raises(InvalidInputError, match="kind"):
        store.add_queries([QuerySpec("poll", [{"text": "a"}, {"text": "b"}])])
    assert store.queries() == []


# -- TRL export and import -------------------------------------------------------------------------


def test_trl_export_import_round_trip(store: Store, tmp_path: Path) -> None:
    ids = store.add_queries([text_pair(i, priority=-i) for i in range(6)])
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    answers = ["LEFT", "RIGHT", "TIE", "BOTH_BAD", "CANT_TELL", "SKIP"]
    canonical = []
    for answer in answers:
        s = store.next_query(ann)
        canonical.append(store.submit_label(ann, s.query.id, s.show_id, answer).label.outcome)
    flagged, dropped = tmp_path / "flag.jsonl", tmp_path / "drop.jsonl"
    assert store.export_trl(flagged, ties="flag") == 4 and store.export_trl(dropped, ties="drop") == 2
    rows = [json.loads(line) for line in flagged.read_text().splitlines()]
    for row, qid, outcome in zip(rows, ids, canonical):
        i = ids.index(qid)
        assert row["prompt"] == f"prompt {i}" and row["query_id"] == qid and row["labeller"] == "ann"
        winner = "A" if outcome in ("LEFT", "TIE", "BOTH_BAD") else "B"
        assert row["chosen"] == f"response {winner}{i}"
        assert row.get("tie", False) == (outcome in ("TIE", "BOTH_BAD"))
    other = Store(tmp_path / "other" / "labels.sqlite")
    try:
        assert other.import_trl(flagged, labeller="imported") == 4
        again = tmp_path / "again.jsonl"
        assert other.export_trl(again) == 4
        strip = lambda r: {k: v for k, v in r.items() if k not in ("query_id", "labeller")}  # noqa: E731
        assert [strip(json.loads(x)) for x in again.read_text().splitlines()] == [strip(r) for r in rows]
    finally:
        other.close()


def test_trl_import_rejects_a_bad_file_whole(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'rejected'"):
        store.import_trl(bad)
    bad.write_text('{"chosen": "a", "rejected": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        store.import_trl(bad)
    bad.write_text('{"chosen": "a", "rejected": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: .*strings or lists of messages"):
        store.import_trl(bad)
    assert store.queries() == [] and store.labels() == []


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
    renderer = ClipRenderer("Pendulum-v1", frame_skip=2, max_size=128)
    try:
        path = renderer.render(frag, tmp_path / "clip.mp4")
    finally:
        renderer.close()
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp*"))
    reader = imageio.get_reader(path, format="FFMPEG")
    meta = reader.get_meta_data()
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 6 and frames[0].shape == (124, 124, 3)  # 500 px / 4, made even
    assert meta["codec"] == "h264" and meta["fps"] == pytest.approx(15.0)


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


# -- the web app's awaitable path -----------------------------------------------------------------


def test_async_claim_and_answer_count_progress_in_the_same_transaction(store: Store) -> None:
    import asyncio

    a = store.labeller_for_token(store.add_labeller("a"))
    b = store.labeller_for_token(store.add_labeller("b"))
    store.add_queries([text_pair(0, labels_needed=2), text_pair(1), text_pair(2)])

    async def run() -> None:
        shown, progress = await store.claim_async(a.id)
        assert shown is not None and shown.query.prompt == "prompt 0"  # equal priority: oldest first
        assert progress == {"answered": 0, "waiting": 3}
        res = await store.submit_label_async(a.id, shown.query.id, shown.show_id, "LEFT", want_next=True)
        # q0 still needs b's answer, so it stays open but no longer waits for a
        assert res.progress == {"answered": 1, "waiting": 2} and not res.duplicate
        assert res.next is not None and res.next.query.prompt == "prompt 1"
        again = await store.submit_label_async(a.id, shown.query.id, shown.show_id, "LEFT")
        assert again.duplicate and again.label.id == res.label.id
        _, progress_b = await store.claim_async(b.id)
        assert progress_b == {"answered": 0, "waiting": 3}
        with pytest.raises(InvalidInputError, match="invalid outcome"):  # raised before anything is queued
            await store.submit_label_async(a.id, shown.query.id, shown.show_id, "SIDEWAYS")
        with pytest.raises(NotFoundError, match="unknown query id 999"):
            await store.submit_label_async(a.id, 999, shown.show_id, "LEFT")

    asyncio.run(run())
    (stored,) = store.labels()  # the retried answer and the bad ones wrote nothing
    # LEFT as shown, stored in canonical terms: the item shown on the left won
    assert stored.labeller == "a" and stored.outcome == ("LEFT" if stored.shown_order[0] == 0 else "RIGHT")
