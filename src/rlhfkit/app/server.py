"""Running the labelling app: uvicorn in a background thread, and the human teacher wired to it."""

from __future__ import annotations

import errno
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

__all__ = ["ServerHandle", "bind_socket", "check_bind", "free_port", "is_loopback", "public_urls", "spawn_server",
           "start_human_teacher", "start_server"]


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


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port): bind first, so that a busy port fails
    before anything is printed, any token issued or any run directory made.

    Raises:
        OSError: if the address cannot be bound, with a message saying what to do
            (``strerror``); a port outside 0..65535 is refused the same way.
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise OSError(22, f"port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose
    # proto says TCP; with proto 0 every response waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        why = ("the port is already in use (another server?): pick another one" if e.errno == errno.EADDRINUSE
               else e.strerror or str(e))
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {why}") from None
    except (socket.gaierror, UnicodeError) as e:
        sock.close()
        raise OSError(errno.EINVAL, f"cannot listen on {host}:{port}: {e}") from None
    sock.listen(2048)
    return sock


def public_urls(host: str, port: int) -> tuple[str, str]:
    """``(where the server listens, the base URL to give labellers)`` for a bound ``host:port``.

    On ``0.0.0.0`` / ``::`` (every interface) the URL names this machine, not 127.0.0.1.
    """
    if host in ("0.0.0.0", "::", ""):
        return f"every interface ({host or '0.0.0.0'}), port {port}", f"http://{socket.gethostname()}:{port}"
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}", f"http://{shown}:{port}"


class ServerHandle:
    """A uvicorn server running in a daemon thread; ``stop()`` shuts it down."""

    def __init__(self, server: Any, thread: threading.Thread, host: str, port: int, app: Any = None) -> None:
        self.server, self.thread, self.host, self.port, self.app = server, thread, host, port, app

    @property
    def base_url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets; this machine's name for 0.0.0.0 and ::)."""
        return public_urls(self.host, self.port)[1]

    @property
    def local_url(self) -> str:
        """A URL that reaches the server from this machine (loopback for 0.0.0.0 and ::)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """End the long polls, ask the server to exit and wait for its thread."""
        closing = getattr(getattr(self.app, "state", None), "closing", None)
        if closing is not None:
            closing.set()
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(app: Any, host: str = "127.0.0.1", port: int | socket.socket = 8000, *, log_level: str = "warning",
                 ready_timeout: float = 20.0) -> ServerHandle:
    """Serve ``app`` with uvicorn in a background thread; return once it accepts connections.

    Args:
        app: an ASGI app (from :func:`rlhfkit.app.create_app`).
        host: address to bind.
        port: port to bind; 0 picks a free one (see :attr:`ServerHandle.port`); or a socket
            already bound by :func:`bind_socket`.
        log_level: uvicorn's log level.
        ready_timeout: seconds to wait for the server to start.

    Raises:
        OSError: if the address cannot be bound.
        RuntimeError: if the server does not start in time.
    """
    import uvicorn

    sock = port if isinstance(port, socket.socket) else bind_socket(host, port)
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
        token: the labeller's token (16+ characters); default a fresh random one. An existing
            labeller of that name keeps their other tokens: open pages keep working.
        labeller: the labeller's name.
        guidelines: the guidelines text; default the task's line from
            :data:`rlhfkit.feedback.human.GUIDELINES` above :data:`DEFAULT_GUIDELINES`.
        teacher_kwargs: more :class:`HumanTeacher` fields (``frame_skip``, ``labels_per_query``,
            ``label_budget``, ...).

    Returns:
        ``(teacher, url, stop)``: the teacher, the labeller's page URL, and a function that
        stops the server and closes the store.

    Raises:
        PermissionError: binding beyond loopback without a token.
        OSError: the port cannot be bound (checked first: nothing is created then).
        ValueError: an env without a state setter for clips, or bad teacher arguments.
    """
    from rlhfkit.feedback.clips import _family
    from rlhfkit.feedback.human import GUIDELINES, HumanTeacher

    if not is_loopback(host) and token is None:
        raise PermissionError(f"refusing to serve on {host}, beyond this machine, without a token: pass token= "
                              "(16+ characters) and give the labeller the URL")
    sock = bind_socket(host, port)  # a busy port fails here, before the store or run directory exist
    run_dir = Path(run_dir)
    url_text = store_url(store_url_or_path if store_url_or_path is not None else run_dir / "labels.sqlite")
    is_sqlite = url_text.startswith("sqlite")
    try:
        store = Store(url_text, data_dir=None if is_sqlite else run_dir)
    except BaseException:
        sock.close()
        raise
    try:
        the_token = store.issue_token(labeller, token)
        check_bind(store, host)
        task = GUIDELINES.get(env_id) or GUIDELINES.get(_family(env_id))
        text = guidelines if guidelines is not None else (f"{task}\n\n{DEFAULT_GUIDELINES}" if task else None)
        teacher = HumanTeacher(store, env_id=env_id, timeout_s=timeout_s, **teacher_kwargs)
        handle = start_server(create_app(store, guidelines=text, run_status=teacher.status), host, sock)
    except BaseException:
        sock.close()
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
