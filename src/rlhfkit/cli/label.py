"""``rlhf label``: serve the labelling page, manage labellers, agreement statistics, TRL export/import."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()

STORE_HELP = "Preference store: a database URL (sqlite:///…, postgresql+psycopg://…) or an SQLite file path."


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _open(store: str, data_dir: Optional[Path] = None):
    from rlhfkit.feedback.store import Store, StoreError

    try:
        return Store(store, data_dir=data_dir)
    except (StoreError, ValueError) as e:
        _fail(f"cannot open the store {store}: {e}")
    except Exception as e:  # noqa: BLE001 - a driver's error (no server, bad URL) explained, not a traceback
        _fail(f"cannot open the store {store}: {type(e).__name__}: {e}")


@app.command("serve")
def serve_cmd(
    store: str = typer.Option(..., help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to bind. Beyond 127.0.0.1 a token is required."),
    port: int = typer.Option(8000, help="Port to bind (0: any free port)."),
    token: Optional[str] = typer.Option(None, help="Token (16+ characters) for labeller --labeller.",
                                        envvar="RLHF_LABEL_TOKEN"),
    labeller: str = typer.Option("local", help="Labeller that --token belongs to; on 127.0.0.1 without --token "
                                               "this labeller gets a fresh token (printed) at each start."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of media/ (default: the SQLite file's folder)."),
    guidelines: Optional[Path] = typer.Option(None, help="A text file with the guidelines shown on the page."),
) -> None:
    """Serve the labelling page over a store until Ctrl-C."""
    import uvicorn

    from rlhfkit.app import check_bind, create_app, is_loopback

    s = _open(store, data_dir)
    text = None
    if guidelines is not None:
        if not guidelines.is_file():
            _fail(f"--guidelines {guidelines}: no such file")
        text = guidelines.read_text(encoding="utf-8")
    try:
        # a fresh token for --labeller on loopback (only hashes are stored, so the old one cannot be
        # shown again); beyond loopback only an explicit --token or already registered labellers
        tok = s.set_labeller_token(labeller, token) if token is not None or is_loopback(host) else None
        check_bind(s, host)
    except (PermissionError, ValueError) as e:
        s.close()
        _fail(str(e))
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if tok is not None:
        console.print(f"labeller [bold]{labeller}[/]: http://{shown_host}:{port}/label?token={tok}")
    else:
        console.print(f"serving {len(s.labellers())} labellers on http://{shown_host}:{port} "
                      "(each opens their own /label?token=… URL)")
    console.print(f"store: {s.url} · Ctrl-C to stop")
    app_ = create_app(s, guidelines=text)
    # Everything alive now (modules, the app, SQLAlchemy's compiled statements) lives as long as
    # the server: keep it out of the garbage collector's full passes, which otherwise stall every
    # request for 50-100 ms a few times a minute under load (measured: p99 70 ms → 30 ms).
    gc.collect()
    gc.freeze()
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)
    finally:
        s.close()


@app.command("add-labeller")
def add_labeller_cmd(
    name: str = typer.Argument(..., help="The labeller's name (unique)."),
    store: str = typer.Option(..., help=STORE_HELP),
    url: str = typer.Option("http://127.0.0.1:8000", help="Server base URL, to print the personal link."),
) -> None:
    """Register a labeller and print their personal labelling URL (the token is shown only once)."""
    from rlhfkit.feedback.store import StoreError

    s = _open(store)
    try:
        token = s.add_labeller(name)
    except StoreError as e:
        _fail(str(e))
    finally:
        s.close()
    console.print(f"{name}: {url.rstrip('/')}/label?token={token}")


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
    finally:
        s.close()
    rep = agreement_report(labels)
    console.print(f"{progress['answered']} answers; {progress['waiting']} queries waiting; "
                  f"{rep.multi_labelled} queries answered by 2+ labellers")
    t = Table(title="labellers")
    for col in ("labeller", "answers (no skips)", "agreement with majority", "queries counted"):
        t.add_column(col, justify="right")
    for name, n in rep.labels_per_labeller.items():
        frac, counted = rep.majority.get(name, (math.nan, 0))
        t.add_row(name, str(n), _fmt(frac), str(counted))
    console.print(t)
    if rep.kappa:
        k = Table(title="Cohen's κ per pair of labellers")
        for col in ("labeller a", "labeller b", "common queries", "κ"):
            k.add_column(col, justify="right")
        for a, b, n, kappa in rep.kappa:
            k.add_row(a, b, str(n), _fmt(kappa))
        console.print(k)
    console.print(f"Krippendorff's α (nominal, all queries): {_fmt(rep.alpha)}")


@app.command("export")
def export_cmd(
    out: Path = typer.Argument(..., help="JSONL file to write."),
    store: str = typer.Option(..., help=STORE_HELP),
    ties: str = typer.Option("flag", help="flag: keep ties with \"tie\": true; drop: leave them out."),
) -> None:
    """Export the answers as TRL preference JSONL (prompt/chosen/rejected)."""
    if ties not in ("flag", "drop"):
        _fail(f"--ties must be 'flag' or 'drop', got {ties!r}")
    s = _open(store)
    try:
        n = s.export_trl(out, ties=ties)  # type: ignore[arg-type]
    finally:
        s.close()
    console.print(f"wrote {n} preference rows to {out}")


@app.command("import")
def import_cmd(
    path: Path = typer.Argument(..., help="TRL preference JSONL (chosen, rejected, optional prompt and tie)."),
    store: str = typer.Option(..., help=STORE_HELP),
    labeller: str = typer.Option("import", help="Labeller the imported answers are recorded under."),
) -> None:
    """Import TRL preference JSONL as answered text-pair queries (all rows or none)."""
    if not path.is_file():
        _fail(f"{path}: no such file")
    s = _open(store)
    try:
        n = s.import_trl(path, labeller=labeller)
    except ValueError as e:
        _fail(str(e))
    finally:
        s.close()
    console.print(f"imported {n} preference rows from {path}")
