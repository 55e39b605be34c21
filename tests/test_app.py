"""Tests of the labelling web app (rlhfkit.app) over HTTP, on SQLite and PostgreSQL: the page, the
JSON API, security, malformed requests, tokens, and the server in its own process(es)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from malformed import malformed_requests
from rlhfkit.app import create_app, start_human_teacher, start_server
from rlhfkit.app.server import free_port
from rlhfkit.cli import app as cli_app
from rlhfkit.feedback.store import QuerySpec, Store
from rlhfkit.feedback.store import schema as S
from test_store import snapshot

TOKEN = "t" * 24


def text_pairs(n: int, prompt: str = "p", labels_needed: int = 1) -> list[QuerySpec]:
    return [QuerySpec("text_pair", [{"text": f"A{i}"}, {"text": f"B{i}"}], prompt=prompt, labels_needed=labels_needed)
            for i in range(n)]


@pytest.fixture
def served(store_location: str, tmp_path: Path):
    """A store with one labeller and 5 text queries, served in-process on a free port."""
    store = Store(store_location, data_dir=tmp_path, seed=0)
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


def test_malformed_requests_get_a_4xx_json_error_and_change_nothing(served) -> None:
    """Over 60 malformed requests (deep JSON, ids no row can have, NUL, tokens in URLs, ...): each
    answered with its 4xx and a JSON {"error": ...}, and the store is exactly as before."""
    store, handle, client = served
    bob = store.labeller_for_token(store.add_labeller("bob", token="b" * 24)).id
    q = client.post("/api/next").json()["query"]
    other_q = next(x.id for x in store.queries() if x.id != q["query_id"])
    # a showing of q to bob (as an expired lease of his would be)
    bob_show = store._write(lambda conn: conn.execute(S.shows.insert().values(
        query_id=q["query_id"], labeller_id=bob, shown_order=[0, 1], shown_at=time.time())).inserted_primary_key[0])
    good = {"query_id": q["query_id"], "show_id": q["show_id"], "outcome": "LEFT"}
    cases = malformed_requests(TOKEN, good, other_q, bob_show)
    assert len(cases) >= 60
    raw = httpx.Client(base_url=handle.base_url, timeout=10)
    before = snapshot(store)
    failures = []
    for name, method, path, kwargs, status, message in cases:
        r = raw.request(method, path, **kwargs)
        try:
            got = r.json()["error"]
        except Exception:  # noqa: BLE001 - collected below
            got = f"<not JSON: {r.text[:80]!r}>"
        if r.status_code != status or message not in got:
            failures.append((name, r.status_code, got[:120]))
    raw.close()
    assert failures == []
    assert snapshot(store) == before  # not one row changed
    # and the valid answer still goes through afterwards
    assert client.post("/api/label", json=good).status_code == 200


def test_an_unexpected_error_is_a_json_500(served, monkeypatch: pytest.MonkeyPatch) -> None:
    store, handle, client = served

    def broken(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(store, "progress", broken)
    r = client.get("/api/progress")
    assert r.status_code == 500 and r.json() == {"error": "internal error (RuntimeError); nothing was saved"}


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
    finally:
        handle.stop()
        store.close()


def test_the_page_learns_the_run_s_budget_state_and_end(tmp_path: Path) -> None:
    store = Store(tmp_path / "labels.sqlite")
    store.add_labeller("ann", token=TOKEN)
    status = {"state": "training", "labelled": 40, "budget": 200}
    handle = start_server(create_app(store, run_status=lambda: dict(status)), port=0)
    h = {"X-Label-Token": TOKEN}
    try:
        r = httpx.post(f"{handle.base_url}/api/next", json={}, headers=h).json()
        assert r["query"] is None and r["run"] == status
        done = []
        poll = threading.Thread(target=lambda: done.append(httpx.post(
            f"{handle.base_url}/api/next", json={"wait_s": 20}, headers=h, timeout=30).json()))
        poll.start()
        time.sleep(0.3)
        t = time.monotonic()
        handle.stop()  # the end of the run: the waiting page hears "finished" at once
        poll.join(10)
        assert done and done[0]["run"]["state"] == "finished" and time.monotonic() - t < 5
    finally:
        store.close()
    js = (Path(__file__).parents[1] / "src/rlhfkit/app/static/label.js").read_text()
    assert "run is over" in js and "Cannot reach the labelling server" in js and "of ${run.budget} labels" in js


# -- servers in their own processes ------------------------------------------------------------------


def serve(store: str, port: int, *args: str) -> subprocess.Popen:
    """`rlhf label serve` in a child process, its output piped (text)."""
    return subprocess.Popen([sys.executable, "-m", "rlhfkit.cli", "label", "serve", "--store", store, "--port",
                             str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_healthy(port: int, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, err = proc.communicate(timeout=15)
    return out + err


def test_starting_a_server_never_breaks_an_open_page(store_location: str) -> None:
    """A second `rlhf label serve` on the same store — failing to bind, or serving elsewhere — leaves
    the first one's labelling URL working (it used to re-issue the `local` token: 403)."""
    Store(store_location).close()
    port = free_port()
    first = serve(store_location, port)
    try:
        wait_healthy(port, first)
        line = first.stdout.readline()
        token = re.search(r"/label\?token=(\S+)", line).group(1)
        assert httpx.get(f"http://127.0.0.1:{port}/label?token={token}").status_code == 200
        busy = subprocess.run([sys.executable, "-m", "rlhfkit.cli", "label", "serve", "--store", store_location,
                               "--port", str(port)], capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and "already in use" in busy.stdout and "Traceback" not in busy.stdout + busy.stderr
        assert "token=" not in busy.stdout and "Ctrl-C" not in busy.stdout  # nothing printed before failing
        port2 = free_port()
        second = serve(store_location, port2)
        try:
            wait_healthy(port2, second)
            token2 = re.search(r"/label\?token=(\S+)", second.stdout.readline()).group(1)
            time.sleep(1.1)  # tokens from another process are seen within a second of a miss
            for p, t in ((port, token), (port, token2), (port2, token), (port2, token2)):
                assert httpx.get(f"http://127.0.0.1:{p}/label?token={t}").status_code == 200, (p, t)
        finally:
            stop(second)
    finally:
        stop(first)


def test_serving_on_every_interface_says_so_and_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    Store(path).close()
    result = CliRunner().invoke(cli_app, ["label", "serve", "--store", str(path), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "without a token" in result.output
    with pytest.raises(PermissionError, match="without a token"):
        start_human_teacher(None, tmp_path / "run", "Pendulum-v1", host="0.0.0.0", port=0)
    port = free_port()
    proc = serve(str(path), port, "--host", "0.0.0.0", "--token", TOKEN, "--labeller", "ann")
    try:
        wait_healthy(port, proc)
        first = proc.stdout.readline() + proc.stdout.readline()
        assert "127.0.0.1" not in first and f":{port}/label?token={TOKEN}" in first
        assert "every interface (0.0.0.0)" in first
        assert httpx.get(f"http://127.0.0.1:{port}/label?token={TOKEN}").status_code == 200
    finally:
        stop(proc)
    teacher, url, stop_teacher = start_human_teacher(None, tmp_path / "run", "Pendulum-v1", host="0.0.0.0", port=0,
                                                     token=TOKEN, render=False)
    try:
        assert "127.0.0.1" not in url and url.endswith(f"/label?token={TOKEN}")
        assert httpx.get(url.replace(url.split("/")[2].split(":")[0], "127.0.0.1", 1)).status_code == 200
    finally:
        stop_teacher()


def test_cli_store_paths_must_exist(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = str(tmp_path / "typo.sqlite")
    for args in (["stats"], ["serve"], ["export", str(tmp_path / "x.jsonl")], ["add-labeller", "ann"]):
        r = runner.invoke(cli_app, ["label", *args, "--store", missing])
        assert r.exit_code == 2 and "no store at" in r.output and "Traceback" not in r.output, (args, r.output)
    assert not Path(missing).exists()
    r = runner.invoke(cli_app, ["label", "add-labeller", "ann", "--store", missing, "--create"])
    assert r.exit_code == 0 and Path(missing).exists()
    r = runner.invoke(cli_app, ["label", "export", str(tmp_path / "no" / "dir" / "x.jsonl"), "--store", missing])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_cli_prints_names_as_given_never_as_markup(tmp_path: Path) -> None:
    runner = CliRunner()
    path = str(tmp_path / "labels.sqlite")
    Store(path).close()
    for name in ("[/x]", "[red]lab00[/red]", "[bold]"):
        r = runner.invoke(cli_app, ["label", "add-labeller", name, "--store", path])
        assert r.exit_code == 0 and f"{name}: http://127.0.0.1:8000/label?token=" in r.output, r.output
    runner.invoke(cli_app, ["label", "add-labeller", "lab00", "--store", path])
    r = runner.invoke(cli_app, ["label", "stats", "--store", path], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for name in ("[/x]", "[red]lab00[/red]", "[bold]", "lab00"):  # every labeller, 0 answers too, as written
        assert re.search(rf"│ +{re.escape(name)} │ +0 │", r.output), (name, r.output)


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
    dst = tmp_path / "b" / "labels.sqlite"
    r = runner.invoke(cli_app, ["label", "import", str(out), "--store", str(dst), "--labeller", "from-file"])
    assert r.exit_code == 0 and "imported 2 preference rows" in r.output
    r = runner.invoke(cli_app, ["label", "import", str(out), "--store", str(dst), "--labeller", "from-file"])
    assert r.exit_code == 0 and "imported 0 preference rows" in r.output and "2 already in the store" in r.output
    r = runner.invoke(cli_app, ["label", "export", str(out), "--store", str(src), "--ties", "maybe"])
    assert r.exit_code == 2 and "--ties" in r.output
    r = runner.invoke(cli_app, ["label", "add-labeller", "bob", "--store", str(dst)])
    assert r.exit_code == 0 and "/label?token=" in r.output


def test_the_listening_socket_lets_asyncio_turn_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP; with proto 0 every response of the
    in-process server (and of `rlhf label serve`) waited ~40 ms for the client's delayed ACK."""
    import socket

    from rlhfkit.app.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
