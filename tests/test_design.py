"""The design half of the study: the dose each run records, the fixed-steps design and its
epochs arm, seeded evaluation samples, the schema for corpora in their own languages, and the
15-way parallel NLI corpus (its alignment checked by labels, its nested subsets the same rows
in every language)."""

import shutil

import pandas as pd
import pytest

from xfer.config import ConfigError, Grid, load_grid
from xfer.data import check_aligned, evaluation_set, subsample, training_set
from xfer.grid import collect, execute, local, plan
from xfer.loop import Shuffle
from xfer.models import load_tokenizer
from xfer.models.vocab import load_id_map
from xfer.paths import read_json
from xfer.tasks import get_task
from xfer.tasks.base import DataError
from xfer.train import dev_task

ARM = ["intermediate.fixed_steps=true", "intermediate.epochs_arm=1", "intermediate.train.grad_accum=2",
       "evaluate.languages=[en]"]


def test_dose_and_budget_arm_recorded_by_a_real_run(micro_grid):
    """The micro grid with grad accumulation and an epochs arm beside its fixed steps, run for
    real: each training run's metrics.json and training.csv carry the examples and non-pad
    tokens it was fed (counted here again from the batch schedule), and every results row says
    which budget arm its intermediate run came from."""
    path = micro_grid()
    counts = local.run_grid(plan.plan(path, ARM), jobs=1)  # one after another, in one worker
    assert counts["failed"] == 0
    planned = plan.plan(path, ARM)
    runs = planned.runs
    assert len(runs["intermediate"]) == 2
    out = collect.collect(planned)
    training = pd.read_csv(out / "training.csv").set_index("run_id")
    assert {"run_id", "steps", "examples_seen", "tokens_seen", "inter_budget"} <= set(training.reset_index().columns)
    for run in runs["intermediate"] + runs["target"]:
        m = read_json(execute.run_dir(run) / "metrics.json")
        p, t = run.params, run.params["train"]
        task = get_task(p["task"])
        upstream = execute.checkpoint(runs["pretrained"][0])
        features = task.encode(training_set(p["task"], p["language"], p["size"], p["seed"]),
                               load_tokenizer(upstream), t["max_length"], load_id_map(upstream))
        shuffle = Shuffle.over(features, t["batch_size"], p["seed"], True, t.get("full_batches", False))
        fed = [i for k in range(m["steps"] * t["grad_accum"]) for i in shuffle(k)]
        assert m["examples_seen"] == len(fed) and m["tokens_seen"] == sum(len(features[i]["input_ids"]) for i in fed)
        assert training.loc[run.id, "examples_seen"] == m["examples_seen"]
        assert training.loc[run.id, "tokens_seen"] == m["tokens_seen"]
    steps, epochs = sorted(runs["intermediate"], key=lambda r: r.params["train"]["max_steps"] is None)
    assert read_json(execute.run_dir(steps) / "metrics.json")["steps"] == 4  # the micro grid's max_steps
    assert read_json(execute.run_dir(epochs) / "metrics.json")["examples_seen"] == 60  # one epoch of the 60
    assert training.loc[steps.id, "inter_budget"] == "steps" and training.loc[epochs.id, "inter_budget"] == "epochs"
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    by_run = {k: list(v) for k, v in results.groupby("intermediate_run")["inter_budget"].unique().items()}
    assert by_run == {"": [""], steps.id: ["steps"], epochs.id: ["epochs"]}


def test_epochs_arm_expands_beside_the_fixed_steps(micro_grid, data):
    planned = plan.plan(micro_grid(), ARM)
    runs = planned.runs
    inter = runs["intermediate"]
    assert [(r.params["train"]["max_steps"], r.params["train"]["epochs"]) for r in inter] == [(4, None), (None, 1.0)]
    assert all(r.params["train"]["keep"] == "last" for r in inter)  # no model selection changes the dose
    assert {r.params["size"] for r in inter} == {60} and len({r.id for r in inter}) == 2
    # each arm feeds its own target and evaluation runs; the baseline is shared
    assert {t.upstream for t in runs["target"]} == {r.id for r in inter} | {runs["pretrained"][0].id}
    plain = plan.plan(micro_grid()).runs
    assert plain["intermediate"][0].params["train"]["keep"] == "best"


@pytest.mark.parametrize("sets, field, message", [
    (["intermediate.epochs_arm=2"], "intermediate", "set fixed_steps: true"),
    (["intermediate.fixed_steps=true", "intermediate.train.max_steps=null", "intermediate.train.epochs=1"],
     "intermediate", "train.max_steps: required by fixed_steps"),
    (["intermediate.fixed_steps=true", "intermediate.train.patience=2", "intermediate.train.eval_every=2"],
     "intermediate", "no early stopping; remove patience"),
    (["intermediate.epochs_arm=0", "intermediate.fixed_steps=true"], "intermediate.epochs_arm", "allowed: > 0"),
    (["intermediate.corpora=[{task: panx, languages: [sw]}]"], "intermediate", "either 'corpora' or 'task'"),
    (["intermediate.corpora=[]"], "intermediate", "at least one corpus"),
    (["evaluate.sample_seed=x"], "evaluate.sample_seed", "integer"),
])
def test_design_settings_are_validated(micro_grid, sets, field, message):
    with pytest.raises(ConfigError, match=rf"(?s){field}: .*{message}"):
        load_grid(micro_grid(), sets)


def test_corpora_each_in_their_own_languages(micro_grid, data, tmp_path):
    """`corpora` lists tasks with their own languages (None: the task's only language); the
    runs are exactly those, and an unknown language is refused naming the field."""
    raw = micro_grid().read_text().replace(
        "  task: panx\n  languages: [sw]\n",
        "  corpora:\n    - {task: panx, languages: [sw, en]}\n    - {task: sst2_pt}\n")
    path = tmp_path / "corpora.yaml"
    path.write_text(raw)
    planned = plan.plan(path)
    grid, runs = planned.grid, planned.runs
    assert sorted((r.params["task"], r.params["language"]) for r in runs["intermediate"]) == [
        ("panx", "en"), ("panx", "sw"), ("sst2_pt", "pt")]
    assert Grid.model_validate(grid.model_dump(mode="json")) == grid  # grid.json reads back
    assert not {"task", "languages"} & set(grid.model_dump()["intermediate"])  # unused: not shown as the design
    path.write_text(raw.replace("[sw, en]", "[sw, xx]"))
    with pytest.raises(ConfigError, match="intermediate.languages: 'xx' has no panx training data"):
        plan.plan(path)
    path.write_text(raw.replace("- {task: sst2_pt}", "- {task: panx, languages: [de]}"))
    with pytest.raises(ConfigError, match="each task once"):
        plan.plan(path)


def test_evaluation_sample_is_seeded_stable_and_not_the_first_rows(data):
    examples = get_task("udpos").load("en", "test")
    a, b = evaluation_set(examples, 100, 0), evaluation_set(examples, 100, 0)
    assert a == b and len(a) == 100  # stable across runs and reruns
    assert a != examples[:100]
    positions = [examples.index(ex) for ex in a]
    assert positions == sorted(positions) and max(positions) > len(examples) // 2  # file order, spread over the file
    assert evaluation_set(examples, 100, 1) != a  # the seed is the grid's evaluate.sample_seed
    assert evaluation_set(examples, None, 0) is examples and evaluation_set(examples, 10 ** 6, 0) is examples


def test_every_evaluation_run_of_a_grid_samples_alike(micro_grid, data):
    """The sample depends on the grid's evaluate settings only, never on a run's seed or upstream."""
    runs = plan.plan(micro_grid(), ["seeds=[1,2]", "evaluate.sample_seed=7"]).runs
    settings = {(r.params["max_examples"], r.params["sample_seed"]) for r in runs["evaluate"]}
    assert settings == {(20, 7)} and len(runs["evaluate"]) == 4


@pytest.mark.parametrize("task, languages", [
    ("xnli_derived", ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]),
    ("sst2_pt", ["pt"]),
])
def test_parallel_corpora_are_aligned_by_labels_on_the_real_files(task, languages, data):
    """Every language of the parallel NLI corpus (5,010 pairs), and the Portuguese SST-2 (67,349),
    has its labels equal to the English file's row by row; `content()` pairs it with English."""
    t = get_task(task)
    assert t.languages("train") == languages and t.content()[1] is True
    for lang in languages:
        examples = t.load(lang, "train")
        check_aligned(task, lang, "train", examples)  # raises on any difference
        assert len(examples) == {"xnli_derived": 5010, "sst2_pt": 67349}[task]


def _copy_derived(data, folder, langs):
    (folder / "extra" / "xnli_test_derived").mkdir(parents=True)
    for lang in langs:
        shutil.copy(data / "extra" / "xnli_test_derived" / f"test-{lang}.tsv", folder / "extra" / "xnli_test_derived")
    return folder / "extra" / "xnli_test_derived"


def test_a_misaligned_translation_is_refused(data, tmp_path, monkeypatch):
    """A German file whose rows are shifted by one (a lost line), or that lacks a row, cannot
    stand in for a translation of the English corpus: loading it as a training set fails."""
    folder = _copy_derived(data, tmp_path, ["en", "de"])
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path))
    lines = (folder / "test-de.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(training_set("xnli_derived", "de", 100, 1)) == 100  # the real copy passes
    labels = [line.rstrip("\n").split("\t")[2] for line in lines]
    k = next(i for i in range(len(labels) - 1) if labels[i] != labels[i + 1])
    (folder / "test-de.tsv").write_text("".join(lines[:k] + lines[k + 1:] + lines[k:k + 1]), encoding="utf-8")
    with pytest.raises(DataError, match=rf"xnli_derived de train: row {k} is labelled .* not row-aligned"):
        training_set("xnli_derived", "de", 100, 1)
    (folder / "test-de.tsv").write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(DataError, match="5009 rows but 5010 in the English xnli_derived train"):
        training_set("xnli_derived", "de", 100, 1)


def test_nested_subsets_are_the_same_rows_in_every_language(data):
    """At a seed and size, each language's subset is the same rows of the parallel corpus (found
    by position in each language's own file), and the smaller size is part of the larger one."""
    t = get_task("xnli_derived")
    for lang in ("en", "de", "sw", "hi"):
        where = {}  # (premise, hypothesis) -> its positions in this language's file
        for i, ex in enumerate(t.load(lang, "train")):
            where.setdefault((ex["text_a"], ex["text_b"]), set()).add(i)
        for size in (300, 1000):
            subset = training_set("xnli_derived", lang, size, 2)
            rows = subsample(5010, size, 2)
            assert len(subset) == size and all(i in where[ex["text_a"], ex["text_b"]] for i, ex in zip(rows, subset))
    assert set(subsample(5010, 300, 2)) < set(subsample(5010, 1000, 2))
    assert set(subsample(5010, 300, 2)) != set(subsample(5010, 300, 3))


def test_parallel_corpus_selects_on_xnli_dev_in_its_own_language(data):
    """Model selection for an intermediate run on the parallel corpus reads XNLI dev (labelled,
    2,490 pairs) in the corpus's language, never a target language."""
    judge = dev_task({"task": "xnli_derived", "language": "sw"})
    dev = judge.load("sw", "dev")
    assert judge.name == "xnli_derived" and len(dev) == 2490
    assert dev[0] == get_task("xnli").load("sw", "dev")[0]
    assert judge.languages("dev") == judge.languages("train")


def test_hub_corpus_goes_through_the_same_alignment_check(data, monkeypatch):
    """`facebook/xnli` train (392,702 translated MNLI pairs per language) is checked when a run
    loads it. No hub here: the hub loader is served the derived files as the hub's Dataset
    (ClassLabel ids), so `xnli` training sets go through read_hub, hub_rows and the check."""
    import datasets

    from xfer.tasks.classification import NLI, read_records

    def hub_copy(lang, shift=False):
        rows = read_records(data / "extra" / "xnli_test_derived" / f"test-{lang}.tsv", ("premise", "hypothesis", "label"))
        if shift:
            rows = rows[1:] + rows[:1]
        features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=list(NLI))})
        return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("premise", "hypothesis")} |
                                          {"label": [NLI.index(r["label"]) for r in rows]}, features=features)

    served = {}

    def load_dataset(hub_id, config, split):
        assert (hub_id, split) == ("facebook/xnli", "train")
        served[config] = served.get(config, 0) + 1
        return hub_copy(config, shift=config == "sw")

    monkeypatch.setenv("XFER_DATA_DIR", "hub")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    de = training_set("xnli", "de", 200, 1)
    assert len(de) == 200 and served == {"de": 1, "en": 1}  # English loaded to check against
    with pytest.raises(DataError, match=r"xnli sw train: row \d+ is labelled .* not row-aligned"):
        training_set("xnli", "sw", 200, 1)


def test_keep_last_hands_on_the_final_weights_with_dev_still_scored(scratch, data):
    """The fixed-steps design scores dev (logged) but keeps the last weights, so the next phase
    gets exactly the trained dose; the default keeps the best-scoring ones (model selection)."""
    import torch

    from xfer.config import TrainConfig
    from xfer.loop import train

    folder, tok = scratch
    task = get_task("udpos")
    features = task.encode(task.load("en", "train")[:32], tok, 32)
    snapshots = []

    def select(model):  # every evaluation scores lower than the one before: the first is the best
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return -len(snapshots)

    for keep, kept, other in (("best", 0, 1), ("last", 1, 0)):  # snapshots at steps 2 and 4
        snapshots.clear()
        model = task.build_model(folder)
        cfg = TrainConfig(lr=1e-2, batch_size=16, max_steps=4, eval_every=2, keep=keep)
        out = train(model, features, lambda f: task.collate(f, tok.pad_token_id), cfg, seed=0, progress=False,
                    select=select)
        assert out["steps"] == 4 and out["selected_step"] == 2 and len(out["dev_history"]) == 2
        assert all(torch.equal(v, snapshots[kept][k]) for k, v in model.state_dict().items())
        assert not all(torch.equal(v, snapshots[other][k]) for k, v in model.state_dict().items())
