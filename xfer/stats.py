"""The statistics of the report: one pre-registered primary test per target, at the level of runs.

The primary test (the grid's `analysis.primary` block fixes its settings before anything runs):
the OLS slope of the run-level contrast D (xfer.analysis.run_contrasts) on log10 corpus size, with
an intercept per seed and per corpus, in score points per tenfold size; its t-interval, a permutation
of the size labels within seed × corpus that confirms it, Holm across targets, an equivalence test
(TOST) against ±`smallest_effect`, and the minimum detectable slope (MDE) of the design.

Everything else here is exploratory and labelled so: run-level correlations (pingouin), a mixed model
on the language-level Δ, sensitivity to the low-resource definition. tests/test_calibration.py checks
the error rate of every interval and p-value the report prints by simulation on grids of the real
structure; `slope_test` and `permutation_p` take a leading axis of simulated datasets for that."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import optimize
from scipy import stats as sps

from xfer import analysis as A



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
    log10 size with seed and corpus intercepts. Returns arrays: slope, se, df, ci_low/ci_high (1 − α),
    p (two-sided t), p_tost (both one-sided tests against ±bound; equivalence when < α)."""
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


def permutation_p(units: pd.DataFrame, y: np.ndarray | None = None, n_perm: int = 2000, seed: int = 0) -> np.ndarray:
    """Two-sided permutation p of the slope: size labels shuffled within each seed × corpus cell
    (so seed and corpus intercepts stay fitted), p = (1 + #|slope*| ≥ |slope|) / (1 + n_perm).
    NaN where no cell holds two sizes."""
    x, Z, cells = _design(units)
    y = np.atleast_2d(units["D"].to_numpy(float) if y is None else y)
    if not any(np.ptp(x[cells == c]) > 0 for c in np.unique(cells)):
        return np.full(len(y), np.nan)
    rng = np.random.default_rng(seed)
    idx = np.tile(np.arange(len(x)), (n_perm, 1))
    for c in np.unique(cells):
        members = np.flatnonzero(cells == c)
        idx[:, members] = members[rng.permuted(np.tile(np.arange(len(members)), (n_perm, 1)), axis=1)]
    fitted = Z @ np.linalg.lstsq(Z, x, rcond=None)[0]  # within-cell shuffles leave it unchanged
    yr = y - np.linalg.lstsq(Z, y.T, rcond=None)[0].T @ Z.T
    obs = np.abs(yr @ (x - fitted))
    perm = np.abs(yr @ (x[idx] - fitted).T)
    return (1 + (perm >= obs[:, None] - 1e-9).sum(1)) / (1 + n_perm)


def mde(units: pd.DataFrame, sd: float, alpha: float = 0.05, power: float = 0.8) -> tuple[float, float, int]:
    """Minimum detectable slope (points per decade) of the two-sided test at `alpha` with `power`,
    from the noncentral t, when one run's contrast has SD `sd` (a unit's variance is sd² ×
    var_factor). Returns (mde, se, df); NaN where the design has no testable slope."""
    if len(units) < 3:
        return np.nan, np.nan, 0
    x, Z, _ = _design(units)
    X = np.column_stack([x, Z])
    df = len(x) - np.linalg.matrix_rank(X)
    xr = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    if df < 1 or xr @ xr < 1e-12:
        return np.nan, np.nan, df
    a = xr / (xr @ xr)  # the slope is a @ y
    se = sd * np.sqrt((a ** 2 * units["var_factor"].to_numpy(float)).sum())
    q = sps.t.ppf(1 - alpha / 2, df)

    def short(delta):
        lower = np.nan_to_num(sps.nct.cdf(-q, df, delta))  # the far tail: scipy gives NaN for ≈ 0
        return np.nan_to_num(sps.nct.sf(q, df, delta), nan=1.0) + lower - power

    hi = q + 2.0
    while not short(hi) > 0:  # bracket the root; nct is slow to reach power at df 1–2
        hi *= 2
        if hi > 1e5:
            return np.nan, float(se), int(df)
    delta = optimize.brentq(short, 0, hi)
    return float(delta * se), float(se), int(df)


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
    dose varies by more than 10 % and |ρ| > 0.5: then size and dose cannot be told apart."""
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
        if varies and abs(rho) > 0.5:
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


def primary(runs: pd.DataFrame, config: dict | None = None, definition: str = "", budget: str | None = None
            ) -> pd.DataFrame:
    """The primary test, one row per target: design (runs, units, corpora, English control, languages),
    the slope of D with its CI, t and permutation p, Holm across targets, TOST, the MDE (from the run
    SD measured here when the residual df ≥ 3, else the declared assumption), the mean Δ on the
    low-resource languages with a t-interval over seeds (its sign gives the direction), and the slopes
    of the two parts of D (non-English contrast, English contrast; point estimates). `budget` picks
    another arm than the pre-registered one (fixed steps), for the exploratory tables."""
    cfg = _primary_config(config)
    alpha, bound = cfg["alpha"], cfg["smallest_effect"]
    runs, arms = _in_arm(runs, budget)
    non_en_all = runs[runs["inter_lang"] != "en"]
    by_target = dict(list(non_en_all.groupby(A.TARGET, sort=False)))
    all_units = dict(list(A.units(non_en_all).groupby(A.TARGET, sort=False)))
    rows = []
    for key, t in runs.groupby(A.TARGET, sort=True):
        non_en = by_target.get(key, t.iloc[:0])
        u = all_units.get(key, pd.DataFrame(columns=["seed", "corpus", "log10_size", "inter_size", "D", "c", "c_en",
                                                     "var_factor"]))
        row = {**dict(zip(A.TARGET, key)), "budget": arms[key] or "one arm",
               "n_runs": int(non_en["D"].notna().sum()), "n_units": len(u),
               "corpora": ", ".join(sorted((non_en["inter_task"] + " " + non_en["inter_lang"]).unique())),
               "english_control": ", ".join(sorted(non_en["english_control"].unique())),
               "n_low": int(non_en["n_low"].max()) if len(non_en) else 0,
               "low_languages": _common(non_en["low_languages"].unique()),
               "n_other": int(non_en["n_other"].max()) if len(non_en) else 0,
               "sizes": ", ".join(A.fmt_size(s) for s in sorted(u["inter_size"].unique())),
               "n_seeds": u["seed"].nunique(), "definition": definition}
        left_out = int(non_en["D"].isna().sum())
        row["note"] = f"{left_out} run(s) without their English control left out" if left_out else ""
        res = slope_test(u, alpha=alpha, bound=bound)
        row.update({k: float(np.ravel(v)[0]) if np.ndim(v) else v for k, v in res.items()})
        if not np.isfinite(row["slope"]):
            why = ("no non-English run with a usable D" if not len(u) else
                   "size does not vary within a seed and corpus" if u.groupby(["seed", "corpus"])["log10_size"]
                   .nunique().max() < 2 else f"too few units ({len(u)}) for the intercepts and a slope")
            row.update(status="untestable", why=why)
        else:
            parts = slope_test(u, y=np.vstack([u["c"].to_numpy(float), u["c_en"].fillna(0).to_numpy(float)]))
            row.update(status="tested", why="", p_perm=float(permutation_p(u, n_perm=cfg["permutations"])[0]),
                       slope_nonen=parts["slope"][0], slope_en=parts["slope"][1])
        # the run SD behind the MDE: measured on these results where the residual df allows
        sd, source = cfg["assumed_run_sd"], "assumed: analysis.primary.assumed_run_sd"
        measured = run_sd(u)
        if np.isfinite(measured[0]) and measured[1] >= 3:
            sd, source = measured[0], f"measured on these results (df {measured[1]})"
        row.update(mde=mde(u, sd, alpha, cfg["power"])[0], run_sd=sd, run_sd_source=source,
                   measured_run_sd=measured[0])
        seeds = non_en.groupby("seed")["low"].mean()
        row["mean_low_delta"], row["mean_low_ci_low"], row["mean_low_ci_high"] = t_interval(seeds, alpha)
        d = dose(t)
        row.update(dose=d["text"] or "not recorded", dose_confounded=", ".join(d["confounded"]))
        rows.append(row)
    cols = A.TARGET + ["status", "why", "budget", "n_runs", "n_units", "corpora", "english_control", "n_low",
                       "low_languages", "n_other", "sizes", "n_seeds", "slope", "se", "df", "ci_low", "ci_high", "p",
                       "p_holm", "p_perm", "p_tost", "mde", "run_sd", "run_sd_source", "measured_run_sd",
                       "slope_nonen", "slope_en", "mean_low_delta", "mean_low_ci_low", "mean_low_ci_high", "dose",
                       "dose_confounded", "definition", "note"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["p_holm"] = holm(out["p"])
    out["effect"] = (out["p_holm"] < alpha) & (out["p_perm"] < alpha)
    out["equivalent"] = out["p_tost"] < alpha
    out["underpowered"] = out["mde"] > bound
    return out


def _primary_config(config: dict | None) -> dict:
    from xfer.config import PrimaryConfig

    return PrimaryConfig(**((config or {}).get("primary") or {})).model_dump()


def _common(lists: pd.Series) -> str:
    """The low-resource languages every run used (a run leaves out its own language)."""
    sets = [set(str(s).split(", ")) - {""} for s in lists]
    return ", ".join(sorted(set.union(*sets))) if sets else ""


def run_sd(u: pd.DataFrame) -> tuple[float, int]:
    """The SD of one run's contrast, from the residuals of the primary model (a unit's variance is
    sd² × var_factor), and its residual df."""
    res = slope_test(u)
    df = int(res["df"])
    if df < 1 or not np.isfinite(res["se"][0]):
        return np.nan, max(df, 0)
    x, Z, _ = _design(u)
    xr = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    s2 = res["se"][0] ** 2 * (xr @ xr)
    return float(np.sqrt(s2 / u["var_factor"].mean())), df


def holm(p: pd.Series) -> np.ndarray:
    """Holm-adjusted p-values (`pg.multicomp`) over the finite ones."""
    p = np.asarray(p, float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = pg.multicomp(p[ok], method="holm")[1]
    return out


# ----------------------------------------------------------------------------- exploratory


def sensitivity(deg: pd.DataFrame, training: pd.DataFrame | None, config: dict | None,
                definition: str = A.DEFAULT_DEFINITION) -> pd.DataFrame:
    """The primary slope under every low-resource definition, and in every other budget arm (a
    fixed-epochs arm beside fixed steps) under the grid's definition: exploratory, only the grid's
    definition in the fixed-steps arm is the pre-registered test."""
    tables = [primary(A.run_contrasts(deg, d, training), config, d) for d in A.DEFINITIONS]
    runs = A.run_contrasts(deg, definition, training)
    for other in sorted(set(runs["inter_budget"]) - {arm(runs)}):
        tables.append(primary(runs, config, definition, budget=other))
    cols = (["definition", "budget"] + A.TARGET
            + ["status", "n_low", "slope", "ci_low", "ci_high", "p", "dose_confounded", "why"])
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
    runs = A.run_contrasts(deg, definition, training)
    out = {"definition": definition, "config": _primary_config(config), "runs": runs,
           "primary": primary(runs, config, definition), "leakage": A.leakage(deg)}
    if exploratory:
        out.update(correlations=correlations(runs), secondary=secondary(deg, definition),
                   sensitivity=sensitivity(deg, training, config, definition))
    return out


# ----------------------------------------------------------------------------- the plan


def plan_lines(grid, runs: dict) -> str:
    """What `make plan` prints about the primary test: the estimand, the design's independent units,
    and the minimum detectable slope at the declared power (run SD measured on finished results of
    the same model and target when there are any, else the declared assumption), with a warning when
    it exceeds the smallest effect of interest."""
    cfg = grid.analysis.primary
    sig = runs["pretrained"][0].params.get("data", {})
    sizes = sig.get("corpus_sizes", {})
    rows, unknown = [], 0
    for r in runs["intermediate"]:
        p = r.params
        size = sizes.get(f"{p['task']}/{p['language']}") if p["size"] == "full" else p["size"]
        if size is None:
            unknown += 1
            continue
        rows.append({"intermediate_run": r.id, "inter_task": p["task"], "inter_lang": p["language"],
                     "inter_size": size, "log10_size": np.log10(size), "seed": p["seed"],
                     "inter_budget": "steps" if p["train"].get("max_steps") else "epochs"})
    table = pd.DataFrame(rows, columns=["intermediate_run", "inter_task", "inter_lang", "inter_size", "log10_size",
                                        "seed", "inter_budget"]).set_index("intermediate_run")
    lines = [f"  primary estimand: per non-English intermediate run, D = mean Δ on low-resource "
             f"('{grid.low_resource}') − mean Δ on the other evaluation languages (corpus language and English left out), minus the same "
             "for the English corpus of the same content, size and seed where the grid has it; test: OLS slope of "
             f"D on log10 size with seed and corpus intercepts, points per tenfold size, α = {cfg.alpha} "
             f"(Holm over {len(grid.targets)} target(s)), permutation within seed, TOST ±{cfg.smallest_effect}"]
    if table.empty:
        return "\n".join(lines + ["  minimum detectable slope: no intermediate run of known size"])
    table["content"], table["aligned"] = zip(*table["inter_task"].map(A._content))
    table = table[table["inter_budget"] == arm(table)].reset_index()
    partner, control = A.pair(table)
    ids = table["intermediate_run"].to_numpy()
    non_en = table.assign(partner=np.where(partner >= 0, ids[np.maximum(partner, 0)], ""),
                          english_control=control, D=0.0, c=0.0, c_en=0.0)
    non_en = non_en[(non_en["inter_lang"] != "en") & (non_en["english_control"] != "missing for this size/seed")]
    u = A.units(non_en)
    measured = measured_run_sd(grid)
    notes = [f"{unknown} run(s) of size 'full' left out: corpus size unknown until the data is read"] if unknown else []
    out, worst = [], 0.0
    for tc in grid.targets:
        sd, source = cfg.assumed_run_sd, "assumed: no finished results of this model and target"
        if tc.task in measured:
            sd, source = measured[tc.task][0], f"measured on {measured[tc.task][2]} (df {measured[tc.task][1]})"
        m, _, df = mde(u, sd, cfg.alpha, cfg.power)
        worst = max(worst, m) if np.isfinite(m) else np.inf
        out.append((tc.task, m, df, sd, source))
    lines.append(f"  design of the test: {table['inter_lang'].ne('en').sum()} non-English runs in {len(u)} "
                 f"independent units ({', '.join(sorted(non_en['english_control'].unique())) or 'no'} "
                 "English control)"
                 + (f"; {'; '.join(notes)}" if notes else ""))
    same: dict = {}  # targets with the same design and run SD share one line
    for task, *rest in out:
        same.setdefault(tuple(rest), []).append(task)
    for (m, df, sd, source), tasks in same.items():
        what = f"{m:.2f} points per decade (df {df})" if np.isfinite(m) else "none: size does not vary, untestable"
        lines.append(f"  minimum detectable slope at {cfg.power * 100:.0f} % power, {', '.join(tasks)}: {what}; "
                     f"run SD {sd:.2f} {source}")
    if worst > cfg.smallest_effect:
        lines.append(f"  warning: the minimum detectable slope exceeds the smallest effect of interest "
                     f"({cfg.smallest_effect} points per decade): this grid is underpowered for its primary test")
    return "\n".join(lines)


def measured_run_sd(grid) -> dict:
    """Per target task: the run SD measured on finished results of the same model (any results folder
    under report/ whose grid.json has this model), pooled over folders, with its df and where from."""
    from xfer.paths import read_json, root

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
