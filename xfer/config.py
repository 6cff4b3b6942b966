"""A study is data: a YAML grid, validated into objects, expanded into runs with stable ids.

Each run's id is a hash of its own parameters and its upstream run's id, so a changed
setting gives new runs and an unchanged one is found done on disk and skipped.

One concern, the grid's schema: every setting a params file may hold, its allowed values and
the message naming them, kept together so one file reads as the reference of a params file."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_serializer, model_validator)

from xfer.paths import output_path, package_file, plain_text, read_utf8, root


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def within(lo, hi, above: bool = False) -> AfterValidator:
    """A number in lo..hi (above lo, when `above`): NaN and infinities fail too. Bounds on every
    number keep a typo (`epochs: 1e300`, `lr: inf`) from reaching training, and the error names
    the range, where pydantic's own messages name one bound."""
    def check(v):
        if v is None or ((lo < v) if above else (lo <= v)) and v <= hi:
            return v
        raise ValueError(f"{v!r} is out of range; allowed: {f'> {lo} and <= {hi}' if above else f'{lo}..{hi}'}")
    return AfterValidator(check)


def once(v: list, what: str = "value") -> list:
    """A list that is not empty and names each item once: a repeat would only duplicate runs."""
    if not v:
        raise ValueError(f"the list is empty; allowed: at least one {what}")
    twice = next((x for i, x in enumerate(v) if x in v[:i]), None)
    if twice is not None:
        raise ValueError(f"{twice!r} is listed twice; allowed: each {what} once")
    return v


BIG = 10**9  # corpus sizes and example counts
STEPS = 10**7


class TrainConfig(Strict):
    """One training phase. Exactly one of `epochs` / `max_steps` sets the budget: fixing steps
    across corpus sizes removes training compute as a confound of size."""

    lr: Annotated[float, within(0, 1, above=True)] = 2e-5
    batch_size: Annotated[int, within(1, 65536)] = 32
    grad_accum: Annotated[int, within(1, 4096)] = 1
    epochs: Annotated[float | None, within(0, 1000, above=True)] = None
    max_steps: Annotated[int | None, within(1, STEPS)] = None
    max_length: Annotated[int, within(8, 8192)] = 128
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: Annotated[float, within(0, 10)] = 0.01
    save_every: Annotated[int, within(1, STEPS)] = Field(200, description="optimizer steps between resumable training states")
    # model selection (the paper's early stopping): score the dev split of the *training* language
    # every `eval_every` steps and keep the best; target-language data is never looked at
    eval_every: Annotated[int | None, within(1, STEPS)] = None
    patience: Annotated[int | None, within(1, 10**4)] = None  # stop after this many evaluations without improvement
    dev_max_examples: Annotated[int | None, within(1, BIG)] = 2000
    # with eval_every: "best" keeps the best-scoring weights (model selection), "last" the final
    # ones (dev is still scored and logged), so every run hands on exactly its trained dose
    keep: Literal["best", "last"] = "best"
    # the hot loop (#14): batches of similar lengths pad less; only the embedding rows of the
    # run's training data train ("all": every row, as a plain fine-tune), so AdamW skips the
    # vocabulary's other rows and other languages keep their pretrained vectors exactly;
    # "auto" precision: bf16 autocast on CUDA, fp32 on the CPU
    group_by_length: bool = True
    embedding_rows: Literal["used", "all"] = "used"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # every batch full: epochs laid end to end, no short last batch, so S steps see exactly
    # S × batch_size × grad_accum examples at any corpus size (fixed_steps sets it)
    full_batches: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)
        if not self.full_batches:  # unset: not in the dump, so earlier runs keep their ids
            out.pop("full_batches", None)
        return out

    @model_validator(mode="after")
    def one_budget(self):
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("set exactly one of 'epochs' or 'max_steps'")
        return self


class ScratchConfig(Strict):
    hidden_size: Annotated[int, within(1, 65536)] = 64
    num_layers: Annotated[int, within(1, 1000)] = 2
    num_heads: Annotated[int, within(1, 1024)] = 2
    intermediate_size: Annotated[int, within(1, 262144)] = 128

    @model_validator(mode="after")
    def heads_divide_hidden(self):
        if self.hidden_size % self.num_heads:
            divisors = [d for d in range(1, min(self.hidden_size, 1024) + 1) if self.hidden_size % d == 0]
            raise ValueError(f"num_heads {self.num_heads} does not divide hidden_size {self.hidden_size}; "
                             f"allowed: {', '.join(map(str, divisors))}")
        return self


class ModelConfig(Strict):
    """Phase (i): where the pretrained encoder comes from, and the stated approximations."""

    source: Literal["hub", "local", "e5", "scratch"] = "hub"
    name: Annotated[str, AfterValidator(plain_text)] = "FacebookAI/xlm-roberta-large"  # hub id, local folder, or a label for scratch/e5
    scratch: ScratchConfig = ScratchConfig()
    trim_vocab: bool = False  # keep only embedding rows of token ids the study's data uses
    num_layers: Annotated[int | None, within(1, 1000)] = None  # keep the first k layers
    freeze_embeddings: bool = False
    random_init: bool = False  # same architecture, weights drawn at random (the control)

    def approximations(self) -> list[str]:
        out = []
        if self.trim_vocab:
            out.append("vocabulary trimmed to the token ids of the study's data (exact on those ids)")
        if self.num_layers:
            out.append(f"only the first {self.num_layers} transformer layers kept")
        if self.freeze_embeddings:
            out.append("embeddings frozen during fine-tuning")
        return out


class CorpusConfig(Strict):
    """One intermediate corpus: a task in its own list of languages (None: its only language)."""

    task: str
    languages: list[str] | None = None


class IntermediateConfig(Strict):
    """Phase (ii). Size 0 is the no-intermediate baseline; sizes are nested seeded subsets.

    The corpora are either `task` (one or several) × `languages`, or `corpora`, a list of tasks
    each with its own languages (`[{task: xnli_derived, languages: [en, de]}, {task: sst2}]`).

    The dose design: `fixed_steps: true` trains every run exactly `train.max_steps` optimizer
    steps, with no early stopping, and hands on its last weights, so corpus size does not change
    training compute; `epochs_arm: E` also trains each (corpus, size, seed) for E epochs (same
    settings otherwise), so repetition and compute can be told apart from size."""

    task: str | list[str] = "panx"  # several: the grid varies the intermediate task too
    languages: list[str] | None = ["en"]  # None: each task in its only language (sst2 en, sst2_pt pt)
    corpora: list[CorpusConfig] | None = None
    sizes: list[int | Literal["full"]] = [0]
    oversize: Literal["error", "skip"] = "error"  # a size above a language's corpus: refuse, or skip it
    # multi-task intermediates ("mnli+squad+sst2"): how micro-batches pick their task
    mixing: Literal["proportional", "uniform", "temperature"] = "proportional"
    temperature: Annotated[float, within(0, 100, above=True)] = 2.0
    fixed_steps: bool = False
    epochs_arm: Annotated[float | None, within(0, 1000, above=True)] = None
    train: TrainConfig

    @property
    def tasks(self) -> list[str]:
        if self.corpora is not None:
            return [c.task for c in self.corpora]
        return [self.task] if isinstance(self.task, str) else list(self.task)

    def languages_of(self, task: str) -> list[str] | None:
        """The languages `task` is trained in (None: its only language)."""
        if self.corpora is not None:
            return next(c.languages for c in self.corpora if c.task == task)
        return self.languages

    def arms(self) -> list[TrainConfig]:
        """The training settings every (corpus, size, seed) is run with: the main budget, and the
        epochs arm if any (a run's arm is whichever of max_steps / epochs its settings have)."""
        main = self.train.model_copy(update={"keep": "last", "full_batches": True}) if self.fixed_steps else self.train
        if not self.epochs_arm:
            return [main]
        return [main, main.model_copy(update={"max_steps": None, "epochs": self.epochs_arm, "full_batches": False})]

    def budget(self) -> int | None:
        """Examples each fixed-steps run sees (steps × batch × accumulation); None without fixed steps."""
        t = self.train
        return t.max_steps * t.batch_size * t.grad_accum if self.fixed_steps else None

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)
        if self.corpora is not None:  # task/languages are unused: not in grid.json or the report's design table
            out.pop("task", None)
            out.pop("languages", None)
        return out

    @model_validator(mode="after")
    def design_ok(self):
        if self.corpora is not None:
            if not self.corpora:
                raise ValueError("corpora: list at least one corpus, e.g. [{task: panx, languages: [sw, en]}]")
            fields = type(self).model_fields  # a dump of a grid (grid.json) holds their defaults: fine
            if any(getattr(self, k) != fields[k].default for k in ("task", "languages")):
                raise ValueError("corpora: set either 'corpora' or 'task'/'languages', not both")
            names = [c.task for c in self.corpora]
            if len(set(names)) != len(names):
                raise ValueError(f"corpora: each task once (list all its languages there); got {', '.join(names)}")
        if self.fixed_steps:
            if self.train.max_steps is None:
                raise ValueError("train.max_steps: required by fixed_steps: true (every run trains that many steps); "
                                 "replace train.epochs with max_steps, or set fixed_steps: false")
            if self.train.patience is not None:
                raise ValueError("train.patience: fixed_steps: true trains every run to max_steps with no early "
                                 "stopping; remove patience")
        if self.epochs_arm is not None and not self.fixed_steps:
            raise ValueError("epochs_arm: an arm beside the fixed-steps design; set fixed_steps: true "
                             "(and train.max_steps) or remove epochs_arm")
        return self

    @field_validator("sizes")
    @classmethod
    def sizes_ok(cls, v):
        ints = [s for s in v if s != "full"]
        if any(s < 0 for s in ints):
            raise ValueError("sizes must be >= 0 (0 = no intermediate training) or 'full'")
        if any(s > BIG for s in ints):
            raise ValueError(f"{max(ints)} is out of range; allowed: 0..{BIG} or 'full'")
        return once(v, "size")

    @field_validator("task", "languages")
    @classmethod
    def listed_once(cls, v, info):
        return once(v, info.field_name.rstrip("s")) if isinstance(v, list) else v


class TargetConfig(Strict):
    """Phase (iii): the English training set of the target task; a fresh head on the carried-over
    encoder. `train_task` names the training corpus when it is another task (XNLI trains on MNLI,
    XCOPA on COPA or SIQA). Retrieval targets have no training: they score the encoder itself."""

    task: str = "udpos"
    train_task: str | None = None  # default: the target task's own training split
    language: str = "en"
    size: Annotated[int | None, within(1, BIG)] = None  # cap on the target training set (None = all)
    train: TrainConfig | None = None  # required unless the target is a retrieval task
    split: Literal["test", "dev"] | None = None  # evaluation split; default evaluate.split

    @property
    def trained_on(self) -> str:
        return self.train_task or self.task


class EvaluateConfig(Strict):
    """Zero-shot evaluation in every listed language ('all' = every language with labels)."""

    languages: list[str] | Literal["all"] = "all"
    split: Literal["test", "dev"] = "test"
    # per language, a seeded random sample of N (for quick presets): the same rows for every run of
    # the grid (it depends on sample_seed and the file only) and on every rerun
    max_examples: Annotated[int | None, within(1, BIG)] = None
    sample_seed: Annotated[int, within(0, 2**31 - 1)] = 0
    batch_size: Annotated[int, within(1, 65536)] = 64

    @field_validator("languages")
    @classmethod
    def listed_once(cls, v):
        return once(v, "language") if isinstance(v, list) else v


class SlurmResources(Strict):
    """What one run asks Slurm for. Defaults fit one GPU per run; `sbatch` takes any other flag
    (`{constraint: a100, reservation: x}` -> `--constraint=a100 --reservation=x`) without code changes."""

    partition: str | None = None
    gpus: int = Field(1, ge=0, le=16)  # as --gres=gpu:N
    cpus_per_task: int = Field(8, ge=1, le=1024)
    mem_gb: float = Field(64, gt=0, le=4096)
    time_min: int = Field(24 * 60, ge=1, le=60 * 24 * 30)
    # seconds before the time limit at which Slurm signals the job (srun passes it on): it requeues
    # itself and resumes from the run's last training state (train.save_every)
    signal_s: int = Field(120, ge=10, le=3600)
    requeues: int = Field(3, ge=0, le=1000)  # time-limit requeues per job before it ends TIMEOUT (preemptions: unlimited)
    # runs one job executes one after another, in one process whose notebook kernels are forked warm
    # (xfer.kernel): short runs (evaluation) as fewer, longer jobs. time_min is then the whole job's
    runs_per_job: int = Field(1, ge=1, le=1000)
    account: str | None = None
    qos: str | None = None
    sbatch: dict[str, str | int | bool] = {}


class ExecutorConfig(Strict):
    """Where runs execute: `local` (on this machine, `jobs` runs side by side) or `slurm` (each
    phase's runs as job arrays, each job after its own upstream job; same notebooks, same run
    folders). `phases` overrides `slurm` per phase, e.g. `{evaluate: {gpus: 1, time_min: 60}}`."""

    kind: Literal["local", "slurm"] = "local"
    # local runs at once, each with cores // jobs torch threads (XFER_THREADS overrides). "auto": one
    # on a GPU machine (runs share one device), else one per core up to 4: on 2 cores two single-
    # threaded runs did 1.4x (idle machine) to 2x (loaded) the work of one run on both (`make bench`)
    jobs: int | Literal["auto"] = Field("auto", description="local runs at once: a whole number 1-64, or auto")
    slurm: SlurmResources = SlurmResources()
    phases: dict[Literal["pretrained", "intermediate", "target", "evaluate"], dict] = {}
    array_parallelism: int = Field(64, ge=1, le=10_000)  # at most this many runs of an array at once

    @field_validator("jobs")
    @classmethod
    def jobs_in_range(cls, v):
        if v != "auto" and not 1 <= v <= 64:
            raise ValueError(f"jobs {v}: allowed: a whole number from 1 to 64, or auto")
        return v

    def local_jobs(self) -> int:
        import os

        if self.jobs != "auto":
            return self.jobs
        import torch

        return 1 if torch.cuda.is_available() else max(1, min(os.cpu_count() or 1, 4))

    def resources(self, phase: str) -> SlurmResources:
        pretrained = {"gpus": 0, "time_min": 120} if phase == "pretrained" else {}  # a conversion, on a CPU
        return SlurmResources(**{**self.slurm.model_dump(), **pretrained, **self.phases.get(phase, {})})


class PrimaryConfig(Strict):
    """The pre-registered primary test (README, "What the report computes"): the slope of the run-level
    contrast D on log10 corpus size, in score points per tenfold size."""

    smallest_effect: float = Field(0.5, gt=0, le=100, description="equivalence bound (TOST), points per decade")
    alpha: float = Field(0.05, gt=0, le=0.2)
    power: float = Field(0.8, ge=0.5, lt=1)
    assumed_run_sd: float = Field(1.0, gt=0, le=100, description="SD of one run's contrast when no result measures it")


class SequentialConfig(Strict):
    """A group-sequential primary test (xfer.sequential): seeds are run look by look, and after each
    look the test on the finished seeds either stops (an effect, equivalence within
    ±smallest_effect, or futility) or the next look's seeds run. Lan–DeMets alpha spending keeps
    the overall error rates at `alpha` whatever look the study stops at."""

    looks: list[Annotated[int, within(2, 10_000)]] = Field(
        description="seed counts at which the test is computed, increasing; the last is the maximum, len(seeds)")
    spending: Literal["obf", "pocock"] = Field(
        "obf", description="Lan–DeMets spending function: O'Brien–Fleming type (obf) or Pocock type")
    futility: bool = Field(True, description="stop early (non-binding) when neither an effect nor equivalence is "
                                             "reachable by the last look")

    @field_validator("looks")
    @classmethod
    def increasing(cls, v):
        if not v or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"{v}: allowed: seed counts in increasing order, each >= 2, e.g. [3, 6, 9, 12]")
        return v


class AnalysisConfig(Strict):
    """How the report analyses the grid, fixed before the runs: hashed into grid.json and written to
    `<report_dir>/preregistration.json` when the first run starts."""

    primary: PrimaryConfig = PrimaryConfig()
    sequential: SequentialConfig | None = None


class Grid(Strict):
    name: str
    description: str = ""
    report_dir: str | None = None  # default report/<name>
    seeds: list[Annotated[int, within(0, 2**31 - 1)]]
    low_resource: Literal["joshi_le2", "cc100_lt_2GiB_or_unseen", "both", "either"] = "joshi_le2"
    # also train and evaluate the baseline on the same architecture with random weights, so
    # the report shows what pre-training buys (a methods table, not part of the analysis)
    random_init_control: bool = False
    model: ModelConfig
    intermediate: IntermediateConfig
    target: TargetConfig | list[TargetConfig]
    evaluate: EvaluateConfig = EvaluateConfig()
    executor: ExecutorConfig = ExecutorConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    @field_validator("name")
    @classmethod
    def plain_name(cls, v):
        """The name is a folder name (report/<name>) and a label, never a path."""
        if not re.fullmatch(r"\w[\w.+-]*", v):
            raise ValueError(f"{v!r} is not a plain name; allowed: letters, digits and . _ + - (not first), "
                             "no '/' or '..' (report_dir sets the folder)")
        return v

    @field_validator("seeds", "target")
    @classmethod
    def listed_once(cls, v, info):
        return once(v, info.field_name.rstrip("s")) if isinstance(v, list) else v

    @model_validator(mode="after")
    def looks_fit_seeds(self):
        seq = self.analysis.sequential
        if seq is not None and seq.looks[-1] != len(self.seeds):
            raise ValueError(f"analysis.sequential.looks: the last look ({seq.looks[-1]} seeds) must be the number of "
                             f"seeds listed ({len(self.seeds)}); allowed: list as many seeds as the last look")
        return self

    def seeds_at(self, look: int) -> list[int]:
        """The seeds run by look `look` (0-based) of a sequential design: the first looks[look] listed."""
        return self.seeds[:self.analysis.sequential.looks[look]]

    @field_validator("report_dir")
    @classmethod
    def report_inside(cls, v):
        if v is not None:
            output_path(v)  # refuses a folder outside the project (or XFER_OUTPUT)
        return v

    @property
    def targets(self) -> list[TargetConfig]:
        return self.target if isinstance(self.target, list) else [self.target]

    def report_path(self) -> Path:
        return output_path(self.report_dir or f"report/{self.name}")


class ConfigError(ValueError):
    """Bad input: the message names the field and the allowed values."""


def load_grid(path: str | Path, overrides: list[str] = ()) -> Grid:
    """The grid in `path`, with `KEY=VALUE` overrides (dotted keys, YAML values) applied.

    A params file may start from another: `extends: demo.yaml` (relative to the file) takes that
    file's settings and applies this file's other keys to them as overrides, so a variant of a
    study is a few lines of data rather than a copy that drifts."""
    raw = _read_params(params_path(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. intermediate.sizes=[0,100]")
        _override(raw, key, parse_yaml(value, f"override {item!r}"), item)
    try:
        return Grid.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("\n".join(f"{path}: {line}" for line in _errors(e))) from None


def _errors(e: ValidationError) -> list[str]:
    """One line per error: the dotted field, pydantic's message, the value given. Where a field
    is a union (one target or a list of them), only the branch the value has the shape of speaks."""
    union = lambda part: isinstance(part, str) and not re.fullmatch(r"[a-z_][a-z0-9_]*", part) or part in ("str", "int")
    errs = e.errors()
    deeper = {err["loc"][:i] for err in errs for i, part in enumerate(err["loc"]) if union(part) and len(err["loc"]) > i + 1}
    lines = []
    for err in errs:
        loc = err["loc"]
        if loc and union(loc[-1]) and loc[:-1] in deeper:  # the value has the other branch's shape
            continue
        field = ".".join(str(p) for p in loc if not union(p))
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        got = f" (got {value!r})" if not isinstance(value, dict) and repr(value) not in msg else ""
        line = f"{field}: {msg}{got}" if field else f"{msg}{got}"
        if line not in lines:
            lines.append(line)
    return lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (plain YAML keeps the last, so
    a pasted second `seeds:` would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeated (first at line {seen[key] + 1}); allowed: each key once",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, where: str):
    """YAML to Python, or one line naming `where`, the line and column, and the problem."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else f"character {getattr(e, 'position', 0) + 1}"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: {at}: malformed YAML: {' '.join(problem.split())}") from None


def _read_params(path: Path, seen: tuple = ()) -> dict:
    if not path.exists():
        raise ConfigError(f"params file {path} does not exist; allowed: a YAML file, or a preset: {', '.join(presets())}")
    try:
        raw = parse_yaml(read_utf8(path), str(path))
    except UnicodeError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    if "extends" not in raw:
        return raw
    base = path.parent / str(raw.pop("extends"))
    if base.resolve() in seen:
        raise ConfigError(f"{path}: extends: {base} extends itself")
    merged = _read_params(base, seen + (path.resolve(),))
    for key, value in raw.items():
        _override(merged, key, value, f"{path}: {key}")
    return merged


def split_overrides(text: str) -> list[str]:
    """`KEY=VALUE` items from one string as a user types it (`make plan SET="seeds=[1, 2] target.size=50"`):
    a new item starts at a blank followed by `dotted.key=`, outside brackets and quotes, so a
    value may hold blanks, `;` or `=` (`name=a;b` is one item, for the validator to judge)."""
    items, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c.isspace() and depth == 0 and re.match(r"\s+[A-Za-z_][\w.]*=", text[i:]) and text[start:i].strip():
            items.append(text[start:i].strip())
            start = i + 1
    return items + ([text[start:].strip()] if text[start:].strip() else [])


def _override(node, key: str, value, item: str) -> None:
    """Set a dotted key. On a list of settings (several targets) a numeric part picks one item
    and any other key applies to every item: `target.size=500` caps all targets."""
    head, _, rest = key.partition(".")
    if isinstance(node, list):
        if head.isdigit():
            if int(head) >= len(node):
                raise ConfigError(f"override {item!r}: index {head} out of range (0..{len(node) - 1})")
            items, key = [node[int(head)]], rest
        else:
            items = node
        for sub in items:
            _override(sub, key, value, item)
        return
    if not isinstance(node, dict):
        raise ConfigError(f"override {item!r}: {head} is not inside a group of settings")
    if not rest:
        node[head] = value
        return
    child = node.get(head)
    if child is None:
        child = node[head] = {}
    if not isinstance(child, (dict, list)):
        raise ConfigError(f"override {item!r}: {head} is not a group of settings")
    _override(child, rest, value, item)


def presets() -> list[str]:
    """Preset names: the project's params/*.yaml and those shipped inside the package."""
    return sorted({p.stem for folder in (root() / "params", package_file("params")) for p in folder.glob("*.yaml")})


def params_path(value: str | Path) -> Path:
    """The params file a user names: a path (from the current folder, else the project folder),
    or a preset, as `cpu`, `cpu.yaml` or `params/cpu.yaml`: the project's params/cpu.yaml, else
    the one shipped with the package, so `xfer plan cpu` works in any folder."""
    path = Path(value)
    if path.is_file() or path.is_absolute():
        return path
    if (root() / path).is_file():
        return root() / path
    if path.parent in (Path("."), Path("params")) and path.suffix in ("", ".yaml"):
        for folder in (root() / "params", package_file("params")):
            if (folder / f"{path.stem}.yaml").is_file():
                return folder / f"{path.stem}.yaml"
    return path


# ---------------------------------------------------------------------------- grid expansion

def run_id(params: dict) -> str:
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Run(BaseModel):
    """One grid point of one phase. `params` fully determine `id` (with the upstream id inside)."""

    phase: Literal["pretrained", "intermediate", "target", "evaluate"]
    params: dict
    upstream: str | None = None  # id of the run whose checkpoint this one starts from

    @property
    def id(self) -> str:
        return f"{self.slug}-{run_id({'phase': self.phase, 'params': self.params, 'upstream': self.upstream})}"

    @property
    def slug(self) -> str:
        p = self.params
        if self.phase == "pretrained":
            return p["model"]["source"] + ("-random-init" if p["model"].get("random_init") else "")
        if self.phase == "intermediate":
            return f"{p['task']}-{p['language']}-{p['size']}-s{p['seed']}"
        if self.phase == "target":
            return f"{p['task']}-{p['language']}-s{p['seed']}"
        return f"{p['task']}-{p['split']}"


def expand(grid: Grid, data_signature: dict | None = None) -> dict[str, list[Run]]:
    """The grid as runs per phase: product of intermediate languages × sizes × seeds.

    Size 0 (the baseline) has no intermediate run; its target run starts from the pretrained
    encoder, and is shared by every intermediate language. One intermediate checkpoint serves
    every target run that uses it."""
    pretrained = Run(phase="pretrained", params={"model": grid.model.model_dump(), "data": data_signature or {}})
    inter, target, evaluate = [], [], []
    listed = set()  # ids already in target / evaluate: a set, since a study grid has thousands of runs

    def add(run: Run, runs: list) -> str:
        """Append run unless listed (the baseline and retrieval runs are shared); its id."""
        if run.id not in listed:
            listed.add(run.id)
            runs.append(run)
        return run.id

    def downstream(upstream: str, seed: int):
        for tc in grid.targets:
            evaluated = {"task": tc.task, **grid.evaluate.model_dump(), "split": tc.split or grid.evaluate.split,
                         "languages": (data_signature or {}).get("languages", {}).get(tc.task, grid.evaluate.languages)}
            if tc.train is None:  # retrieval: the encoder itself is evaluated
                add(Run(phase="evaluate", upstream=upstream, params=evaluated), evaluate)
                continue
            t = Run(phase="target", upstream=upstream,
                    params={"task": tc.trained_on, "language": tc.language, "size": tc.size, "seed": seed,
                            "train": tc.train.model_dump(), "freeze_embeddings": grid.model.freeze_embeddings,
                            **({"select_task": tc.task} if tc.train_task else {})})
            add(Run(phase="evaluate", upstream=add(t, target), params=evaluated), evaluate)  # baseline: once per seed

    sig = data_signature or {}
    corpora = [(task, lang) for task in grid.intermediate.tasks
               for lang in (grid.intermediate.languages_of(task) or sig.get("own_language", {}).get(task, []))]
    for (task, lang), size, seed in itertools.product(corpora, grid.intermediate.sizes, grid.seeds):
        n = sig.get("corpus_sizes", {}).get(f"{task}/{lang}")
        if size not in (0, "full") and n is not None and size > n:  # validated: oversize is "skip"
            continue
        if size == "full" and n in grid.intermediate.sizes:  # the same corpus as size n: run it once
            continue
        if size == 0:
            downstream(pretrained.id, seed)
            continue
        for train in grid.intermediate.arms():  # the fixed-steps run, and the epochs arm if any
            run = Run(
                phase="intermediate",
                upstream=pretrained.id,
                params={"task": task, "language": lang, "size": size, "seed": seed,
                        "train": train.model_dump(), "freeze_embeddings": grid.model.freeze_embeddings,
                        **({"mixing": grid.intermediate.mixing, "temperature": grid.intermediate.temperature}
                           if "+" in task else {})},
            )
            inter.append(run)
            downstream(run.id, seed)
    pretrained_runs = [pretrained]
    if grid.random_init_control:
        control = Run(phase="pretrained", params={"model": grid.model.model_copy(update={"random_init": True}).model_dump(),
                                                  "data": data_signature or {}})
        pretrained_runs.append(control)
        for seed in grid.seeds:
            downstream(control.id, seed)
    return {"pretrained": pretrained_runs, "intermediate": inter, "target": target, "evaluate": evaluate}


def select_seeds(runs: dict[str, list[Run]], seeds) -> dict[str, list[Run]]:
    """The runs of a grid that `seeds` need: every pretrained run, the intermediate and target runs of
    those seeds, and the evaluation runs downstream of a kept run (how a sequential design runs one
    look's seeds, and how a plan counts what a seed costs)."""
    keep = set(seeds)
    out = {"pretrained": list(runs["pretrained"])}
    kept = {r.id for r in out["pretrained"]}
    for phase in ("intermediate", "target"):
        out[phase] = [r for r in runs[phase] if r.params["seed"] in keep and r.upstream in kept]
        kept |= {r.id for r in out[phase]}
    out["evaluate"] = [r for r in runs["evaluate"] if r.upstream in kept]
    return out
