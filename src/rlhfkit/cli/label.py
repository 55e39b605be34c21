"""``rlhf label``: serve the labelling page, manage labellers, agreement statistics, TRL export/import.

Names, paths and other text that come from users or stores are printed as plain text, never as
rich markup: a labeller called ``[red]x[/red]`` shows as exactly that.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

app = typer.Typer(no_args_is_help=True)
console = Console()

STORE_HELP = ("Preference store: a database URL (sqlite:///…, postgresql://user@host/db) or an SQLite file path. "
              "It must exist (a run with --teacher human or `rlhf label import` makes one).")


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _say(text: str) -> None:
    """Print ``text`` as it is (no markup, no highlighting)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _open(store: str, data_dir: Optional[Path] = None, *, create: bool = False):
    from rlhfkit.feedback.store import NotFoundError, Store, StoreError

    try:
        return Store(store, data_dir=data_dir, create=create)
    except NotFoundError as e:
        _fail(f"{e}; or pass --create to start a new store there" if not create else str(e))
    except (StoreError, ValueError) as e:
        _fail(f"cannot open the store {store}: {e}")
    except Exception as e:  # noqa: BLE001 - a driver's error (no server, bad URL) explained, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _fail(f"cannot open the store {store}: {type(e).__name__}: {first}")


@app.command("serve")
def serve_cmd(
    store: str = typer.Option(..., help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to bind. Beyond 127.0.0.1 a token is required."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to bind (0: any free port)."),
    token: Optional[str] = typer.Option(None, help="Token (16+ characters) for labeller --labeller.",
                                        envvar="RLHF_LABEL_TOKEN"),
    labeller: str = typer.Option("local", help="Labeller that --token belongs to; on 127.0.0.1 without --token "
                                               "this labeller gets one more token (printed) at each start; their "
                                               "earlier links keep working."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of media/ (default: the SQLite file's folder)."),
    guidelines: Optional[Path] = typer.Option(None, help="A text file with the guidelines shown on the page."),
    create: bool = typer.Option(False, help="Create the store if it does not exist (else a mistyped path is "
                                            "an error)."),
) -> None:
    """Serve the labelling page over a store until Ctrl-C. Several servers may share one store."""
    import uvicorn

    from rlhfkit.app import check_bind, create_app, is_loopback
    from rlhfkit.app.server import bind_socket, public_urls
    from rlhfkit.feedback.store import StoreError

    text = None
    if guidelines is not None:
        if not guidelines.is_file():
            _fail(f"--guidelines {guidelines}: no such file")
        text = guidelines.read_text(encoding="utf-8")
    s = _open(store, data_dir, create=create)
    try:
        sock = bind_socket(host, port)  # before any token or output: a busy port changes nothing
    except OSError as e:
        s.close()
        _fail(e.strerror or str(e))
    port = sock.getsockname()[1]
    try:
        # one more token for --labeller (only hashes are stored, so an old one cannot be shown
        # again; the old ones stay valid, so open pages keep working); beyond loopback only an
        # explicit --token or already registered labellers
        tok = s.issue_token(labeller, token) if token is not None or is_loopback(host) else None
        check_bind(s, host)
    except (PermissionError, ValueError, StoreError) as e:
        sock.close()
        s.close()
        _fail(str(e))
    where, base = public_urls(host, port)
    if tok is not None:
        _say(f"labeller {labeller}: {base}/label?token={tok}")
    else:
        _say(f"{len(s.labellers())} labellers; each opens their own {base}/label?token=… URL")
    _say(f"listening on {where} · store: {s.url} · Ctrl-C to stop")
    app_ = create_app(s, guidelines=text)
    # Everything alive now (modules, the app, SQLAlchemy's compiled statements) lives as long as
    # the server: keep it out of the garbage collector's full passes, which otherwise stall every
    # request for 50-100 ms a few times a minute under load (measured: p99 70 ms → 30 ms).
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(uvicorn.Config(app_, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        s.close()


@app.command("add-labeller")
def add_labeller_cmd(
    name: str = typer.Argument(..., help="The labeller's name (unique)."),
    store: str = typer.Option(..., help=STORE_HELP),
    url: str = typer.Option("http://127.0.0.1:8000", help="Server base URL, to print the personal link."),
    create: bool = typer.Option(False, help="Create the store if it does not exist."),
) -> None:
    """Register a labeller and print their personal labelling URL (the token is shown only once)."""
    from rlhfkit.feedback.store import StoreError

    s = _open(store, create=create)
    try:
        token = s.add_labeller(name)
    except StoreError as e:
        _fail(str(e))
    finally:
        s.close()
    _say(f"{name.strip()}: {url.rstrip('/')}/label?token={token}")


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


@app.command("stats")
def stats_cmd(store: str = typer.Option(..., help=STORE_HELP)) -> None:
    """Answers per labeller and agreement: Cohen's κ per pair, Krippendorff's α, agreement with the majority."""
    from rlhfkit.feedback.agreement import agreement_report

    s = _open(store)
    try:
        labels = s.labels()
        progress = s.progress()
        names = [lab.name for lab in s.labellers()]
    finally:
        s.close()
    rep = agreement_report(labels)
    _say(f"{progress['answered']} answers; {progress['waiting']} queries waiting; "
         f"{rep.multi_labelled} queries answered by 2+ labellers")
    t = Table(title="labellers")
    for col in ("labeller", "answers (no skips)", "agreement with majority", "queries counted"):
        t.add_column(col, justify="right")
    for name in names + sorted(set(rep.labels_per_labeller) - set(names)):  # every labeller, 0 answers too
        frac, counted = rep.majority.get(name, (math.nan, 0))
        t.add_row(Text(name), str(rep.labels_per_labeller.get(name, 0)), _fmt(frac), str(counted))
    console.print(t)
    if rep.kappa:
        k = Table(title="Cohen's κ per pair of labellers")
        for col in ("labeller a", "labeller b", "common queries", "κ"):
            k.add_column(col, justify="right")
        for a, b, n, kappa in rep.kappa:
            k.add_row(Text(a), Text(b), str(n), _fmt(kappa))
        console.print(k)
    _say(f"Krippendorff's α (nominal, all queries): {_fmt(rep.alpha)}")


@app.command("export")
def export_cmd(
    out: Path = typer.Argument(..., help="JSONL file to write."),
    store: str = typer.Option(..., help=STORE_HELP),
    ties: str = typer.Option("flag", help="flag: keep ties with \"tie\": true; drop: leave them out."),
) -> None:
    """Export the answers as TRL preference JSONL (prompt/chosen/rejected)."""
    if ties not in ("flag", "drop"):
        _fail(f"--ties must be 'flag' or 'drop', got {ties!r}")
    if not out.parent.is_dir():
        _fail(f"{out}: the folder {out.parent} does not exist")
    s = _open(store)
    try:
        n = s.export_trl(out, ties=ties)  # type: ignore[arg-type]
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}")
    finally:
        s.close()
    _say(f"wrote {n} preference rows to {out}")


@app.command("import")
def import_cmd(
    path: Path = typer.Argument(..., help="TRL preference JSONL (chosen, rejected, optional prompt and tie)."),
    store: str = typer.Option(..., help="Preference store to add to (created if it does not exist): a database "
                                        "URL or an SQLite file path."),
    labeller: str = typer.Option("import", help="Labeller the imported answers are recorded under."),
) -> None:
    """Import TRL preference JSONL as answered text-pair queries (all rows or none; rows already there are skipped)."""
    if not path.is_file():
        _fail(f"{path}: no such file")
    s = _open(store, create=True)
    try:
        n, skipped = s.import_trl(path, labeller=labeller)
    except (ValueError, UnicodeDecodeError) as e:
        _fail(str(e))
    finally:
        s.close()
    _say(f"imported {n} preference rows from {path}" + (f" ({skipped} already in the store, skipped)"
                                                         if skipped else ""))
