"""The error rates of every interval and p-value the answer quotes, by simulation on grids with the
real structure: runs shared by all evaluation languages, few seeds, English control runs shared by
several non-English corpora, the evaluation languages of UD-POS / PAN-X and the low-resource flags of
xfer/languages.csv. Each simulated grid is one target of one results table, so the whole batch goes
through the report's own code (degradation → run contrasts → primary test) at once.

The null: no size effect at all; a run effect (SD 1 point) shared by every evaluation language of a
run, 1 point of noise per language and run, a baseline per seed and language, and a low-resource
shift per run (SD 0.5) that does not depend on size. Planted effects then check what the answer may
say: direction, the English control, resource specificity, leakage, dose, and power at the MDE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xfer import analysis, answer, sequential, stats
from xfer.tasks import get_task

N_SIMS = 200
DEMO = dict(corpora=(("xnli_derived", "en"), ("xnli_derived", "de"), ("xnli_derived", "ru"),
                     ("xnli_derived", "hi"), ("xnli_derived", "sw")),
            sizes=(300, 600, 1250, 2500, 5010), seeds=(1, 2, 3))
CPU = dict(corpora=(("panx", "en"), ("panx", "sw")), sizes=(50, 150, 500), seeds=(1, 2))


def simulate(langs, n_sims=N_SIMS, corpora=DEMO["corpora"], sizes=DEMO["sizes"], seeds=DEMO["seeds"], rng=0,
             lang_slope_sd=0.0, mean_delta=-1.0, slope_low_nonen=0.0, slope_low_en=0.0, slope_all_nonen=0.0,
             leak_slope=0.0, steps_slope=0.0, budget="steps", noise=1.0, small_size_noise=1.0, seed_slope_sd=0.0,
             corpus_slope_sd=0.0):
    """`n_sims` grids as one results table (target `t000`, `t001`, …) and its training record.

    Δ of run r (corpus language L, log10 size x, centred) in language j = mean_delta + u_r + v_r·low_j
    + b_j·x + e_rj + planted, u ~ N(0, 1), v ~ N(0, 0.5), e ~ N(0, 1), b_j ~ N(0, lang_slope_sd) (a
    language's own size trend, the same after every corpus). Planted: slope_low_nonen·x on low-resource
    languages after non-English corpora (the question's effect), slope_low_en the same after English,
    slope_all_nonen on every language after non-English corpora, leak_slope only where j == L, and
    steps_slope·log10(steps) on low-resource languages after non-English corpora (budget "epochs":
    steps ∝ size). The sequential design's conditions (tests/test_sequential.py), off by default:
    `noise` scales u, v and e; `small_size_noise` scales them again at the smallest size (units at one
    extreme size noisier); `seed_slope_sd`: a slope per seed (mean 0) on low-resource languages after
    non-English corpora; `corpus_slope_sd`: a size trend per language and non-English corpus language
    (b_{j,L}), centred within the low-resource and within the other languages each corpus is scored on,
    so that the slope of D on these languages stays 0 (the null is conditional on them)."""
    g = np.random.default_rng(rng)
    langs = np.array(langs)
    low = analysis.low_resource(analysis.load_languages(), "joshi_le2").reindex(langs).fillna(False).to_numpy(bool)
    x = np.log10(np.array(sizes, float))
    xc = x - x.mean()
    runs = [("none", "none", 0, 0.0)] + [(t, lang, n, xi) for t, lang in corpora for n, xi in zip(sizes, xc)]
    S, K, R, J = n_sims, len(seeds), len(runs), len(langs)
    task = np.array([r[0] for r in runs])
    ilang = np.array([r[1] for r in runs])
    size = np.array([r[2] for r in runs])
    rx = np.array([r[3] for r in runs])
    inter = size > 0
    non_en = inter & (ilang != "en")
    steps = np.where(budget == "epochs", np.maximum(1, size // 16), 250)
    planted = (slope_low_nonen * rx[:, None] * (non_en[:, None] & low[None, :])
               + slope_low_en * rx[:, None] * ((inter & (ilang == "en"))[:, None] & low[None, :])
               + slope_all_nonen * rx[:, None] * non_en[:, None]
               + leak_slope * rx[:, None] * (inter[:, None] & (ilang[:, None] == langs[None, :]))
               + steps_slope * np.log10(steps)[:, None] * (non_en[:, None] & low[None, :]))
    base = 60 + 20 * (~low) + g.normal(0, 1, (S, K, 1, J))
    b = g.normal(0, lang_slope_sd, (S, 1, 1, J)) * rx[None, None, :, None]
    u, v, e = g.normal(0, 1, (S, K, R, 1)), g.normal(0, 0.5, (S, K, R, 1)), g.normal(0, 1, (S, K, R, J))
    scale = noise * np.where(size == min(sizes), small_size_noise, 1.0)[:, None]
    extra = np.random.default_rng([rng, 1])  # its own stream: the default draws stay as they were
    seed_slope = extra.normal(0, seed_slope_sd, (S, K, 1, 1)) * (rx * non_en)[:, None] * low
    used = (langs[None, :] != ilang[:, None]) & (langs[None, :] != "en")  # the languages each corpus is scored on
    bL = extra.normal(0, corpus_slope_sd, (S, 1, R, J))
    for group in (low, ~low):  # equal low-resource and other-language means: no slope of D on these languages
        w = used & group[None, :]
        bL -= np.where(w, (bL * w).sum(-1, keepdims=True) / np.maximum(w.sum(-1), 1)[:, None], 0)
    bL *= (rx * non_en)[:, None]
    effect = mean_delta + scale * (u + v * low + e) + b + planted + seed_slope + bL
    score = base + inter[None, None, :, None] * effect
    s, k, r, j = (a.ravel() for a in np.indices((S, K, R, J)))
    seed = np.array(seeds)[k]
    s1, k1, r1 = (a.ravel() for a in np.indices((S, K, R)))  # names once per run, then taken per row
    run_name = np.char.add(np.char.add(np.char.add(task[r1], "-"), ilang[r1]),
                           np.char.add("-", size[r1].astype(str)))
    targets = np.char.add("t", np.char.zfill(np.arange(S).astype(str), 3))
    run_id = np.where(inter[r1], np.char.add(np.char.add(targets[s1], "-"),
                                             np.char.add(run_name, np.char.add("-s", np.array(seeds)[k1].astype(str)))),
                      "")
    q = np.arange(S * K * R * J) // J  # the run of each row

    def take(values, index):  # pandas' own strings from a few distinct values: converting per row is slow
        return pd.Series(values).array[index]

    target = take(targets, s)
    results = pd.DataFrame({
        "grid": "sim", "eval_run": take(np.char.add(run_id, "-eval"), q), "target_run": "",
        "intermediate_run": take(run_id, q), "seed": seed, "inter_task": take(task, r), "inter_lang": take(ilang, r),
        "inter_size": size[r], "target_task": target, "target_lang": "en", "train_task": target,
        "eval_task": target, "eval_lang": take(langs, j), "split": "test", "metric": "f1", "score": score.ravel(),
        "n_examples": 100, "inter_budget": budget})
    runs_only = results.loc[inter[r], ["intermediate_run", "inter_size"]].drop_duplicates("intermediate_run")
    training = pd.DataFrame({"steps": np.where(budget == "epochs", np.maximum(1, runs_only["inter_size"] // 16), 250)},
                            index=pd.Index(runs_only["intermediate_run"], name="run_id"))
    training["tokens_seen"] = (training["steps"] * 16 * 30 * np.exp(g.normal(0, 0.1, len(training)))).round()
    return results, training


def analyse(results, training=None, alpha=0.05, bound=0.5):
    """Every simulated grid through the report's own functions at once: run contrasts and units for
    all grids, then the primary test's core (`sequential.seed_slopes`, `sequential.decide` at one look
    over every seed, `stats.t_interval`) with the grids on a leading axis: they share one design, so
    one set of units describes them all. `test_fast_path_is_the_report_path` checks this against
    `stats.primary`; tests/test_sequential.py checks the sequential looks."""
    runs = analysis.run_contrasts(analysis.degradation(results), "joshi_le2", training)
    non_en = runs[runs["inter_lang"] != "en"]
    u = analysis.units(non_en).sort_values(["target_task", "seed", "corpus", "log10_size"], kind="stable")
    S = u["target_task"].nunique()
    design = u[u["target_task"] == u["target_task"].iloc[0]]
    shape = (S, len(design))
    for col in ("seed", "log10_size", "corpus"):  # every grid has the same units in the same order
        assert (u[col].to_numpy().reshape(shape) == design[col].to_numpy()[None]).all()
    slope = {p: sequential.seed_slopes(design, y=u[p].fillna(0).to_numpy().reshape(shape))[1]
             for p in ("D", "c", "c_en", "low")}
    k = slope["D"].shape[1]
    out = sequential.decide(slope["D"], k, [k], alpha=alpha, bound=bound, futility=False)
    for p in ("c", "c_en", "low"):
        out[f"slope_{p}"] = slope[p].mean(1)
    out["seed_slopes"] = slope["D"]
    seeds = non_en.groupby(["target_task", "seed"])["low"].mean().unstack().to_numpy()
    out["mean_low"], out["mean_low_ci_low"], out["mean_low_ci_high"] = stats.t_interval(seeds, alpha)
    out["effect"] = out["decision"] == "effect"  # one target per grid: α is not split
    out["equivalent"] = out["decision"] == "equivalent"
    return runs, design, out


@pytest.fixture(scope="module")
def udpos_langs(data):
    return get_task("udpos").languages("test")


@pytest.fixture(scope="module")
def panx_langs(data):
    return get_task("panx").languages("dev")


def _rate(flags) -> float:
    return float(np.mean(np.asarray(flags, bool)))


def _check_null(out, truth_mean=-1.0):
    assert np.isfinite(out["p"]).all()
    assert 0.02 <= _rate(out["p"] < 0.05) <= 0.08, _rate(out["p"] < 0.05)
    assert _rate((out["rci_low"] <= 0) & (0 <= out["rci_high"])) >= 0.92
    assert _rate(out["effect"]) <= 0.08  # the answer's claim
    if truth_mean is not None:  # mean Δ on the low-resource languages, t-interval over seeds
        cover = (out["mean_low_ci_low"] <= truth_mean) & (truth_mean <= out["mean_low_ci_high"])
        assert _rate(cover) >= 0.92, _rate(cover)


def test_null_demo_design_udpos_is_calibrated(udpos_langs):
    """English + 4 non-English corpora, 5 sizes, 3 seeds, evaluated in UD-POS's languages."""
    results, training = simulate(udpos_langs, rng=1)
    runs, design, out = analyse(results, training)
    assert len(design) == 15 and design["subtracted"].all() and (design["n_runs"] == 4).all()
    assert (out["df"] == 2).all()  # three seeds
    _check_null(out)
    # the exploratory run-level correlations the report prints: also calibrated
    corr = stats.correlations(runs)
    for method, g in corr.groupby("method"):
        assert g["p"].notna().all(), method
        assert 0.02 <= _rate(g["p"] < 0.05) <= 0.08, (method, _rate(g["p"] < 0.05))
        assert _rate((g["ci_low"] <= 0) & (0 <= g["ci_high"])) >= 0.92, method


def test_fast_path_is_the_report_path(udpos_langs):
    """`stats.primary`, as the report calls it, gives the numbers the simulations use."""
    results, training = simulate(udpos_langs, rng=1, n_sims=3)
    runs, _, out = analyse(results, training)
    table = pd.concat([stats.primary(g, {"primary": {}}, "joshi_le2")  # one grid each: α is not split
                       for _, g in runs.groupby("target_task")], ignore_index=True)
    for col, fast in (("estimate", "estimate"), ("rci_low", "rci_low"), ("rci_high", "rci_high"), ("p", "p"),
                      ("eq_low", "eq_low"), ("slope_c", "slope_c"), ("slope_c_en", "slope_c_en"),
                      ("slope_low", "slope_low"), ("mean_low_ci_low", "mean_low_ci_low")):
        np.testing.assert_allclose(table[col], out[fast], err_msg=col)
    assert (table["decision"].to_numpy() == out["decision"]).all()
    assert (table["status"] == "tested").all() and (table["n_units"] == 15).all() and (table["n_runs"] == 60).all()


def test_null_with_random_language_slopes_panx_is_calibrated(panx_langs):
    """Each language has its own size trend (SD 1 point per decade), the same after every corpus: the
    English control, on the same languages, cancels it."""
    results, training = simulate(panx_langs, rng=2, lang_slope_sd=1.0)
    _check_null(analyse(results, training)[2], truth_mean=None)


def test_null_cpu_design_is_calibrated(udpos_langs):
    """cpu.yaml's shape: PAN-X sw and en at 50/150/500, 2 seeds (one slope per seed, df 1)."""
    results, training = simulate(udpos_langs, rng=3, **CPU)
    _, design, out = analyse(results, training)
    assert len(design) == 6 and (out["df"] == 1).all()
    _check_null(out)


def test_equivalence_is_claimed_at_most_alpha_at_the_bound(udpos_langs):
    """True slope exactly at the smallest effect of interest: equivalence may not be claimed more than α."""
    results, training = simulate(udpos_langs, rng=4, slope_low_nonen=0.5)
    out = analyse(results, training, bound=0.5)[2]
    assert _rate(out["equivalent"]) <= 0.08
    assert _rate((out["rci_low"] <= 0.5) & (0.5 <= out["rci_high"])) >= 0.92


def test_power_at_the_mde_is_the_declared_power(udpos_langs):
    """Plant a slope equal to the MDE that `stats.design_mde` computes for the demo design (from the SD
    of one seed's slope measured on null grids) and find it about 80 % of the time."""
    null, training = simulate(udpos_langs, rng=5, n_sims=100)
    out = analyse(null, training)[2]
    sd = float(np.sqrt(np.mean(np.var(out["seed_slopes"], axis=1, ddof=1))))
    rule = stats.rule({"primary": {}}, 1)
    mde = stats.design_mde(sd, 3, rule)
    assert 0.2 < mde < 10
    results, training = simulate(udpos_langs, rng=6, n_sims=300, slope_low_nonen=-mde)
    out = analyse(results, training)[2]
    assert 0.7 <= _rate(out["effect"]) <= 0.9, _rate(out["effect"])


def test_one_look_mde_is_the_noncentral_t():
    """With one look the rule is a t-test across seeds: its simulated MDE is the noncentral-t one."""
    from scipy import optimize
    from scipy import stats as sps

    n, sd = 6, 1.0
    q = sps.t.ppf(0.975, n - 1)
    exact = optimize.brentq(lambda d: sps.nct.sf(q, n - 1, d / (sd / np.sqrt(n))) - 0.8, 0, 10)
    assert stats.design_mde(sd, n, stats.rule({"primary": {}}, 1)) == pytest.approx(exact, rel=0.05)


# ----------------------------------------------------------------------------- planted effects and the words


def _one_answer(results, training, sim="t000"):
    deg = analysis.degradation(results[results["target_task"] == sim])
    res = stats.analyse(deg, {"low_resource": {"definition": "joshi_le2"}}, training, exploratory=False)
    return res, answer.answer(res, {"model": {"stand_in": True, "name": "mE5"}})


def test_direction_positive_delta_falling_with_size_is_not_degradation(udpos_langs):
    """Δ stays positive at the largest size while D falls with size: smaller gains, never 'lose more'."""
    results, training = simulate(udpos_langs, rng=7, n_sims=20, mean_delta=5.0, slope_low_nonen=-3.0)
    out = analyse(results, training)[2]
    assert _rate(out["effect"]) > 0.8 and (out["mean_low"] > 0).all()
    res, text = _one_answer(results, training, f"t{np.flatnonzero(out['effect'])[0]:03d}")
    row = res["primary"].iloc[0]
    assert row["effect"] and row["low_delta_largest"] > 0 and not answer.parts_agree(row)
    assert "lose relative to the other languages" not in text and "its parts do not make it a story" in text
    assert f"the low-resource languages' Δ was {row['low_delta_largest']:+.2f} points" in text


def test_english_control_equal_slopes_make_no_language_specific_claim(udpos_langs):
    """The same size trend on low-resource languages after the English and the non-English corpora:
    more training, not the language, and the verdict must not claim an effect."""
    results, training = simulate(udpos_langs, rng=8, n_sims=N_SIMS, slope_low_nonen=-2.0, slope_low_en=-2.0)
    out = analyse(results, training)[2]
    assert _rate(out["effect"]) <= 0.08
    assert out["slope_c"].mean() == pytest.approx(-2, abs=0.2)
    assert out["slope_c_en"].mean() == pytest.approx(-2, abs=0.2)
    res, text = _one_answer(results, training, f"t{np.flatnonzero(~out['effect'])[0]:03d}")
    assert "the larger the non-English intermediate corpus" not in text


def test_equal_slopes_for_low_and_high_resource_make_no_low_resource_claim(udpos_langs):
    results, training = simulate(udpos_langs, rng=9, n_sims=N_SIMS, slope_all_nonen=-2.0)
    out = analyse(results, training)[2]
    assert _rate(out["effect"]) <= 0.08
    assert _rate(np.abs(out["slope_c"]) < 1) > 0.9  # the contrast removes what all languages share


def test_leakage_leaves_the_estimate_unchanged(udpos_langs):
    """A size-dependent gain only where the evaluation language is the corpus language."""
    clean, training = simulate(udpos_langs, rng=10, n_sims=20)
    leaky, _ = simulate(udpos_langs, rng=10, n_sims=20, leak_slope=10.0)
    a, b = analyse(clean, training)[2], analyse(leaky, training)[2]
    np.testing.assert_allclose(a["estimate"], b["estimate"])
    np.testing.assert_allclose(a["rci_high"], b["rci_high"])
    leak = analysis.leakage(analysis.degradation(leaky[leaky["target_task"] == "t000"]))
    assert set(leak["why"]) == {"corpus language", "English"} and {"ru", "hi", "en"} <= set(leak["eval_lang"])


def test_dose_driven_delta_is_flagged(udpos_langs):
    """An epochs budget: steps grow with size, and Δ follows the steps only. The answer must say that
    size and dose are confounded; with fixed steps it must not."""
    results, training = simulate(udpos_langs, rng=11, n_sims=1, budget="epochs", steps_slope=-2.0, slope_all_nonen=0)
    res, text = _one_answer(results, training)
    assert res["primary"]["dose_confounded"].iloc[0] == "steps"  # tokens follow steps here, reported not judged
    assert "size and dose are confounded" in text
    results, training = simulate(udpos_langs, rng=11, n_sims=1)
    res, text = _one_answer(results, training)
    assert res["primary"]["dose_confounded"].iloc[0] == "" and "confounded" not in text
    assert "steps 250 in every run" in text
