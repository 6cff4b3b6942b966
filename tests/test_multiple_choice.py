"""Multiple choice on the real release files (XCOPA, COPA, SocialIQa, CosmosQA, CommonsenseQA),
HellaSwag on a file in its published format (the padded batches, training and evaluation: the
task contract, tests/test_tasks.py)."""

from __future__ import annotations

import collections
import json

import pytest

from xfer.paths import data_dir
from xfer.tasks.base import DataError
from xfer.tasks.multiple_choice import MULTIPLE_CHOICE_TASKS

TASKS = {t.name: t for t in MULTIPLE_CHOICE_TASKS}
XCOPA = ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"]
pytestmark = pytest.mark.skipif(data_dir() is None, reason="needs the unpacked benchmark files (data/raw)")


def test_xcopa_val_100_and_test_500_in_11_languages():
    task = TASKS["xcopa"]
    assert task.languages("dev") == task.languages("test") == XCOPA
    for lang in ("et", "qu", "zh"):
        assert len(task.load(lang, "dev")) == 100
        test = task.load(lang, "test")
        assert len(test) == 500 and collections.Counter(ex["label"] for ex in test) == {0: 250, 1: 250}
    first = task.load("et", "dev")[0]  # {"premise": "Mees keeras kraani lahti.", "question": "effect", "label": 1, ...}
    assert first == {"context": "Mees keeras kraani lahti. What happened as a result?",
                     "choices": ["Tualett täitus veega.", "Tilast voolas vett."], "label": 1}
    assert task.load("zh", "test")[0]["context"].endswith(" What was the cause of this?")


def test_english_copa_and_its_hidden_test_labels():
    task = TASKS["copa"]
    assert task.languages("train") == ["en"]
    assert len(task.load("en", "train")) == 400 and len(task.load("en", "dev")) == 100
    # the English dev is XCOPA's source: same gold answers
    assert [ex["label"] for ex in task.load("en", "dev")] == [ex["label"] for ex in TASKS["xcopa"].load("it", "dev")]
    with pytest.raises(DataError, match="carries no labels"):
        task.load("en", "test")  # the file's labels are all 0: placeholders
    with pytest.raises(DataError, match="en corpus"):
        task.load("de", "train")


@pytest.mark.parametrize("name, split, n, k", [("siqa", "dev", 1954, 3), ("siqa", "test", 2224, 3),
                                               ("cosmosqa", "dev", 2985, 4), ("commonsenseqa", "dev", 1221, 5)])
def test_english_sets_counts_and_choices(name, split, n, k):
    examples = TASKS[name].load("en", split)
    assert len(examples) == n and examples.dropped == 0
    assert {len(ex["choices"]) for ex in examples} == {k}
    assert set(ex["label"] for ex in examples) == set(range(k))


def test_readers_keep_the_answer():
    siqa = TASKS["siqa"].load("en", "dev")[0]  # "correct": "C"
    assert siqa["label"] == 2 and siqa["choices"][2] == "Find somewhere to go"
    assert siqa["context"] == "Tracy didn't go home that evening and resisted Riley's attacks. " \
                              "What does Tracy need to do before this?"
    csqa = TASKS["commonsenseqa"].load("en", "dev")[0]  # "answerKey": "A"
    assert csqa["label"] == 0 and csqa["choices"][0] == "bank"
    cosmos = TASKS["cosmosqa"].load("en", "dev")[0]
    assert cosmos["label"] == 1 and cosmos["choices"][1] == "He wants to get married to a different person ."


def test_hub_rows_use_the_hub_label_conventions():
    assert TASKS["siqa"].from_hub({"context": "C.", "question": "Q?", "answerA": "a", "answerB": "b",
                                   "answerC": "c", "label": "3"})["label"] == 2  # 1-based on the hub
    row = {"id": "x", "question": "Q?", "choices": {"label": list("ABCDE"), "text": list("abcde")}, "answerKey": "D"}
    assert TASKS["commonsenseqa"].from_hub(row)["label"] == 3
    original = {"question": {"stem": "Q?", "choices": [{"label": k, "text": k.lower()} for k in "ABCDE"]},
                "answerKey": "E"}  # the original release's nesting
    assert TASKS["commonsenseqa"].from_hub(original) == {"context": "Q?", "choices": list("abcde"), "label": 4}


HELLASWAG = [  # the published hellaswag_val.jsonl layout (first validation row)
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "source_id": "activitynet~v_-JhWjGDPHMY"},
]


def test_hellaswag_reads_its_published_format(tmp_path):
    val = tmp_path / "hellaswag_val.jsonl"
    val.write_text("".join(json.dumps(row) + "\n" for row in HELLASWAG))
    [ex] = TASKS["hellaswag"].read_file(val)
    assert ex["context"] == "A man is sitting on a roof." and ex["label"] == 3
    assert ex["choices"][3] == "he starts pulling up roofing on a roof."
    test = tmp_path / "hellaswag_test.jsonl"  # the test file has no "label"
    test.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "label"}) + "\n" for row in HELLASWAG))
    with pytest.raises(DataError, match="none of its 1 rows carries a label"):
        TASKS["hellaswag"].read_file(test)
    assert TASKS["hellaswag"].from_hub({**HELLASWAG[0], "label": "1"})["label"] == 1  # the hub's string labels


def test_a_row_with_the_wrong_number_of_choices_is_an_error():
    row = {"id": "x", "question": "Q?", "choices": {"label": list("ABC"), "text": list("abc")}, "answerKey": "A"}
    with pytest.raises(ValueError, match="3 choices, expected 5"):
        TASKS["commonsenseqa"].from_hub(row)
