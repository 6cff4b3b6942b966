"""From a grid's results table to the answer: how zero-shot scores move after intermediate training,
and whether the move grows with the size of the (non-English) intermediate corpus on low-resource
target languages.

Vocabulary used throughout:
- a *group* is one (target task, intermediate task, intermediate language): sizes vary inside it;
- `delta` = score after intermediate training − score of the no-intermediate baseline of the same
  seed (negative = degradation); it is paired by seed so that seed noise of the target phase cancels;
- `log10_size` = log10 of the intermediate corpus size in sentences (sizes are spaced geometrically).

Every statistic returns a tidy DataFrame with a `note` column. A design too small for a statistic
gives NaN and the reason in `note`, never an exception: the report must render for a 2-seed smoke
grid as well as for the full study."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pingouin as pg
from matplotlib.figure import Figure
from scipy import stats as sps

from xfer.paths import read_json, root

DEFINITIONS = {  # name → what it means, as the report states it
    "joshi_le2": "Joshi et al. (2020) class 0–2",
    "cc100_lt_2GiB_or_unseen": "under 2 GiB of CC-100 text in XLM-R's pre-training, or not in it at all",
    "both": "Joshi class 0–2 and under 2 GiB of CC-100 (or unseen)",
    "either": "Joshi class 0–2 or under 2 GiB of CC-100 (or unseen)",
}
DEFAULT_DEFINITION = "joshi_le2"  # the grid schema's default; grid.json normally names it
GROUP = ["target_task", "inter_task", "inter_lang"]
MATCH = ["seed", "target_task", "target_lang", "eval_task", "eval_lang", "split", "metric"]
METRIC_ORDER = ("f1", "accuracy", "em")  # the headline metric of a task, first present wins
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
    grid = read_json(results_dir / "grid.json")
    return results, grid


# ----------------------------------------------------------------------------- degradation


def degradation(results: pd.DataFrame, langs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per results row, with the baseline it is compared with and the language's metadata.

    `baseline` is the mean score of the inter_size-0 rows sharing seed, target task and language,
    evaluation task and language, split and metric. Baseline rows stay in (flag `is_baseline`,
    delta 0) so that tables and figures can show the starting point. `gap_en` is the score minus
    the same run's English score: the cross-lingual transfer gap."""
    langs = load_languages() if langs is None else langs
    df = results.copy()
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

    meta = langs[LANG_COLUMNS].copy()
    for d in DEFINITIONS:
        meta[f"low_{d}"] = low_resource(langs, d)
    df = df.merge(meta, left_on="eval_lang", right_index=True, how="left")
    df["in_metadata"] = df["eval_lang"].isin(langs.index)
    df["log10_cc100_GiB"] = np.log10(df["cc100_GiB"].astype(float))
    return df


def primary(deg: pd.DataFrame) -> pd.DataFrame:
    """One score per run and language: the test split where there is one, and the task's headline
    metric (f1, then accuracy, then em, then the first alphabetically). Idempotent."""
    split_rank = deg["split"].map({"test": 0, "dev": 1}).fillna(2)
    best_split = split_rank.groupby([deg["eval_task"], deg["eval_lang"]]).transform("min")
    order = {m: i for i, m in enumerate(METRIC_ORDER)}
    metric_rank = deg["metric"].map(lambda m: (order.get(m, len(order)), m))
    best_metric = deg.assign(_r=metric_rank).groupby("eval_task")["_r"].transform("min")
    return deg[(split_rank == best_split) & (metric_rank == best_metric)]


def _intermediate(deg: pd.DataFrame) -> pd.DataFrame:
    d = primary(deg)
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


# ----------------------------------------------------------------------------- statistics


def _corr(x, y, method: str) -> tuple[dict, str]:
    """pingouin's correlation, or NaN and the reason when it is undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 4:
        return _nan_corr(len(x)), f"n = {len(x)} < 4"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return _nan_corr(len(x)), "a variable is constant"
    out = pg.corr(x, y, method=method).iloc[0]
    return {"n": len(x), "r": out["r"], "ci_low": out["CI95"][0], "ci_high": out["CI95"][1],
            "p": out["p_val"]}, ""


def _nan_corr(n: int) -> dict:
    return {"n": n, "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}


def _slope(x, y) -> float:
    """Least-squares change in delta per tenfold corpus size (points per decade)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 and np.ptp(x) > 0 else np.nan


def _describe(g: pd.DataFrame) -> dict:
    return {"n_languages": g["eval_lang"].nunique(), "languages": ", ".join(sorted(g["eval_lang"].unique())),
            "n_sizes": g["inter_size"].nunique(), "n_seeds": g["seed"].nunique()}


def correlations(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Spearman and Pearson correlation of delta with log10 size over the low-resource languages'
    rows of each group (one row = language × size × seed), with 95 % CIs, p, Holm-adjusted p across
    groups, and the slope in points per tenfold size as the effect in the task's own units.

    Rows of one run share its model, and rows of one seed share a baseline: these p-values treat
    them as independent and are optimistic; `rm_corr` and `bootstrap` are the guarded versions."""
    rows = []
    for key, g in _intermediate(deg).groupby(GROUP):
        low = g[_low(g, definition)]
        for method in ("spearman", "pearson"):
            res, note = _corr(low["log10_size"], low["delta"], method)
            if low.empty:
                note = f"no low-resource language under '{definition}'"
            rows.append({**dict(zip(GROUP, key)), "method": method, **res, **_describe(low),
                         "slope_per_decade": _slope(low["log10_size"], low["delta"]), "note": note})
    return _holm(pd.DataFrame(rows, columns=GROUP + ["method", "n", "r", "ci_low", "ci_high", "p", "n_languages",
                                                     "languages", "n_sizes", "n_seeds", "slope_per_decade",
                                                     "note"]), ["method"])


def repeated_measures(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Within-language correlation (`pg.rm_corr`, languages as subjects): the association of size
    and delta once each low-resource language's own level is removed."""
    rows = []
    for key, g in _intermediate(deg).groupby(GROUP):
        low = g[_low(g, definition)]
        res, note = {"r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "dof": np.nan}, ""
        if low["eval_lang"].nunique() < 3:
            note = f"{low['eval_lang'].nunique()} low-resource language(s); rm_corr needs ≥ 3"
        elif low["log10_size"].nunique() < 2:
            note = "one corpus size only"
        else:
            with warnings.catch_warnings():  # pingouin 0.7 calls a pandas API that pandas 3.1 deprecates
                warnings.filterwarnings("ignore", message="The inplace keyword")
                out = pg.rm_corr(low, "log10_size", "delta", "eval_lang").iloc[0]
            res = {"r": out["r"], "ci_low": out["CI95"][0], "ci_high": out["CI95"][1], "p": out["pval"],
                   "dof": out["dof"]}
        rows.append({**dict(zip(GROUP, key)), "method": "rm_corr", "n": len(low), **res, **_describe(low),
                     "note": note})
    return _holm(pd.DataFrame(rows, columns=GROUP + ["method", "n", "r", "ci_low", "ci_high", "p", "dof",
                                                     "n_languages", "languages", "n_sizes", "n_seeds",
                                                     "note"]), ["method"])


def partial(deg: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of delta with log10 size over all evaluated languages, partialling out
    the language's log10 CC-100 size: does size matter beyond how much the language was seen?

    Languages unseen in XLM-R pre-training have no CC-100 size and drop out (said in `note`)."""
    rows = []
    for key, g in _intermediate(deg).groupby(GROUP):
        seen = g[g["log10_cc100_GiB"].notna()]
        dropped = sorted(set(g["eval_lang"]) - set(seen["eval_lang"]))
        res, note = _nan_corr(len(seen)), ""
        if len(seen) < 5:
            note = f"n = {len(seen)} < 5"
        elif seen["log10_cc100_GiB"].nunique() < 2 or seen["log10_size"].nunique() < 2:
            note = "one language or one size only"
        else:
            out = pg.partial_corr(seen, "log10_size", "delta", covar="log10_cc100_GiB").iloc[0]
            res = {"n": len(seen), "r": out["r"], "ci_low": out["CI95"][0], "ci_high": out["CI95"][1],
                   "p": out["p_val"]}
        if dropped:
            note = "; ".join(filter(None, [note, f"no CC-100 size (unseen): {', '.join(dropped)} left out"]))
        rows.append({**dict(zip(GROUP, key)), "method": "partial (covar log10 CC-100 GiB)", **res,
                     **_describe(seen), "note": note})
    return _holm(pd.DataFrame(rows, columns=GROUP + ["method", "n", "r", "ci_low", "ci_high", "p", "n_languages",
                                                     "languages", "n_sizes", "n_seeds", "note"]), ["method"])


TERMS = ["Intercept", "log10_size", "low_resource", "log10_size:low_resource"]


def _model_frame(g: pd.DataFrame, definition: str) -> tuple[pd.DataFrame, list[str], str]:
    """Rows with a known low-resource flag, log size centred on the group's mean (so the
    low_resource term is the difference at the typical size), and the terms the data can carry."""
    d = g[g[f"low_{definition}"].notna()].copy()
    d["low_resource"] = d[f"low_{definition}"].astype(float)
    d["log10_size"] = d["log10_size"] - d["log10_size"].mean()
    d["log10_size:low_resource"] = d["log10_size"] * d["low_resource"]
    if d["low_resource"].nunique() < 2:
        return d, TERMS[:2], "all languages on one side of the low-resource line: size term only"
    return d, TERMS, ""


def regression(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """OLS delta ~ log10 size × low-resource over all evaluated languages (`pg.linear_regression`).
    The interaction is the question in model form: does the size slope differ for low-resource
    languages? Coefficients are in score points (per tenfold size): they are the effect sizes."""
    rows = []
    for key, g in _intermediate(deg).groupby(GROUP):
        d, terms, note = _model_frame(g, definition)
        fit = None
        if len(d) <= len(terms) + 1 or d["log10_size"].nunique() < 2:
            note = f"n = {len(d)} too small for {len(terms)} coefficients, or one size only"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = pg.linear_regression(d[terms[1:]], d["delta"]).set_index("names")
        for term in terms:
            res = ({"coef": np.nan, "se": np.nan, "t": np.nan, "p": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                    "r2": np.nan} if fit is None else
                   {"coef": fit.loc[term, "coef"], "se": fit.loc[term, "se"], "t": fit.loc[term, "T"],
                    "p": fit.loc[term, "pval"], "ci_low": fit.loc[term, "CI2.5"],
                    "ci_high": fit.loc[term, "CI97.5"], "r2": fit.loc[term, "r2"]})
            rows.append({**dict(zip(GROUP, key)), "term": term, **res, "n": len(d), **_describe(d), "note": note})
    return _holm(pd.DataFrame(rows, columns=GROUP + ["term", "coef", "se", "t", "p", "ci_low", "ci_high", "r2", "n",
                                                     "n_languages", "languages", "n_sizes", "n_seeds", "note"]),
                 ["term"])


def mixed(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """delta ~ log10 size × low-resource + (1 | language) + (1 | language:seed) by REML
    (statsmodels `mixedlm`; pingouin has no mixed model).

    The language intercept absorbs each language's own level; the seed component absorbs that all
    sizes of one seed share one baseline. When the design cannot carry it, fall back to the language
    intercept alone, then give NaN, saying why in `note`."""
    rows = []
    for key, g in _intermediate(deg).groupby(GROUP):
        d, terms, note = _model_frame(g, definition)
        formula = "delta ~ " + " + ".join(["log10_size", "low_resource", "log10_size:low_resource"]
                                          if len(terms) == 4 else ["log10_size"])
        fit, notes = None, [note] if note else []
        if d["eval_lang"].nunique() < 3:
            notes.append(f"{d['eval_lang'].nunique()} language(s): a language variance needs ≥ 3")
        elif d["log10_size"].nunique() < 2:
            notes.append("one corpus size only")
        else:
            structures = [({"seed": "0 + C(seed)"}, "language + language:seed"), (None, "language only")]
            if d["seed"].nunique() < 2:
                notes.append("one seed: no seed component")
                structures = structures[1:]
            for vc, label in structures:
                fit, why = _fit_mixed(formula, d.assign(seed=d["seed"].astype(int)), vc)
                notes.append(f"{label}: {why}")
                if fit is not None:
                    break
        ci = fit.conf_int() if fit is not None else None
        vcomp = dict(zip(fit.model.exog_vc.names, fit.vcomp)) if fit is not None and fit.model.k_vc else {}
        for term in terms:
            res = ({"coef": np.nan, "se": np.nan, "z": np.nan, "p": np.nan, "ci_low": np.nan, "ci_high": np.nan}
                   if fit is None else
                   {"coef": fit.fe_params[term], "se": fit.bse_fe[term], "z": fit.tvalues[term],
                    "p": fit.pvalues[term], "ci_low": ci.loc[term, 0], "ci_high": ci.loc[term, 1]})
            rows.append({**dict(zip(GROUP, key)), "term": term, **res,
                         "var_language": float(fit.cov_re.iloc[0, 0]) if fit is not None else np.nan,
                         "var_seed": vcomp.get("seed", np.nan),
                         "var_residual": fit.scale if fit is not None else np.nan,
                         "n": len(d), **_describe(d), "note": "; ".join(notes)})
    return _holm(pd.DataFrame(rows, columns=GROUP + ["term", "coef", "se", "z", "p", "ci_low", "ci_high",
                                                     "var_language", "var_seed", "var_residual", "n", "n_languages",
                                                     "languages", "n_sizes", "n_seeds", "note"]), ["term"])


def _fit_mixed(formula: str, d: pd.DataFrame, vc: dict | None):
    """REML fit trying statsmodels' gradient optimiser first, then derivative-free ones, which cope
    with a variance on the boundary (≈ 0), common with few languages. Returns (fit, what happened)."""
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    failures = []
    for method in ("lbfgs", "powell", "nm"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit = smf.mixedlm(formula, d, groups="eval_lang", re_formula="1", vc_formula=vc).fit(
                    reml=True, method=method)
            except (np.linalg.LinAlgError, ValueError) as e:
                failures.append(f"{method}: {type(e).__name__}")
                continue
        if not fit.converged or not np.all(np.isfinite(fit.bse_fe)):
            failures.append(f"{method}: no convergence")
            continue
        text = " ".join(str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning))
        caveats = (["a variance is estimated on the boundary (≈ 0)"] if "boundary" in text else []) + \
                  (["Hessian not positive definite: standard errors unreliable"] if "Hessian" in text else [])
        return fit, "; ".join([f"fitted ({method})"] + caveats)
    return None, "not fitted (" + ", ".join(failures) + ")"


def bootstrap(deg: pd.DataFrame, definition: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Percentile 95 % CIs of Spearman r and of the slope (points per tenfold size) over the
    low-resource rows, resampling whole seeds with replacement: the seed is the unit that was
    actually replicated, so this CI does not pretend languages × sizes are independent draws."""
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in _intermediate(deg).groupby(GROUP):
        low = g[_low(g, definition)]
        seeds = np.sort(low["seed"].unique())
        by_seed = [low.loc[low["seed"] == s, ["log10_size", "delta"]].to_numpy(float) for s in seeds]
        res = {"spearman_r": np.nan, "spearman_ci_low": np.nan, "spearman_ci_high": np.nan,
               "slope_per_decade": np.nan, "slope_ci_low": np.nan, "slope_ci_high": np.nan}
        note = ""
        if len(seeds) < 2:
            note = f"{len(seeds)} seed(s): nothing to resample"
        elif low["log10_size"].nunique() < 2:
            note = "one corpus size only"
        else:
            r_s, slope = [], []
            for pick in rng.integers(0, len(seeds), size=(n_boot, len(seeds))):
                x, y = np.concatenate([by_seed[i] for i in pick]).T
                slope.append(_slope(x, y))
                r_s.append(np.corrcoef(sps.rankdata(x), sps.rankdata(y))[0, 1]
                           if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan)
            res = {"spearman_r": sps.spearmanr(low["log10_size"], low["delta"]).statistic,
                   "spearman_ci_low": np.nanpercentile(r_s, 2.5), "spearman_ci_high": np.nanpercentile(r_s, 97.5),
                   "slope_per_decade": _slope(low["log10_size"], low["delta"]),
                   "slope_ci_low": np.nanpercentile(slope, 2.5), "slope_ci_high": np.nanpercentile(slope, 97.5)}
            if len(seeds) < 5:
                note = (f"only {len(seeds)} seeds: {math.comb(2 * len(seeds) - 1, len(seeds))} distinct resamples, "
                        "the CI is coarse")
        rows.append({**dict(zip(GROUP, key)), **res, "n_boot": n_boot, "n": len(low), **_describe(low),
                     "note": note})
    return pd.DataFrame(rows, columns=GROUP + ["spearman_r", "spearman_ci_low", "spearman_ci_high", "slope_per_decade",
                                               "slope_ci_low", "slope_ci_high", "n_boot", "n", "n_languages",
                                               "languages", "n_sizes", "n_seeds", "note"])


def _content(task: str) -> tuple[str, bool]:
    """The corpus a task's text comes from, and whether its rows are aligned translations of it."""
    from xfer.tasks import TASKS

    source = getattr(TASKS.get(task), "translation_of", None)
    return (source, True) if source else (task, False)


def contrast(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """The language contrast: each non-English intermediate corpus against the English one of the
    same content at the same size and seed, on the low-resource languages.

    diff = score after the non-English corpus − score after the English one (the baseline cancels).
    With a row-aligned translation (SST-2 vs its Portuguese translation) only the language differs,
    which makes this the cleanest test of the question; otherwise (PAN-X sw vs en) content differs
    too, and `aligned` says so. Tested across languages (each language's mean diff, `pg.ttest`
    against 0, Cohen's d) and within languages (`pg.rm_corr` of diff with log10 size: does the
    language effect grow with corpus size?)."""
    d = _intermediate(deg)
    d = d[_low(d, definition)]
    keys = [c for c in MATCH if c != "target_lang"] + ["inter_size", "log10_size"]
    rows = []
    for target, t in d.groupby("target_task"):
        english = {_content(task)[0]: g for task, g in t[t["inter_lang"] == "en"].groupby("inter_task")}
        for (task, lang), g in t[t["inter_lang"] != "en"].groupby(["inter_task", "inter_lang"]):
            source, aligned = _content(task)
            res = {"mean_diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "cohen_d": np.nan,
                   "size_r": np.nan, "size_ci_low": np.nan, "size_ci_high": np.nan, "size_p": np.nan}
            row = {"target_task": target, "inter_task": task, "inter_lang": lang,
                   "english_task": source if source in english else "", "aligned": aligned}
            pair = pd.DataFrame(columns=keys + ["diff"])
            if source not in english:
                note = f"no English {source} intermediate run in the grid to compare with"
            else:
                pair = g[keys + ["score"]].merge(english[source][keys + ["score"]], on=keys, suffixes=("", "_en"))
                pair["diff"] = pair["score"] - pair["score_en"]
                per_lang = pair.groupby("eval_lang")["diff"].mean()
                note = "" if aligned else "content differs too: not a translation of the English corpus"
                if len(per_lang) < 3:
                    note = f"{len(per_lang)} low-resource language(s) with both runs; needs ≥ 3"
                else:
                    with warnings.catch_warnings():  # a constant diff makes the t statistic undefined
                        warnings.simplefilter("ignore", RuntimeWarning)
                        tt = pg.ttest(per_lang.to_numpy(float), 0).iloc[0]
                    res.update(mean_diff=per_lang.mean(), ci_low=tt["CI95"][0], ci_high=tt["CI95"][1],
                               p=tt["p_val"], cohen_d=np.sign(per_lang.mean()) * abs(tt["cohen_d"]))  # pingouin's d is unsigned
                    if pair["log10_size"].nunique() >= 2:
                        with warnings.catch_warnings():
                            warnings.filterwarnings("ignore", message="The inplace keyword")
                            rm = pg.rm_corr(pair, "log10_size", "diff", "eval_lang").iloc[0]
                        res.update(size_r=rm["r"], size_ci_low=rm["CI95"][0], size_ci_high=rm["CI95"][1],
                                   size_p=rm["pval"])
                    else:
                        note = "; ".join(filter(None, [note, "one common size: no size trend"]))
            rows.append({**row, **res, "n": len(pair), **_describe(pair), "note": note})
    cols = ["target_task", "inter_task", "inter_lang", "english_task", "aligned", "mean_diff", "ci_low", "ci_high",
            "p", "cohen_d", "size_r", "size_ci_low", "size_ci_high", "size_p", "n", "n_languages", "languages",
            "n_sizes", "n_seeds", "note"]
    return _holm(pd.DataFrame(rows, columns=cols), [])


def _holm(df: pd.DataFrame, family: list[str]) -> pd.DataFrame:
    """Holm-adjusted p (`pg.multicomp`) within each family, across groups (tasks × languages);
    no family columns: all rows are one family."""
    df = df.copy()
    df["p_holm"] = np.nan
    for _, g in (df.groupby(family) if family else [(None, df)]):
        p = g["p"].astype(float).to_numpy()
        if np.isfinite(p).any():
            df.loc[g.index, "p_holm"] = pg.multicomp(p, method="holm")[1]
    cols = list(df.columns)
    cols.insert(cols.index("p") + 1, cols.pop(cols.index("p_holm")))
    return df[cols]


def statistics(deg: pd.DataFrame, definition: str) -> dict:
    """Every statistic of the report, under the pre-registered low-resource definition; the
    Spearman correlation is repeated under each other definition as a sensitivity analysis."""
    _check(definition)
    sensitivity = pd.concat([correlations(deg, d).query("method == 'spearman'").assign(definition=d)
                             for d in DEFINITIONS], ignore_index=True)
    return {"definition": definition,
            "correlation": correlations(deg, definition),
            "rm_corr": repeated_measures(deg, definition),
            "partial_corr": partial(deg),
            "regression": regression(deg, definition),
            "mixed": mixed(deg, definition),
            "bootstrap": bootstrap(deg, definition),
            "contrast": contrast(deg, definition),
            "sensitivity": sensitivity[["definition"] + [c for c in sensitivity.columns if c != "definition"]]}


# ----------------------------------------------------------------------------- the answer


def _strength(r: float) -> str:
    a = abs(r)
    return "negligible" if a < 0.1 else "weak" if a < 0.3 else "moderate" if a < 0.5 else "strong"


def _count(n, noun: str) -> str:
    return f"{int(n)} {noun}{'' if int(n) == 1 else 's'}"


def _p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else "< 0.001" if p < 0.001 else f"= {p:.3f}"


def answer(stats: dict, grid: dict | None = None) -> str:
    """The one-paragraph answer to the research question, numbers included, and no stronger than
    the design allows. `grid` (grid.json) adds what the model and the training budget imply.

    The verdict counts the non-English intermediate languages (the question's); an English
    intermediate corpus, when the grid has one, is reported as the control it is."""
    corr, definition = stats["correlation"], stats["definition"]
    sp = corr[corr["method"] == "spearman"]
    ok = sp[sp["r"].notna()]
    model = (grid or {}).get("model", {})
    caveat = ("" if not model else
              " The encoder was trained from scratch, so these numbers demonstrate the pipeline and are not a "
              "finding about XLM-R." if model.get("from_scratch") else
              f" The encoder is {model.get('name')}, a stand-in for XLM-R: the numbers speak for that model only."
              if model.get("stand_in") else "")
    if ok.empty:
        why = "; ".join(sorted(set(sp["note"]) - {""})) or "no intermediate runs in the results"
        return (f"This grid cannot answer the question yet: no correlation between intermediate-corpus size and "
                f"degradation on low-resource languages (definition '{definition}') could be computed "
                f"({why})." + caveat)

    boot = stats["bootstrap"].set_index(GROUP)
    rm = stats["rm_corr"].set_index(GROUP)
    clauses = []
    for _, row in ok.sort_values(by="inter_lang", key=lambda s: s.eq("en")).iterrows():
        key = tuple(row[GROUP])
        b, w = boot.loc[key], rm.loc[key]
        clause = (f"{row['target_task']} after {row['inter_task']} in {row['inter_lang']}"
                  f"{' (English control)' if row['inter_lang'] == 'en' else ''}: ρ = {row['r']:+.2f} (95 % CI "
                  f"{row['ci_low']:+.2f} to {row['ci_high']:+.2f}; p {_p(row['p'])}, Holm {_p(row['p_holm'])}; "
                  f"n = {row['n']} scores = {row['n_languages']} languages × {row['n_sizes']} sizes × "
                  f"{_count(row['n_seeds'], 'seed')}), {row['slope_per_decade']:+.2f} points per tenfold size")
        if np.isfinite(b["slope_ci_low"]):
            clause += f" (seed bootstrap {b['slope_ci_low']:+.2f} to {b['slope_ci_high']:+.2f})"
        if np.isfinite(w["r"]):
            clause += f", within-language r = {w['r']:+.2f} ({w['ci_low']:+.2f} to {w['ci_high']:+.2f})"
        clauses.append(clause)
    languages = ", ".join(sorted({x for langs in ok["languages"] for x in langs.split(", ")}))
    lead = (f"With low-resource defined as the grid fixed it ('{definition}': {languages}), the change in zero-shot "
            f"score against the no-intermediate baseline correlated with log10 intermediate-corpus size as "
            f"follows. " + "; ".join(clauses) + ". ")

    focus = ok[ok["inter_lang"] != "en"]
    scope = "non-English " if len(focus) else ""
    if focus.empty:
        focus = ok
        lead += "This grid has no non-English intermediate corpus, so it speaks only to English. "
    reliable = focus[((focus["ci_low"] > 0) | (focus["ci_high"] < 0)) & (focus["p_holm"] < 0.05)]
    if reliable.empty:
        which = (f"The {scope}correlation is" if len(focus) == 1 else
                 f"None of the {len(focus)} {scope}correlations is")
        verdict = (f"{which} distinguishable from zero after Holm correction; the 95 % CIs span ρ = "
                   f"{focus['ci_low'].min():+.2f} to {focus['ci_high'].max():+.2f}, so the grid neither shows nor "
                   "rules out a size effect. ")
    else:
        strength = " or ".join(sorted({_strength(r) for r in reliable["r"]}))
        direction = ("larger corpora went with more degradation" if reliable["r"].lt(0).all() else
                     "larger corpora went with less degradation" if reliable["r"].gt(0).all() else
                     "the direction differs between comparisons")
        verdict = (f"{len(reliable)} of {len(focus)} {scope}correlation(s) exclude zero after Holm correction "
                   f"({strength}): {direction}. ")
    verdict += _contrast_sentence(stats.get("contrast"))
    budget = (grid or {}).get("params", {}).get("intermediate", {}).get("train", {}) or {}
    confound = ("" if budget.get("max_steps") or not grid else
                " Corpus size also sets the number of intermediate training steps here (an epoch budget), so "
                "size and compute are confounded.")
    caution = (f"This is an association over a designed grid with {_count(ok['n_languages'].max(), 'low-resource language')} "
               f"and {_count(ok['n_seeds'].max(), 'seed')}; scores from one run or one baseline are not "
               "independent, so the row-level p-values are optimistic and the seed bootstrap and the "
               f"within-language correlation are the safer guides.{confound}")
    return lead + verdict + caution + caveat


def _contrast_sentence(contrast: pd.DataFrame | None) -> str:
    """The language contrast in words: non-English minus English corpus at the same size and seed."""
    if contrast is None or contrast.empty or contrast["mean_diff"].isna().all():
        return ""
    parts = []
    for _, c in contrast[contrast["mean_diff"].notna()].iterrows():
        what = ("its row-aligned English original" if c["aligned"] else
                f"English {c['english_task']} (different content, so not only the language differs)")
        part = (f"{c['target_task']} after {c['inter_task']} in {c['inter_lang']} against {what}: "
                f"{c['mean_diff']:+.2f} points (95 % CI {c['ci_low']:+.2f} to {c['ci_high']:+.2f} over "
                f"{c['n_languages']} languages; d = {c['cohen_d']:+.2f}; Holm p {_p(c['p_holm'])})")
        if np.isfinite(c["size_r"]):
            part += (f"; its within-language correlation with log10 size r = {c['size_r']:+.2f} "
                     f"({c['size_ci_low']:+.2f} to {c['size_ci_high']:+.2f})")
        parts.append(part)
    few = ("" if contrast["n_seeds"].max() >= 3 else
           f" With {_count(contrast['n_seeds'].max(), 'seed')}, every language's difference comes from the same few "
           "pairs of training runs, so these CIs, taken across languages, understate run-to-run noise.")
    return ("Language contrast on the low-resource languages (score after the non-English corpus minus after "
            "the English one, same size and seed, so the baseline cancels): " + "; ".join(parts) + "." + few + " ")


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
    d = primary(deg)
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
    rank = {lang: i for i, lang in enumerate(order)}
    return table.sort_index(key=lambda idx: idx.map(rank) if idx.name == "eval_lang" else idx)


# ----------------------------------------------------------------------------- figures


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its t 95 % CI (NaN half-width for a single value)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return (values.mean() if len(values) else np.nan), np.nan
    return values.mean(), sps.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))


def _empty(message: str) -> Figure:
    """A small figure that says why there is nothing to plot: the report still renders."""
    fig = Figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.3")
    return fig


def _colors(keys) -> dict:
    cmap = matplotlib.colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(keys)}


def plot_degradation(deg: pd.DataFrame, definition: str, target_task: str | None = None) -> Figure:
    """Small multiples, one panel per evaluation language (low-resource first, tinted): delta
    against corpus size, seeds as points, the mean over seeds as a line with its 95 % CI band, one
    colour per intermediate language."""
    d = _intermediate(deg)
    tasks = sorted(d["target_task"].unique())
    target_task = target_task or (tasks[0] if tasks else None)
    d = d[d["target_task"] == target_task]
    if d.empty:
        return _empty("No intermediate-training results to plot yet.")
    langs = _lang_order(d, definition)
    ncol = min(5, max(1, len(langs)))
    nrow = max(1, math.ceil(len(langs) / ncol))
    fig = Figure(figsize=(2.0 * ncol + 1.4, 1.75 * nrow + 0.9), layout="constrained")
    axes = fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False).ravel()
    series = sorted(d.groupby(["inter_task", "inter_lang"]).groups)
    colors = _colors(series)
    jitter = np.random.default_rng(0)
    for ax, lang in zip(axes, langs):
        g = d[d["eval_lang"] == lang]
        low = bool(_low(g, definition).iloc[0])
        ax.axhline(0, color="0.6", lw=0.8)
        for key in series:
            s = g[(g["inter_task"] == key[0]) & (g["inter_lang"] == key[1])]
            if s.empty:
                continue
            ax.scatter(s["log10_size"] + jitter.uniform(-0.04, 0.04, len(s)), s["delta"], s=9, alpha=0.5,
                       color=colors[key], lw=0)
            stats = [(x, *_mean_ci(v["delta"])) for x, v in s.groupby("log10_size")]
            x, m, h = map(np.array, zip(*stats))
            ax.plot(x, m, color=colors[key], lw=1.6, label=f"{key[0]} · {key[1]}")
            ax.fill_between(x, m - h, m + h, color=colors[key], alpha=0.18, lw=0)
        name = g["language"].iloc[0] if isinstance(g["language"].iloc[0], str) else "?"
        ax.set_title(f"{lang} · {name}" + (" (low)" if low else ""), fontsize=9,
                     color=LOW_COLOR if low else "black", fontweight="bold" if low else "normal")
        if low:
            ax.set_facecolor("#fbeeee")
    for ax in axes[len(langs):]:
        ax.set_visible(False)
    sizes = sorted(d["inter_size"].unique())
    for ax in axes[:len(langs)]:
        ax.set_xticks(np.log10(np.array(sizes, float)), [fmt_size(s) for s in sizes], fontsize=7)
        ax.tick_params(axis="both", labelsize=7, labelbottom=True)
    fig.supxlabel("intermediate corpus size (sentences, log scale)", fontsize=9)
    fig.supylabel("Δ score vs. no-intermediate baseline (points)", fontsize=9)
    fig.suptitle(f"{target_task}: degradation against intermediate corpus size "
                 f"(low-resource = '{definition}', tinted)", fontsize=10)
    if series:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", title="intermediate", fontsize=8, title_fontsize=8,
                   frameon=False)
    return fig


def plot_heatmap(deg: pd.DataFrame, definition: str) -> Figure:
    """Mean delta (over seeds) for every target task × intermediate language × size (rows) and
    evaluation language (columns, low-resource first, labelled in red)."""
    d = _intermediate(deg)
    if d.empty:
        return _empty("No intermediate-training results to plot yet.")
    langs = _lang_order(d, definition)
    d = d.assign(row=d["target_task"] + " · " + d["inter_task"] + " " + d["inter_lang"] + " · "
                 + d["inter_size"].map(fmt_size).astype(str))
    rows = d.sort_values(["target_task", "inter_task", "inter_lang", "inter_size"])["row"].unique().tolist()
    m = d.pivot_table(index="row", columns="eval_lang", values="delta", aggfunc="mean").reindex(index=rows,
                                                                                             columns=langs)
    fig = Figure(figsize=(max(5.0, 0.42 * len(langs) + 3.2), max(2.2, 0.38 * len(rows) + 1.6)), layout="constrained")
    ax = fig.subplots()
    lim = np.nanmax(np.abs(m.to_numpy())) if np.isfinite(m.to_numpy()).any() else 1.0
    im = ax.imshow(m.to_numpy(float), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(langs)), langs, fontsize=8, rotation=90)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    low = set(d.loc[_low(d, definition), "eval_lang"])
    for label in ax.get_xticklabels():
        if label.get_text() in low:
            label.set_color(LOW_COLOR)
            label.set_fontweight("bold")
    if m.size <= 600:
        for (i, j), v in np.ndenumerate(m.to_numpy(float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, label="mean Δ score (points)", shrink=0.8)
    ax.set_title(f"Mean change vs. baseline (red labels: low-resource, '{definition}')", fontsize=10)
    return fig


def plot_forest(stats: dict) -> Figure:
    """Each group's correlation of delta with log10 size on low-resource languages, with its 95 %
    CI: Spearman, Pearson and the within-language (rm_corr) estimate side by side."""
    table = pd.concat([stats["correlation"], stats["rm_corr"]], ignore_index=True)
    table["label"] = table["target_task"] + " · " + table["inter_task"] + " " + table["inter_lang"]
    labels = list(dict.fromkeys(table["label"]))
    if not labels:
        return _empty("No correlation to plot: no intermediate-training results yet.")
    methods = ["spearman", "pearson", "rm_corr"]
    symbols = {"spearman": ("o", "Spearman ρ"), "pearson": ("s", "Pearson r"), "rm_corr": ("D", "within-language r")}
    fig = Figure(figsize=(7.5, 1.0 + 0.75 * max(1, len(labels))), layout="constrained")
    ax = fig.subplots()
    ax.axvline(0, color="0.5", lw=0.8)
    ticks, texts = [], []
    for k, method in enumerate(methods):
        t = table[table["method"] == method].set_index("label").reindex(labels)
        y = np.arange(len(labels)) + (k - 1) * 0.24
        ok = t["r"].notna().to_numpy()
        ax.errorbar(t["r"][ok], y[ok], xerr=[(t["r"] - t["ci_low"])[ok], (t["ci_high"] - t["r"])[ok]],
                    fmt=symbols[method][0], color=_colors(methods)[method], capsize=2, ms=5, lw=1.2,
                    label=symbols[method][1])
        for yi, (_, row) in zip(y, t.iterrows()):
            ticks.append(yi)
            texts.append(f"n/a: {row['note']}"[:60] if not np.isfinite(row["r"]) else
                         f"{row['r']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]  "
                         f"p_Holm {_p(row['p_holm'])}  n={row['n']:.0f}")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(-1.05, 1.05)
    right = ax.twinx()  # the numbers as right-hand tick labels, so the layout makes room for them
    right.set_ylim(ax.get_ylim())
    right.set_yticks(ticks, texts, fontsize=7)
    right.tick_params(length=0)
    ax.set_xlabel("correlation of Δ score with log10 corpus size (low-resource languages)", fontsize=9)
    fig.legend(fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    ax.set_title(f"Correlation per task × intermediate language ('{stats['definition']}')", fontsize=10)
    return fig


def plot_gap(deg: pd.DataFrame, definition: str) -> Figure:
    """The transfer gap to English (score − same run's English score) at each corpus size, for
    low-resource and other languages: language means as faint points, the mean over languages with
    its 95 % CI. One panel per target task × intermediate language; the baseline is the first x."""
    d = primary(deg)
    d = d[d["gap_en"].notna() & (d["eval_lang"] != "en")]
    d = d.assign(level=np.where(_low(d, definition), "low-resource", "other"))
    inter = d[~d["is_baseline"]]
    panels = sorted(inter.groupby(GROUP).groups)
    if not panels:
        return _empty("No transfer gap to plot: no intermediate run with an English score yet.")
    fig = Figure(figsize=(3.4 * min(3, len(panels)) + 0.6, 3.0 * math.ceil(len(panels) / 3) + 0.5),
                 layout="constrained")
    axes = fig.subplots(math.ceil(len(panels) / 3), min(3, len(panels)), squeeze=False, sharey=True).ravel()
    for ax, (task, itask, ilang) in zip(axes, panels):
        g = pd.concat([d[(d["target_task"] == task) & d["is_baseline"]],
                       inter[(inter["target_task"] == task) & (inter["inter_task"] == itask)
                             & (inter["inter_lang"] == ilang)]])
        sizes = sorted(g["inter_size"].unique())
        pos = {s: i for i, s in enumerate(sizes)}
        for level, color, dx in (("low-resource", LOW_COLOR, 0.08), ("other", HIGH_COLOR, -0.08)):
            lv = g[g["level"] == level]
            if lv.empty:
                continue
            per_lang = lv.groupby(["inter_size", "eval_lang"])["gap_en"].mean().reset_index()
            ax.scatter(per_lang["inter_size"].map(pos) + dx, per_lang["gap_en"], s=8, color=color, alpha=0.35, lw=0)
            stats = [(pos[s], *_mean_ci(v["gap_en"])) for s, v in per_lang.groupby("inter_size")]
            x, m, h = map(np.array, zip(*stats))
            ax.errorbar(x + dx, m, yerr=h, color=color, marker="o", ms=4, capsize=2, lw=1.4,
                        label=f"{level} ({lv['eval_lang'].nunique()})")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(range(len(sizes)), [fmt_size(s) for s in sizes], fontsize=8)
        ax.set_title(f"{task} · {itask} {ilang}", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.supxlabel("intermediate corpus size (sentences)", fontsize=9)
    fig.supylabel("score − English score of the same run (points)", fontsize=9)
    fig.suptitle(f"Transfer gap to English by resource level ('{definition}')", fontsize=10)
    return fig
