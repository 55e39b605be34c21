"""Loading and saving Hugging Face models for the language trainers (local directories only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["apply_lora", "load_causal_lm", "load_reward_model", "load_tokenizer", "quiet_transformers", "save_model"]


def quiet_transformers() -> None:
    """Silence transformers' progress bars and info logs (our CLI shows its own progress)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _check_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); build one with "
                                "`rlhf lm tiny --data FILE --out DIR` or point --model at a downloaded model")
    return path


def load_tokenizer(model_dir: str | Path) -> Any:
    """``AutoTokenizer`` from a local directory, with a pad token and right padding.

    A tokenizer without a pad token gets its EOS as pad (reward models then need the EOS
    appended to every sequence, which :func:`rlhfkit.language.logprobs.encode` does).

    Raises:
        FileNotFoundError: if the directory holds no model.
        ValueError: if the tokenizer has neither a pad nor an EOS token.
    """
    from transformers import AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(_check_dir(model_dir), local_files_only=True)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"the tokenizer in {model_dir} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_causal_lm(model_dir: str | Path, *, dtype: Any = None) -> Any:
    """``AutoModelForCausalLM`` from a local directory (fp32 by default on CPU).

    Raises:
        FileNotFoundError: if the directory holds no model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    return AutoModelForCausalLM.from_pretrained(_check_dir(model_dir), local_files_only=True,
                                                dtype=dtype or torch.float32)


def load_reward_model(model_dir: str | Path, *, num_heads: int | None = None, pad_token_id: int | None = None,
                      pooling: str | None = None) -> Any:
    """A reward model: ``AutoModelForSequenceClassification`` with ``num_heads`` scalar outputs.

    From a causal-LM directory (e.g. the SFT model) the backbone is reused and the score head
    (``d_model → num_heads``, no bias) is freshly initialised; from a saved reward model it loads
    as is (``num_heads=None`` keeps a saved reward model's head count; 1 for a causal LM). The
    score of a sequence is the head's output at its last non-padding token (the EOS), or with
    ``pooling="mean"`` the mean of the head's outputs over the response tokens, or with ``"sum"``
    their sum (recorded in the config as ``reward_pooling``; see
    :func:`rlhfkit.language.reward.score`). Any ``AutoModelForSequenceClassification`` directory
    works: an encoder (BERT, DeBERTa — OpenAssistant's reward models) has no per-token head and
    pools its first token (``[CLS]``) itself, recorded as ``reward_pooling = "first"``.

    Raises:
        FileNotFoundError: if the directory holds no model.
        ValueError: for a pooling other than ``last``, ``mean`` or ``sum`` (for an encoder: other
            than its own first-token pooling).
    """
    import json

    import torch
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    config = json.loads((_check_dir(model_dir) / "config.json").read_text())
    is_rm = any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    if num_heads is None:
        num_heads = len(config.get("id2label") or {0: 0}) if is_rm else 1
    model = AutoModelForSequenceClassification.from_pretrained(_check_dir(model_dir), num_labels=num_heads,
                                                               local_files_only=True, dtype=torch.float32)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    # name the heads: the saved config then records their number (transformers omits default labels)
    model.config.id2label = {i: f"reward_{i}" for i in range(num_heads)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    if not hasattr(model, "score"):  # an encoder (BERT, DeBERTa): its head pools the first token ([CLS]) itself
        if pooling not in (None, "last", "first"):
            raise ValueError(f"pooling {pooling!r} needs a per-token score head; {type(model).__name__} pools its "
                             "first token itself (use the default pooling)")
        model.config.reward_pooling = "first"
    elif pooling is not None:
        if pooling not in ("last", "mean", "sum"):
            raise ValueError(f"pooling must be 'last', 'mean' or 'sum', got {pooling!r}")
        model.config.reward_pooling = pooling
    return model


def apply_lora(model: Any, r: int, alpha: float, *, task: str = "CAUSAL_LM") -> Any:
    """Wrap ``model`` with LoRA adapters (Hu et al. 2021) on every linear layer via peft.

    Only the adapters (and, for a reward model, the score head) are trained.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type=task,
                        modules_to_save=["score"] if task == "SEQ_CLS" else None)
    return get_peft_model(model, config)


def save_model(model: Any, tokenizer: Any, out: str | Path) -> Path:
    """Save weights (safetensors) and tokenizer to ``out`` as a normal HF directory; LoRA merged."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
