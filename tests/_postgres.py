"""A throwaway PostgreSQL server for the tests and benchmarks: a temporary cluster on a free
loopback port, run as an unprivileged user (PostgreSQL refuses to run as root, and CI runs as root).

It needs the server binaries (Debian: ``apt-get install postgresql``; ``make test`` installs
them). Without them the PostgreSQL tests are skipped — unless ``RLHF_REQUIRE_POSTGRES=1`` (set by
``make test``), which makes them fail instead, so CI cannot pass without PostgreSQL.

The cluster runs with ``fsync=off``: the tests kill rlhfkit's server processes, never PostgreSQL,
so what PostgreSQL has committed survives them either way (the benchmark uses the defaults).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "find_bindir"]


def find_bindir() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: Debian's /usr/lib/postgresql/N/bin (newest N), or PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A temporary PostgreSQL cluster on 127.0.0.1; :meth:`new_database` gives each test its own database.

    Args:
        fast: ``fsync=off`` (tests); False keeps PostgreSQL's durable defaults (benchmarks).

    Raises:
        RuntimeError: if the binaries are missing or the server does not start (with its log).
    """

    def __init__(self, *, fast: bool = True) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.password = secrets.token_hex(16)
        self.root = Path(tempfile.mkdtemp(prefix="rlhfkit-pg-"))
        self._user = None
        if os.geteuid() == 0:  # postgres refuses root: run it as the postgres user (or nobody)
            for name in ("postgres", "nobody"):
                try:
                    self._user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        (self.root / "pw").write_text(self.password)
        if self._user is not None:
            os.chown(self.root / "pw", self._user.pw_uid, self._user.pw_gid)
        self.data = self.root / "data"
        self._run(["initdb", "-D", str(self.data), "-U", "rlhf", f"--pwfile={self.root / 'pw'}",
                   "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
        opts = ["-c listen_addresses=127.0.0.1", "-c unix_socket_directories=''", "-c max_connections=300"]
        if fast:
            opts += ["-c fsync=off", "-c full_page_writes=off"]
        self._counter = itertools.count()
        for attempt in range(3):
            self.port = _free_port()
            try:
                self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                           "-o", " ".join([f"-p {self.port}", *opts]), "start"])
                break
            except RuntimeError:
                if attempt == 2:
                    raise

    def _run(self, cmd: list[str]) -> None:
        kw = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []} if self._user else {}
        res = subprocess.run([str(self.bindir / cmd[0]), *cmd[1:]], capture_output=True, text=True, cwd=self.root,
                             **kw)
        if res.returncode != 0:
            log = (self.root / "log").read_text()[-2000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{cmd[0]} failed: {res.stderr[-2000:]}{log}")

    def url(self, database: str = "postgres") -> str:
        """An SQLAlchemy URL (psycopg driver) of ``database`` on this server."""
        return f"postgresql+psycopg://rlhf:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="rlhf", password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def new_schema(self) -> str:
        """Create an empty schema in the ``postgres`` database and return a URL whose connections
        use it (``search_path``): a fresh store for a test at a fraction of a database's cost
        (``CREATE DATABASE`` copies ~7 MB and takes ~0.5 s; a schema is a catalog row)."""
        import psycopg

        name = f"s{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="rlhf", password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url('postgres')}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        """Kill the server and delete the cluster (its data is thrown away, so no clean shutdown:
        an immediate one waits 5 s for backends of clients that the tests SIGKILLed)."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is not None:
            children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pid]
            for p in [pid, *children]:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            for _ in range(100):  # gone, or a zombie its (adoptive) parent has yet to reap
                if _state(pid) in (None, "Z"):
                    break
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
