"""``rlhf control``: deep RL from preferences on gymnasium tasks (Christiano et al. 2017)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _progress_run(total_steps: int, fn, title: str):
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(title, total=total_steps, info="")

        def on_iteration(r: dict) -> None:
            ret = r.get("true_return")
            acc = r.get("reward/val_accuracy")
            info = f"labels {r['labels']}"
            info += f" · true return {ret:.1f}" if ret is not None else ""
            info += f" · r̂ val acc {acc:.2f}" if acc is not None and acc == acc else ""
            progress.update(task, completed=min(r["env_steps"], total_steps), info=info)

        return fn(on_iteration)


def _teacher_options(assignments: Optional[list[str]]) -> dict:
    """``KEY=VALUE`` strings → keyword arguments of :class:`rlhfkit.feedback.human.HumanTeacher`."""
    import dataclasses

    from rlhfkit.control.config import coerce_value
    from rlhfkit.feedback.human import HumanTeacher

    fields = {f.name: f for f in dataclasses.fields(HumanTeacher) if f.init and not f.name.startswith("_")}
    allowed = {"frame_skip", "max_size", "fmt", "labels_per_query", "on_timeout", "grace_s", "poll_s",
               "render_workers", "show_progress"}
    out: dict = {}
    for item in assignments or []:
        key, sep, text = item.partition("=")
        if not sep or key not in allowed:
            raise ValueError(f"--label-set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(allowed))}")
        default = fields[key].default
        out[key] = coerce_value(text, default, f"--label-set {key}")
    return out


def _summary(result, title: str, baseline_path: Optional[Path] = None) -> None:
    import numpy as np

    table = Table(title=title)
    for col in ("labels", "env steps", "mean true return (10 eps)", "std", "wall s", "env steps / s"):
        table.add_column(col, justify="right")
    table.add_row(str(result.labels), str(result.env_steps), f"{result.mean_return:.1f}",
                  f"{float(np.std(result.eval_returns)):.1f}", f"{result.wall_s:.1f}",
                  f"{result.env_steps / max(result.wall_s, 1e-9):.0f}")
    console.print(table)
    if baseline_path is not None and (baseline_path / "summary.json").is_file():
        b = json.loads((baseline_path / "summary.json").read_text())
        console.print(f"true-reward PPO baseline ({baseline_path}): mean true return {b['mean_true_return']:.1f}")


def _train(env: str, labels: Optional[int], steps: Optional[int], teacher: str, seed: int, out: Path,
           resume: bool, query: Optional[str], fragment_length: Optional[int], baseline: Optional[Path],
           overrides: Optional[list[str]] = None, human: Optional[dict] = None) -> None:
    from rlhfkit.control.config import apply_overrides, make_config
    from rlhfkit.control.loop import train
    from rlhfkit.control.plots import plot_learning_curve

    import torch

    torch.set_num_threads(int(os.environ.get("RLHF_THREADS", "1")))
    try:
        config = make_config(env, total_labels=labels, total_steps=steps, teacher=teacher, seed=seed,
                             query_selection=query, fragment_length=fragment_length)
        config = apply_overrides(config, overrides or [])
        if resume:
            from rlhfkit.control.checkpoint import RunDir

            if not RunDir(out).is_run():
                raise ValueError(f"--resume: {out} is not a run directory (no config.json and checkpoint/state.json)")
        else:
            config.validate()
        if baseline is not None and not (baseline / "metrics.jsonl").is_file():
            raise ValueError(f"--baseline {baseline}: no metrics.jsonl there (run `rlhf control baseline` first)")
        console.print(f"[bold]Deep RL from preferences[/] on {config.env_id}: {config.total_labels} labels "
                      f"({config.teacher} teacher), {config.total_steps} env steps, seed {config.seed} → {out}")
        human_teacher, stop = None, None
        if config.teacher == "human":
            from rlhfkit.app import start_human_teacher

            h = human or {}
            human_teacher, url, stop = start_human_teacher(h.get("store"), out, config.env_id, host=h.get("host", "127.0.0.1"),
                                                           port=h.get("port", 8000), timeout_s=h.get("timeout_s"),
                                                           token=h.get("token"), **_teacher_options(h.get("options")))
            console.print(f"[bold green]Label at:[/] {url}", soft_wrap=True)
            console.print("(open it in a browser; training waits for your answers)")
            console.file.flush()
        try:
            result = _progress_run(config.total_steps, lambda cb: train(config, str(out), resume=resume,
                                                                        teacher=human_teacher, on_iteration=cb),
                                   "training")
        finally:
            if stop is not None:
                stop()
    except (ValueError, PermissionError, TimeoutError) as e:
        _fail(str(e))
    png = plot_learning_curve(out, out / "curve.png", baseline=baseline)
    _summary(result, f"{env} from {result.labels} {teacher} labels", baseline)
    console.print(f"learning curve: {png}\nmetrics: {out / 'metrics.jsonl'}")


@app.command("train")
def train_cmd(
    env: str = typer.Option("Pendulum-v1", help="gymnasium env id, e.g. Pendulum-v1, rlhfkit/CartPoleCos-v0, Hopper-v5."),
    labels: Optional[int] = typer.Option(None, help="Label budget (comparisons). Default: 200."),
    steps: Optional[int] = typer.Option(None, help="Env-step budget. Default: 50000."),
    teacher: str = typer.Option("oracle", help="oracle|stochastic|mistake|skip|equal|myopic (synthetic), or human "
                                "(serves the labelling page and waits for a person's answers)."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(..., help="Run directory to write."),
    resume: bool = typer.Option(False, help="Continue the run saved in --out."),
    query: Optional[str] = typer.Option(None, help="Query selection: disagreement|random."),
    fragment_length: Optional[int] = typer.Option(None, help="Steps per fragment (default: the env's preset)."),
    baseline: Optional[Path] = typer.Option(None, help="A baseline run dir to draw on the learning curve."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override any config field: KEY=VALUE, "
                                             "e.g. --set ppo.loss=kl_penalty --set reward.ensemble_size=5."),
    store: Optional[str] = typer.Option(None, help="--teacher human: preference store URL or SQLite path "
                                        "(default OUT/labels.sqlite)."),
    host: str = typer.Option("127.0.0.1", help="--teacher human: address of the labelling page."),
    port: int = typer.Option(8000, help="--teacher human: port of the labelling page (0: any free port)."),
    token: Optional[str] = typer.Option(None, help="--teacher human: labeller token (required beyond 127.0.0.1)."),
    label_timeout: Optional[float] = typer.Option(3600.0, help="--teacher human: longest wait for one batch, s."),
    label_set: Optional[list[str]] = typer.Option(None, "--label-set", help="--teacher human: a HumanTeacher option, "
                                                  "KEY=VALUE (frame_skip, max_size, fmt, labels_per_query, ...)."),
) -> None:
    """Learn a task from preferences: the true reward is seen only by a synthetic teacher, or a person."""
    human = {"store": store, "host": host, "port": port, "token": token, "timeout_s": label_timeout,
             "options": label_set}
    _train(env, labels, steps, teacher, seed, out, resume, query, fragment_length, baseline, set_, human)


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("runs/demo"), help="Run directory."),
             seed: int = typer.Option(0, help="Random seed."),
             baseline: bool = typer.Option(True, help="Also run PPO on the true reward, for the curve.")) -> None:
    """The main job: Pendulum-v1 from 200 oracle labels and 50k env steps (and the true-reward baseline)."""
    base_dir = None
    if baseline:
        base_dir = out.parent / (out.name + "-baseline")
        baseline_cmd(env="Pendulum-v1", steps=50_000, seed=seed, out=base_dir, set_=None)
    _train("Pendulum-v1", 200, 50_000, "oracle", seed, out, False, None, None, base_dir)


@app.command("baseline")
def baseline_cmd(
    env: str = typer.Option("Pendulum-v1", help="gymnasium env id."),
    steps: Optional[int] = typer.Option(None, help="Env-step budget. Default: 50000."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(..., help="Run directory to write."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a config field: KEY=VALUE."),
) -> None:
    """PPO on the true reward with the same settings: the reference curve."""
    from rlhfkit.control.config import apply_overrides, make_config
    from rlhfkit.control.loop import train_baseline
    from rlhfkit.control.plots import plot_learning_curve

    import torch

    torch.set_num_threads(int(os.environ.get("RLHF_THREADS", "1")))
    try:
        config = apply_overrides(make_config(env, total_steps=steps, seed=seed), set_ or [])
        config.validate()
        result = _progress_run(config.total_steps, lambda cb: train_baseline(config, str(out), on_iteration=cb),
                               "PPO on the true reward")
    except ValueError as e:
        _fail(str(e))
    plot_learning_curve(out, out / "curve.png")
    _summary(result, f"{env}: PPO on the true reward")


@app.command("eval")
def eval_cmd(run: Path = typer.Argument(..., help="Run directory."),
             episodes: int = typer.Option(10, help="Evaluation episodes."),
             stochastic: bool = typer.Option(False, help="Sample actions instead of taking the mode.")) -> None:
    """Evaluate a run's saved policy on the true reward."""
    import numpy as np

    from rlhfkit.control.loop import evaluate_run

    if episodes < 1:
        _fail(f"--episodes must be >= 1, got {episodes}")
    try:
        returns = evaluate_run(str(run), episodes, deterministic=not stochastic)
    except ValueError as e:
        _fail(str(e))
    console.print(f"{run}: mean true return over {episodes} episodes {np.mean(returns):.1f} ± {np.std(returns):.1f}")
