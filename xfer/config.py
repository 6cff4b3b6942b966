"""A study is data: a YAML grid, validated into objects, expanded into runs with stable ids.

Each run's id is a hash of its own parameters and its upstream run's id, so a changed
setting gives new runs and an unchanged one is found done on disk and skipped."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from xfer.paths import root


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(Strict):
    """One training phase. Exactly one of `epochs` / `max_steps` sets the budget: fixing steps
    across corpus sizes removes training compute as a confound of size."""

    lr: float = Field(2e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    max_length: int = Field(128, ge=8)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    save_every: int = Field(200, ge=1, description="optimizer steps between resumable training states")
    # model selection (the paper's early stopping): score the dev split of the *training* language
    # every `eval_every` steps and keep the best; target-language data is never looked at
    eval_every: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)  # stop after this many evaluations without improvement
    dev_max_examples: int | None = Field(2000, ge=1)
    # with eval_every: "best" keeps the best-scoring weights (model selection), "last" the final
    # ones (dev is still scored and logged), so every run hands on exactly its trained dose
    keep: Literal["best", "last"] = "best"

    @model_validator(mode="after")
    def one_budget(self):
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("set exactly one of 'epochs' or 'max_steps'")
        return self


class ScratchConfig(Strict):
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 128


class ModelConfig(Strict):
    """Phase (i): where the pretrained encoder comes from, and the stated approximations."""

    source: Literal["hub", "local", "e5", "scratch"] = "hub"
    name: str = "xlm-roberta-large"  # hub id, local folder, or a label for scratch/e5
    scratch: ScratchConfig = ScratchConfig()
    trim_vocab: bool = False  # keep only embedding rows of token ids the study's data uses
    num_layers: int | None = Field(None, ge=1)  # keep the first k layers
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
    temperature: float = Field(2.0, gt=0)
    fixed_steps: bool = False
    epochs_arm: float | None = Field(None, gt=0)
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
        main = self.train.model_copy(update={"keep": "last"}) if self.fixed_steps else self.train
        if not self.epochs_arm:
            return [main]
        return [main, main.model_copy(update={"max_steps": None, "epochs": self.epochs_arm})]

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
        if len(set(v)) != len(v):
            raise ValueError("sizes must not repeat")
        return v


class TargetConfig(Strict):
    """Phase (iii): the English training set of the target task; a fresh head on the carried-over
    encoder. `train_task` names the training corpus when it is another task (XNLI trains on MNLI,
    XCOPA on COPA or SIQA). Retrieval targets have no training: they score the encoder itself."""

    task: str = "udpos"
    train_task: str | None = None  # default: the target task's own training split
    language: str = "en"
    size: int | None = Field(None, ge=1)  # cap on the target training set (None = all)
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
    max_examples: int | None = Field(None, ge=1)
    sample_seed: int = 0
    batch_size: int = Field(64, ge=1)


class Grid(Strict):
    name: str
    description: str = ""
    report_dir: str | None = None  # default report/<name>
    seeds: list[int] = Field(min_length=1)
    low_resource: Literal["joshi_le2", "cc100_lt_2GiB_or_unseen", "both", "either"] = "joshi_le2"
    # also train and evaluate the baseline on the same architecture with random weights, so
    # the report shows what pre-training buys (a methods table, not part of the analysis)
    random_init_control: bool = False
    model: ModelConfig
    intermediate: IntermediateConfig
    target: TargetConfig | list[TargetConfig]
    evaluate: EvaluateConfig = EvaluateConfig()

    @property
    def targets(self) -> list[TargetConfig]:
        return self.target if isinstance(self.target, list) else [self.target]

    def report_path(self) -> Path:
        return root() / (self.report_dir or f"report/{self.name}")


class ConfigError(ValueError):
    """Bad input: the message names the field and the allowed values."""


def load_grid(path: str | Path, overrides: list[str] = ()) -> Grid:
    """The grid in `path`, with `KEY=VALUE` overrides (dotted keys, YAML values) applied.

    A params file may start from another: `extends: demo.yaml` (relative to the file) takes that
    file's settings and applies this file's other keys to them as overrides, so a variant of a
    study is a few lines of data rather than a copy that drifts."""
    raw = _read_params(Path(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. intermediate.sizes=[0,100]")
        _override(raw, key, yaml.safe_load(value), item)
    try:
        return Grid.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: invalid parameters:"]
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {field}: {err['msg']}" + (f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""))
        raise ConfigError("\n".join(lines)) from None


def _read_params(path: Path, seen: tuple = ()) -> dict:
    if not path.exists():
        raise ConfigError(f"params file {path} does not exist (presets: {', '.join(presets())})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from None
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
    return sorted(str(p.relative_to(root())) for p in (root() / "params").glob("*.yaml"))


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
