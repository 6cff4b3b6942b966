"""The group-sequential primary test: the seed is the unit of replication, and seeds are added in
looks until the test decides.

Why the seed: the sizes of one seed are nested subsets of one draw and share its training noise, so
the units of one seed are not independent, their variance can differ by size, and each seed can have
its own slope. Reducing each seed to one number (the slope of D across its sizes) and testing across
seeds (a one-sample t, df = seeds − 1) holds under all three: the per-seed slopes are independent
and identically distributed whatever happens within a seed. It is also what a sequential design adds
one look at a time.

Why sequential: how many seeds a study needs depends on the run SD, which is known only after some
runs. Looks at declared seed counts (e.g. 3, 6, 9, 12) with Lan–DeMets alpha spending stop as soon
as the answer is clear: an effect, equivalence within ±`bound` (the smallest effect of interest), or
futility (neither can be reached). Every boundary is recomputed from the spending function at the
information actually reached, so a missing seed or an unplanned look keeps the error rates.

The boundaries come from the canonical joint normal of the look statistics (`boundaries`, equal to
R rpact's getDesignGroupSequential to 6 decimals, tests/test_sequential.py); `decide` applies them
to t statistics with few degrees of freedom through the nominal p of each boundary. That conversion
keeps the overall false-effect rate near α without adjustment: 5.1–5.5 % (OBF) and 5.4–5.8 % (Pocock)
for 2–6 looks of 2–12 seeds without futility stops (100,000 normal studies each), about 4–5 % with
them; tests/test_sequential.py checks the rates through the report's own path. Everything takes a
leading axis of simulated studies so that thousands of them take well under a second."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

KINDS = ("obf", "pocock")
FUTILITY_POWER = 0.10  # conditional power under the current estimate below which an interim look may stop
_GRID_STEP = 0.02  # z spacing of the numerical integration (Simpson): boundaries exact to ~1e-6
_LOWER = -10.0  # where the one-sided continuation region is cut off (P(Z < -10) ~ 1e-23)


# ----------------------------------------------------------------------------- per-seed slopes


def seed_slopes(units: pd.DataFrame, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, slopes): per seed, the OLS slope of D (or of y, an array (n_sims, n_units) aligned with
    `units` rows) on log10_size within each corpus that has >= 2 sizes in that seed, averaged over
    the corpora that every seed has, so that each seed estimates the same quantity (a corpus missing in
    some seed is left out of every seed). Seeds without any usable corpus do not shrink that set; they
    get NaN, as does every seed when no corpus is common. slopes has shape (n_sims, n_seeds), n_sims = 1
    when y is None."""
    y = np.atleast_2d(units["D"].to_numpy(float) if y is None else np.asarray(y, float))
    seed = units["seed"].to_numpy()
    corpus = units["corpus"].to_numpy(str)
    x = units["log10_size"].to_numpy(float)
    seeds = np.unique(seed)
    usable = {}  # (seed, corpus) → the rows of that cell, where they hold two sizes or more
    for key, rows in pd.Series(np.arange(len(units))).groupby([seed, corpus]).groups.items():
        rows = np.asarray(rows)
        if np.ptp(x[rows]) > 0:
            usable[key] = rows
    per_seed = {s: {c for (s2, c) in usable if s2 == s} for s in seeds}
    with_any = [per_seed[s] for s in seeds if per_seed[s]]
    common = sorted(set.intersection(*with_any)) if with_any else []
    W = np.zeros((len(units), len(seeds)))  # slopes = y @ W: each column averages its corpora's OLS weights
    for j, s in enumerate(seeds):
        for c in common if per_seed[s] else []:
            rows = usable[(s, c)]
            xc = x[rows] - x[rows].mean()
            W[rows, j] += xc / (xc @ xc) / len(common)
    slopes = y @ W
    slopes[:, [not common or not per_seed[s] for s in seeds]] = np.nan
    return seeds, slopes


def seed_slope_sd(run_sd: float, units_of_one_seed: pd.DataFrame) -> float:
    """SD of one seed's slope implied by a run-level SD of D (a unit's variance is run_sd² × var_factor)
    for one seed's design (its units: corpus, log10_size, var_factor), assuming independent units. For
    planning only: the test itself uses the SD of the observed per-seed slopes."""
    u = units_of_one_seed.assign(seed=0)
    _, one = seed_slopes(u, np.eye(len(u)))  # column i: the weight of unit i in the seed's slope
    w = one[:, 0]
    return float(run_sd * np.sqrt((w ** 2 * u["var_factor"].to_numpy(float)).sum()))


# ----------------------------------------------------------------------------- boundaries


def spending(t, alpha: float, kind: str = "obf") -> np.ndarray:
    """Lan–DeMets cumulative alpha spent at information fraction(s) t in (0, 1], for a one-sided
    level α: 'obf' (O'Brien–Fleming type, 2 − 2Φ(z_{1−α/2}/√t): almost nothing early, so the last look
    keeps nearly the fixed-design level) or 'pocock' (α·ln(1 + (e − 1)t): about even spending, so
    early stops are likelier and the last look is stricter). A two-sided test spends this at α/2 on
    each side (rpact's convention), so its total at t = 1 is α."""
    _check_kind(kind)
    t = np.clip(np.asarray(t, float), 0, 1)
    if kind == "obf":
        with np.errstate(divide="ignore"):
            return np.where(t > 0, 2 - 2 * sps.norm.cdf(sps.norm.isf(alpha / 2) / np.sqrt(t)), 0.0)
    return alpha * np.log1p((np.e - 1) * t)


def boundaries(info: Sequence[float], alpha: float = 0.05, kind: str = "obf", sided: int = 2) -> np.ndarray:
    """z critical values at the looks with cumulative information fractions `info` (increasing, last
    <= 1) such that, under H0 (canonical joint normal of the look statistics, corr √(t_i/t_j)), the
    probability of first crossing at look k is the alpha spent between looks k−1 and k. Two-sided
    symmetric (|Z| >= c, α/2 spent per side) or one-sided (Z >= c). A look that adds no information
    spends nothing (c = inf)."""
    if sided not in (1, 2):
        raise ValueError(f"sided: {sided!r}; allowed: 1, 2")
    info = np.asarray(info, float)
    if info.ndim != 1 or not len(info) or info[0] <= 0 or info[-1] > 1 + 1e-12 or (np.diff(info) < 0).any():
        raise ValueError(f"info: {info.tolist()}; allowed: increasing fractions in (0, 1]")
    side = alpha / 2 if sided == 2 else alpha
    return _crossing_values(tuple(info), tuple(sided * spending(info, side, kind)), sided)


@lru_cache(maxsize=4096)
def _crossing_values(info: tuple, spent: tuple, sided: int) -> np.ndarray:
    """The boundaries for cumulative information `info` and cumulative alpha `spent` (both sides
    together), by the Armitage–McPherson–Rowe recursion: the sub-density of Z_k on the continuation
    region is carried from look to look on a Simpson grid, and each boundary solves one equation."""
    c = np.full(len(info), np.inf)
    z = w = h = None  # grid, Simpson weights and sub-density of the previous look's Z
    t_prev = 0.0
    for k, (t, a) in enumerate(zip(info, spent)):
        target = a - (spent[k - 1] if k else 0.0)
        if t - t_prev <= 1e-12 or target <= 1e-15:
            continue  # nothing to spend, or no new information: this look cannot reject
        sd = np.sqrt(t - t_prev)

        def crossing(ck):  # P(continued so far, then crossing at this look)
            if h is None:
                return sided * sps.norm.sf(ck)
            m = z * np.sqrt(t_prev)
            p = sps.norm.sf((ck * np.sqrt(t) - m) / sd)
            if sided == 2:
                p = p + sps.norm.cdf((-ck * np.sqrt(t) - m) / sd)
            return float(w @ (h * p))

        c[k] = optimize.brentq(lambda ck: crossing(ck) - target, 0.0, 40.0, xtol=1e-10)
        lo = -c[k] if sided == 2 else _LOWER
        n = 2 * int(np.ceil((c[k] - lo) / _GRID_STEP / 2)) + 1
        z_new = np.linspace(lo, c[k], n)
        w_new = np.full(n, 2.0)
        w_new[1::2] = 4.0
        w_new[[0, -1]] = 1.0
        w_new *= (z_new[1] - z_new[0]) / 3
        if h is None:
            h_new = sps.norm.pdf(z_new)
        else:
            dens = sps.norm.pdf((z_new[:, None] * np.sqrt(t) - z[None, :] * np.sqrt(t_prev)) / sd) * np.sqrt(t) / sd
            h_new = dens @ (w * h)
        z, w, h, t_prev = z_new, w_new, h_new, t
    return c


# ----------------------------------------------------------------------------- the decision rule


def decide(slopes: np.ndarray, n_max: int, looks: Sequence[int], alpha: float = 0.05, bound: float = 0.5,
           kind: str = "obf", futility: bool = True, power: float = 0.8) -> dict:
    """Apply the sequential rule to per-seed slopes (shape (n_sims, n_seeds_available), seeds in run
    order; NaN = missing) at each look in `looks` (seed counts, increasing, last == n_max) that the
    available seeds reach, stopping at the first decision.

    At a look with n finite slopes: estimate = their mean, se = SD/√n, t = estimate/se with df = n − 1,
    information = n / n_max (the SE of a mean of iid slopes scales as 1/√n, so a missing seed lowers
    the information it brings). The z boundaries of the looks taken are recomputed at the information
    reached (the last look spends all of α); with few seeds the statistic is a t, so each boundary is
    turned into its nominal two-sided p, 2·(1 − Φ(c_k)), and the t-test rejects below it.
    - effect: p < boundary_p (two-sided α spent by `kind`); repeated CI estimate ± t_df(1 − p_k/2)·se.
    - equivalent: the repeated (1 − 2q_k) CI inside (−bound, +bound), q_k the nominal level of a
      one-sided design of level α: each one-sided test spends α over the looks, so equivalence is
      claimed at most α of the time when the true slope is ±bound.
    - futile (interim looks only, with `futility`; non-binding: it only stops, never rejects, so it
      cannot raise the false-effect rate): the conditional power to show an effect by n_max under the
      current estimate is below 10 % AND the equivalence CI at n_max with the current SD would be wider
      than ±bound even around a zero estimate: neither answer is within reach.
    - inconclusive: the last look without a decision; continue: not decided, looks remain.

    Returns arrays over sims: look (index into `looks` where it stopped, or last look reached),
    n_seeds, decision, estimate, se, df, t, p, boundary_p (and boundary_t, the |t| it means at this df),
    rci_low/rci_high, eq_low/eq_high, info, and
    n_needed: the seeds at which the final look's t-test would have `power` against a slope of ±bound
    with the current SD (what a futile or inconclusive study would take)."""
    _check_kind(kind)
    for name, value in (("alpha", alpha), ("power", power)):
        if not 0 < value < 1:
            raise ValueError(f"{name}: {value}; allowed: a probability strictly between 0 and 1")
    if not bound > 0:
        raise ValueError(f"bound: {bound}; allowed: a positive slope (the smallest effect of interest)")
    looks = [int(n) for n in looks]
    if not looks or looks[-1] != n_max or any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < 2:
        raise ValueError(f"looks: {looks}; allowed: increasing seed counts >= 2 ending at n_max = {n_max}")
    slopes = np.atleast_2d(np.asarray(slopes, float))
    S, avail = slopes.shape
    reached = [n for n in looks if n <= avail]
    if not reached:
        raise ValueError(f"slopes: {avail} seeds; the first look needs {looks[0]}")
    K = len(reached)

    n, est, sd, se, df, t, p = _look_statistics(slopes, reached)
    info = n / n_max
    final = np.array(reached) == n_max

    # the boundaries at the information reached: one computation per distinct information path
    c_eff, c_eq = np.full((S, K), np.inf), np.full((S, K), np.inf)
    for path in np.unique(info, axis=0):
        rows = (info == path).all(1)
        c_eff[rows], c_eq[rows] = _path_boundaries(path, final, n_max, alpha, kind)
    p_k = 2 * sps.norm.sf(c_eff)
    q_k = sps.norm.sf(c_eq)
    ok = (n >= 2) & (se > 0)
    with np.errstate(invalid="ignore"):
        half = np.where(ok, sps.t.isf(np.maximum(p_k / 2, 1e-300), np.maximum(df, 1)) * se, np.inf)
        half_eq = np.where(ok, sps.t.isf(np.maximum(q_k, 1e-300), np.maximum(df, 1)) * se, np.inf)
    effect = ok & (p < p_k)
    equivalent = ok & ~effect & (est - half_eq > -bound) & (est + half_eq < bound)
    planned = _planned(n_max, tuple(looks), alpha, kind)
    futile = np.zeros_like(effect)
    if futility:
        futile = ok & ~effect & ~equivalent & ~final[None, :] & _out_of_reach(t, sd, info, n_max, bound, planned)
    decision = np.full((S, K), "continue", dtype=object)
    decision[:, final] = "inconclusive"
    decision[futile] = "futile"
    decision[equivalent] = "equivalent"
    decision[effect] = "effect"

    # the first look that decided, else the last look reached
    stopped = decision != "continue"
    k = np.where(stopped.any(1), stopped.argmax(1), K - 1)
    r = np.arange(S)
    pick = {name: v[r, k] for name, v in dict(n=n, est=est, se=se, df=df, t=t, p=p, p_k=p_k, half=half,
                                                  half_eq=half_eq, info=info, sd=sd).items()}
    return {"look": k, "n_seeds": pick["n"], "decision": decision[r, k].astype(str), "estimate": pick["est"],
            "se": pick["se"], "df": pick["df"], "t": pick["t"], "p": pick["p"], "boundary_p": pick["p_k"],
            "boundary_t": pick["half"] / pick["se"],
            "rci_low": pick["est"] - pick["half"], "rci_high": pick["est"] + pick["half"],
            "eq_low": pick["est"] - pick["half_eq"], "eq_high": pick["est"] + pick["half_eq"], "info": pick["info"],
            "n_needed": _n_needed(pick["sd"], bound, planned["p"], power)}


def _look_statistics(slopes: np.ndarray, reached: list[int]) -> tuple[np.ndarray, ...]:
    """n, mean, SD, se, df, t and two-sided p of the finite slopes among the first m seeds, for each
    look m reached: arrays (n_sims, looks); NaN where fewer than 2 seeds."""
    n = np.stack([np.isfinite(slopes[:, :m]).sum(1) for m in reached], 1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean / nanstd of columns without 2 seeds
        est = np.stack([np.nanmean(slopes[:, :m], 1) for m in reached], 1)
        sd = np.stack([np.nanstd(slopes[:, :m], 1, ddof=1) for m in reached], 1)
        se = sd / np.sqrt(n)
        t = est / se
        p = 2 * sps.t.sf(np.abs(t), np.maximum(n - 1, 1))
    return n, est, sd, se, n - 1, t, p


def _out_of_reach(t, sd, info, n_max: int, bound: float, planned: dict) -> np.ndarray:
    """The futility condition: conditional power under the current estimate (B-value projection to the
    final look's boundary) below FUTILITY_POWER, and the equivalence CI at n_max with the current SD
    wider than ±bound even around a zero estimate."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(t) / np.sqrt(info)  # the final-information z if the current estimate is the truth
        rest = np.sqrt(1 - np.minimum(info, 1 - 1e-12))
        cp = sps.norm.cdf((z - planned["c"]) / rest) + sps.norm.cdf((-z - planned["c"]) / rest)
        reach = sps.t.isf(planned["q"], n_max - 1) * sd / np.sqrt(n_max)
    return (cp < FUTILITY_POWER) & (reach > bound)


def _path_boundaries(info: np.ndarray, final: np.ndarray, n_max: int, alpha: float, kind: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided effect and one-sided equivalence boundaries for one information path. A look with
    fewer than 2 seeds spends nothing (c = inf); a look that adds no seed spends nothing either and
    keeps the previous boundary (same data, same boundary: it repeats the previous look's "continue"
    and its repeated CI). The design's last look spends all of α."""
    c_eff, c_eq = np.full(len(info), np.inf), np.full(len(info), np.inf)
    new = (info >= 2 / n_max - 1e-12) & (np.diff(np.concatenate([[0.0], info])) > 1e-12)
    if not new.any():
        return c_eff, c_eq
    t = info[new]
    carry = np.maximum.accumulate(np.where(new, np.arange(len(info)), -1))  # the last look with new seeds
    for c, level, sided in ((c_eff, alpha / 2, 2), (c_eq, alpha, 1)):
        spent = spending(t, level, kind)
        if final[new][-1]:
            spent[-1] = level
        c[new] = _crossing_values(tuple(t), tuple(sided * spent), sided)
        c[carry >= 0] = c[carry[carry >= 0]]
    return c_eff, c_eq


@lru_cache(maxsize=256)
def _planned(n_max: int, looks: tuple, alpha: float, kind: str) -> dict:
    """The design's final-look boundaries at the planned information: what futility and n_needed
    project to (two-sided effect c and nominal p, one-sided equivalence level q)."""
    info = np.array(looks, float) / n_max
    c = boundaries(info, alpha, kind, 2)[-1]
    return {"c": c, "p": 2 * sps.norm.sf(c), "q": sps.norm.sf(boundaries(info, alpha, kind, 1)[-1])}


def _n_needed(sd: np.ndarray, bound: float, p_final: float, power: float) -> np.ndarray:
    """Seeds n with (t_{n−1}(1 − p/2) + t_{n−1}(power))·sd/√n <= bound, by fixed-point iteration from the
    normal approximation: the size a study of this SD would need to find a slope of ±bound."""
    sd = np.asarray(sd, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = ((sps.norm.isf(p_final / 2) + sps.norm.ppf(power)) * sd / bound) ** 2
        for _ in range(4):  # t quantiles once per distinct df: thousands of studies share a few
            df, where = np.unique(np.clip(np.nan_to_num(np.ceil(n), nan=2.0), 2, 1e6) - 1, return_inverse=True)
            n = ((sps.t.isf(p_final / 2, df) + sps.t.ppf(power, df))[where.reshape(n.shape)] * sd / bound) ** 2
    return np.where(np.isfinite(sd), np.ceil(np.maximum(n, 2)), np.nan)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r}; allowed: {', '.join(KINDS)}")


# ----------------------------------------------------------------------------- planning


def operating_characteristics(sd: float, n_max: int, looks, alpha=0.05, bound=0.5, kind="obf", futility=True,
                              power=0.8, effects=(0.0, None), n_sims=4000, rng=0) -> pd.DataFrame:
    """By simulation of per-seed slopes ~ N(effect, sd²) (sd = SD of one seed's slope), for each
    effect (None means `bound`, the smallest effect of interest): P(effect), P(equivalent), P(futile),
    P(inconclusive), the expected number of seeds, and the share of studies stopping at each look
    (columns `stop_at_<n>`). The same draws serve every effect, so differences between rows are not
    Monte-Carlo noise."""
    noise = np.random.default_rng(rng).normal(0.0, sd, (n_sims, n_max))
    rows = []
    for effect in effects:
        effect = bound if effect is None else float(effect)
        out = decide(effect + noise, n_max, looks, alpha, bound, kind, futility, power)
        row = {"effect": effect, **{f"P({d})": float(np.mean(out["decision"] == d))
                                    for d in ("effect", "equivalent", "futile", "inconclusive")},
               "expected_seeds": float(np.mean(np.array(looks)[out["look"]])), "max_seeds": n_max}
        row.update({f"stop_at_{n}": float(np.mean(out["look"] == i)) for i, n in enumerate(looks)})
        rows.append(row)
    return pd.DataFrame(rows)


def design_effect(sd: float, n_max: int, looks, alpha=0.05, bound=0.5, kind="obf", futility=True, power=0.8,
                  n_sims=4000, rng=0) -> float:
    """The slope the whole rule (looks, spending, equivalence and futility stops) finds with
    probability `power`, when one seed's slope has SD `sd`: found by bisection on simulated studies
    with common random numbers, so it is the power of the rule as used, not of a fixed-design formula."""
    noise = np.random.default_rng(rng).normal(0.0, sd, (n_sims, n_max))

    def short(effect):
        found = decide(effect + noise, n_max, looks, alpha, bound, kind, futility)["decision"] == "effect"
        return np.mean(found) - power

    hi = 4 * sd
    while short(hi) < 0:
        hi *= 2
        if hi > 1e4 * sd:
            raise ValueError(f"power: {power}; the rule does not reach it at any effect with these looks")
    return float(optimize.brentq(short, 0.0, hi, xtol=sd * 1e-3))
