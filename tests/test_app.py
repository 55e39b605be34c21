"""Tests of the labelling server over real HTTP: security, bad input, durability, concurrency, CLI."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rlhfkit.app import create_app, start_human_teacher, start_server
from rlhfkit.app.server import free_port, spawn_server
from rlhfkit.cli import app as cli_app
from rlhfkit.feedback.store import QuerySpec, Store

TOKEN = "t" * 24


def text_pairs(n: int, prompt: str = "p") -> list[QuerySpec]:
    return [QuerySpec("text_pair", [{"text": f"A{i}"}, {"text": f"B{i}"}], prompt=prompt) for i in range(n)]


@pytest.fixture
def served(tmp_path: Path):
    """A store with one labeller and 5 text queries, served in-process on a free port."""
    store = Store(tmp_path / "labels.sqlite", seed=0)
    store.add_labeller("ann <i>", token=TOKEN)
    store.add_queries(text_pairs(5, prompt="<script>alert('x')</script>"))
    handle = start_server(create_app(store, guidelines="Prefer <b>upright</b> poles."), port=0)
    client = httpx.Client(base_url=handle.base_url, headers={"X-Label-Token": TOKEN}, timeout=10)
    yield store, handle, client
    client.close()
    handle.stop()
    store.close()


def test_page_is_self_contained_and_escaped(served) -> None:
    store, handle, client = served
    r = client.get(f"/label?token={TOKEN}")
    assert r.status_code == 200
    html = r.text
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(ref.startswith("/static/") for ref in refs)  # every asset served locally, no CDN
    assert "&lt;i&gt;" in html and "<i>" not in html  # the labeller's name is escaped
    assert "Prefer &lt;b&gt;upright&lt;/b&gt; poles." in html
    for hint in ("←", "→", "↓", ">b<", ">c<", ">s<", ">u<", "Guidelines"):
        assert hint in html
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-frame-options"] == "DENY"
    for asset in ("/static/label.js", "/static/label.css"):
        a = client.get(asset)
        assert a.status_code == 200 and "http://" not in a.text and "https://" not in a.text
    assert "innerHTML" not in client.get("/static/label.js").text  # server text only through textContent
    assert client.get("/label").status_code == 401
    assert client.get("/label?token=" + "x" * 24).status_code == 403


def test_label_next_undo_over_http(served) -> None:
    store, handle, client = served
    q = client.post("/api/next").json()["query"]
    assert q["prompt"] == "<script>alert('x')</script>"  # data stays data; the page uses textContent
    r = client.post("/api/label", json={"query_id": q["query_id"], "show_id": q["show_id"], "outcome": "left",
                                        "reason": "steadier", "next": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["progress"]["answered"] == 1 and body["query"]["query_id"] != q["query_id"]
    again = client.post("/api/label", json={"query_id": q["query_id"], "show_id": q["show_id"], "outcome": "LEFT"})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    u = client.post("/api/undo")
    assert u.status_code == 200 and u.json()["query"]["query_id"] == q["query_id"]
    assert store.labels() == [] and len(store.labels(include_retracted=True)) == 1
    assert client.post("/api/undo").status_code == 404
    assert client.get("/api/progress").json()["progress"]["answered"] == 0


def test_bad_input_gets_a_clear_4xx_and_writes_nothing(served) -> None:
    store, handle, client = served
    q = client.post("/api/next").json()["query"]
    good = {"query_id": q["query_id"], "show_id": q["show_id"], "outcome": "LEFT"}
    raw = httpx.Client(base_url=handle.base_url, timeout=10)
    json_h = {"X-Label-Token": TOKEN, "Content-Type": "application/json"}

    def big_chunks():
        for _ in range(40):
            yield b" " * 1024

    cases = [
        ("unknown query id", lambda: client.post("/api/label", json={**good, "query_id": 99999}), 404, "unknown query"),
        ("malformed JSON", lambda: client.post("/api/label", content=b'{"query_id": 1,', headers=json_h), 400,
         "malformed JSON"),
        ("invalid outcome", lambda: client.post("/api/label", json={**good, "outcome": "UP"}), 422, "invalid outcome"),
        ("query id not int", lambda: client.post("/api/label", json={**good, "query_id": "1"}), 422, "integer"),
        ("missing field", lambda: client.post("/api/label", json={"outcome": "LEFT"}), 422, "missing field"),
        ("not JSON", lambda: client.post("/api/label", content=b"outcome=LEFT",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "JSON"),
        ("oversized body", lambda: client.post("/api/label", json={**good, "reason": "x" * 20_000}), 413, "too large"),
        ("oversized chunked body", lambda: client.post("/api/label", content=big_chunks(), headers=json_h), 413,
         "too large"),
        ("path traversal", lambda: client.get("/media/%2e%2e/%2e%2e/labels.sqlite"), 400, "media folder"),
        ("encoded slash traversal", lambda: client.get("/media/..%2F..%2Fetc%2Fpasswd"), 400, "media folder"),
        ("missing token", lambda: raw.post("/api/label", json=good), 401, "missing labeller token"),
        ("wrong token", lambda: raw.post("/api/label", json=good, headers={"X-Label-Token": "w" * 24}), 403,
         "unknown labeller token"),
        ("state change by GET", lambda: client.get("/api/label"), 405, "only by POST"),
        ("show of another query", lambda: client.post("/api/label", json={**good, "query_id": q["query_id"] + 1}),
         422, "not a showing"),
    ]
    for name, call, status, message in cases:
        r = call()
        assert r.status_code == status, (name, r.status_code, r.text)
        assert message in r.json()["error"], (name, r.json())
    raw.close()
    assert store.labels(include_retracted=True) == []
    assert all(qq.n_labels == 0 for qq in store.queries())


def test_media_only_from_the_media_folder(served, tmp_path: Path) -> None:
    store, handle, client = served
    media = store.media_dir
    (media / "b1").mkdir(parents=True)
    (media / "b1" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (media / "b1" / "notes.txt").write_text("not media")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"secret")
    (media / "b1" / "link.mp4").symlink_to(outside)
    r = client.get("/media/b1/clip.mp4")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert client.get(f"/media/b1/clip.mp4?token={TOKEN}", headers={"X-Label-Token": ""}).status_code == 200
    assert httpx.get(f"{handle.base_url}/media/b1/clip.mp4").status_code == 401
    assert client.get("/media/b1/notes.txt").status_code == 404
    assert client.get("/media/b1/link.mp4").status_code == 400  # a symlink out of the folder
    assert client.get("/media/b1/missing.mp4").status_code == 404


def test_long_poll_returns_as_soon_as_a_query_is_posted(tmp_path: Path) -> None:
    store = Store(tmp_path / "labels.sqlite")
    store.add_labeller("ann", token=TOKEN)
    handle = start_server(create_app(store), port=0)
    try:
        threading.Timer(0.4, lambda: store.add_queries(text_pairs(1))).start()
        t = time.monotonic()
        r = httpx.post(f"{handle.base_url}/api/next", json={"wait_s": 10}, headers={"X-Label-Token": TOKEN}, timeout=20)
        assert r.json()["query"] is not None and 0.3 < time.monotonic() - t < 3
        bad = httpx.post(f"{handle.base_url}/api/next", json={"wait_s": 999}, headers={"X-Label-Token": TOKEN})
        assert bad.status_code == 422
    finally:
        handle.stop()
        store.close()


def test_serving_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    Store(path).close()
    result = CliRunner().invoke(cli_app, ["label", "serve", "--store", str(path), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "without a token" in result.output
    with pytest.raises(PermissionError, match="without a token"):
        start_human_teacher(None, tmp_path / "run", "Pendulum-v1", host="0.0.0.0", port=0)


# -- a server in its own process -----------------------------------------------------------------------


def test_acknowledged_labels_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    store = Store(path)
    store.add_queries(text_pairs(40))
    store.close()
    port = free_port()
    proc = spawn_server(path, port, TOKEN, labeller="ann")
    acked = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Label-Token": TOKEN}, timeout=10) as c:
            q = c.post("/api/next").json()["query"]
            for i in range(25):
                r = c.post("/api/label", json={"query_id": q["query_id"], "show_id": q["show_id"],
                                               "outcome": ("LEFT", "RIGHT", "TIE")[i % 3], "next": True})
                assert r.status_code == 200
                acked.append(r.json()["label_id"])
                q = r.json()["query"]
        os.kill(proc.pid, signal.SIGKILL)  # right after the 25th acknowledgement
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    proc = spawn_server(path, port, TOKEN, labeller="ann")  # restart on the same store
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/progress", headers={"X-Label-Token": TOKEN})
        assert r.json()["progress"]["answered"] == 25
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
    store = Store(path)
    assert sorted(lab.id for lab in store.labels()) == sorted(acked)
    store.close()


def test_16_clients_200_labels_each_none_lost_none_duplicated(tmp_path: Path) -> None:
    n_clients, per_client = 16, 200
    path = tmp_path / "labels.sqlite"
    store = Store(path)
    tokens = [store.add_labeller(f"labeller{i:02d}") for i in range(n_clients)]
    store.add_queries(text_pairs(n_clients * per_client + 50))
    store.close()
    port = free_port()
    proc = spawn_server(path, port, TOKEN, labeller="ann")
    acks: list[list[int]] = [[] for _ in range(n_clients)]
    errors: list[str] = []

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # keep-alive, light on CPU
        headers = {"X-Label-Token": tokens[i], "Content-Type": "application/json"}

        def post(path: str, payload: dict) -> tuple[int, dict]:
            conn.request("POST", path, body=json.dumps(payload), headers=headers)
            r = conn.getresponse()
            return r.status, json.loads(r.read())

        try:
            status, body = post("/api/next", {})
            q = body["query"]
            while len(acks[i]) < per_client:
                status, body = post("/api/label", {"query_id": q["query_id"], "show_id": q["show_id"],
                                                   "outcome": "LEFT" if (i + len(acks[i])) % 2 else "RIGHT",
                                                   "next": True})
                if status != 200 or body["duplicate"]:
                    errors.append(f"client {i}: {status} {body}")
                    return
                acks[i].append(body["label_id"])
                q = body["query"]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {i}: {e!r}")
        finally:
            conn.close()

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
    assert errors == []
    store = Store(path)
    labels = store.labels(include_retracted=True)
    store.close()
    assert len(labels) == n_clients * per_client == 3200
    assert len({lab.id for lab in labels}) == 3200 and len({lab.query_id for lab in labels}) == 3200
    assert sorted(lab.id for lab in labels) == sorted(x for a in acks for x in a)
    assert set(Counter(lab.labeller for lab in labels).values()) == {per_client}


# -- CLI: export and import ----------------------------------------------------------------------------


def test_cli_export_and_import(tmp_path: Path) -> None:
    src = tmp_path / "a" / "labels.sqlite"
    store = Store(src, seed=1)
    lab = store.labeller_for_token(store.add_labeller("ann")).id
    store.add_queries(text_pairs(3))
    for outcome in ("LEFT", "TIE", "SKIP"):
        s = store.next_query(lab)
        store.submit_label(lab, s.query.id, s.show_id, outcome)
    store.close()
    out = tmp_path / "prefs.jsonl"
    runner = CliRunner()
    r = runner.invoke(cli_app, ["label", "export", str(out), "--store", str(src), "--ties", "drop"])
    assert r.exit_code == 0 and "wrote 1 preference rows" in r.output
    r = runner.invoke(cli_app, ["label", "export", str(out), "--store", str(src)])
    assert r.exit_code == 0 and "wrote 2 preference rows" in r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [row.get("tie", False) for row in rows] == [False, True]
    dst = tmp_path / "b" / "labels.sqlite"
    r = runner.invoke(cli_app, ["label", "import", str(out), "--store", str(dst), "--labeller", "from-file"])
    assert r.exit_code == 0 and "imported 2" in r.output
    r = runner.invoke(cli_app, ["label", "export", str(out), "--store", str(src), "--ties", "maybe"])
    assert r.exit_code == 2 and "--ties" in r.output
    r = runner.invoke(cli_app, ["label", "add-labeller", "bob", "--store", str(dst)])
    assert r.exit_code == 0 and "/label?token=" in r.output
