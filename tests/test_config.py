"""Grid expansion, run ids, and the errors a user gets for bad input (before any training)."""


import re

import pytest
import yaml

from xfer.config import ConfigError, Grid, expand, load_grid, select_seeds
from xfer.grid.plan import plan
from xfer.paths import root

SMOKE = root() / "params" / "smoke.yaml"


def grid(**changes):
    raw = yaml.safe_load(SMOKE.read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return raw


def write(tmp_path, raw, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw) if isinstance(raw, dict) else raw)
    return path


def test_expansion_counts_and_shared_baseline(data):
    planned = plan(SMOKE)
    g, runs = planned.grid, planned.runs
    langs, sizes, seeds = g.intermediate.languages, g.intermediate.sizes, g.seeds
    nonzero = [s for s in sizes if s != 0]
    assert len(runs["pretrained"]) == 1
    assert len(runs["intermediate"]) == len(langs) * len(nonzero) * len(seeds)
    # one baseline target run per seed, shared by every intermediate language
    assert len(runs["target"]) == len(runs["intermediate"]) + len(seeds)
    baselines = [t for t in runs["target"] if t.upstream == runs["pretrained"][0].id]
    assert sorted(t.params["seed"] for t in baselines) == sorted(seeds)
    assert len(runs["evaluate"]) == len(runs["target"])
    # every intermediate checkpoint feeds exactly one target run here
    assert {t.upstream for t in runs["target"]} - {runs["pretrained"][0].id} == {r.id for r in runs["intermediate"]}


def test_run_ids_are_stable_and_depend_on_params_and_upstream(data):
    a = plan(SMOKE).runs
    b = plan(SMOKE).runs
    assert [r.id for r in a["target"]] == [r.id for r in b["target"]]
    ids = [r.id for rs in a.values() for r in rs]
    assert len(ids) == len(set(ids))
    g = Grid.model_validate(grid(**{"intermediate.train.lr": 5e-4}))
    c = expand(g, a["pretrained"][0].params["data"])
    # changing an intermediate hyper-parameter changes the intermediate runs and, through the
    # upstream id, every run downstream of them, but not the baseline
    assert {r.id for r in c["intermediate"]}.isdisjoint({r.id for r in a["intermediate"]})
    base_a = {r.id for r in a["target"] if r.upstream == a["pretrained"][0].id}
    base_c = {r.id for r in c["target"] if r.upstream == c["pretrained"][0].id}
    assert base_a == base_c
    assert len({r.id for r in c["target"]} & {r.id for r in a["target"]}) == len(base_a)


@pytest.mark.parametrize("changes, field, allowed", [
    ({"intermediate.task": "nosuchtask"}, "intermediate.task", "udpos"),
    ({"target.task": "posx"}, "target.task", "panx"),
    ({"intermediate.languages": ["sw", "xx"]}, "intermediate.languages", "sw"),
    ({"intermediate.sizes": [0, 100, 5000]}, "intermediate.sizes", "0..1000"),
    ({"target.language": "yo"}, "target.language", "en"),
    ({"target.size": 10**7}, "target.size", "1.."),
    ({"evaluate.languages": ["en", "klingon"]}, "evaluate.languages", "yo"),
    ({"evaluate.split": "train"}, "evaluate.split", "'test'"),
    ({"model.source": "ftp"}, "model.source", "'hub'"),
    ({"intermediate.train.epochs": None}, "intermediate.train", "exactly one of 'epochs' or 'max_steps'"),
    ({"seeds": []}, "seeds", "at least one seed"),
    ({"low_resource": "poor"}, "low_resource", "joshi_le2"),
    ({"intermediate.sizes": [0, -5]}, "intermediate.sizes", ">= 0"),
])
def test_bad_input_names_field_and_allowed_values(tmp_path, data, changes, field, allowed):
    with pytest.raises(ConfigError) as e:
        plan(write(tmp_path, grid(**changes)))
    assert field in str(e.value) and allowed in str(e.value), str(e.value)


def test_panx_test_split_has_no_labels(tmp_path, data):
    raw = grid(**{"target.task": "panx", "evaluate.split": "test"})
    with pytest.raises(ConfigError, match="evaluate.split.*no labels.*dev"):
        plan(write(tmp_path, raw))


def test_malformed_yaml_and_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_grid(write(tmp_path, "name: [unclosed\n  seeds: 1"))
    with pytest.raises(ConfigError, match="learning_rate.*Extra inputs"):
        load_grid(write(tmp_path, grid(**{"target.train.learning_rate": 0.1})))
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")


def test_missing_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="XFER_DATA_DIR.*not a folder"):
        plan(SMOKE)


def test_cli_reports_bad_input_without_traceback(tmp_path, data, capsys):
    from xfer.runner import main

    assert main(["plan", str(write(tmp_path, grid(**{"intermediate.task": "nope"})))]) == 2
    err = capsys.readouterr().err
    assert "intermediate.task" in err and "Traceback" not in err


def test_random_init_control_adds_a_baseline_per_seed(data):
    plain = plan(SMOKE).runs
    g = Grid.model_validate(grid(random_init_control=True))
    runs = expand(g, plain["pretrained"][0].params["data"])
    main, control = runs["pretrained"]
    assert control.params["model"]["random_init"] and not main.params["model"]["random_init"]
    on_control = [t for t in runs["target"] if t.upstream == control.id]
    assert sorted(t.params["seed"] for t in on_control) == sorted(g.seeds)
    assert len(runs["evaluate"]) == len(plain["evaluate"]) + len(g.seeds)
    assert [r.id for r in runs["intermediate"]] == [r.id for r in plain["intermediate"]]


def test_multitask_intermediate_validates_each_part(tmp_path, data):
    raw = grid(**{"intermediate.task": ["panx", "panx+udpos"], "intermediate.languages": ["en"],
                  "intermediate.mixing": "temperature"})
    planned = plan(write(tmp_path, raw))
    runs = planned.runs
    multi = [r for r in runs["intermediate"] if r.params["task"] == "panx+udpos"]
    single = [r for r in runs["intermediate"] if r.params["task"] == "panx"]
    assert multi and all(r.params["mixing"] == "temperature" for r in multi)
    assert single and all("mixing" not in r.params for r in single)  # single-task ids unaffected
    files = runs["pretrained"][0].params["data"]["files"]
    assert ["udpos", "en", "train"] in files and ["panx", "en", "train"] in files
    with pytest.raises(ConfigError, match="intermediate.task: unknown task 'nope'"):
        plan(write(tmp_path, grid(**{"intermediate.task": "panx+nope"})))
    with pytest.raises(ConfigError, match="intermediate.languages: 'sw' has no panx\\+udpos"):
        plan(write(tmp_path, grid(**{"intermediate.task": "panx+udpos", "intermediate.languages": ["sw"]})))


def test_overrides_reach_every_target_or_one_by_index(tmp_path):
    raw = grid(**{"target": [{"task": "udpos", "train": {"epochs": 1}}, {"task": "panx", "train": {"epochs": 1}}]})
    path = write(tmp_path, raw)
    g = load_grid(path, ["target.size=50", "target.1.train.epochs=3"])
    assert [t.size for t in g.targets] == [50, 50]
    assert [t.train.epochs for t in g.targets] == [1, 3]
    with pytest.raises(ConfigError, match="index 2 out of range"):
        load_grid(path, ["target.2.size=5"])


def test_extends_applies_the_files_keys_as_overrides(tmp_path):
    write(tmp_path, grid(), name="base.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\nseeds: [7]\ntarget.train.epochs: 4\n")
    g = load_grid(child, ["seeds=[8, 9]"])  # the command line wins over both files
    base = load_grid(tmp_path / "base.yaml")
    assert (g.name, g.seeds, g.target.train.epochs) == ("child", [8, 9], 4)
    assert g.model == base.model and g.intermediate == base.intermediate
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\nname: x\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_grid(tmp_path / "loop.yaml")


@pytest.mark.parametrize("sets, message", [
    (["analysis.sequential={looks: [3, 2]}"], "seed counts in increasing order"),
    (["analysis.sequential={looks: [1, 2]}"], "out of range; allowed: 2..10000"),
    (["analysis.sequential={looks: [2, 3]}"], "must be the number of seeds listed (2)"),
    (["analysis.sequential={looks: [2], spending: linear}"], "'obf' or 'pocock'"),
])
def test_sequential_design_is_validated(tmp_path, sets, message):
    path = write(tmp_path, grid(seeds=[1, 2]))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_grid(path, sets)


def test_a_look_runs_only_its_seeds(data):
    planned = plan(root() / "params" / "answer.yaml")
    grid, runs = planned.grid, planned.runs
    look = select_seeds(runs, grid.seeds[:3])
    assert look["pretrained"] == runs["pretrained"]
    for phase in ("intermediate", "target"):
        assert {r.params["seed"] for r in look[phase]} == {1, 2, 3}
        assert len(look[phase]) == len(runs[phase]) * 3 // 12
    assert len(look["evaluate"]) == len(look["target"])
