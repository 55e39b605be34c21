"""``rlhf control``: deep RL from preferences on gymnasium tasks (Christiano et al. 2017)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

app = typer.Typer(no_args_is_help=True)
console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _say(text: str, *, bold: bool = False, style: str | None = None) -> None:
    """Print ``text`` as it is: paths, env ids and URLs are never read as rich markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True, style="bold" if bold else style)


def _progress_run(total_steps: int, fn, title: str):
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(title, total=total_steps, info="")

        def on_iteration(r: dict) -> None:
            ret = r.get("true_return")
            acc = r.get("reward/val_accuracy")
            info = f"labels {r['labels']}"
            info += f" · training episodes' true return {ret:.1f}" if ret is not None else ""
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

    table = Table(title=Text(title), caption="final evaluation: the deterministic policy (its mean action) on the "
                  "true reward; the progress bar showed the training episodes of the stochastic, still-learning "
                  "policy, which score differently")
    n = len(result.eval_returns)
    for col in ("labels", "env steps", f"mean true return ({n} eval eps)", "std", "wall s", "env steps / s"):
        table.add_column(col, justify="right")
    table.add_row(str(result.labels), str(result.env_steps), f"{result.mean_return:.1f}",
                  f"{float(np.std(result.eval_returns)):.1f}", f"{result.wall_s:.1f}",
                  f"{result.env_steps / max(result.wall_s, 1e-9):.0f}")
    console.print(table)
    if result.standard_returns:
        _say(f"the same policy on the standard task (the episode ends where the env would terminate): mean true "
             f"return {float(np.mean(result.standard_returns)):.1f} (the run trained without termination)")
    if baseline_path is not None and (baseline_path / "summary.json").is_file():
        b = json.loads((baseline_path / "summary.json").read_text())
        _say(f"true-reward baseline ({baseline_path}): mean true return {b['mean_true_return']:.1f}")


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write over a run directory unless asked (``--resume`` or ``--overwrite``)."""
    from rlhfkit.control.checkpoint import RunDir

    run = RunDir(out)
    if resume:
        if overwrite:
            raise ValueError("--resume and --overwrite contradict each other: continue the run, or start over")
        if not run.is_run():
            raise ValueError(f"--resume: {out} is not a run directory (no config.json and checkpoint/state.json)")
        return
    found = [p.name for p in (run.config_path, run.metrics_path, out / "summary.json", run.ckpt) if p.exists()]
    if found and not overwrite:
        state = "a finished run" if (out / "summary.json").is_file() else "an unfinished run"
        raise ValueError(f"{out} holds {state} ({', '.join(found)}): pass --resume to continue it, or --overwrite "
                         "to start over in it (its checkpoint, metrics and summary are replaced; labels.sqlite "
                         "is kept)")


def _resumed_config(out: Path, ctx: Optional[typer.Context], given: dict):
    """The saved config of the run in ``out``; options given explicitly must agree with it."""
    from rlhfkit.control.config import config_from_dict

    config = config_from_dict(json.loads((out / "config.json").read_text()))
    saved = {"env": config.env_id, "labels": config.total_labels, "steps": config.total_steps,
             "teacher": config.teacher, "seed": config.seed, "query": config.query_selection,
             "fragment_length": config.fragment_length, "algo": config.algo}
    for name, value in given.items():
        source = ctx.get_parameter_source(name) if ctx is not None else None
        explicit = getattr(source, "name", None) == "COMMANDLINE"  # typer may bring its own click
        if explicit and value is not None and value != saved[name]:
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{option} {value} conflicts with the run in {out} ({option} {saved[name]}): "
                             f"leave {option} out to resume it, or start a new run in another --out")
    return config


def _train(env: str, labels: Optional[int], steps: Optional[int], teacher: str, seed: int, out: Path,
           resume: bool, query: Optional[str], fragment_length: Optional[int], baseline: Optional[Path],
           overrides: Optional[list[str]] = None, human: Optional[dict] = None, *, overwrite: bool = False,
           ctx: Optional[typer.Context] = None, algo: str = "ppo") -> None:
    from rlhfkit.control.config import apply_overrides, make_config
    from rlhfkit.control.loop import train
    from rlhfkit.control.plots import plot_learning_curve

    import torch

    torch.set_num_threads(int(os.environ.get("RLHF_THREADS", "1")))
    try:
        _check_out(out, resume, overwrite)
        if resume:
            config = _resumed_config(out, ctx, {"env": env, "labels": labels, "steps": steps, "teacher": teacher,
                                                "seed": seed, "query": query, "fragment_length": fragment_length,
                                                "algo": algo})
            if overrides:
                raise ValueError("--set cannot change a run being resumed (its config.json is used)")
        else:
            config = make_config(env, algo=algo, total_labels=labels, total_steps=steps, teacher=teacher, seed=seed,
                                 query_selection=query, fragment_length=fragment_length)
            config = apply_overrides(config, overrides or [])
            config.validate()
        if baseline is not None and not (baseline / "metrics.jsonl").is_file():
            raise ValueError(f"--baseline {baseline}: no metrics.jsonl there (run `rlhf control baseline` first)")
        steps_note = (f" (runs {config.steps_run}: whole rollouts of {config.rollout_steps})"
                      if config.steps_run != config.total_steps else "")
        learner = "PEBBLE (SAC)" if config.algo == "pebble" else "PPO"
        _say(f"Deep RL from preferences on {config.env_id}: {config.total_labels} labels "
             f"({config.teacher} teacher, learner {learner}), "
             f"{config.total_steps} env steps{steps_note}, seed {config.seed} → {out}"
             + (" (resumed)" if resume else " (overwriting the previous run)" if overwrite and out.exists() else ""),
             bold=True)
        human_teacher, stop = None, None
        if config.teacher == "human":
            from rlhfkit.app import start_human_teacher

            h = human or {}
            human_teacher, url, stop = start_human_teacher(h.get("store"), out, config.env_id, host=h.get("host", "127.0.0.1"),
                                                           port=h.get("port", 8000), timeout_s=h.get("timeout_s"),
                                                           token=h.get("token"), label_budget=config.total_labels,
                                                           **_teacher_options(h.get("options")))
            _say(f"Label at: {url}", style="bold green")
            _say("(open it in a browser; training waits for your answers)")
            console.file.flush()
        try:
            result = _progress_run(config.steps_run, lambda cb: train(config, str(out), resume=resume,
                                                                      teacher=human_teacher, on_iteration=cb),
                                   "training")
        finally:
            if stop is not None:
                stop()
    except OSError as e:  # the labelling page's port is busy (checked before anything is written)
        _fail(e.strerror or str(e))
    except (ValueError, PermissionError, TimeoutError) as e:
        _fail(str(e))
    png = plot_learning_curve(out, out / "curve.png", baseline=baseline)
    _summary(result, f"{config.env_id} from {result.labels} {config.teacher} labels", baseline)
    _say(f"learning curve: {png}\nmetrics: {out / 'metrics.jsonl'}")


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    env: str = typer.Option("Pendulum-v1", help="gymnasium env id, e.g. Pendulum-v1, rlhfkit/CartPoleCos-v0, Hopper-v5."),
    labels: int = typer.Option(200, help="Label budget (comparisons)."),
    steps: int = typer.Option(50_000, help="Env-step budget (rounded down to whole rollouts; the banner says "
                                           "how many run)."),
    teacher: str = typer.Option("oracle", help="oracle|stochastic|mistake|skip|equal|myopic (synthetic), or human "
                                "(serves the labelling page and waits for a person's answers)."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(..., help="Run directory to write; an existing run there is refused unless "
                                       "--resume or --overwrite."),
    resume: bool = typer.Option(False, help="Continue the run saved in --out (its saved settings are used)."),
    overwrite: bool = typer.Option(False, help="Start over in an --out that already holds a run."),
    query: str = typer.Option("disagreement", help="Query selection: disagreement|entropy|random."),
    algo: str = typer.Option("ppo", help="The learner: ppo (on-policy, Christiano et al. 2017) or pebble (SAC with "
                             "unsupervised pre-training and relabelling, Lee et al. 2021; continuous actions)."),
    fragment_length: Optional[int] = typer.Option(None, help="Steps per fragment (default: the env's preset)."),
    baseline: Optional[Path] = typer.Option(None, help="A baseline run dir to draw on the learning curve."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override any config field: KEY=VALUE, "
                                             "e.g. --set ppo.loss=kl_penalty --set reward.ensemble_size=5."),
    store: Optional[str] = typer.Option(None, help="--teacher human: preference store URL or SQLite path "
                                        "(default OUT/labels.sqlite)."),
    host: str = typer.Option("127.0.0.1", help="--teacher human: address of the labelling page."),
    port: int = typer.Option(8000, min=0, max=65535, help="--teacher human: port of the labelling page (0: any "
                                                          "free port)."),
    token: Optional[str] = typer.Option(None, help="--teacher human: labeller token (required beyond 127.0.0.1)."),
    label_timeout: Optional[float] = typer.Option(3600.0, help="--teacher human: longest wait for one batch, s."),
    label_set: Optional[list[str]] = typer.Option(None, "--label-set", help="--teacher human: a HumanTeacher option, "
                                                  "KEY=VALUE (frame_skip, max_size, fmt, labels_per_query, ...)."),
) -> None:
    """Learn a task from preferences: the true reward is seen only by a synthetic teacher, or a person."""
    human = {"store": store, "host": host, "port": port, "token": token, "timeout_s": label_timeout,
             "options": label_set}
    _train(env, labels, steps, teacher, seed, out, resume, query, fragment_length, baseline, set_, human,
           overwrite=overwrite, ctx=ctx, algo=algo)


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("runs/demo"), help="Run directory (a previous demo there is replaced)."),
             seed: int = typer.Option(0, help="Random seed."),
             algo: str = typer.Option("pebble", help="The learner: pebble (SAC with PEBBLE's pre-training and "
                                                     "relabelling) or ppo (Christiano et al.'s on-policy loop)."),
             baseline: bool = typer.Option(True, help="Also run the learner on the true reward, for the curve.")) -> None:
    """The main job: Pendulum-v1 from 200 oracle labels and 50k env steps (and the true-reward baseline).

    PEBBLE by default: on this budget it reaches about -150 (3 seeds) where the PPO loop reaches about -173
    (bench/results/control_pebble.txt)."""
    base_dir = None
    if baseline:
        base_dir = out.parent / (out.name + "-baseline")
        baseline_cmd(env="Pendulum-v1", steps=50_000, seed=seed, out=base_dir, set_=None, overwrite=True, algo=algo)
    _train("Pendulum-v1", 200, 50_000, "oracle", seed, out, False, None, None, base_dir, overwrite=True, algo=algo)


@app.command("baseline")
def baseline_cmd(
    env: str = typer.Option("Pendulum-v1", help="gymnasium env id."),
    steps: int = typer.Option(50_000, help="Env-step budget (rounded down to whole rollouts)."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path = typer.Option(..., help="Run directory to write; an existing run there is refused unless --overwrite."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a config field: KEY=VALUE."),
    overwrite: bool = typer.Option(False, help="Start over in an --out that already holds a run."),
    algo: str = typer.Option("ppo", help="The learner: ppo, or pebble (SAC on the true reward)."),
) -> None:
    """PPO (or SAC) on the true reward with the same settings: the reference curve."""
    from rlhfkit.control.config import apply_overrides, make_config
    from rlhfkit.control.loop import train_baseline
    from rlhfkit.control.plots import plot_learning_curve

    import torch

    torch.set_num_threads(int(os.environ.get("RLHF_THREADS", "1")))
    try:
        _check_out(out, False, overwrite)
        config = apply_overrides(make_config(env, algo=algo, total_steps=steps, seed=seed), set_ or [])
        config.validate()
        learner = "SAC" if config.algo == "pebble" else "PPO"
        result = _progress_run(config.steps_run, lambda cb: train_baseline(config, str(out), on_iteration=cb),
                               f"{learner} on the true reward")
    except ValueError as e:
        _fail(str(e))
    plot_learning_curve(out, out / "curve.png")
    _summary(result, f"{env}: {learner} on the true reward")


@app.command("eval")
def eval_cmd(run: Path = typer.Argument(..., help="Run directory."),
             episodes: int = typer.Option(10, help="Evaluation episodes."),
             stochastic: bool = typer.Option(False, help="Sample actions instead of taking the mode."),
             reward_check: bool = typer.Option(False, help="Also compare the run's learned reward with the true one "
                                               "on the policy's episodes (correlation per step and per fragment)."),
             policy: Optional[Path] = typer.Option(None, help="With --reward-check: another run whose policy acts "
                                                   "(does this run's reward model rank it higher?).")) -> None:
    """Evaluate a run's saved policy on the true reward."""
    import numpy as np

    from rlhfkit.control.loop import evaluate_run

    if episodes < 1:
        _fail(f"--episodes must be >= 1, got {episodes}")
    if policy is not None and not reward_check:
        _fail("--policy is only used with --reward-check")
    try:
        returns = evaluate_run(str(run), episodes, deterministic=not stochastic)
    except ValueError as e:
        _fail(str(e))
    _say(f"{run}: mean true return over {episodes} episodes {np.mean(returns):.1f} ± {np.std(returns):.1f}")
    if reward_check:
        from rlhfkit.control.diagnose import reward_agreement

        try:
            a = reward_agreement(str(run), episodes, policy=None if policy is None else str(policy),
                                 deterministic=not stochastic)
        except ValueError as e:
            _fail(str(e))
        who = f"the policy of {policy}" if policy is not None else "its own policy"
        _say(f"learned reward of {run} on {who} ({a.steps} steps): true return {np.mean(a.true_returns):.1f}, "
             f"learned return {np.mean(a.learned_returns):.1f}; correlation with the true reward "
             f"{a.step_corr:.3f} per step, {a.window_corr:.3f} per {a.window}-step window")
