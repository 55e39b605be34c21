"""Running the labelling app: uvicorn in a background thread, and the human teacher wired to it."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.app.web import DEFAULT_GUIDELINES, create_app
from rlhfkit.feedback.store import Store, store_url

__all__ = ["ServerHandle", "check_bind", "free_port", "is_loopback", "spawn_server", "start_human_teacher", "start_server"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(store: Store, host: str) -> None:
    """Refuse to serve beyond this machine without a labeller token.

    Bound to a loopback address anything goes (a labeller token is still needed to answer).
    Bound elsewhere, at least one labeller (hence one secret token) must exist.

    Raises:
        PermissionError: for a non-loopback host on a store with no labeller.
    """
    if not is_loopback(host) and not store.labellers():
        raise PermissionError(
            f"refusing to serve on {host}, beyond this machine, without a token: pass --token SECRET "
            "(16+ characters) or add labellers first (`rlhf label add-labeller NAME`)")


class ServerHandle:
    """A uvicorn server running in a daemon thread; ``stop()`` shuts it down."""

    def __init__(self, server: Any, thread: threading.Thread, host: str, port: int, app: Any = None) -> None:
        self.server, self.thread, self.host, self.port, self.app = server, thread, host, port, app

    @property
    def base_url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """End the long polls, ask the server to exit and wait for its thread."""
        closing = getattr(getattr(self.app, "state", None), "closing", None)
        if closing is not None:
            closing.set()
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning",
                 ready_timeout: float = 20.0) -> ServerHandle:
    """Serve ``app`` with uvicorn in a background thread; return once it accepts connections.

    Args:
        app: an ASGI app (from :func:`rlhfkit.app.create_app`).
        host: address to bind.
        port: port to bind; 0 picks a free one (see :attr:`ServerHandle.port`).
        log_level: uvicorn's log level.
        ready_timeout: seconds to wait for the server to start.

    Raises:
        OSError: if the address cannot be bound.
        RuntimeError: if the server does not start in time.
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rlhfkit-label-server",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the labelling server on {host}:{port} stopped while starting")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the labelling server on {host}:{port} did not start in {ready_timeout} s")
        time.sleep(0.02)
    return ServerHandle(server, thread, host, port, app)


def start_human_teacher(store_url_or_path: str | Path | None, run_dir: str | Path, env_id: str, *,
                        host: str = "127.0.0.1", port: int = 8000, timeout_s: float | None = 3600.0,
                        token: str | None = None, labeller: str = "local", guidelines: str | None = None,
                        **teacher_kwargs: Any) -> tuple[Any, str, Callable[[], None]]:
    """Open the store, serve the labelling page in-process and return a ready :class:`HumanTeacher`.

    This is what ``rlhf control train --teacher human`` calls: pass the teacher to
    :func:`rlhfkit.control.train` and print the URL for the person.

    Args:
        store_url_or_path: database URL or SQLite path; None means ``RUN_DIR/labels.sqlite``.
        run_dir: the run directory (holds the default store and its media).
        env_id: the environment (for clips and the task's guidelines).
        host: address to bind (127.0.0.1 by default; elsewhere a token is required).
        port: port (0: any free port).
        timeout_s: longest wait for one batch of answers (None: forever).
        token: the labeller's token (16+ characters); default a fresh random one (an existing
            labeller of that name gets the new token: their old URL stops working).
        labeller: the labeller's name.
        guidelines: the guidelines text; default the task's line from
            :data:`rlhfkit.feedback.human.GUIDELINES` above :data:`DEFAULT_GUIDELINES`.
        teacher_kwargs: more :class:`HumanTeacher` fields (``frame_skip``, ``labels_per_query``, ...).

    Returns:
        ``(teacher, url, stop)``: the teacher, the labeller's page URL, and a function that
        stops the server and closes the store.

    Raises:
        PermissionError: binding beyond loopback without a token.
        ValueError: an env without a state setter for clips, or bad teacher arguments.
    """
    from rlhfkit.feedback.clips import _family
    from rlhfkit.feedback.human import GUIDELINES, HumanTeacher

    if not is_loopback(host) and token is None:
        raise PermissionError(f"refusing to serve on {host}, beyond this machine, without a token: pass token= "
                              "(16+ characters) and give the labeller the URL")
    run_dir = Path(run_dir)
    url_text = store_url(store_url_or_path if store_url_or_path is not None else run_dir / "labels.sqlite")
    is_sqlite = url_text.startswith("sqlite")
    store = Store(url_text, data_dir=None if is_sqlite else run_dir)
    try:
        the_token = store.set_labeller_token(labeller, token)
        check_bind(store, host)
        task = GUIDELINES.get(env_id) or GUIDELINES.get(_family(env_id))
        text = guidelines if guidelines is not None else (f"{task}\n\n{DEFAULT_GUIDELINES}" if task else None)
        teacher = HumanTeacher(store, env_id=env_id, timeout_s=timeout_s, **teacher_kwargs)
        handle = start_server(create_app(store, guidelines=text), host, port)
    except BaseException:
        store.close()
        raise
    url = f"{handle.base_url}/label?token={the_token}"
    teacher.url = url

    def stop() -> None:
        teacher.close()
        handle.stop()
        store.close()

    return teacher, url, stop


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_server(store: str | Path, port: int, token: str, *, labeller: str | None = None,
                 timeout_s: float = 30.0) -> subprocess.Popen:
    """``rlhf label serve`` in a child process on 127.0.0.1; returns once ``/healthz`` answers.

    For benchmarks and crash tests, where the server must live in its own process.

    Raises:
        RuntimeError: if the server exits (with its stderr) or does not answer within ``timeout_s``.
    """
    import urllib.error
    import urllib.request

    cmd = [sys.executable, "-m", "rlhfkit.cli", "label", "serve", "--store", str(store), "--port", str(port),
           "--token", token] + (["--labeller", labeller] if labeller else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start in {timeout_s:.0f} s")
