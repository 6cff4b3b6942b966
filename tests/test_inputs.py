"""Bad input and data faults, as a careful user meets them through the real command line
(`python -m xfer.runner plan`, and `make plan` for SET): each gets one line on stderr naming the
field or the file and line and the allowed values, exit code 2, and nothing is written. Data
faults are made in a copy of the data folder (symlinks to data/raw, one file copied)."""

import os
import shutil
import subprocess
import sys

import pytest

from xfer.config import split_overrides
from xfer.paths import root
from xfer.grid.plan import plan
from xfer.runner import main
from xfer.tasks import get_task
from xfer.tasks.base import DataError

SMOKE = root() / "params" / "smoke.yaml"
# the smoke grid made small: few files to read, so each case plans in about a second
SMALL = ["seeds=[1]", "intermediate.languages=[sw]", "intermediate.sizes=[0,100]", "evaluate.languages=[en,fr]"]


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # shared: each data file is read and hashed once per session


@pytest.fixture
def env(tmp_path, monkeypatch, cache, data):
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XFER_OUTPUT", str(tmp_path))
    monkeypatch.setenv("XFER_CACHE", str(cache))
    monkeypatch.delenv("XFER_SET", raising=False)
    return tmp_path


def cli(env, capsys, *sets, params=SMOKE):
    """`plan` through the runner's entry point, on the small smoke grid reporting into tmp."""
    argv = ["plan", str(params), "--set", f"report_dir={env / 'report'}"]
    for s in [*SMALL, *sets]:
        argv += ["--set", s]
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def refused(env, rc, err, *expected):
    """One line on stderr holding every expected part, exit code 2, no runs or report written."""
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert all(part in lines[0] for part in expected), lines[0]
    assert not (env / "runs").exists() and not (env / "report").exists()
    return lines[0]


BAD = [  # (--set items, parts the one error line must hold): the list, in its order
    (["report_dir=/etc/xfer"], ["report_dir", "outside the project", "allowed:", "XFER_OUTPUT"]),
    (["report_dir=../.."], ["report_dir", "outside the project", "allowed:"]),
    (["name=.."], ["name", "not a plain name", "allowed:"]),
    (['report_dir="report/a\\0b"'], ["report_dir", "control character", "allowed: printable"]),
    (["seeds=[1"], ["override 'seeds=[1'", "line 1, column 3", "malformed YAML"]),
    (["intermediate.languages=[]"], ["intermediate.languages", "empty", "allowed: at least one language"]),
    (["evaluate.languages=[]"], ["evaluate.languages", "empty", "allowed: at least one language"]),
    (["intermediate.task=[]"], ["intermediate.task", "empty", "allowed: at least one task"]),
    (["target=[]"], ["target", "empty", "allowed: at least one target"]),
    (["intermediate.languages=[sw,sw]"], ["intermediate.languages", "'sw' is listed twice", "allowed: each language once"]),
    (["seeds=[1,1]"], ["seeds", "1 is listed twice", "allowed: each seed once"]),
    (["evaluate.languages=[en,en,fr]"], ["evaluate.languages", "'en' is listed twice", "allowed: each language once"]),
    (["seeds=[-1]"], ["seeds.0", "allowed: 0..2147483647"]),
    ([f"seeds=[{2**70}]"], ["seeds.0", "allowed: 0..2147483647"]),
    (["intermediate.train.epochs=1.0e+300"], ["intermediate.train.epochs", "allowed: > 0 and <= 1000"]),
    (["intermediate.train.lr=inf"], ["intermediate.train.lr", "allowed: > 0 and <= 1"]),
    (["target.train.lr=.nan"], ["target.train.lr", "allowed: > 0 and <= 1"]),
    (["intermediate.train.lr=1.0e+300"], ["intermediate.train.lr", "allowed: > 0 and <= 1"]),
    (["intermediate.train.max_steps=1000000000000", "intermediate.train.epochs=null"],
     ["intermediate.train.max_steps", "allowed: 1..10000000"]),
    (["target.train.batch_size=0"], ["target.train.batch_size", "allowed: 1..65536"]),
    (["model.scratch.hidden_size=0"], ["model.scratch.hidden_size", "allowed: 1..65536"]),
    (["model.scratch.num_heads=3"], ["model.scratch", "num_heads 3 does not divide hidden_size 64", "allowed: 1, 2, 4"]),
    (["model.scratch.num_layers=-1"], ["model.scratch.num_layers", "allowed: 1..1000"]),
    (["model.scratch.num_layers=0"], ["model.scratch.num_layers", "allowed: 1..1000"]),
    (["model.source=local", "model.name=no/such/folder"], ["model.name", "no/such/folder", "allowed:"]),
]


@pytest.mark.parametrize("sets, expected", BAD, ids=[" ".join(s) for s, _ in BAD])
def test_bad_input_gets_one_line_before_anything_is_written(env, capsys, sets, expected):
    rc, _, err = cli(env, capsys, *sets)
    refused(env, rc, err, *expected)


def test_the_same_grid_plans_and_writes_nothing(env, capsys):
    rc, out, err = cli(env, capsys)
    assert rc == 0 and "intermediate    1 runs" in out, out + err
    assert not (env / "runs").exists() and not (env / "report").exists()


def test_params_file_faults_name_file_line_and_column(env, capsys):
    text = SMOKE.read_text()
    repeated = env / "repeated.yaml"
    repeated.write_text(text + "seeds: [3]\n")  # YAML alone would let the last one win
    line = text.count("\n") + 1
    rc, _, err = cli(env, capsys, params=repeated)
    refused(env, rc, err, str(repeated), f"line {line}", "key 'seeds' repeated", "allowed: each key once")

    latin1 = env / "latin1.yaml"
    latin1.write_bytes(text.replace("Walking skeleton.", "Walking skeleton, caf\u00e9.").encode("latin-1"))
    before = text[:text.index("Walking skeleton.")] + "Walking skeleton, caf"
    line, column = before.count("\n") + 1, len(before) - before.rindex("\n")
    rc, _, err = cli(env, capsys, params=latin1)
    refused(env, rc, err, f"{latin1}:{line}: column {column}: byte 0xe9 is not UTF-8", "allowed: UTF-8")

    broken = env / "broken.yaml"
    broken.write_text(text.replace("seeds: [1, 2]", "seeds: [1, 2"))
    rc, _, err = cli(env, capsys, params=broken)
    refused(env, rc, err, str(broken), "line ", "column ", "malformed YAML")

    nul = env / "nul.yaml"  # a NUL byte in report_dir passed plan and crashed after all runs
    nul.write_text(text.replace("report_dir: report/smoke", 'report_dir: "report/smo\\0ke"'))
    rc = main(["plan", str(nul)])
    refused(env, rc, capsys.readouterr().err, str(nul), "report_dir", "control character")


def test_sizes_that_are_the_same_corpus_run_once(env, capsys):
    # PAN-X Swahili has 1000 training sentences: 1000 and 'full' are one corpus
    rc, out, err = cli(env, capsys, "intermediate.sizes=[0,100,1000,full]")
    assert rc == 0, err
    assert "note: intermediate.sizes: 1000 and 'full' are the same panx corpus in 'sw'" in err
    assert "intermediate    2 runs" in out
    runs = plan(SMOKE, [*SMALL, "intermediate.sizes=[0,100,1000,full]"]).runs
    assert sorted(r.params["size"] for r in runs["intermediate"]) == [100, 1000]


def test_output_root_from_the_environment(env, capsys, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    rc, _, err = cli(env, capsys, f"report_dir={elsewhere}/r")
    refused(env, rc, err, "report_dir", "outside the project")
    monkeypatch.setenv("XFER_OUTPUT", str(elsewhere))
    grid = plan(SMOKE, [*SMALL, f"report_dir={elsewhere}/r"]).grid
    assert grid.report_path() == elsewhere.resolve() / "r"
    assert plan(SMOKE, SMALL).grid.report_path() == root().resolve() / "report" / "smoke"  # inside the project


# ------------------------------------------------------------------------------ make plan SET=...

def test_split_overrides_keeps_blanks_and_semicolons_in_values():
    assert split_overrides("seeds=[1, 2]  target.size=50 name=x;touch y") == \
        ["seeds=[1, 2]", "target.size=50", "name=x;touch y"]
    assert split_overrides("description='a b=c' evaluate.languages={x: [a, b]}") == \
        ["description='a b=c'", "evaluate.languages={x: [a, b]}"]
    assert split_overrides("  ") == []


def make_plan(env, data, set_value):
    return subprocess.run(
        ["make", "--no-print-directory", "plan", f"PY={sys.executable}", f"PARAMS={SMOKE}", f"SET={set_value}"],
        cwd=root(), capture_output=True, text=True, timeout=300,
        env={**os.environ, "XFER_DATA_DIR": str(data)})


def test_make_set_is_not_parsed_by_a_shell(env, data):
    flag = env / "INJECTED"
    small = " ".join(SMALL[1:])
    r = make_plan(env, data, f"seeds=[1] {small} report_dir={env}/report name=x;touch {flag}")
    assert not flag.exists(), "SET ran a shell command"
    ours = [line for line in r.stderr.splitlines() if not line.startswith("make")]  # make adds "Error 2"
    refused(env, 2 if "Error 2" in r.stderr else r.returncode, "\n".join(ours), "name", f"'x;touch {flag}'")
    r = make_plan(env, data, f"seeds=[1] {small} name=$(shell touch {flag})")
    assert not flag.exists() and r.returncode != 0, "make expanded SET"
    r = make_plan(env, data, f"seeds=[1, 2] {small} report_dir={env}/report")  # a blank inside a value
    assert r.returncode == 0, r.stderr
    assert "intermediate    2 runs" in r.stdout  # seeds 1 and 2


# ------------------------------------------------------------------------------ data faults

def data_copy(tmp_path, data, rel: str):
    """A data folder of symlinks to data/raw whose file `rel` is a copy, to corrupt."""
    folder = tmp_path / "data"
    parent = (folder / rel).parent
    for top in ("xtreme", "extra"):
        (folder / top).mkdir(parents=True)
        for entry in (data / top).iterdir():
            if entry.name != parent.name:
                (folder / top / entry.name).symlink_to(entry)
    parent.mkdir(parents=True, exist_ok=True)
    for entry in (data / rel).parent.iterdir():
        (parent / entry.name).symlink_to(entry)
    (folder / rel).unlink()
    shutil.copyfile(data / rel, folder / rel)
    return folder, folder / rel


def corrupt(path, line: int, new: bytes):
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = new
    path.write_bytes(b"\n".join(lines))


FAULTS = [  # (line written at line 5 of UD-POS test-fr, parts of the one error line)
    (b"est\t_\tAUX", ["3 tab-separated column(s)", "allowed: token, label"]),  # the extra column
    (b"est", ["1 tab-separated column(s)", "allowed: token, label"]),  # truncated, one column
    (b"est\t", ["with an empty label", "allowed: token, label"]),
    (b"est\tVERBE", ["label 'VERBE' is unknown", "allowed: ADJ, ADP"]),
    (b"caf\xe9\tNOUN", ["column 4: byte 0xe9 is not UTF-8", "allowed: UTF-8"]),
]


@pytest.mark.parametrize("line, expected", FAULTS, ids=[f[0].decode("latin-1") for f in FAULTS])
def test_a_bad_evaluation_line_stops_the_plan(env, capsys, data, monkeypatch, line, expected):
    folder, path = data_copy(env, data, "xtreme/udpos/test-fr.tsv")
    monkeypatch.setenv("XFER_DATA_DIR", str(folder))
    corrupt(path, 5, line)
    rc, _, err = cli(env, capsys)
    refused(env, rc, err, f"{path}:5:", *expected)


def test_an_empty_evaluation_file_is_named(env, capsys, data, monkeypatch):
    folder, path = data_copy(env, data, "xtreme/udpos/test-fr.tsv")
    monkeypatch.setenv("XFER_DATA_DIR", str(folder))
    path.write_text("")
    rc, _, err = cli(env, capsys, "model.trim_vocab=false")  # no vocabulary to trim: read at plan all the same
    refused(env, rc, err, str(path), "no examples (the file is empty)")


def test_a_bad_training_line_names_the_field_file_and_line(env, capsys, data, monkeypatch):
    folder, path = data_copy(env, data, "xtreme/panx/train-sw.tsv")
    monkeypatch.setenv("XFER_DATA_DIR", str(folder))
    corrupt(path, 3, b"Nairobi\tB-CITY")
    rc, _, err = cli(env, capsys)
    refused(env, rc, err, "intermediate.task", f"{path}:3:", "label 'B-CITY' is unknown", "allowed: O, B-PER")


def test_a_changed_data_file_gives_new_run_ids(env, data, monkeypatch):
    folder, path = data_copy(env, data, "xtreme/udpos/test-fr.tsv")
    monkeypatch.setenv("XFER_DATA_DIR", str(folder))
    ids = lambda runs: {r.id for rs in runs.values() for r in rs}
    before = plan(SMOKE, SMALL).runs
    again = plan(SMOKE, SMALL).runs  # unchanged: the same runs (done runs are found)
    assert ids(before) == ids(again)
    sums = before["pretrained"][0].params["data"]["checksums"]
    assert len(sums["xtreme/udpos/test-fr.tsv"]) == 64 and "xtreme/panx/train-sw.tsv" in sums
    corrupt(path, 5, path.read_bytes().split(b"\n")[4].replace(b"\t", b"s\t", 1))  # one token changed
    after = plan(SMOKE, SMALL).runs
    assert ids(after).isdisjoint(ids(before))
    changed = after["pretrained"][0].params["data"]["checksums"]
    assert {k for k in sums if sums[k] != changed[k]} == {"xtreme/udpos/test-fr.tsv"}


# ------------------------------------------------------------------------------ readers

def test_sentence_readers_name_file_and_line(tmp_path):
    xnli = get_task("xnli")
    dev = tmp_path / "dev-xx.tsv"
    dev.write_text("A man.\tA person.\tentailment\nA dog.\tA cat.\tneutral\textra\n")
    with pytest.raises(DataError, match=r"dev-xx.tsv:2: 4 tab-separated columns; allowed: 3"):
        xnli.read_file(dev)
    dev.write_text("A man.\tA person.\tentailment\nA dog.\tA cat.\tmaybe\n")
    with pytest.raises(DataError, match=r"dev-xx.tsv:2: .*unknown label 'maybe'; labels: entailment"):
        xnli.read_file(dev)
    dev.write_text("A man.\tA person.\nA dog.\tA cat.\n")  # an unlabelled release: no label column at all
    with pytest.raises(DataError, match="none of its 2 rows carries a label"):
        xnli.read_file(dev)
    copa = tmp_path / "val.xx.jsonl"
    copa.write_text('{"premise": "p", "question": "cause", "choice1": "a", "choice2": "b", "label": 0}\n\n{"premise": \n')
    with pytest.raises(DataError, match=r"val.xx.jsonl:3: "):
        get_task("xcopa").read_file(copa)
    copa.write_text('{"premise": "p", "choice1": "a", "choice2": "b", "label": 0}\n')
    with pytest.raises(DataError, match=r"val.xx.jsonl:1: field 'question' is missing"):
        get_task("xcopa").read_file(copa)
