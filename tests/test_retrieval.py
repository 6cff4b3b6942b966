"""Retrieval: deterministic ranking with ties, mAP@k and BUCC mining checked by hand, the
readers on the real files (and a tiny Mewsli-X file), and evaluate with a tiny encoder."""

from __future__ import annotations

import json

import pytest
import torch

from xfer.config import ModelConfig
from xfer.models import build_scratch, load_tokenizer
from xfer.tasks.base import DataError
from xfer.tasks.retrieval import (RETRIEVAL_TASKS, Pool, average_precision_at_k, best_threshold_f1, from_tatoeba,
                                  margin_mine, pairs_to_examples, to_tatoeba, top_k)

TASKS = {t.name: t for t in RETRIEVAL_TASKS}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    ckpt = build_scratch(ModelConfig(source="scratch", name="t"), tmp_path_factory.mktemp("m"))
    return TASKS["tatoeba"].build_model(ckpt), load_tokenizer(ckpt)


# -- ranking and metrics by hand ----------------------------------------------------------

def test_top_k_breaks_ties_by_pool_order():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])
    scores, idx = top_k(q, c, 3)
    assert idx.tolist() == [[1, 0, 2], [4, 0, 1]]  # the 3 tied 0.5s and the 0s: lowest index first
    assert scores[0].tolist() == [1.0, 0.5, 0.5]
    assert top_k(q, c, 3, block=1)[1].tolist() == idx.tolist()
    assert top_k(q, c, 99)[1].shape == (2, 5)


def test_average_precision_at_k_by_hand():
    ranked = ["a", "x", "b", "y", "c"]
    assert average_precision_at_k(ranked, {"a", "b", "c"}, 20) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert average_precision_at_k(ranked, {"a", "b", "c", "d"}, 20) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 4)
    assert average_precision_at_k(ranked, {"a", "b", "c"}, 2) == pytest.approx(1 / 2)  # divisor min(|R|, k) = 2
    assert average_precision_at_k(ranked, {"y"}, 20) == pytest.approx(1 / 4)  # one answer: reciprocal rank
    assert average_precision_at_k(ranked, {"y"}, 3) == 0.0


def test_ratio_margin_mining_by_hand():
    """x = (e0, e1), y = (e0, e1, e2), k = 2: each true pair has cosine 1, and its sources'
    and targets' 2-NN means are 0.5 each, so margin 1 / 0.5 = 2; y2 pairs with nothing better
    than 0, and x0 is taken."""
    x, y = torch.eye(3)[:2], torch.eye(3)
    assert margin_mine(x, y, k=2) == [(0, 0, 2.0), (1, 1, 2.0)]


def test_best_threshold_f1_by_hand():
    pairs = [(0, 0, 3.0), (1, 5, 2.0), (2, 2, 1.5), (3, 3, 1.0)]
    best = best_threshold_f1(pairs, {(0, 0), (2, 2), (4, 4)})
    assert best["f1"] == pytest.approx(100 * 2 / 3) and best["threshold"] == pytest.approx(1.25)  # keep 3: P = R = 2/3
    tied = best_threshold_f1([(0, 0, 2.0), (1, 1, 2.0)], {(0, 0)})
    assert tied["f1"] == pytest.approx(100 * 2 / 3)  # a threshold cannot keep one of two tied pairs


def test_ties_in_evaluate_are_deterministic(encoder):
    """Equal texts embed equally: the candidate earlier in the pool wins the tie."""
    model, tok = encoder
    tatoeba = TASKS["tatoeba"]
    examples = pairs_to_examples(["Hello world", "Hello world"], ["Hello world", "Hello world"])
    result = tatoeba.evaluate(model, examples, tok, 32, 8)
    assert result["accuracy"] == 50.0  # both queries retrieve candidate 0: right for query 0 only


# -- real files ---------------------------------------------------------------------------

def test_tatoeba_codes_map_to_the_project_codes(data):
    assert [from_tatoeba(c) for c in ("deu", "cmn", "swh", "pes", "zsm", "ang")] == ["de", "zh", "sw", "fa", "ms", "ang"]
    assert [to_tatoeba(l) for l in ("de", "zh", "sw", "ang")] == ["deu", "cmn", "swh", "ang"]
    langs = TASKS["tatoeba"].languages("test")
    assert len(langs) == 36 and {"de", "zh", "sw", "fa"} <= set(langs)  # XTREME's 36 of the release's 112
    assert "kab" not in langs and len(TASKS["tatoeba"].load("kab", "test")) > 0  # others still load by name


def test_tatoeba_evaluate_on_two_languages(data, encoder):
    model, tok = encoder
    tatoeba = TASKS["tatoeba"]
    for lang in ("de", "zh"):
        examples = tatoeba.load(lang, "test")
        assert len(examples) == 1000
        result = tatoeba.evaluate(model, examples[:200], tok, 64, 256)
        assert 0 <= result["score"] <= 100 and result["pool_size"] == 1000 and result["queries_without_gold"] == 0


def test_bucc_reader_and_mining_on_zh_en(data, encoder):
    bucc = TASKS["bucc"]
    assert bucc.languages("dev") == ["zh"]  # de, fr, ru lack a side
    examples = bucc.load("zh", "dev")
    assert len(examples) == 8624 and len(examples[0]["pool"].ids) == 13589
    assert sum(len(ex["gold"]) for ex in examples) == 257
    # mine 400 sentences plus every paired one against their targets and 1,500 others (for speed)
    queries = examples[:400] + [ex for ex in examples[400:] if ex["gold"]]
    pool, wanted = examples[0]["pool"], {g for ex in queries for g in ex["gold"]}
    keep = [i for i, c in enumerate(pool.ids) if c in wanted or i < 1500]
    small = Pool(tuple(pool.ids[i] for i in keep), tuple(pool.texts[i] for i in keep))
    model, tok = encoder
    result = bucc.evaluate(model, [dict(ex, pool=small) for ex in queries], tok, 48, 512)
    assert 0 <= result["score"] <= 100 and result["n_gold"] == 257 and result["threshold"] > 0


def test_lareqa_pool_and_gold_answers(data, encoder):
    lareqa = TASKS["lareqa"]
    assert len(lareqa.languages("test")) == 11
    examples = lareqa.load("de", "test")
    pool = examples[0]["pool"]
    assert len(examples) == 1190 and len(pool.ids) == 13014  # every sentence of all 11 languages
    assert all(len(ex["gold"]) == 11 and len({g.split("/")[0] for g in ex["gold"]}) == 11 for ex in examples)
    assert lareqa.load("en", "test")[0]["pool"] is pool  # one pool for every language
    model, tok = encoder
    result = lareqa.evaluate(model, examples[:100], tok, 48, 512)
    assert 0 <= result["map@20"] == result["score"] <= 100 and result["queries_without_gold"] == 0


def test_retrieval_tasks_have_no_training_data():
    with pytest.raises(DataError, match="no training data"):
        TASKS["tatoeba"].load("de", "train")


# -- Mewsli-X (no local copy: a tiny file in its published format) -----------------------

def mewslix_files(folder, text="In Helsinki, buses stopped. Trains ran."):
    folder.mkdir(parents=True)
    doc = lambda lang, doc_text, mentions: {
        "context": {"document_title": "t", "document_url": "u", "document_id": f"{lang}-1", "language": lang,
                    "text": doc_text, "sentence_spans": [{"start": 0, "end": 27}, {"start": 28, "end": len(doc_text)}]},
        "mentions": mentions}
    mention = lambda i, start, end, surface, qid: {"example_id": i, "mention_span": {"start": start, "end": end,
                                                                                     "text": surface}, "entity_id": qid}
    docs = [doc("en", text, [mention("m1", 3, 11, "Helsinki", "Q1757"), mention("m2", 28, 34, "Trains", "Q870")]),
            doc("ar", "زار أبو موسى أمس. ثم عاد.", [mention("m3", 4, 12, "أبو موسى", "Q167217")])]
    (folder / "wikinews_mentions-dev.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs))
    entities = [("Q1757", "Helsinki is the capital of Finland."), ("Q870", "A train is a series of cars."),
                ("Q167217", "أبو موسى جزيرة في الخليج."), ("Q1", "The universe is all of space and time.")]
    (folder / "candidate_set_entities.jsonl").write_text("\n".join(json.dumps(
        {"entity_id": q, "title": q, "description": d, "description_url": "u", "description_language": "en",
         "sentence_spans": [{"start": 0, "end": len(d)}]}, ensure_ascii=False) for q, d in entities))


def test_mewslix_reader_and_evaluate(tmp_path, monkeypatch, encoder):
    mewslix_files(tmp_path / "xtreme_r" / "mewslix")
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path))
    mewslix = TASKS["mewslix"]
    assert mewslix.languages("dev") == ["ar", "en"]
    en = mewslix.load("en", "dev")
    assert [ex["text"] for ex in en] == [("Helsinki", "In Helsinki, buses stopped."), ("Trains", "Trains ran.")]
    assert [ex["gold"] for ex in en] == [("Q1757",), ("Q870",)] and len(en[0]["pool"].ids) == 4
    model, tok = encoder
    result = mewslix.evaluate(model, en, tok, 64, 8)
    assert 25 <= result["map@20"] == result["score"] <= 100  # 4 candidates: each gold ranks 1st to 4th


def test_mewslix_without_article_text_is_refused(tmp_path):
    mewslix_files(tmp_path / "m", text="")
    with pytest.raises(DataError, match="no text"):
        TASKS["mewslix"].read_file(tmp_path / "m" / "wikinews_mentions-dev.jsonl")


@pytest.mark.parametrize("folder", ["hub", "a folder without these tasks"])
def test_hub_copies_that_cannot_give_the_task_are_refused_early(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("XFER_DATA_DIR", "hub" if folder == "hub" else str(tmp_path))
    for name, reason in [("mewslix", "not on the Hugging Face hub"), ("bucc", "only the gold pairs"),
                         ("lareqa", "no sentence segmentation")]:
        with pytest.raises(DataError, match=reason):
            TASKS[name].languages(TASKS[name].splits[-1])
