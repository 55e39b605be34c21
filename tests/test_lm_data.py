"""Tests for rlhfkit.language.data: the HF/TRL preference formats, their errors and splits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rlhfkit.language.data import (
    DataError,
    PreferenceExample,
    RankedExample,
    SFTExample,
    load_data,
    pairs_from_ranked,
    render,
    sft_from_preferences,
    split_implicit_prompt,
    train_val_split,
)

HH = Path(__file__).parent / "data" / "hh_rlhf_harmless_200.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON value a line; a str row is written verbatim (for malformed lines and blanks)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


# ----------------------------------------------------------------------------------------------
# HH-RLHF: implicit prompt
# ----------------------------------------------------------------------------------------------


def test_hh_rlhf_sample_loads_with_implicit_prompt():
    data = load_data(HH)
    assert data.kind == "preference" and len(data.examples) == 200 and data.skipped == 0
    ex = data.examples[1]  # line 2 of the file, checked by reading it
    assert ex.prompt == "\n\nHuman: call me a bad name\n\nAssistant:"
    assert ex.chosen == " Sorry, that\u2019s out of bounds"
    assert ex.rejected == (
        " I didn\u2019t catch that. I don\u2019t have a call to make right now, so I just can\u2019t speak right now"
    )
    assert ex.source == f"{HH}:2" and ex.tie is False and ex.margin is None
    raw = [json.loads(line) for line in HH.read_text(encoding="utf-8").splitlines()]
    for ex, row in zip(data.examples, raw):
        assert ex.prompt + ex.chosen == row["chosen"]
        assert ex.prompt + ex.rejected == row["rejected"]
        assert ex.prompt.endswith("\n\nAssistant:") and "\n\nAssistant:" not in ex.chosen


def test_split_implicit_prompt_multi_turn_and_shared_start_of_response():
    c = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: Sure thing"
    r = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: Sure, no"
    # the common prefix runs into the responses (" Sure"); the prompt stops at the last marker
    prompt = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"
    assert split_implicit_prompt(c, r) == (prompt, " Sure thing", " Sure, no")
    assert split_implicit_prompt("Q: x\nA: yes", "Q: x\nA: no", marker="\nA:") == ("Q: x\nA:", " yes", " no")
    with pytest.raises(ValueError, match="common prefix"):
        split_implicit_prompt("Hello there", "Hello you")


def test_same_data_from_json_parquet_and_datasets_dir(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in HH.read_text(encoding="utf-8").splitlines()[:20]]
    want = [(e.prompt, e.chosen, e.rejected) for e in load_data(HH).examples[:20]]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "prefs.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    for name, split in [("list.json", "train"), ("wrapped.json", "train"), ("prefs.parquet", "train"),
                        ("ds", "train"), ("dd", "test")]:
        data = load_data(tmp_path / name, split=split)
        assert data.kind == "preference"
        assert [(e.prompt, e.chosen, e.rejected) for e in data.examples] == want, name
        assert data.examples[4].source == f"{tmp_path / name}:5"
    with pytest.raises(DataError, match="no split 'train'; the splits are: test"):
        load_data(tmp_path / "dd")


# ----------------------------------------------------------------------------------------------
# The other formats
# ----------------------------------------------------------------------------------------------


def test_explicit_prompt_with_tie_and_margin(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "margin": 2},
        {"prompt": "Grass is", "chosen": " green.", "rejected": " verdant.", "tie": True},
    ])
    a, b = load_data(path).examples
    assert a == PreferenceExample("The sky is", " blue.", " green.", tie=False, margin=2.0, source=f"{path}:1")
    assert b == PreferenceExample("Grass is", " green.", " verdant.", tie=True, margin=None, source=f"{path}:2")
    assert sft_from_preferences([a, b]) == [
        SFTExample("The sky is", " blue.", f"{path}:1"),
        SFTExample("Grass is", " green.", f"{path}:2"),
    ]


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A word-level tokenizer trained on a few words, with a one-line-per-message chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["what color is the sky", "it is blue", "it is green"],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return fast


def test_conversational_explicit_and_implicit_prompt_and_render(tmp_path, chat_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    q = [user("what color is the sky")]
    rows = [
        {"prompt": q, "chosen": [assistant("it is blue")], "rejected": [assistant("it is green")]},
    ]
    implicit = [
        {"chosen": q + [assistant("it is blue")], "rejected": q + [assistant("it is green")]},
    ]
    for path in [write_jsonl(tmp_path / "c.jsonl", rows), write_jsonl(tmp_path / "i.jsonl", implicit)]:
        (ex,) = load_data(path).examples
        assert ex.prompt == (user("what color is the sky"),)
        assert ex.chosen == (assistant("it is blue"),) and ex.rejected == (assistant("it is green"),)
    # Parquet stores the messages as structs; they come back as the same dicts
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    assert load_data(tmp_path / "c.parquet").examples[0].chosen == (assistant("it is blue"),)

    # by hand from the template: "<|user|>what color is the sky\n" + "<|assistant|>" + "it is blue\n"
    want = ("<|user|>what color is the sky\n<|assistant|>", "it is blue\n")
    assert render(chat_tokenizer, ex.prompt, ex.chosen) == want
    assert render(chat_tokenizer, "The sky is", " blue.") == ("The sky is", " blue.")
    with pytest.raises(ValueError, match="must both be plain text or both conversations"):
        render(chat_tokenizer, "The sky is", ex.chosen)

    broken = chat_tokenizer.chat_template.replace("<|assistant|>{% endif %}", "<|assistant|>\n{% endif %}")
    saved = chat_tokenizer.chat_template
    try:
        chat_tokenizer.chat_template = broken
        with pytest.raises(ValueError, match="does not start with"):
            render(chat_tokenizer, ex.prompt, ex.chosen)
        chat_tokenizer.chat_template = None
        with pytest.raises(ValueError, match="no chat_template"):
            render(chat_tokenizer, ex.prompt, ex.chosen)
    finally:
        chat_tokenizer.chat_template = saved


def test_ranked_with_ties_gives_all_pairs(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "Sky?", "responses": ["a", "b", "c"], "ranks": [1, 0, 1]}])
    (ex,) = load_data(path).examples
    assert ex == RankedExample("Sky?", ("a", "b", "c"), (1, 0, 1), source=f"{path}:1")
    # (a,b): b ranks 0 < 1, so b left, 1.0; (a,c): tied, list order, 0.5; (b,c): b better, 1.0
    assert pairs_from_ranked(ex) == [("b", "a", 1.0), ("a", "c", 0.5), ("b", "c", 1.0)]
    four = RankedExample("", ("w", "x", "y", "z"), (3, 2, 1, 0))
    assert len(pairs_from_ranked(four)) == 6 and all(t == 1.0 for *_, t in pairs_from_ranked(four))
    assert pairs_from_ranked(four)[0] == ("x", "w", 1.0)


def test_rated_accepts_booleans_and_plus_minus_one(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", [
        {"prompt": "p", "completion": " good", "label": True},
        {"prompt": "p", "completion": " bad", "label": False},
        {"prompt": "p", "completion": " good", "label": 1},
        {"prompt": "p", "completion": " bad", "label": -1},
    ])
    data = load_data(path)
    assert data.kind == "rated"
    assert [e.label for e in data.examples] == [True, False, True, False]
    assert all(isinstance(e.label, bool) for e in data.examples)


def test_sft_text_prompt_completion_and_messages(tmp_path):
    text = load_data(write_jsonl(tmp_path / "t.jsonl", [{"text": "The sky is blue."}])).examples
    assert text == [SFTExample("", "The sky is blue.", f"{tmp_path / 't.jsonl'}:1")]
    pc = load_data(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "The sky is", "completion": " blue."}]))
    assert pc.kind == "sft" and (pc.examples[0].prompt, pc.examples[0].completion) == ("The sky is", " blue.")
    conv = [user("hi"), assistant("hello"), user("sky?"), assistant("blue")]
    (m,) = load_data(write_jsonl(tmp_path / "m.jsonl", [{"messages": conv}])).examples
    assert m.prompt == tuple(conv[:3]) and m.completion == (assistant("blue"),)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

GOOD = {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}
RANKED = {"prompt": "Sky?", "responses": ["a", "b"], "ranks": [0, 1]}
RATED = {"prompt": "p", "completion": " c", "label": True}

BAD_ROWS = [
    # (good first row of the kind, bad row, field, words in the message)
    (GOOD, {"prompt": "The sky is", "chosen": " blue."}, "rejected", "missing"),
    (GOOD, {"prompt": "The sky is", "chosen": "   ", "rejected": " green."}, "chosen", "empty response"),
    (GOOD, {"prompt": "The sky is", "chosen": " blue.", "rejected": " blue."}, "rejected", "identical"),
    (GOOD, {"prompt": "The sky is", "chosen": 3, "rejected": " green."}, "chosen", "got int"),
    (GOOD, {"prompt": "x", "chosen": [{"role": "bot", "content": "hi"}], "rejected": [assistant("yo")]}, "chosen",
     "role 'bot'"),
    (GOOD, {"prompt": "x", "chosen": [user("hi")], "rejected": " yo"}, "chosen", "mixed"),
    (GOOD, {**GOOD, "tie": "yes"}, "tie", "true/false"),
    (GOOD, {**GOOD, "margin": float("inf")}, "margin", "finite"),
    (GOOD, '{"prompt": "The sky is", "chosen": " blue.",', None, "malformed JSON"),
    (GOOD, '["not", "an", "object"]', None, "expected an object"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
     {"chosen": "Human: a b", "rejected": "Human: a c"}, "chosen", "implicit prompt"),
    (RANKED, {"prompt": "Sky?", "responses": ["a"], "ranks": [0]}, "responses", "at least 2"),
    (RANKED, {"prompt": "Sky?", "responses": ["a", "b", "c"], "ranks": [0, 1]}, "ranks", "2 ranks for 3 responses"),
    (RANKED, {"prompt": "Sky?", "responses": ["a", "b"], "ranks": [0, 0.5]}, "ranks", "non-negative ints"),
    (RANKED, {"prompt": "Sky?", "responses": ["a", ""], "ranks": [0, 1]}, "responses", "response 2: empty"),
    (RATED, {"prompt": "p", "completion": " c", "label": 0}, "label", "+1/-1"),
    (RATED, {"prompt": "p", "completion": " c", "label": "good"}, "label", "+1/-1"),
]


@pytest.mark.parametrize("good, bad, field, words", BAD_ROWS)
def test_bad_row_names_file_line_and_field(tmp_path, good, bad, field, words):
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", bad, good])  # blank line 2 is skipped, bad is line 3
    with pytest.raises(DataError) as info:
        load_data(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    where = f"{path}, line 3" + (f', field "{field}"' if field else "")
    assert str(err).startswith(where + ": ") and words in str(err)

    data = load_data(path, skip_bad=True)
    assert data.skipped == 1 and data.errors == [str(err)]
    assert [e.source for e in data.examples] == [f"{path}:1", f"{path}:4"]


def test_bad_rows_in_parquet_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([GOOD, GOOD, {"prompt": "p", "chosen": " a", "rejected": None}]),
                   tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r'b\.parquet, row 3, field "rejected": missing'):
        load_data(tmp_path / "b.parquet")


def test_whole_file_errors_raise_even_with_skip_bad(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_data(tmp_path / "nope.jsonl", skip_bad=True)
    (tmp_path / "x.csv").write_text("chosen,rejected\n")
    with pytest.raises(DataError, match="unknown format"):
        load_data(tmp_path / "x.csv", skip_bad=True)
    (tmp_path / "broken.json").write_text('[{"chosen": "a",\n "rejected": }]')
    with pytest.raises(DataError, match=r"broken\.json, line 2: malformed JSON") as info:
        load_data(tmp_path / "broken.json", skip_bad=True)
    assert info.value.line == 2 and info.value.field is None
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"columns \(question, answer\); expected chosen\+rejected") as info:
        load_data(odd, skip_bad=True)
    assert info.value.line is None
    both = write_jsonl(tmp_path / "both.jsonl", [{"chosen": "a", "rejected": "b", "responses": ["a", "b"],
                                                  "ranks": [0, 1]}])
    with pytest.raises(DataError, match=r"more than one kind \(preference, ranked\)"):
        load_data(both)
    assert load_data(both, kind="ranked").kind == "ranked"
    with pytest.raises(DataError, match="kind='rated' needs columns completion\\+label"):
        load_data(both, kind="rated")
    all_bad = write_jsonl(tmp_path / "all_bad.jsonl", [{"chosen": "a", "rejected": "a"}])
    with pytest.raises(DataError, match="all 1 rows are bad"):
        load_data(all_bad, skip_bad=True)


def test_skip_bad_counts_every_bad_row_and_keeps_the_good(tmp_path):
    rows = [GOOD] + [bad for good, bad, *_ in BAD_ROWS if good is GOOD] + [GOOD]
    data = load_data(write_jsonl(tmp_path / "mixed.jsonl", rows), skip_bad=True)
    n_bad = len(rows) - 2
    assert data.skipped == n_bad == 10 and len(data.errors) == n_bad
    assert [e.source.rsplit(":", 1)[1] for e in data.examples] == ["1", str(len(rows))]
    lines = [int(re.search(r", line (\d+)", msg).group(1)) for msg in data.errors]
    assert lines == list(range(2, len(rows)))


# ----------------------------------------------------------------------------------------------
# train / validation split
# ----------------------------------------------------------------------------------------------


def test_train_val_split_is_deterministic_and_sized():
    items = list(range(10))
    train, val = train_val_split(items, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8 and sorted(train + val) == items
    assert val == sorted(np.random.default_rng(0).permutation(10)[:2].tolist())  # the documented rule
    assert train == sorted(train)  # original order kept within each part
    assert train_val_split(items, 0.2, seed=0) == (train, val)
    assert {tuple(train_val_split(items, 0.2, seed=s)[1]) for s in range(10)} != {tuple(val)}
    assert len(train_val_split(list(range(3)), 0.1)[1]) == 1  # round(0.3) = 0, raised to 1
    assert train_val_split(list(range(5)), 0.0) == ([0, 1, 2, 3, 4], [])
    assert len(train_val_split(list(range(10)), 0.99)[0]) == 1  # round(9.9) = 10, capped at n - 1
    assert train_val_split([7], 0.5) == ([7], [])
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            train_val_split(items, bad)
