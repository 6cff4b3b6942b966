"""Extractive QA on the real files: readers, the official metrics on awkward cases, windows
whose labels map back to the answer text, and the metric on Chinese windows (training: the task
contract, tests/test_tasks.py)."""

from __future__ import annotations

import json

import pytest
import torch

from xfer.config import ModelConfig
from xfer.models import build_scratch, load_tokenizer
from xfer.tasks.base import DataError
from xfer.tasks.qa import QA_TASKS, mlqa_normalize, qa_scores, span_text, squad_normalize

TASKS = {t.name: t for t in QA_TASKS}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    ckpt = build_scratch(ModelConfig(source="scratch", name="t"), tmp_path_factory.mktemp("m"))
    return ckpt, load_tokenizer(ckpt)


# -- readers ------------------------------------------------------------------------------

def test_xquad_has_1190_questions_in_12_languages(data):
    xquad = TASKS["xquad"]
    langs = xquad.languages("test")
    assert langs == ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]
    for lang in langs:
        examples = xquad.load(lang, "test")
        assert len(examples) == 1190 and all(len(ex["answers"]) == 1 and ex["lang"] == lang for ex in examples)


def test_mlqa_dev_languages_and_sizes(data):
    mlqa = TASKS["mlqa"]
    sizes = {lang: len(mlqa.load(lang, "dev")) for lang in mlqa.languages("dev")}
    assert sizes == {"ar": 517, "de": 512, "en": 1148, "es": 500, "hi": 507, "vi": 511, "zh": 504}
    assert mlqa.languages("test") == []  # no same-language MLQA test files locally


def test_tydiqa_train_and_the_unlabelled_local_dev(data):
    tydiqa = TASKS["tydiqa"]
    assert tydiqa.languages("train") == ["en", "ko", "sw"]
    assert len(tydiqa.load("en", "train")) == 3696
    dev = sorted((data / "xtreme/tydiqa/tydiqa-goldp-v1.1-dev").glob("tydiqa.goldp.*.dev.json"))
    assert [p.name.split(".")[2] for p in dev] == ["ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"]
    with pytest.raises(DataError, match="answers are removed"):
        tydiqa.languages("dev")  # XTREME's release blanks the dev answers: refuse, do not score against ""
    with pytest.raises(DataError, match="labels removed"):
        tydiqa.read_file(dev[0])


def test_squad_v2_reader_keeps_unanswerable_questions(tmp_path, scratch):
    data = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "b", "question": "Where is Rome?", "answers": [], "is_impossible": True}]}]}]}
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(data))
    examples = TASKS["squad_v2"].read_file(path)
    assert [len(ex["answers"]) for ex in examples] == [1, 0]
    ckpt, tok = scratch
    result = TASKS["squad_v2"].evaluate(TASKS["squad_v2"].build_model(ckpt), examples, tok, 32, 4)
    assert 0 <= result["score"] <= 100 and result["n_examples"] == 2
    with pytest.raises(DataError, match="1 of 2 questions have no answer"):
        TASKS["squad"].read_file(path)


def test_hub_rows_become_examples():
    row = {"id": "x", "title": "T", "context": "abc def", "question": "q?",
           "answers": {"text": ["def"], "answer_start": [4]}}
    assert TASKS["xquad"].from_hub(row)["answers"] == [{"text": "def", "answer_start": 4}]
    assert TASKS["tydiqa"].hub_split("dev") == "validation" and TASKS["xquad"].hub_split("test") == "validation"


# -- metrics ------------------------------------------------------------------------------

def test_squad_normalisation_punctuation_and_articles():
    assert squad_normalize("The  Eiffel Tower.") == "eiffel tower"
    assert squad_normalize("Theatre of an era") == "theatre of era"  # articles only as whole words
    assert squad_normalize("¿Qué?") == "¿qué"  # SQuAD drops ASCII punctuation only
    s = qa_scores(["the Denver Broncos team", "Eiffel Tower!"], [["Denver Broncos"], ["a tower", "eiffel tower"]],
                  [None, None])
    assert s["exact_match"] == pytest.approx(50.0)  # second: equal to the best of its two gold answers
    assert s["f1"] == pytest.approx(100 * (0.8 + 1.0) / 2)  # first: P 2/3, R 1


def test_mlqa_normalisation_is_language_aware():
    assert mlqa_normalize("¿Qué pasó?", "es") == "qué pasó"  # Unicode punctuation goes too
    assert mlqa_normalize("el gato y la casa", "es") == "gato y casa"
    assert mlqa_normalize("der Hund, die Katze", "de") == "hund katze"
    assert mlqa_normalize("những con mèo", "vi") == "con mèo"
    assert mlqa_normalize("الكتاب", "ar") == "كتاب"
    assert mlqa_normalize("the book", "hi") == "the book"  # no articles removed for Hindi
    assert mlqa_normalize("2008年北京奥运会。", "zh") == "2008 年 北 京 奥 运 会"
    with pytest.raises(ValueError):
        mlqa_normalize("x", "fi")


def test_chinese_answer_scores_per_character_under_mlqa_only():
    pred, gold = ["北京大学"], [["北京"]]
    assert qa_scores(pred, gold, ["zh"], "mlqa")["f1"] == pytest.approx(100 * 2 / 3)  # P 2/4, R 2/2
    assert qa_scores(pred, gold, ["zh"], "squad")["f1"] == 0.0  # one whitespace token each: no overlap
    assert qa_scores(["北京。"], gold, ["zh"], "mlqa")["exact_match"] == 100.0


def test_unanswerable_questions_score_the_empty_prediction():
    assert qa_scores(["", "x"], [[], []], [None, None]) == {"exact_match": 50.0, "f1": 50.0}


# -- windows ------------------------------------------------------------------------------

def test_long_context_is_split_into_windows_that_hold_the_answer(data, scratch):
    _, tok = scratch
    xquad = TASKS["xquad"]
    ex = max(xquad.load("en", "test")[:200], key=lambda e: len(e["context"]))
    features, status = xquad.windows([ex], tok, 64)
    assert len(features) > 3 and status == ["ok"]
    labelled = [f for f in features if f["start_positions"]]
    assert labelled and len(labelled) < len(features)  # windows without the answer point at CLS
    for f in labelled:
        assert span_text(ex["context"], f["offsets"], f["start_positions"], f["end_positions"]) == ex["answers"][0]["text"]
    assert all(len(f["input_ids"]) <= 64 for f in features)


def test_answers_map_back_to_their_text_on_a_real_file(data, scratch):
    """XLM-R's sentencepiece sometimes merges an answer's edge with punctuation ("2014,"):
    then the token span is a little wider than the answer (3% of XQuAD-en), but it still
    equals the answer after SQuAD normalisation for all but one question."""
    _, tok = scratch
    xquad = TASKS["xquad"]
    examples = xquad.load("en", "test")
    features, status = xquad.windows(examples, tok, 384)
    exact, normalised = set(), set()
    for f in features:
        if f["start_positions"]:
            ex = examples[f["example"]]
            got = span_text(ex["context"], f["offsets"], f["start_positions"], f["end_positions"])
            exact |= {f["example"]} if got == ex["answers"][0]["text"] else set()
            normalised |= {f["example"]} if squad_normalize(got) == squad_normalize(ex["answers"][0]["text"]) else set()
    assert status.count("misaligned") == status.count("outside") == 0
    assert len(exact) == status.count("ok") >= 0.95 * len(examples)
    assert len(examples) - len(normalised) <= 2, len(examples) - len(normalised)


# -- evaluation (training: the task contract, tests/test_tasks.py) ------------------------

def test_evaluate_scores_chinese_windows_with_aligned_answers(data, scratch):
    ckpt, tok = scratch
    torch.manual_seed(0)
    model = TASKS["mlqa"].build_model(ckpt)
    result = TASKS["mlqa"].evaluate(model, TASKS["mlqa"].load("zh", "dev")[:40], tok, 96, 16)
    assert 0 <= result["exact_match"] <= result["f1"] == result["score"] <= 100
    assert result["n_examples"] == 40 and result["windows"] > 40 and result["answers_misaligned"] == 0
