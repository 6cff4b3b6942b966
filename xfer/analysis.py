"""From a grid's results table to the run-level numbers the statistics use (xfer/stats.py tests them,
xfer/answer.py words them, xfer/figures.py draws them).

Vocabulary used throughout:
- a *target* is one (target task, training task): one primary test each;
- `delta` (Δ) = score after intermediate training − score of the no-intermediate baseline of the same
  seed, target, training task, evaluation task and language, split and metric (negative = degradation);
- a *run* is one intermediate run (corpus language L, size, seed): it moves all its evaluation
  languages together, so the statistics take one number per run, never one per language × run;
- `c` = a run's mean Δ over the low-resource evaluation languages − its mean Δ over the other ones,
  leaving out L and English (their scores are reported apart as leakage);
- `D` = c − the same contrast, on the same languages, of the English corpus of the same content, size
  and seed (the English control), when the grid has it; else D = c.

Every table has a `note` column: a design too small for a number gives NaN and the reason, never an
exception, so the report renders for a 2-seed smoke grid as well as for the full study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xfer.paths import read_json, root

DEFINITIONS = {  # name → what it means, as the report states it
    "joshi_le2": "Joshi et al. (2020) class 0–2",
    "cc100_lt_2GiB_or_unseen": "under 2 GiB of CC-100 text in XLM-R's pre-training, or not in it at all",
    "both": "Joshi class 0–2 and under 2 GiB of CC-100 (or unseen)",
    "either": "Joshi class 0–2 or under 2 GiB of CC-100 (or unseen)",
}
DEFAULT_DEFINITION = "joshi_le2"  # the grid schema's default; grid.json normally names it
TARGET = ["target_task", "train_task"]  # one primary test each
GROUP = ["target_task", "inter_task", "inter_lang"]
MATCH = ["seed", "target_task", "train_task", "target_lang", "eval_task", "eval_lang", "split", "metric"]
METRIC_ORDER = ("f1", "accuracy", "em")  # the headline metric of a task, first present wins
DOSE = ["steps", "examples_seen", "tokens_seen"]  # training.csv columns, in order of preference
LANG_COLUMNS = ["language", "cc100_GiB", "joshi_class", "in_xlmr_pretraining"]
LOW_COLOR, HIGH_COLOR = "#c0392b", "#34495e"


# ----------------------------------------------------------------------------- inputs


def load_languages() -> pd.DataFrame:
    """The project's language metadata (xfer/languages.csv), indexed by ISO 639-1 code."""
    langs = pd.read_csv(Path(__file__).with_name("languages.csv"), keep_default_na=False,
                        na_values={c: [""] for c in ["cc100_tokens_M", "cc100_GiB", "joshi_class",
                                                      "in_xlmr_pretraining"]})
    return langs.set_index(pd.Index(langs["iso639_1"], name="lang"))


def low_resource(langs: pd.DataFrame, definition: str) -> pd.Series:
    """Which languages count as low-resource; <NA> where the metadata cannot decide.

    The proxies disagree (README, metadata): Joshi class ≤ 2 is about labelled and unlabelled data
    in the world, CC-100 < 2 GiB or unseen is about what XLM-R saw in pre-training. "both" and
    "either" combine them with three-valued logic, so a missing figure stays missing."""
    _check(definition)
    joshi = _flag(langs["joshi_class"].le(2), langs["joshi_class"].notna())
    unseen = langs["in_xlmr_pretraining"].eq(0)
    cc100 = _flag(unseen | langs["cc100_GiB"].lt(2), unseen | langs["cc100_GiB"].notna())
    flag = {"joshi_le2": joshi, "cc100_lt_2GiB_or_unseen": cc100, "both": joshi & cc100,
            "either": joshi | cc100}[definition]
    return flag.rename(f"low_{definition}")


def _check(definition: str) -> None:
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown low-resource definition {definition!r}; allowed: {', '.join(DEFINITIONS)}")


def _flag(cond: pd.Series, known: pd.Series) -> pd.Series:
    return cond.astype("boolean").mask(~known.astype(bool))


def load_results(results_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """results.csv and grid.json of a results folder (relative paths are from the project root)."""
    results_dir = Path(results_dir)
    if not results_dir.is_absolute():
        results_dir = root() / results_dir
    numeric = ["seed", "inter_size", "score", "n_examples"]
    results = pd.read_csv(results_dir / "results.csv", dtype=str, keep_default_na=False)
    for col in numeric:
        results[col] = pd.to_numeric(results[col].replace("", np.nan), errors="coerce")
    results["seed"] = results["seed"].astype("Int64")
    results["inter_size"] = results["inter_size"].astype("Int64")
    if "words_not_encoded" in results:
        results["words_not_encoded"] = pd.to_numeric(results["words_not_encoded"], errors="coerce").fillna(0)
    grid = read_json(results_dir / "grid.json")
    return _complete(results), grid


def _complete(results: pd.DataFrame) -> pd.DataFrame:
    """Columns an older results table lacks: the training task is the target task, one budget arm."""
    results = results.copy()
    if "train_task" not in results:
        results["train_task"] = results["target_task"]
    if "inter_budget" not in results:
        results["inter_budget"] = ""
    results["inter_budget"] = results["inter_budget"].fillna("").astype(str)
    return results


def load_training(results_dir: str | Path) -> pd.DataFrame:
    """The intermediate runs' training record (training.csv): the dose each run got (`steps`, and
    `examples_seen` / `tokens_seen` where xfer recorded them), indexed by run id. Empty if absent."""
    path = Path(results_dir) if Path(results_dir).is_absolute() else root() / results_dir
    path = path / "training.csv"
    if not path.exists() or path.stat().st_size <= 1:
        return pd.DataFrame(columns=DOSE)
    df = pd.read_csv(path)
    df = df[df["phase"] == "intermediate"] if "phase" in df else df
    return df.set_index("run_id")[[c for c in DOSE if c in df]].apply(pd.to_numeric, errors="coerce")


# ----------------------------------------------------------------------------- degradation


def degradation(results: pd.DataFrame, langs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per results row, with the baseline it is compared with and the language's metadata.

    `baseline` is the mean score of the inter_size-0 rows sharing seed, target task and language,
    evaluation task and language, split and metric. Baseline rows stay in (flag `is_baseline`,
    delta 0) so that tables and figures can show the starting point. `gap_en` is the score minus
    the same run's English score: the cross-lingual transfer gap."""
    langs = load_languages() if langs is None else langs
    df = _complete(results)
    df["is_baseline"] = df["inter_size"].eq(0)
    base = (df[df["is_baseline"]].groupby(MATCH, as_index=False)["score"].mean()
            .rename(columns={"score": "baseline"}))
    df = df.merge(base, on=MATCH, how="left")
    df["delta"] = df["score"] - df["baseline"]
    df["delta_rel"] = (df["delta"] / df["baseline"]).replace([np.inf, -np.inf], np.nan)
    en_keys = ["eval_run", "eval_task", "split", "metric"]
    en = (df[df["eval_lang"] == "en"].groupby(en_keys, as_index=False)["score"].mean()
          .rename(columns={"score": "score_en"}))
    df = df.merge(en, on=en_keys, how="left")
    df["gap_en"] = df["score"] - df["score_en"]
    size = df["inter_size"].astype(float)
    df["log10_size"] = np.log10(size.where(size > 0))
    df["eval_is_inter_lang"] = df["eval_lang"] == df["inter_lang"]
    df["leak"] = df["eval_is_inter_lang"] | (df["eval_lang"] == "en")  # never in the tests

    meta = langs[LANG_COLUMNS].copy()
    for d in DEFINITIONS:
        meta[f"low_{d}"] = low_resource(langs, d)
    df = df.merge(meta, left_on="eval_lang", right_index=True, how="left")
    df["in_metadata"] = df["eval_lang"].isin(langs.index)
    df["log10_cc100_GiB"] = np.log10(df["cc100_GiB"].astype(float))
    return df


def headline(deg: pd.DataFrame) -> pd.DataFrame:
    """One score per run and language: the test split where there is one, and the task's headline
    metric (f1, then accuracy, then em, then the first alphabetically). Idempotent."""
    split_rank = deg["split"].map({"test": 0, "dev": 1}).fillna(2)
    best_split = split_rank.groupby([deg["eval_task"], deg["eval_lang"]]).transform("min")
    order = {m: i for i, m in enumerate(METRIC_ORDER)}
    metric_rank = deg["metric"].map({m: (order.get(m, len(order)), m) for m in deg["metric"].unique()})  # per metric, not per row
    best_metric = deg.assign(_r=metric_rank).groupby("eval_task")["_r"].transform("min")
    return deg[(split_rank == best_split) & (metric_rank == best_metric)]


def _intermediate(deg: pd.DataFrame) -> pd.DataFrame:
    d = headline(deg)
    return d[~d["is_baseline"] & d["delta"].notna() & d["log10_size"].notna()]


def _low(d: pd.DataFrame, definition: str) -> pd.Series:
    _check(definition)
    return d[f"low_{definition}"].fillna(False).astype(bool)


def design(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """What the grid crossed, per group, as seen in the results (not as planned)."""
    d = _intermediate(deg)
    rows = []
    for key, g in d.groupby(GROUP):
        low = sorted(g.loc[_low(g, definition), "eval_lang"].unique())
        rows.append({**dict(zip(GROUP, key)),
                     "sizes": ", ".join(fmt_size(s) for s in sorted(g["inter_size"].unique())),
                     "seeds": ", ".join(str(s) for s in sorted(g["seed"].unique())),
                     "eval languages": g["eval_lang"].nunique(),
                     f"low-resource ({definition})": ", ".join(low) or "none",
                     "metric": ", ".join(sorted(g["metric"].unique())),
                     "split": ", ".join(sorted(g["split"].unique()))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- tables


def fmt_size(n) -> str:
    """1000 → "1k", 0 → "baseline": sizes as the report prints them."""
    n = int(n)
    if n == 0:
        return "baseline"
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{unit}"
    return str(n)


def _lang_order(d: pd.DataFrame, definition: str) -> list[str]:
    """Low-resource first, then by CC-100 size (unseen languages first): the reading order of the
    question."""
    meta = d.drop_duplicates("eval_lang").assign(_low=lambda x: ~_low(x, definition),
                                                 _cc=lambda x: x["cc100_GiB"].astype(float).fillna(-1))
    return meta.sort_values(["_low", "_cc", "eval_lang"])["eval_lang"].tolist()


def per_language_table(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Per evaluation language: resource level, baseline score, and the mean delta (over seeds) for
    each intermediate language × size; rows in the order low-resource first."""
    d = headline(deg)
    order = _lang_order(d, definition)
    info = (d.drop_duplicates(["target_task", "eval_lang"])
            .assign(resource=lambda x: np.where(_low(x, definition), "low", "high"))
            .set_index(["target_task", "eval_lang"])[["language", "resource", "joshi_class", "cc100_GiB"]])
    info.loc[info["language"].isna(), "resource"] = "unknown"
    base = d[d["is_baseline"]].groupby(["target_task", "eval_lang"])["score"].mean().rename("baseline")
    inter = _intermediate(deg)
    cells = inter.assign(col=inter["inter_lang"] + " " + inter["inter_size"].map(fmt_size).astype(str))
    order_cols = (cells.drop_duplicates("col").sort_values(["inter_task", "inter_lang", "inter_size"])["col"].tolist())
    delta = cells.pivot_table(index=["target_task", "eval_lang"], columns="col", values="delta", aggfunc="mean")
    delta = delta.reindex(columns=order_cols).add_prefix("Δ ")
    table = info.join(base).join(delta)
    if "words_not_encoded" in d and d["words_not_encoded"].gt(0).any():  # scored as wrong: shown where it happened
        table = table.join(d.groupby(["target_task", "eval_lang"])["words_not_encoded"].max()
                           .rename("words not encoded (most in a run)"))
    rank = {lang: i for i, lang in enumerate(order)}
    return table.sort_index(key=lambda idx: idx.map(rank) if idx.name == "eval_lang" else idx)




def leakage(deg: pd.DataFrame) -> pd.DataFrame:
    """Scores that never enter the tests: the evaluation language is the intermediate corpus's own
    language (the corpus taught that language directly) or English (the target's training language).
    Mean Δ over seeds per target, corpus, size and evaluation language."""
    d = _intermediate(deg)
    d = d[d["leak"]]
    keys = TARGET + ["inter_task", "inter_lang", "inter_budget", "eval_lang", "inter_size"]
    out = d.groupby(keys)["delta"].agg(mean_delta="mean", n_seeds="count").reset_index()
    out["why"] = np.where(out["eval_lang"] == "en", "English", "corpus language")
    return out


# ----------------------------------------------------------------------------- run-level summaries

RUN_KEYS = ["intermediate_run", "inter_task", "inter_lang", "inter_size", "log10_size", "seed", "inter_budget"]


def _content(task: str) -> tuple[str, bool]:
    """The corpus a task's text comes from, and whether its languages are row-aligned translations
    of it (`Task.content`: sst2_pt → sst2; xnli_derived in any language → xnli_derived, aligned)."""
    from xfer.tasks import TASKS

    return TASKS[task].content() if task in TASKS else (task, False)  # "a+b": a multi-task mixture


def run_contrasts(deg: pd.DataFrame, definition: str, training: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per target × intermediate run: `low` (mean Δ over the low-resource evaluation languages,
    leaving out the corpus language and English), c = low − the same mean over the other languages,
    and for a non-English run its English control: `c_en`, the contrast of the English run of the
    same content, size, seed and budget on the same languages (so a language's own size trend cancels),
    and D = c − c_en (D = c where the grid has no English run of that content). Languages whose
    resource level is unknown count in neither mean. `training` adds each run's dose."""
    _check(definition)
    cols = TARGET + RUN_KEYS + ["content", "aligned", "low", "c", "c_en", "D", "english_control", "n_low", "n_other",
                                "low_languages", "partner"] + DOSE
    d = _intermediate(deg)
    if d.empty:
        return pd.DataFrame(columns=cols)
    keys = TARGET + ["intermediate_run"]
    delta = d.pivot_table(index=keys, columns="eval_lang", values="delta", aggfunc="mean")
    runs = d.drop_duplicates(keys).set_index(keys)[RUN_KEYS[1:]].reindex(delta.index).reset_index()
    content = {t: _content(t) for t in runs["inter_task"].unique()}
    runs["content"] = runs["inter_task"].map(lambda t: content[t][0])
    runs["aligned"] = runs["inter_task"].map(lambda t: content[t][1])
    langs = delta.columns.to_numpy()
    low = d.drop_duplicates("eval_lang").set_index("eval_lang")[f"low_{definition}"].reindex(langs)
    known, is_low = low.notna().to_numpy(), low.fillna(False).astype(bool).to_numpy()
    A = delta.to_numpy(float)
    partner, control = pair(runs)
    B = np.where(partner[:, None] >= 0, A[np.maximum(partner, 0)], np.nan)
    leak = (langs[None, :] == runs["inter_lang"].to_numpy()[:, None]) | (langs[None, :] == "en")
    usable = np.isfinite(A) & ~leak & known[None, :]
    usable &= np.where(partner[:, None] >= 0, np.isfinite(B), True)  # the same languages in both runs
    w_low, w_other = usable & is_low, usable & ~is_low
    n_low, n_other = w_low.sum(1), w_other.sum(1)

    def mean(M, w, n):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(w, np.nan_to_num(M), 0).sum(1) / np.where(n > 0, n, np.nan)

    low_mean = mean(A, w_low, n_low)
    c = low_mean - mean(A, w_other, n_other)
    c_en = np.where(partner >= 0, mean(B, w_low, n_low) - mean(B, w_other, n_other), np.nan)
    D = np.where(partner >= 0, c - c_en, np.where(control == "none in the grid", c, np.nan))
    D[runs["inter_lang"].to_numpy() == "en"] = np.nan
    patterns = {}  # a language list per distinct mask: few distinct ones, many runs
    for i, row in enumerate(w_low):
        patterns.setdefault(row.tobytes(), ", ".join(langs[row]))
    out = runs.assign(low=low_mean, c=c, c_en=c_en, D=D, english_control=control, n_low=n_low, n_other=n_other,
                      low_languages=[patterns[row.tobytes()] for row in w_low],
                      partner=np.where(partner >= 0, runs["intermediate_run"].to_numpy()[np.maximum(partner, 0)], ""))
    dose = training if training is not None else pd.DataFrame(columns=DOSE)
    for col in DOSE:
        out[col] = out["intermediate_run"].map(dose[col]) if col in dose else np.nan
    return out[cols]


def pair(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each run (columns content, inter_lang, inter_size, seed, inter_budget, and the target where
    present): the position of its English control (the English run of the same target, content,
    size, seed and budget; -1 for none or for an English run) and what became of the control:
    subtracted, missing for this size/seed, none in the grid, is the English control."""
    key = [c for c in TARGET if c in runs] + ["content", "inter_size", "seed", "inter_budget"]
    r = runs[key + ["inter_lang"]].reset_index(drop=True)
    en = r[r["inter_lang"] == "en"].drop(columns="inter_lang").assign(_pos=lambda x: x.index)
    found = r.merge(en.drop_duplicates(key), on=key, how="left")["_pos"]
    is_en = (r["inter_lang"] == "en").to_numpy()
    partner = np.where(is_en | found.isna().to_numpy(), -1, found.fillna(-1).to_numpy()).astype(int)
    with_en = r.merge(en[key[:-3]].drop_duplicates().assign(_has=True), on=key[:-3], how="left")["_has"]
    control = np.where(is_en, "is the English control",
                       np.where(partner >= 0, "subtracted",
                                np.where(with_en.fillna(False).to_numpy(bool), "missing for this size/seed",
                                         "none in the grid")))
    return partner, control


def units(runs: pd.DataFrame) -> pd.DataFrame:
    """The primary test's independent units, from `run_contrasts` rows (per target): non-English runs
    sharing one English control run are one unit (their D's share its noise), with D averaged over
    them; a run without an English control in the grid is a unit by itself. `corpus` labels the
    intercept each unit gets; `var_factor` = Var(D_unit) / Var(c of one run)."""
    r = runs[runs["D"].notna()].copy()
    sub = r["english_control"] == "subtracted"
    r["corpus"] = np.where(sub, r["content"], r["inter_task"] + " " + r["inter_lang"])
    r["unit"] = np.where(sub, "en:" + r["partner"], r["intermediate_run"])
    target = [c for c in TARGET if c in r]
    g = r.groupby(target + ["unit"], sort=False)
    out = g.agg(corpus=("corpus", "first"), content=("content", "first"), seed=("seed", "first"),
                inter_size=("inter_size", "first"), log10_size=("log10_size", "first"), D=("D", "mean"),
                c=("c", "mean"), c_en=("c_en", "mean"), low=("low", "mean"), n_runs=("D", "size"), control=("english_control", "first"),
                languages=("inter_lang", lambda s: ", ".join(sorted(s))),
                **({"log10_dose": ("log10_dose", "mean")} if "log10_dose" in r else {}))
    out["subtracted"] = out.pop("control") == "subtracted"
    out["seed"] = out["seed"].astype("int64")  # patsy (pingouin, statsmodels) does not take pandas' Int64
    out["var_factor"] = 1 / out["n_runs"] + out["subtracted"].astype(float)
    return out.reset_index().sort_values(target + ["seed", "corpus", "log10_size"], kind="stable", ignore_index=True)
