"""The ``rlhf`` command line (typer): ``rlhf control ...``, ``rlhf label ...``, ``rlhf rank ...``, ``rlhf lm ...``."""

from __future__ import annotations

import typer
from typer import core as _typer_core

from rlhfkit.cli.control import app as control_app
from rlhfkit.cli.label import app as label_app
from rlhfkit.cli.lm import app as lm_app
from rlhfkit.cli import lm_online as _lm_online  # noqa: F401  (registers `rlhf lm grpo` and `rlhf lm ppo`)
from rlhfkit.cli import lm_label as _lm_label  # noqa: F401  (registers `rlhf lm label`)
from rlhfkit.cli.rank import app as rank_app


def _usage_name(self) -> str:  # noqa: ANN001 - a typer.core.TyperArgument
    """``RUN`` / ``[RUN]`` in usage lines, the Unix convention (typer writes ``{run}`` for required arguments)."""
    name = (self.metavar or self.name or "").upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


if hasattr(_typer_core, "TyperArgument") and hasattr(_typer_core.TyperArgument, "_usage_display_name"):
    _typer_core.TyperArgument._usage_display_name = _usage_name

app = typer.Typer(no_args_is_help=True, help="rlhfkit: reinforcement learning from human feedback.")
app.add_typer(control_app, name="control", help="Deep RL from preferences on gymnasium tasks.")
app.add_typer(label_app, name="label", help="Label from a browser: serve the page, labellers, agreement, TRL export/import.")
app.add_typer(lm_app, name="lm", help="Language-model RLHF: tiny models, SFT, reward and cost models, DPO, GRPO, PPO, "
                                       "labelling pairs (synthetic teacher or AI judge).")
app.add_typer(rank_app, name="rank", help="Rank items (players, teams, models) from comparisons.")


def main() -> None:
    """Entry point of the ``rlhf`` command."""
    try:
        app()
    finally:
        _destroy_process_group()


def _destroy_process_group() -> None:
    """Under ``accelerate launch``, tear the gloo/NCCL group down before exit: its threads, left
    running at interpreter shutdown, abort the process ("terminate called without an active exception")."""
    import sys

    if "torch" not in sys.modules:  # nothing distributed can have started
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
