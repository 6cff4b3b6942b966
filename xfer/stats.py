"""The statistics of the report: one pre-registered primary test per target, the seed its unit.

The primary test (the grid's `analysis` block fixes it before anything runs): within each seed, the
slope of the run-level contrast D (xfer.analysis.run_contrasts) on log10 corpus size, averaged over
the corpora every seed has (`xfer.sequential.seed_slopes`); then a one-sample t across seeds, in
score points per tenfold size. The sizes of one seed are nested subsets of one draw, so they are not
independent units; the seeds are. So the test holds when noise differs by size, when each seed has
its own slope, and under nesting, where a pooled slope over units did not (tests/test_calibration.py).
With `analysis.sequential` it is group-sequential (`xfer.sequential.decide`): after each look's seeds
it stops for an effect, for equivalence within ±smallest_effect, or for futility, with Lan–DeMets
alpha spending; without it, one look at all seeds. Several targets share α (Bonferroni). The
estimand is conditional on the evaluated languages: the languages of a benchmark are fixed, not
sampled, so a language's own size trend is part of what is measured, not noise.

Everything else here is exploratory and labelled so: run-level correlations (pingouin), a mixed model
on the language-level Δ, sensitivity to the low-resource definition. tests/test_calibration.py and
tests/test_sequential.py check the error rate of every interval and p-value the report prints by
simulation on grids of the real structure.

One concern, every number with an error rate the report quotes: the tests, their intervals, the
power and the plan's MDE, kept in one file so their calibration tests have one place to check."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats as sps

from xfer import analysis as A
from xfer import sequential as seq


# ----------------------------------------------------------------------------- the core (vectorised)


def _design(units: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log10 size, the intercept columns (one per seed and per corpus beyond the first, additive),
    and the cells (seed × corpus) within which size labels are exchangeable under the null."""
    x = units["log10_size"].to_numpy(float)
    seed = np.unique(units["seed"].to_numpy(), return_inverse=True)[1]
    corpus = np.unique(units["corpus"].to_numpy(str), return_inverse=True)[1]
    cols = [np.ones(len(units))] + [(seed == i).astype(float) for i in range(1, seed.max() + 1 if len(seed) else 1)]
    cols += [(corpus == i).astype(float) for i in range(1, corpus.max() + 1 if len(corpus) else 1)]
    return x, np.column_stack(cols), seed * (corpus.max() + 1 if len(corpus) else 1) + corpus


def slope_test(units: pd.DataFrame, y: np.ndarray | None = None, alpha: float = 0.05,
               bound: float = 0.5) -> dict:
    """OLS slope of y (default units' D; or an array with a leading axis of simulated datasets) on
    log10 size with seed and corpus intercepts, pooled over units. Not the primary test (its units
    are not independent: see the module's docstring); it measures the run-level SD that plans a
    design (`run_sd`). Returns arrays: slope, se, df, ci_low/ci_high (1 − α), p, p_tost."""
    y = np.atleast_2d(units["D"].to_numpy(float) if y is None else y)
    nan = np.full(len(y), np.nan)
    if len(units) < 3:
        return {"slope": nan, "se": nan, "df": 0, "ci_low": nan, "ci_high": nan, "p": nan, "p_tost": nan}
    x, Z, _ = _design(units)
    X = np.column_stack([x, Z])
    rank = np.linalg.matrix_rank(X)
    df = len(x) - rank
    xr = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]  # size after the intercepts
    sxx = xr @ xr
    if df < 1 or sxx < 1e-12 or rank < X.shape[1]:
        return {"slope": nan, "se": nan, "df": df, "ci_low": nan, "ci_high": nan, "p": nan, "p_tost": nan}
    yr = y - np.linalg.lstsq(Z, y.T, rcond=None)[0].T @ Z.T
    slope = yr @ xr / sxx
    resid = yr - slope[:, None] * xr
    se = np.sqrt((resid ** 2).sum(1) / df / sxx)
    q = sps.t.ppf(1 - alpha / 2, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = slope / se
        p_tost = np.maximum(sps.t.sf((slope + bound) / se, df), sps.t.cdf((slope - bound) / se, df))
    return {"slope": slope, "se": se, "df": df, "ci_low": slope - q * se, "ci_high": slope + q * se,
            "p": 2 * sps.t.sf(np.abs(t), df), "p_tost": p_tost}


def t_interval(values, alpha: float = 0.05) -> tuple:
    """Mean and its t-interval over the last axis (one value per seed; NaN bounds for fewer than two)."""
    v = np.asarray(values, float)
    n = np.isfinite(v).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(v, -1) if v.size else np.nan
        h = sps.t.ppf(1 - alpha / 2, n - 1) * np.nanstd(v, -1, ddof=1) / np.sqrt(n)
    h = np.where(n >= 2, h, np.nan)
    return m, m - h, m + h


# ----------------------------------------------------------------------------- the primary test


def arm(runs: pd.DataFrame) -> str:
    """The budget arm the primary test uses: fixed steps where the grid ran several arms."""
    arms = sorted(runs["inter_budget"].unique())
    return "steps" if "steps" in arms else arms[0] if arms else ""


def dose(runs: pd.DataFrame) -> dict:
    """Did training dose vary with corpus size across these runs? For each dose column recorded
    (steps, examples, tokens seen): its range and its rank correlation with size. Confounded when a
    number of steps or examples varies by more than 10 % and |ρ| > 0.5: then size and dose cannot be
    told apart (tokens seen are reported, not judged: at equal examples they follow sentence lengths)."""
    out = {"recorded": [], "confounded": [], "text": ""}
    parts = []
    for col in A.DOSE:
        v = runs[[col, "log10_size"]].dropna()
        if v.empty:
            continue
        out["recorded"].append(col)
        lo, hi = v[col].min(), v[col].max()
        rho = (sps.spearmanr(v["log10_size"], v[col]).statistic
               if v[col].nunique() > 1 and v["log10_size"].nunique() > 1 else 0.0)
        varies = hi > 1.1 * lo
        if varies and abs(rho) > 0.5 and col != "tokens_seen":  # tokens follow sentence lengths at equal examples
            out["confounded"].append(col)
        parts.append(f"{col.replace('_', ' ')} {lo:,.0f}" + (f"–{hi:,.0f} (rank correlation with size {rho:+.2f})"
                                                             if varies else " in every run"))
    out["text"] = "; ".join(parts)
    return out


def _in_arm(runs: pd.DataFrame, budget: str | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """The runs of one budget arm per target (`budget`, else the primary arm), and that arm per target."""
    arms = runs.groupby(A.TARGET)["inter_budget"].agg(lambda s: budget if budget is not None else arm(s.to_frame()))
    keep = runs["inter_budget"].to_numpy() == arms.reindex(pd.MultiIndex.from_frame(runs[A.TARGET])).to_numpy()
    return runs[keep], arms


PARTS = ["D", "c", "c_en", "low"]  # the per-seed slopes the answer words: D and the parts it is made of


def seed_slopes(u: pd.DataFrame, seeds: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, in the order of `seeds` (the grid's list; default: the seeds found), the slopes of
    D and of its parts (`PARTS`, rows) on log10 size: (seeds, slopes of shape (len(PARTS), n_seeds)),
    NaN for a seed without a slope."""
    found, slopes = seq.seed_slopes(u, y=np.vstack([u[p].fillna(0 if p == "c_en" else np.nan).to_numpy(float)
                                                   for p in PARTS]))
    order = np.array(list(seeds) if seeds is not None else found)
    at = {s: i for i, s in enumerate(found)}
    out = np.full((len(PARTS), len(order)), np.nan)
    for i, s in enumerate(order):
        if s in at:
            out[:, i] = slopes[:, at[s]]
    return order, out


def rule(config: dict, n_targets: int) -> dict:
    """The decision rule as data: looks (seed counts), spending, futility, α per target."""
    cfg, s = _primary_config(config), (config or {}).get("sequential")
    return {"alpha": cfg["alpha"] / max(1, n_targets), "bound": cfg["smallest_effect"], "power": cfg["power"],
            "looks": list(s["looks"]) if s else None, "kind": s.get("spending", "obf") if s else "obf",
            "futility": bool(s.get("futility", True)) if s else False, "sequential": bool(s)}


def decide(slopes: np.ndarray, r: dict) -> dict:
    """The rule `r` applied to per-seed slopes (in run order; NaN = not finished): a sequential
    design at its looks, else one look at every seed with a slope. Scalars, or {} when < 2 seeds."""
    if r["sequential"]:
        n_max, looks = r["looks"][-1], r["looks"]
        y = np.full(n_max, np.nan)
        y[:min(n_max, len(slopes))] = slopes[:n_max]
    else:
        y = slopes[np.isfinite(slopes)]
        n_max, looks = len(y), [len(y)]
    if np.isfinite(y).sum() < 2:
        return {}
    out = seq.decide(y[None, :], n_max, looks, alpha=r["alpha"], bound=r["bound"], kind=r["kind"],
                     futility=r["futility"], power=r["power"])
    res = {k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in out.items()}
    res["look"] = max(i for i, n in enumerate(looks) if n <= max(res["n_seeds"], looks[0]))
    if res["decision"] == "inconclusive" and res["n_seeds"] < n_max:
        res["decision"] = "continue"  # the later looks' seeds have not run yet
    return res | {"n_max": n_max, "n_looks": len(looks)}


def design_mde(sd: float, n_max: int, r: dict) -> float:
    """The smallest slope the rule finds with probability `power` when one seed's slope has SD `sd`:
    from simulating the rule itself (`seq.design_effect`), so it is the MDE of the test the answer
    applies, sequential or not."""
    if not np.isfinite(sd) or sd <= 0 or n_max < 2:
        return np.nan
    return seq.design_effect(sd, n_max, r["looks"] or [n_max], alpha=r["alpha"], bound=r["bound"], kind=r["kind"],
                             futility=r["futility"], power=r["power"])


def seeds_needed(sd: float, r: dict, most: int = 1000) -> int | None:
    """Seeds a one-look design needs for `power` at an effect of `bound` (noncentral t), given one
    seed's slope SD: what a study that ended without a decision would take."""
    if not np.isfinite(sd) or sd <= 0:
        return None
    for n in range(3, most + 1):
        df, q = n - 1, sps.t.ppf(1 - r["alpha"] / 2, n - 1)
        if sps.nct.sf(q, df, r["bound"] / (sd / np.sqrt(n))) >= r["power"]:
            return n
    return None


def primary(runs: pd.DataFrame, config: dict | None = None, definition: str = "", budget: str | None = None,
            seeds: list | None = None) -> pd.DataFrame:
    """The primary test, one row per target: design (runs, units, corpora, English control, languages),
    the per-seed slopes of D and the rule's decision on them (`decide`: estimate, SE, df, p, the
    look's nominal boundary, the repeated CI valid at the look it stopped, the equivalence interval),
    the SD of one seed's slope (measured with ≥ 3 seeds, else from the declared run SD) and the
    design's MDE for the rule as applied, the slopes of D's parts (Δ on the low-resource languages
    after the non-English corpora, the non-English contrast, the English control's contrast), and
    the mean Δ on the low-resource languages overall and at the largest size, with t-intervals over
    seeds. `seeds` is the grid's list in run order (a sequential design's looks take them in that
    order); `budget` picks another arm than the pre-registered one, for the exploratory tables."""
    cfg = _primary_config(config)
    runs, arms = _in_arm(runs, budget)
    non_en_all = runs[runs["inter_lang"] != "en"]
    by_target = dict(list(non_en_all.groupby(A.TARGET, sort=False)))
    all_units = dict(list(A.units(non_en_all).groupby(A.TARGET, sort=False)))
    keys = sorted(runs.groupby(A.TARGET, sort=True).groups)
    r = rule(config, sum(len(all_units.get(k, [])) > 0 for k in keys))
    rows = []
    for key in keys:
        t = runs[(runs[A.TARGET[0]] == key[0]) & (runs[A.TARGET[1]] == key[1])]
        non_en = by_target.get(key, t.iloc[:0])
        u = all_units.get(key, pd.DataFrame(columns=["seed", "corpus", "log10_size", "inter_size", "D", "c", "c_en",
                                                     "low", "var_factor"]))
        row = {**dict(zip(A.TARGET, key)), "budget": arms[key] or "one arm",
               "n_runs": int(non_en["D"].notna().sum()), "n_units": len(u),
               "corpora": ", ".join(sorted((non_en["inter_task"] + " " + non_en["inter_lang"]).unique())),
               "english_control": ", ".join(sorted(non_en["english_control"].unique())),
               "n_low": int(non_en["n_low"].max()) if len(non_en) else 0,
               "low_languages": _common(non_en["low_languages"].unique()),
               "n_other": int(non_en["n_other"].max()) if len(non_en) else 0,
               "sizes": ", ".join(A.fmt_size(s) for s in sorted(u["inter_size"].unique())),
               "definition": definition, "alpha": r["alpha"], "bound": r["bound"],
               "rule": "sequential" if r["sequential"] else "one look"}
        left_out = int(non_en["D"].isna().sum())
        row["note"] = f"{left_out} run(s) without their English control left out" if left_out else ""
        order, slopes = seed_slopes(u, seeds) if len(u) else (np.array([]), np.full((len(PARTS), 0), np.nan))
        finite = np.isfinite(slopes[0])
        row["n_seeds"] = int(finite.sum())
        res = decide(slopes[0], r) if finite.sum() >= 2 else {}
        if not res:
            why = ("no non-English run with a usable D" if not len(u) else
                   "size does not vary within a seed" if not finite.any() else
                   f"{int(finite.sum())} seed(s) with a slope; the test needs ≥ 2")
            row.update(status="untestable", why=why, decision="untestable")
        else:
            row.update(status="tested", why="", **res)
            for name, s in zip(PARTS[1:], slopes[1:]):
                row[f"slope_{name}"] = float(np.nanmean(s[finite])) if finite.any() else np.nan
        # one seed's slope SD: measured where ≥ 3 seeds have one, else from the declared run SD
        if finite.sum() >= 3:
            sd, source = float(np.std(slopes[0][finite], ddof=1)), f"measured on these results ({int(finite.sum())} seeds)"
        else:
            one = u[u["seed"] == u["seed"].iloc[0]] if len(u) else u
            sd = seq.seed_slope_sd(cfg["assumed_run_sd"], one) if len(one) else np.nan
            source = f"from the declared run SD {cfg['assumed_run_sd']:g} (analysis.primary.assumed_run_sd)"
        n_max = r["looks"][-1] if r["sequential"] else max(int(finite.sum()), 2)
        row.update(sd_seed=sd, sd_source=source, mde=design_mde(sd, n_max, r), seeds_needed=seeds_needed(sd, r))
        by_seed = non_en.groupby("seed")["low"].mean()
        row["mean_low_delta"], row["mean_low_ci_low"], row["mean_low_ci_high"] = t_interval(by_seed, r["alpha"])
        largest = u[u["log10_size"] == u["log10_size"].max()].groupby("seed")["low"].mean() if len(u) else by_seed[:0]
        row["low_delta_largest"], row["low_largest_ci_low"], row["low_largest_ci_high"] = t_interval(largest, r["alpha"])
        row["largest_size"] = A.fmt_size(u["inter_size"].max()) if len(u) else ""
        d = dose(t)
        row.update(dose=d["text"] or "not recorded", dose_confounded=", ".join(d["confounded"]))
        rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=PRIMARY_COLUMNS)
    out["look_no"] = out["look"] + 1  # 1-based, as the report counts looks
    for flag in ("effect", "equivalent", "futile"):
        out[flag] = out["decision"] == flag
    out["underpowered"] = out["mde"] > out["bound"]
    return out


def look_path(runs: pd.DataFrame, config: dict | None, seeds: list | None) -> pd.DataFrame:
    """A sequential design's path, one row per target and look reached: the seeds it had, the
    estimate, the repeated CI, p against the look's boundary, and the decision; up to the look the
    rule stopped at. Empty for a one-look design."""
    r = rule(config, runs[A.TARGET].drop_duplicates().shape[0])
    cols = A.TARGET + ["look", "n_seeds", "estimate", "rci_low", "rci_high", "p", "boundary_p", "eq_low", "eq_high",
                       "decision"]
    if not r["sequential"]:
        return pd.DataFrame(columns=cols)
    runs = _in_arm(runs)[0]
    rows = []
    for key, u in A.units(runs[runs["inter_lang"] != "en"]).groupby(A.TARGET, sort=True):
        slopes = seed_slopes(u, seeds)[1][0]
        for k, n in enumerate(r["looks"]):
            if np.isfinite(slopes[:n]).sum() < n:
                break  # this look's seeds are not all finished
            y = slopes.copy()
            y[n:] = np.nan
            res = decide(y, r)
            rows.append({**dict(zip(A.TARGET, key)), **res, "look": k + 1})
            if res["decision"] != "continue":
                break
    return pd.DataFrame(rows).reindex(columns=cols)


PRIMARY_COLUMNS = A.TARGET + [
    "status", "why", "rule", "decision", "look", "n_looks", "n_seeds", "n_max", "estimate", "se", "df", "t", "p",
    "boundary_p", "rci_low", "rci_high", "eq_low", "eq_high", "info", "alpha", "bound", "budget", "n_runs", "n_units",
    "corpora", "english_control", "n_low", "low_languages", "n_other", "sizes", "sd_seed", "sd_source", "mde",
    "seeds_needed", "slope_c", "slope_c_en", "slope_low", "mean_low_delta", "mean_low_ci_low", "mean_low_ci_high",
    "low_delta_largest", "low_largest_ci_low", "low_largest_ci_high", "largest_size", "dose", "dose_confounded",
    "definition", "note"]


def _primary_config(config: dict | None) -> dict:
    from xfer.config import PrimaryConfig

    return PrimaryConfig(**((config or {}).get("primary") or {})).model_dump()


def _common(lists: pd.Series) -> str:
    """The low-resource languages every run used (a run leaves out its own language)."""
    sets = [set(str(s).split(", ")) - {""} for s in lists]
    return ", ".join(sorted(set.union(*sets))) if sets else ""


def run_sd(u: pd.DataFrame) -> tuple[float, int]:
    """The SD of one run's contrast, from the residuals of the pooled slope model (a unit's variance
    is sd² × var_factor), and its residual df: what plans a design's per-seed SD."""
    res = slope_test(u)
    df = int(res["df"])
    if df < 1 or not np.isfinite(res["se"][0]):
        return np.nan, max(df, 0)
    x, Z, _ = _design(u)
    xr = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    s2 = res["se"][0] ** 2 * (xr @ xr)
    return float(np.sqrt(s2 / u["var_factor"].mean())), df


# ----------------------------------------------------------------------------- exploratory


def sensitivity(deg: pd.DataFrame, training: pd.DataFrame | None, config: dict | None,
                definition: str = A.DEFAULT_DEFINITION) -> pd.DataFrame:
    """The primary slope under every low-resource definition, and in every other budget arm (a
    fixed-epochs arm beside fixed steps) under the grid's definition: exploratory, only the grid's
    definition in the fixed-steps arm is the pre-registered test."""
    one_look = {k: v for k, v in (config or {}).items() if k != "sequential"}  # exploratory: every seed at once
    tables = [primary(A.run_contrasts(deg, d, training), one_look, d) for d in A.DEFINITIONS]
    runs = A.run_contrasts(deg, definition, training)
    for other in sorted(set(runs["inter_budget"]) - {arm(runs)}):
        tables.append(primary(runs, one_look, definition, budget=other))
    cols = (["definition", "budget"] + A.TARGET
            + ["status", "n_low", "n_seeds", "estimate", "rci_low", "rci_high", "p", "dose_confounded", "why"])
    return pd.concat(tables, ignore_index=True).reindex(columns=cols) if tables else pd.DataFrame(columns=cols)


def correlations(runs: pd.DataFrame) -> pd.DataFrame:
    """Run-level correlations of D with log10 size over the primary units (exploratory, unadjusted):
    Pearson (`pg.corr`), within seed (`pg.rm_corr`, seeds as subjects) and, where training dose was
    recorded and varies, controlling for log10 tokens (or steps) seen (`pg.partial_corr`)."""
    runs = _in_arm(runs)[0]
    runs = runs[runs["inter_lang"] != "en"]
    dose_col = next((c for c in ("tokens_seen", "steps") if len(runs) and runs[c].notna().all()), None)
    if dose_col:  # units() averages it over the runs of a unit
        runs = runs.assign(log10_dose=np.log10(runs[dose_col].astype(float)))
    all_units = A.units(runs)
    rows = []
    for key, u in all_units.groupby(A.TARGET, sort=True):
        base = {**dict(zip(A.TARGET, key)), "n": len(u)}
        varies = dose_col is not None and u["log10_dose"].nunique() > 1
        for method in ("pearson", "rm_corr", "partial"):
            r, lo, hi, p, note = np.nan, np.nan, np.nan, np.nan, ""
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if len(u) < 4 or u["log10_size"].nunique() < 2 or u["D"].nunique() < 2:
                    note = f"{len(u)} units, or one size: needs ≥ 4 units and two sizes"
                elif method == "pearson":
                    out = pg.corr(u["log10_size"], u["D"]).iloc[0]
                    r, (lo, hi), p = out["r"], out["CI95"], out["p_val"]
                elif method == "rm_corr":
                    if u["seed"].nunique() < 3:
                        note = f"{u['seed'].nunique()} seed(s); rm_corr needs ≥ 3"
                    else:
                        out = pg.rm_corr(u, "log10_size", "D", "seed").iloc[0]
                        r, (lo, hi), p = out["r"], out["CI95"], out["pval"]
                elif not varies:
                    note = "no recorded dose that varies"
                elif len(u) < 5:
                    note = "needs ≥ 5 units"
                else:
                    out = pg.partial_corr(u, "log10_size", "D", covar="log10_dose").iloc[0]
                    r, (lo, hi), p = out["r"], out["CI95"], out["p_val"]
                    note = f"controls for log10 {dose_col.replace('_', ' ')}"
            rows.append({**base, "method": method, "r": r, "ci_low": lo, "ci_high": hi, "p": p, "note": note})
    return pd.DataFrame(rows, columns=A.TARGET + ["n", "method", "r", "ci_low", "ci_high", "p", "note"])


SECONDARY = ["low_resource", "log10_size:low_resource", "log10_cc100", "script_match", "unseen"]


def secondary(deg: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Exploratory model of the language-level Δ after the non-English corpora:
    Δ ~ run + low-resource + log10 size × low-resource + log10 CC-100 + script match with the corpus
    language + unseen in pre-training, with a random intercept and a random slope of size per
    evaluation language (statsmodels MixedLM, languages as groups). The run enters as a fixed
    intercept: it removes everything a run shares across its languages, the size main effect
    included (a random run intercept crossed with languages took minutes to fit here). Point
    estimates and variance components only: no simulation checks this model's intervals, so the
    report quotes none, and it never drives the answer. The structure fitted (or its fallback) is in `note`."""
    langs = A.load_languages()
    d = A._intermediate(deg)
    d = d[~d["leak"] & (d["inter_lang"] != "en") & d[f"low_{definition}"].notna()]
    rows = []
    for key, g in d.groupby(A.TARGET, sort=True):
        g = g[g["inter_budget"] == arm(g)]
        g = g.assign(low_resource=g[f"low_{definition}"].astype(float),
                     log10_size=g["log10_size"] - g["log10_size"].mean(),
                     unseen=g["in_xlmr_pretraining"].eq(0).astype(float),
                     script_match=(g["eval_lang"].map(langs["script"]) == g["inter_lang"].map(langs["script"]))
                     .astype(float))
        cc = g["log10_cc100_GiB"]
        g["log10_cc100"] = cc.fillna(cc.min() if cc.notna().any() else 0)  # unseen: the `unseen` term carries it
        terms = [t for t in SECONDARY if ":" in t or g[t].nunique() > 1]
        fit, label = None, "not fitted"
        if g["intermediate_run"].nunique() < 3 or g["eval_lang"].nunique() < 3 or g["log10_size"].nunique() < 2:
            label = "not fitted: needs ≥ 3 runs, ≥ 3 languages and two sizes"
        else:
            fit, label = _fit_mixed(g.reset_index(drop=True), terms)
        for term in terms:
            rows.append({**dict(zip(A.TARGET, key)), "term": term,
                         "coef": fit.params.get(term, np.nan) if fit is not None else np.nan,
                         "n_rows": len(g), "n_runs": g["intermediate_run"].nunique(),
                         "n_languages": g["eval_lang"].nunique(), "note": label})
    return pd.DataFrame(rows, columns=A.TARGET + ["term", "coef", "n_rows", "n_runs", "n_languages", "note"])


def _fit_mixed(g: pd.DataFrame, terms: list[str]):
    """The full random structure, then a random intercept only, then OLS; (fit, what was fitted)."""
    import statsmodels.formula.api as smf

    formula = "delta ~ 0 + C(intermediate_run) + " + " + ".join(terms)
    for re, label in (("~log10_size", "MixedLM: language intercepts and size slopes, run fixed effects"),
                      ("~1", "fallback MixedLM: language intercepts only (no random slope), run fixed effects")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit = smf.mixedlm(formula, g, groups="eval_lang", re_formula=re).fit(reml=True, method="lbfgs")
            except (np.linalg.LinAlgError, ValueError):
                continue
        if fit.converged and np.all(np.isfinite(fit.fe_params)):
            var = np.diag(fit.cov_re.to_numpy())
            return fit, f"{label} (language variances {', '.join(f'{v:.2g}' for v in var)}; residual {fit.scale:.2g})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.ols(formula, g).fit()
    return fit, "fallback OLS with run fixed effects: no mixed model converged"


def analyse(deg: pd.DataFrame, grid: dict, training: pd.DataFrame | None = None, exploratory: bool = True) -> dict:
    """Every table of the report under the grid's low-resource definition and analysis block (the
    exploratory ones only with `exploratory`: the mixed model takes seconds per target)."""
    definition = (grid.get("low_resource") or {}).get("definition") or A.DEFAULT_DEFINITION
    config = grid.get("params", {}).get("analysis")
    seeds = grid.get("params", {}).get("seeds")
    runs = A.run_contrasts(deg, definition, training)
    table = primary(runs, config, definition, seeds=seeds)
    if (config or {}).get("sequential") and seeds and table["n_seeds"].notna().any():
        # seeds past the look the rule stopped at are not part of the study: nothing else uses them
        used = seeds[:int(table["n_seeds"].max())]
        deg, runs = deg[deg["seed"].isin(used)], runs[runs["seed"].isin(used)]
    out = {"definition": definition, "config": _primary_config(config), "rule": rule(config, len(table)),
           "runs": runs, "primary": table, "looks": look_path(runs, config, seeds), "leakage": A.leakage(deg)}
    if exploratory:
        out.update(correlations=correlations(runs), secondary=secondary(deg, definition),
                   sensitivity=sensitivity(deg, training, config, definition))
    return out


# ----------------------------------------------------------------------------- the plan


def plan_lines(grid, runs: dict, hours: float | None = None) -> str:
    """What `make plan` prints about the primary test: the estimand, one seed's units, the SD of one
    seed's slope (from the run SD measured on finished results of the same model and target when
    there are any, else the declared assumption), the minimum detectable slope of the rule as
    applied, with a warning when it exceeds the smallest effect of interest; for a sequential
    design, the maximum and the expected runs and `hours` (the grid's estimate) under no effect and
    under an effect equal to the smallest effect of interest, from simulating the rule."""
    cfg = grid.analysis.primary
    r = rule(grid.analysis.model_dump(), len(grid.targets))
    sig = runs["pretrained"][0].params.get("data", {})
    sizes = sig.get("corpus_sizes", {})
    rows, unknown = [], 0
    for run in runs["intermediate"]:
        p = run.params
        size = sizes.get(f"{p['task']}/{p['language']}") if p["size"] == "full" else p["size"]
        if size is None:
            unknown += 1
            continue
        rows.append({"intermediate_run": run.id, "inter_task": p["task"], "inter_lang": p["language"],
                     "inter_size": size, "log10_size": np.log10(size), "seed": p["seed"],
                     "inter_budget": "steps" if p["train"].get("max_steps") else "epochs"})
    table = pd.DataFrame(rows, columns=["intermediate_run", "inter_task", "inter_lang", "inter_size", "log10_size",
                                        "seed", "inter_budget"]).set_index("intermediate_run")
    how = (f"group-sequential: looks after {', '.join(map(str, r['looks']))} seeds, {r['kind']}-type alpha spending, "
           f"stop for an effect, for equivalence within ±{cfg.smallest_effect}"
           + (" or for futility" if r["futility"] else "") if r["sequential"]
           else f"one look at all seeds: an effect, or equivalence within ±{cfg.smallest_effect}")
    lines = [f"  primary estimand: per non-English intermediate run, D = mean Δ on low-resource "
             f"('{grid.low_resource}') − mean Δ on the other evaluation languages (corpus language and English left "
             "out), minus the same for the English corpus of the same content, size and seed where the grid has it; "
             "test: per seed, the slope of D on log10 size (points per tenfold size, averaged over corpora), then a "
             f"one-sample t across seeds, α = {cfg.alpha}"
             + (f" (Bonferroni over {len(grid.targets)} targets)" if len(grid.targets) > 1 else "") + f"; {how}"]
    if table.empty:
        return "\n".join(lines + ["  minimum detectable slope: no intermediate run of known size"])
    table["content"], table["aligned"] = zip(*table["inter_task"].map(A._content))
    table = table[table["inter_budget"] == arm(table)].reset_index()
    partner, control = A.pair(table)
    ids = table["intermediate_run"].to_numpy()
    non_en = table.assign(partner=np.where(partner >= 0, ids[np.maximum(partner, 0)], ""),
                          english_control=control, D=0.0, c=0.0, c_en=0.0, low=0.0)
    non_en = non_en[(non_en["inter_lang"] != "en") & (non_en["english_control"] != "missing for this size/seed")]
    u = A.units(non_en)
    one = u[u["seed"] == u["seed"].iloc[0]] if len(u) else u
    n_max = r["looks"][-1] if r["sequential"] else len(grid.seeds)
    measured = measured_run_sd(grid)
    notes = [f"{unknown} run(s) of size 'full' left out: corpus size unknown until the data is read"] if unknown else []
    lines.append(f"  design of the test: per seed {len(one)} unit(s) at sizes "
                 f"{', '.join(A.fmt_size(s) for s in sorted(one['inter_size'].unique())) or 'none'} "
                 f"({', '.join(sorted(non_en['english_control'].unique())) or 'no'} English control), "
                 f"{n_max} seeds at most" + (f"; {'; '.join(notes)}" if notes else ""))
    worst, cost = 0.0, []
    same: dict = {}  # targets with the same design and SD share one line
    for tc in grid.targets:
        sd, source = cfg.assumed_run_sd, "assumed: no finished results of this model and target"
        if tc.task in measured:
            sd, source = measured[tc.task][0], f"measured on {measured[tc.task][2]} (df {measured[tc.task][1]})"
        sd_seed = seq.seed_slope_sd(sd, one) if len(one) else np.nan
        m = design_mde(sd_seed, n_max, r) if n_max >= 2 else np.nan
        worst = max(worst, m) if np.isfinite(m) else np.inf
        same.setdefault((m, sd, sd_seed, source), []).append(tc.task)
        if r["sequential"] and np.isfinite(sd_seed):
            cost.append(seq.operating_characteristics(sd_seed, n_max, r["looks"], alpha=r["alpha"], bound=r["bound"],
                                                      kind=r["kind"], futility=r["futility"], power=r["power"],
                                                      effects=(0.0, None), n_sims=4000))
    for (m, sd, sd_seed, source), tasks in same.items():
        what = f"{m:.2f} points per decade" if np.isfinite(m) else "none: size does not vary within a seed, untestable"
        lines.append(f"  minimum detectable slope at {cfg.power * 100:.0f} % power, {', '.join(tasks)}: {what}; "
                     f"one seed's slope SD {sd_seed:.2f} from run SD {sd:.2f} {source}")
    if cost:
        lines.append(_cost_line(grid, runs, cost, n_max, hours))
    if worst > cfg.smallest_effect:
        lines.append(f"  warning: the minimum detectable slope exceeds the smallest effect of interest "
                     f"({cfg.smallest_effect} points per decade): this grid is underpowered for its primary test")
    return "\n".join(lines)


def _cost_line(grid, runs: dict, cost: list[pd.DataFrame], n_max: int, hours: float | None) -> str:
    """Maximum and expected runs (and hours) of a sequential design: the expected number of seeds is
    the largest over targets (the study stops when every target has decided)."""
    from xfer.config import select_seeds

    total = sum(len(v) for v in runs.values())
    fixed = sum(len(v) for v in select_seeds(runs, []).values())  # runs no seed owns (pretrained)
    per_seed = (total - fixed) / max(1, len(grid.seeds))
    parts = [f"  cost: at most {total} runs ({n_max} seeds)" + (f", {hours:.2f} h" if hours is not None else "")]
    for i, label in ((0, "no effect"), (1, f"an effect of {grid.analysis.primary.smallest_effect} per decade")):
        e_seeds = max(float(c["expected_seeds"].iloc[i]) for c in cost)
        e_runs = fixed + per_seed * e_seeds
        parts.append(f"expected under {label}: {e_runs:.0f} runs ({e_seeds:.1f} seeds"
                     + (f", {hours * e_runs / total:.2f} h" if hours is not None else "") + ")")
    return "; ".join(parts)


def measured_run_sd(grid) -> dict:
    """Per target task: the run SD measured on finished results of the same model (any results folder
    under report/ whose grid.json has this model), pooled over folders, with its df and where from."""
    from xfer.paths import root

    model = grid.model.model_dump(mode="json")
    folders = {grid.report_path(), *(p.parent for p in (root() / "report").glob("*/grid.json"))}
    found: dict[str, list] = {}
    for folder in sorted(folders):
        if not (folder / "results.csv").exists() or not (folder / "grid.json").exists():
            continue
        try:
            results, info = A.load_results(folder)
            if info.get("params", {}).get("model") != model:
                continue
            runs = A.run_contrasts(A.degradation(results), grid.low_resource, A.load_training(folder))
        except Exception:  # noqa: BLE001 - an unreadable old folder measures nothing
            continue
        for (task, _), t in runs.groupby(A.TARGET):
            t = t[(t["inter_budget"] == arm(t)) & (t["inter_lang"] != "en")]
            sd, df = run_sd(A.units(t))
            if np.isfinite(sd) and df >= 1:
                found.setdefault(task, []).append((sd, df, Path(folder).name))
    out = {}
    for task, items in found.items():
        df = sum(i[1] for i in items)
        sd = float(np.sqrt(sum(i[0] ** 2 * i[1] for i in items) / df))
        if df >= 3:
            out[task] = (sd, df, ", ".join(f"report/{i[2]}" for i in items))
    return out
