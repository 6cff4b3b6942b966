"""Sentence classification on the real release files: counts, label sets, the refusals, the
and the metric (training and evaluation: the task contract, tests/test_tasks.py)."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from xfer.paths import data_dir
from xfer.tasks.base import DataError
from xfer.tasks.classification import CLASSIFICATION_TASKS, NLI, XNLI_LANGS, accuracy, keep_labelled

TASKS = {t.name: t for t in CLASSIFICATION_TASKS}
pytestmark = pytest.mark.skipif(data_dir() is None, reason="needs the unpacked benchmark files (data/raw)")


def labels(examples):
    return collections.Counter(ex["label"] for ex in examples)


def test_xnli_dev_is_2490_per_language_in_15_languages():
    task = TASKS["xnli"]
    assert task.languages("dev") == sorted(XNLI_LANGS)
    for lang in ("en", "sw", "zh"):
        examples = task.load(lang, "dev")
        assert len(examples) == 2490 and examples.dropped == 0
        assert labels(examples) == {label: 830 for label in NLI}
    assert task.load("en", "dev")[0] == {"text_a": "And he said, Mama, I'm home.", "label": "neutral",
                                         "text_b": "He called his mom as soon as the school bus dropped him off."}


def test_unlabelled_splits_are_refused():
    with pytest.raises(DataError, match="carries no labels"):
        TASKS["xnli"].load("en", "test")
    with pytest.raises(DataError, match="carries no labels"):
        TASKS["sst2_pt"].load("pt", "test")
    with pytest.raises(DataError, match="carries no labels"):
        TASKS["ocnli"].load("zh", "test")


def test_pawsx_dev_and_a_test_file_without_labels():
    task = TASKS["pawsx"]
    assert task.languages("dev") == ["de", "en", "es", "fr", "ja", "ko", "zh"]
    dev = task.load("de", "dev")
    assert len(dev) == 2000 and set(labels(dev)) == {"different", "paraphrase"}
    with pytest.raises(DataError, match="none of its 2000 rows carries a label"):
        task.load("en", "test")  # this release ships the test files without the label column


def test_americasnli_reads_languages_not_the_combined_file():
    task = TASKS["americasnli"]
    langs = ["aym", "bzd", "cni", "gn", "hch", "nah", "oto", "quy", "shp", "tar"]
    assert task.languages("dev") == langs and task.languages("test") == langs  # not "anli.dev"
    assert len(task.load("aym", "dev")) == 743 and len(task.load("oto", "test")) == 748
    assert set(labels(task.load("nah", "dev"))) == set(NLI)


def test_single_language_corpora_refuse_other_languages():
    assert TASKS["ocnli"].languages("dev") == ["zh"]
    with pytest.raises(DataError, match="zh corpus"):
        TASKS["ocnli"].load("en", "dev")


def test_ocnli_drops_and_counts_rows_without_gold_label():
    with pytest.warns(UserWarning, match="dropped 50 of 3000"):
        dev = TASKS["ocnli"].load("zh", "dev")
    assert len(dev) == 2950 and dev.dropped == 50 and set(labels(dev)) == set(NLI)
    with pytest.warns(UserWarning, match="dropped 15 of 10000"):
        assert len(TASKS["ocnli"].load("zh", "train")) == 9985


def test_indonli_letters_map_to_nli_labels():
    task = TASKS["indonli"]
    train = task.load("id", "train")
    assert len(train) == 10330 and labels(train) == {"entailment": 3476, "contradiction": 3439, "neutral": 3415}
    assert len(task.load("id", "dev")) == 2197
    lay, expert = task.load("id", "test_lay"), task.load("id", "test_expert")
    assert len(task.load("id", "test")) == len(lay) + len(expert) == 5185


def test_kornli_and_derived_xnli_labels_line_up_with_xnli():
    kornli = TASKS["kornli"]
    assert [ex["label"] for ex in kornli.load("ko", "dev")] == [ex["label"] for ex in TASKS["xnli"].load("en", "dev")]
    derived = TASKS["xnli_derived"]
    assert derived.languages("train") == sorted(XNLI_LANGS)
    train = derived.load("de", "train")
    assert len(train) == 5010 and [ex["label"] for ex in train] == [ex["label"] for ex in kornli.load("ko", "test")]


def test_sst2_english_and_portuguese_are_row_aligned():
    en, pt = TASKS["sst2"], TASKS["sst2_pt"]
    en_train, pt_train = en.load("en", "train"), pt.load("pt", "train")
    assert len(en_train) == len(pt_train) == 67349
    assert [ex["label"] for ex in en_train] == [ex["label"] for ex in pt_train]
    assert en_train[0]["text_b"] is None and set(labels(en_train)) == {"negative", "positive"}
    assert len(en.load("en", "dev")) == len(pt.load("pt", "dev")) == 872
    assert len(en.load("en", "test")) == 1821


def test_hub_only_corpora_read_their_release_layouts(tmp_path):
    # MNLI: the XNLI TSV layout, with XNLI-MT's "contradictory" spelling
    (tmp_path / "mnli.tsv").write_text("A man.\tA person.\tentailment\nA dog.\tA cat.\tcontradictory\n"
                                       "Rain.\tSun.\t-\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        mnli = TASKS["mnli"].read_file(tmp_path / "mnli.tsv")
    assert [ex["label"] for ex in mnli] == ["entailment", "contradiction"]
    # ANLI: the release's JSON lines (context, hypothesis, e/n/c)
    (tmp_path / "anli.jsonl").write_text('{"uid": "1", "context": "C.", "hypothesis": "H.", "label": "n"}\n')
    assert TASKS["anli"].read_file(tmp_path / "anli.jsonl") == [{"text_a": "C.", "text_b": "H.", "label": "neutral"}]
    # QQP: GLUE's headed TSV
    (tmp_path / "qqp.tsv").write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tQ1?\tQ2?\t1\n")
    assert TASKS["qqp"].read_file(tmp_path / "qqp.tsv")[0]["label"] == "duplicate"
    # an unknown label is an error, not a drop
    (tmp_path / "bad.tsv").write_text("A.\tB.\tmaybe\n")
    with pytest.raises(ValueError, match="unknown label 'maybe'"):
        TASKS["mnli"].read_file(tmp_path / "bad.tsv")


def test_hub_loader_offline_on_a_local_dataset_folder(tmp_path, monkeypatch):
    """The hub path end to end, without a network: ClassLabel ids read as the hub's own names
    (OCNLI's hub orders them neutral, entailment, contradiction), hidden labels (-1) dropped."""
    import datasets

    monkeypatch.setenv("XFER_ROOT", str(tmp_path))  # no data folder: load() goes to the "hub"
    monkeypatch.delenv("XFER_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neutral", "entailment", "contradiction"])})
    (tmp_path / "hub").mkdir()
    datasets.Dataset.from_dict({"sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"], "label": [1, 2, -1]},
                               features=features).to_parquet(tmp_path / "hub" / "validation.parquet")
    task = dataclasses.replace(TASKS["ocnli"], hub_id=str(tmp_path / "hub"), hub_config="")
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        dev = task.load("zh", "dev")
    assert dev == [{"text_a": "a", "text_b": "x", "label": "entailment"},
                   {"text_a": "b", "text_b": "y", "label": "contradiction"}]
    assert TASKS["anli"].hub_split("train") == "train_r1+train_r2+train_r3"
    assert TASKS["indonli"].hub_split("test") == "test_lay+test_expert"
    assert TASKS["pawsx"].hub_split("dev") == "validation"


def test_keep_labelled_refuses_a_source_without_labels():
    with pytest.raises(DataError, match="none of its 2 rows"):
        keep_labelled([{"label": None}, {"label": None}], "f.tsv")
    assert keep_labelled([], "empty.tsv") == []


def test_accuracy_by_hand():
    assert accuracy(["a", "b", "c", "a"], ["a", "b", "a", "b"]) == 50.0
    assert accuracy([0, 1, 2], [0, 1, 2]) == 100.0
    assert accuracy([1], [0]) == 0.0
    assert accuracy([0, 0, 0], [0, 1, 1]) == pytest.approx(100 / 3)
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
