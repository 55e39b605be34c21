"""Language-model RLHF on Hugging Face transformers: preference data, tiny models, sequence
log-probabilities, SFT, reward models and DPO (the InstructGPT pipeline's first two steps and
Rafailov et al. 2023), runnable on CPU without downloads.

Modules:

- :mod:`rlhfkit.language.data` — the HF/TRL preference formats (explicit and implicit prompt,
  conversational, ranked lists, ±1 ratings, SFT text) from JSONL, JSON, Parquet or a local
  ``datasets`` directory, with errors naming the file, line and field.
- :mod:`rlhfkit.language.tiny` — a small GPT-2- or Llama-style model and a byte-level BPE tokenizer
  trained on the dataset's text, saved as a normal HF directory.
- :mod:`rlhfkit.language.logprobs` — tokenisation of (prompt, completion) pairs and the one shared
  masked sequence log-probability.
- :mod:`rlhfkit.language.train` — the shared training loop (accelerate, metrics, checkpoints).
- :mod:`rlhfkit.language.sft`, :mod:`rlhfkit.language.reward`, :mod:`rlhfkit.language.dpo` — the
  trainers.

Submodules are imported on use (transformers is slow to import).
"""
