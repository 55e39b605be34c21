"""Tests of rlhfkit.feedback.store (the preference store), on SQLite and on PostgreSQL.

The ``store`` fixture runs each test on both backends (PostgreSQL: a fresh database on a
temporary server, see tests/_postgres.py). Concurrency has its own file, test_store_concurrency.py.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from rlhfkit.feedback.store import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    QuerySpec,
    Store,
    StoreError,
    labellers as labellers_mod,
    schema as schema_mod,
)


@pytest.fixture
def store(store_location: str, tmp_path: Path):
    s = Store(store_location, data_dir=tmp_path, seed=0)
    yield s
    s.close()


def text_pair(i: int, priority: float = 0.0, labels_needed: int = 1) -> QuerySpec:
    return QuerySpec("text_pair", [{"text": f"response A{i}"}, {"text": f"response B{i}"}], prompt=f"prompt {i}",
                     priority=priority, labels_needed=labels_needed)


def snapshot(store: Store) -> dict[str, list]:
    """Every row of every table (to check that a refused request wrote nothing)."""
    with store.engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
                for t in schema_mod.metadata.sorted_tables}


# -- opening, durability settings, schema ----------------------------------------------------------


def test_sqlite_is_opened_durable(tmp_path: Path) -> None:
    with Store(tmp_path / "labels.sqlite") as store:
        assert store.pragma("journal_mode") == "wal"
        assert store.pragma("synchronous") == 2  # FULL
        assert store.pragma("foreign_keys") == 1
        assert store.pragma("busy_timeout") == 30000
        assert store.schema_version() == schema_mod.SCHEMA_VERSION
        assert store.media_dir == store.data_dir / "media"


def test_in_memory_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in-memory"):
        Store("sqlite://")
    with pytest.raises(ValueError, match="in-memory"):
        Store("sqlite:///:memory:")
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        Store("mysql://u@h/db")


def test_a_missing_store_is_not_created_unless_asked(store_location: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError if "sqlite" in store_location else StoreError, match="no .*store"):
        Store(store_location, create=False)
    assert not (tmp_path / "labels.sqlite").exists()
    Store(store_location).close()
    Store(store_location, create=False).close()


def test_bare_postgresql_url_uses_psycopg() -> None:
    from rlhfkit.feedback.store import store_url

    assert store_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert store_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"


def test_newer_schema_is_refused(store_location: str) -> None:
    Store(store_location).close()
    engine = sa.create_engine(_raw_url(store_location))
    with engine.begin() as conn:
        conn.execute(schema_mod.rlhf_meta.update().values(value="99"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this rlhfkit"):
        Store(store_location)


def _raw_url(location: str) -> str:
    from rlhfkit.feedback.store import store_url

    return store_url(location)


def test_schema_1_store_migrates_and_keeps_its_tokens(store_location: str) -> None:
    """A store from schema version 1 (one token per labeller, no labeller_tokens) opens at version 2."""
    s = Store(store_location)
    tok = s.add_labeller("ann")
    s.close()
    engine = sa.create_engine(_raw_url(store_location))
    with engine.begin() as conn:  # back to version 1: no labeller_tokens table
        schema_mod.labeller_tokens.drop(conn)
        conn.execute(schema_mod.rlhf_meta.update().values(value="1"))
    engine.dispose()
    s = Store(store_location)
    try:
        assert s.upgraded_from == 1 and s.schema_version() == 2
        assert s.labeller_for_token(tok).name == "ann"  # the version-1 token still opens the page
        other = s.issue_token("ann")
        assert s.labeller_for_token(tok).name == s.labeller_for_token(other).name == "ann"
    finally:
        s.close()


def test_migrations_run_once_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "labels.sqlite"
    s = Store(path)
    tok = s.add_labeller("ann")
    s.close()
    calls = []

    def v2_to_v3(conn) -> None:
        calls.append(2)
        conn.exec_driver_sql("ALTER TABLE labels ADD COLUMN confidence REAL")

    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(schema_mod.MIGRATIONS, 2, v2_to_v3)
    s = Store(path)
    assert s.upgraded_from == 2 and s.schema_version() == 3 and calls == [2]
    assert s.labeller_for_token(tok).name == "ann"  # data kept
    s.close()
    s = Store(path)  # already at version 3: nothing runs
    assert calls == [2]
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
    assert store.labeller_for_token("x" * 10_000) is None
    with pytest.raises(ConflictError, match="already exists"):
        store.add_labeller("ann")
    with pytest.raises(ConflictError, match="already in use"):
        store.add_labeller("cy", token="b" * 20)
    with pytest.raises(InvalidInputError, match="16 to 512"):
        store.add_labeller("cy", token="short")
    for bad in ("   ", "a\x00b", "x" * 101, "tab\there", "\ud800"):
        with pytest.raises(InvalidInputError, match="name"):
            store.add_labeller(bad)
    # every known digest is compared with hmac.compare_digest (no early exit)
    calls = []
    real = labellers_mod.hmac.compare_digest
    monkeypatch.setattr(labellers_mod.hmac, "compare_digest", lambda x, y: calls.append(1) or real(x, y))
    assert store.labeller_for_token(a).name == "ann"
    assert len(calls) == 2
    monkeypatch.undo()
    # a new token for ann (a server start) leaves her open pages working
    new = store.issue_token("ann")
    assert store.labeller_for_token(new).name == "ann" and store.labeller_for_token(a).name == "ann"
    assert store.issue_token("ann", new) == new  # giving one she holds changes nothing
    with pytest.raises(ConflictError, match="already in use"):
        store.issue_token("ann", b)  # bob's
    # an explicit rotation revokes the others
    rotated = store.set_labeller_token("ann")
    assert store.labeller_for_token(rotated).name == "ann"
    assert store.labeller_for_token(a) is None and store.labeller_for_token(new) is None
    assert store.labeller_for_token(b).name == "bob"  # others' untouched
    assert [lab.name for lab in store.labellers()] == ["ann", "bob"]


def test_a_token_issued_by_another_process_is_seen(store_location: str) -> None:
    a, b = Store(store_location), Store(store_location)
    try:
        a.add_labeller("ann")
        assert b.labeller_for_token("t" * 20) is None
        tok = a.issue_token("ann", "t" * 20)
        time.sleep(1.05)  # an unknown token is looked up again at most once a second
        assert b.labeller_for_token(tok).name == "ann"
    finally:
        a.close()
        b.close()


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


def test_lease_expires_after_lease_s(store_location: str, tmp_path: Path) -> None:
    s = Store(store_location, lease_s=0.3)
    try:
        (qid,) = s.add_queries([text_pair(0)])
        ann = s.labeller_for_token(s.add_labeller("ann")).id
        bob = s.labeller_for_token(s.add_labeller("bob")).id
        shown = s.next_query(ann)
        assert shown.query.id == qid
        assert s.next_query(bob) is None  # leased to ann
        time.sleep(0.35)
        again = s.next_query(bob)
        assert again is not None and again.query.id == qid  # shown > lease_s ago, unanswered: served again
        s.submit_label(bob, qid, again.show_id, "LEFT")
        # ann answers late: her answer is kept and counted (the one way past labels_needed)
        late = s.submit_label(ann, qid, shown.show_id, "RIGHT")
        assert not late.duplicate and s.query(qid).n_labels == 2 and len(s.labels()) == 2
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
    sid = shown.show_id
    ok = dict(labeller_id=ann, query_id=qid, show_id=sid, outcome="LEFT")
    cases = [
        (NotFoundError, "unknown query id", dict(ok, query_id=99_999)),
        (NotFoundError, "unknown show id", dict(ok, show_id=99_999)),
        (NotFoundError, "unknown labeller id", dict(ok, labeller_id=99_999)),
        (InvalidInputError, "invalid outcome", dict(ok, outcome="UP")),
        (InvalidInputError, "invalid outcome", dict(ok, outcome=None)),
        (InvalidInputError, "invalid outcome", dict(ok, outcome="LEFT\x00")),
        (InvalidInputError, "not a showing", dict(ok, labeller_id=bob)),
        (InvalidInputError, "only for ranking", dict(ok, outcome="RANKING", ranking=[0, 1])),
        (InvalidInputError, "only allowed with outcome RANKING", dict(ok, ranking=[0, 1])),
        (InvalidInputError, "at most 2000", dict(ok, reason="x" * 2001)),
        (InvalidInputError, "NUL", dict(ok, reason="fine\x00then")),  # PostgreSQL cannot store U+0000
        (InvalidInputError, "surrogate", dict(ok, reason="\ud83d")),  # nor can either driver encode this
        (InvalidInputError, "must be a string", dict(ok, reason=12)),
        (InvalidInputError, "must be an integer", dict(ok, query_id="1")),
        (InvalidInputError, "must be an integer", dict(ok, show_id=1.0)),
        (InvalidInputError, "must be an integer", dict(ok, query_id=True)),
    ]
    for big in (0, -1, 2**31, 2**63, 10**4000):  # ids no row can have: PostgreSQL integer, SQLite int64
        cases += [(NotFoundError, "unknown query id", dict(ok, query_id=big)),
                  (NotFoundError, "unknown show id", dict(ok, show_id=big)),
                  (NotFoundError, "unknown labeller id", dict(ok, labeller_id=big))]
    before = snapshot(store)
    for err, msg, kw in cases:
        with pytest.raises(err, match=msg):
            store.submit_label(**kw)
        assert len(str(pytest.raises(err, store.submit_label, **kw).value)) < 300  # a 4,001-digit id is not echoed
    for lab in (0, 2**63, 99_999):
        with pytest.raises(NotFoundError):
            store.next_query(lab)
        with pytest.raises(NotFoundError):
            store.undo_last(lab)
    assert snapshot(store) == before
    assert store.labels(include_retracted=True) == [] and store.query(qid).n_labels == 0 and rid > qid


def test_bad_queries_write_nothing(store: Store) -> None:
    before = snapshot(store)
    bad = [
        ("NUL", [QuerySpec("text_pair", [{"text": "a\x00"}, {"text": "b"}])], {}),
        ("NUL", [QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}], prompt="p\x00")], {}),
        ("surrogate", [QuerySpec("text_pair", [{"text": "\udc80"}, {"text": "b"}])], {}),
        ("JSON cannot store", [QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}], payload={"x": float("nan")})], {}),
        ("JSON cannot store", [QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}], payload={"x": object()})], {}),
        ("nested more than 32", [QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}],
                                           payload=json.loads("[" * 40 + "]" * 40))], {}),
        ("labels_needed", [QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}], labels_needed=0)], {}),
        ("labels_needed", [QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}], labels_needed=2.5)], {}),
        ("priority", [QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}], priority=float("inf"))], {}),
        ("batch", [text_pair(0)], {"batch": "b\x00"}),
        ("batch", [text_pair(0)], {"batch": "b" * 201}),
        ("status", [text_pair(0)], {"status": "closed"}),
        ("exactly 2 items", [text_pair(0), QuerySpec("text_pair", [{"text": "a"}])], {}),  # one bad spec: none
    ]
    for msg, specs, kw in bad:
        with pytest.raises(InvalidInputError, match=msg):
            store.add_queries(specs, **kw)
    assert snapshot(store) == before


def test_rankings_are_stored_in_canonical_terms(store: Store) -> None:
    (rid,) = store.add_queries([QuerySpec("ranking", [{"text": t} for t in ("a", "b", "c", "d")])])
    ann = store.labeller_for_token(store.add_labeller("ann")).id
    shown = store.next_query(ann)
    for bad, msg in (([0, 0, 1, 2], "permutation"), ([0, 1, 2, 2**70], "permutation"), ([0, 1, 2, True], "needs"),
                     (list(range(17)), "needs"), ([0, 1, 2], "permutation")):
        with pytest.raises(InvalidInputError, match=msg):
            store.submit_label(ann, rid, shown.show_id, "RANKING", ranking=bad)
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
    assert store.query(s0.query.id).status == "done" and store.query(s0.query.id).n_labels == 1
    undone, again = store.undo_last(ann)
    assert undone.id == r.label.id and undone.retracted_at is not None
    assert again.query.id == s0.query.id and again.order == s0.order
    assert store.query(s0.query.id).status == "open" and store.query(s0.query.id).n_labels == 0
    assert store.labels() == []
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


def test_media_paths_are_checked(store: Store) -> None:
    (store.media_dir / "x").mkdir(parents=True)
    (store.media_dir / "x" / "a.mp4").write_bytes(b"0")
    for bad in ("../a.mp4", "/etc/passwd", "x/../../a.mp4", "x\\..\\a.mp4", "x/a\x00.mp4"):
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
    with pytest.raises(FileNotFoundError, match="no such folder"):
        store.export_trl(tmp_path / "missing" / "x.jsonl")
    other = Store(tmp_path / "other" / "labels.sqlite")
    try:
        assert other.import_trl(flagged, labeller="imported") == (4, 0)
        again = tmp_path / "again.jsonl"
        assert other.export_trl(again) == 4
        strip = lambda r: {k: v for k, v in r.items() if k not in ("query_id", "labeller")}  # noqa: E731
        assert [strip(json.loads(x)) for x in again.read_text().splitlines()] == [strip(r) for r in rows]
    finally:
        other.close()


def test_trl_import_is_idempotent(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "b"},
            {"chosen": [{"role": "user", "content": "c"}], "rejected": "d", "tie": True}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert store.import_trl(path) == (3, 0)  # a file's own repeated rows are each imported
    assert store.import_trl(path) == (0, 3)  # the same file again adds nothing
    path.write_text(path.read_text() + json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    assert store.import_trl(path) == (1, 3)  # a third copy of the row is new
    assert store.import_trl(path, labeller="someone else") == (4, 0)
    assert len(store.labels()) == 8 and len(store.queries()) == 8


def test_trl_import_rejects_a_bad_file_whole(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    cases = [
        ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n',
         r"bad.jsonl:2: missing field 'rejected'"),
        ('{"chosen": "a", "rejected": "b"}\nnot json\n', r"bad.jsonl:2: not valid JSON"),
        ('{"chosen": "a", "rejected": 3}\n', r"bad.jsonl:1: .*strings or lists of messages"),
        ('{"chosen": "a\\u0000", "rejected": "b"}\n', r"bad.jsonl:1: .*NUL"),
        ('{"chosen": "a", "rejected": "b", "prompt": "\\ud800"}\n', r"bad.jsonl:1: .*surrogate"),
        ("[" * 5000 + "]" * 5000 + "\n", r"bad.jsonl:1: not valid JSON"),
        ('{"chosen": "a", "rejected": "b", "tie": 1}\n', r"bad.jsonl:1: 'tie' must be true or false"),
    ]
    for text, msg in cases:
        bad.write_text(text)
        with pytest.raises(ValueError, match=msg):
            store.import_trl(bad)
    assert store.queries() == [] and store.labels() == []


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
