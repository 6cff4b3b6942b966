"""The analysis on data whose answer is known, and the arithmetic on tables small enough to check by
hand. `make_results` / `write_results` are also the report test's stand-in for a grid run; the error
rates of the tests are in test_calibration.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from xfer import analysis, answer, stats

LANGS = ("en", "fr", "fi", "mr", "te", "wo", "yo")  # joshi_le2 low-resource: mr te wo yo


def make_results(seed=0, seeds=(1, 2, 3), sizes=(1_000, 10_000, 100_000), inter_langs=("sw",),
                 eval_langs=LANGS, slope_low=-2.0, slope_high=0.0, noise=1.0, run_sd=1.0, definition="joshi_le2",
                 inter_tasks=None, mean=0.0):
    """A results table in the grid runner's format with a planted effect: for low-resource
    languages Δ = mean + slope_low · (log10(size) − 3) + run effect + noise, for the others slope_high;
    the run effect (SD `run_sd`) is shared by every evaluation language of a run, as in a real grid.
    `slope_low` and `slope_high` may be dicts per intermediate language; `inter_tasks` names each one's task."""
    rng = np.random.default_rng(seed)
    low = analysis.low_resource(analysis.load_languages(), definition).fillna(False)
    rows = []
    for s in seeds:
        base = {lang: (92.0 if lang == "en" else 55.0 if low[lang] else 78.0) + rng.normal(0, 1.0)
                for lang in eval_langs}
        runs = [("none", "none", 0)] + [((inter_tasks or {}).get(il, "panx"), il, n) for il in inter_langs
                                        for n in sizes]
        for task, il, n in runs:
            inter = "" if n == 0 else f"inter-{il}-{n}-s{s}"
            shared = rng.normal(0, run_sd)
            for lang in eval_langs:
                planted = slope_low if low[lang] else slope_high
                slope = planted.get(il, 0.0) if isinstance(planted, dict) else planted
                score = base[lang] + (0.0 if n == 0 else mean + slope * (np.log10(n) - 3) + shared
                                      + rng.normal(0, noise))
                rows.append({"grid": "synthetic", "eval_run": f"eval-{il}-{n}-s{s}",
                             "target_run": f"target-{il}-{n}-s{s}",
                             "intermediate_run": inter, "seed": s, "inter_task": task, "inter_lang": il,
                             "inter_size": n, "target_task": "udpos", "target_lang": "en", "train_task": "udpos",
                             "eval_task": "udpos", "eval_lang": lang, "split": "test", "metric": "accuracy",
                             "score": float(np.clip(score, 0, 100)), "n_examples": 500})
    return pd.DataFrame(rows)


def write_results(path, results=None, **grid_overrides):
    """A results folder (results.csv + grid.json) as the grid runner writes it."""
    results = make_results() if results is None else results
    path.mkdir(parents=True, exist_ok=True)
    results.to_csv(path / "results.csv", index=False)
    grid = {
        "name": "synthetic",
        "params": {"name": "synthetic", "seeds": sorted(results["seed"].unique().tolist()),
                   "low_resource": "joshi_le2",
                   "model": {"source": "scratch", "name": "tiny-bert", "trim_vocab": False},
                   "intermediate": {"task": "panx", "languages": ["sw"], "sizes": [0, 1000, 10000, 100000],
                                    "train": {"lr": 1e-4, "epochs": 1.0}},
                   "target": {"task": "udpos", "language": "en", "train": {"lr": 1e-4, "epochs": 1.0}},
                   "evaluate": {"languages": list(LANGS), "split": "test"}},
        "model": {"source": "scratch", "name": "tiny-bert", "description": "2-layer BERT trained from scratch",
                  "stand_in": True, "from_scratch": True, "approximations": ["2 layers of hidden size 64"]},
        "low_resource": {"definition": "joshi_le2"},
        "analysis": {"low_resource": "joshi_le2", "analysis": {"primary": {}}, "hash": "0"},
        "runs": {"intermediate": 9, "target": 12, "evaluate": 12},
        "failures": [],
        "provenance": {"git_commit": "0123abc", "packages": {"pandas": pd.__version__, "numpy": np.__version__},
                       "device": "cpu (2 cores)", "data_checksums": {"udpos/test-yo.tsv": "ab" * 32},
                       "created": "2026-11-20T12:00:00+00:00"},
    }
    grid.update(grid_overrides)
    (path / "grid.json").write_text(json.dumps(grid, indent=2))
    return path


def _one(table, **where):
    for k, v in where.items():
        table = table[table[k] == v]
    assert len(table) == 1, table
    return table.iloc[0]


def _analyse(results, grid=None, **kw):
    deg = analysis.degradation(results)
    return stats.analyse(deg, grid or {"low_resource": {"definition": "joshi_le2"}}, **kw)


GRID = {"model": {"from_scratch": True}, "params": {"intermediate": {"train": {"epochs": 1.0}}}}


def test_planted_language_specific_slope_is_found_and_worded():
    """sw hurts the low-resource languages more at larger sizes, en does not: D falls 2 points per decade."""
    seeds = (1, 2, 3, 4, 5, 6)
    res = _analyse(make_results(inter_langs=("sw", "en"), slope_low={"sw": -2.0, "en": 0.0}, mean=-1.0, seeds=seeds))
    row = _one(res["primary"])
    assert row["status"] == "tested" and row["english_control"] == "subtracted"
    assert row["n_runs"] == 18 and row["n_units"] == 18 and row["n_seeds"] == 6 and row["df"] == 6 - 1  # seeds
    assert row["rci_low"] < -2 < row["rci_high"] < 0 and row["effect"]
    assert row["low_languages"] == "mr, te, wo, yo" and row["n_other"] == 2  # fr, fi (en and sw left out)
    text = answer.answer(res, GRID)
    assert f"slope {row['estimate']:+.2f} points of D per tenfold size (95 % repeated CI {row['rci_low']:+.2f}" in text
    assert "the more the low-resource languages lose relative to the other languages" in text
    assert "beyond what the English corpus" in text
    assert "demonstrate the pipeline" in text and "size and dose are confounded" in text  # an epochs budget
    assert answer.bottom_line(res).count("\n") == 2


@pytest.mark.parametrize("case", ["english control gained", "other languages gained"])
def test_an_effect_is_worded_from_its_parts(case):
    """A negative slope of D that is not the low-resource languages losing more after the non-English
    corpus (the English control's low-resource languages gained with size, or the other languages
    gained after the non-English corpus) is described part by part, never as more loss."""
    planted = ({"slope_low": {"sw": 0.0, "en": 2.0}} if case == "english control gained"
               else {"slope_low": 0.0, "slope_high": {"sw": 2.0, "en": 0.0}})
    res = _analyse(make_results(inter_langs=("sw", "en"), seeds=(1, 2, 3, 4, 5, 6), noise=0.2, run_sd=0.2, **planted))
    row = _one(res["primary"])
    assert row["effect"] and row["estimate"] < -1.5 and not answer.parts_agree(row)
    text = answer.answer(res, GRID)
    assert "lose relative to the other languages" not in text and "more loss" not in text
    assert "its parts do not make it a story about the low-resource languages alone" in text
    if case == "english control gained":
        assert abs(row["slope_c"]) < 0.5 and row["slope_c_en"] > 1.5 and "after the English corpus" in text
    else:
        assert abs(row["slope_low"]) < 0.5 and "the other languages' by +2" in text


def test_no_english_control_is_mentioned_where_the_grid_has_none():
    res = _analyse(make_results(inter_langs=("sw",), seeds=(1, 2, 3, 4)))
    assert "English corpus of the same content" not in answer.bottom_line(res, GRID)
    assert "after the English corpus" not in answer.answer(res, GRID)


def test_run_contrast_by_hand_leaves_out_the_corpus_language_and_english():
    rows = []  # (run, inter_lang, size, eval_lang, delta)
    for lang, d_sw, d_en in (("en", 9.0, 9.0), ("sw", 50.0, 1.0), ("yo", -4.0, -1.0), ("wo", -2.0, 1.0),
                             ("fr", 1.0, 0.0), ("fi", 3.0, 2.0)):
        for il, d in (("sw", d_sw), ("en", d_en)):
            rows.append((il, lang, d))
    results = pd.DataFrame([{
        "grid": "hand", "eval_run": f"e-{il}", "target_run": f"t-{il}", "intermediate_run": f"i-{il}", "seed": 1,
        "inter_task": "panx", "inter_lang": il, "inter_size": 100, "target_task": "udpos", "target_lang": "en",
        "train_task": "udpos", "eval_task": "udpos", "eval_lang": lang, "split": "test", "metric": "f1",
        "score": 50 + d, "n_examples": 10} for il, lang, d in rows] + [{
        "grid": "hand", "eval_run": "e-0", "target_run": "t-0", "intermediate_run": "", "seed": 1,
        "inter_task": "none", "inter_lang": "none", "inter_size": 0, "target_task": "udpos", "target_lang": "en",
        "train_task": "udpos", "eval_task": "udpos", "eval_lang": lang, "split": "test", "metric": "f1",
        "score": 50.0, "n_examples": 10} for lang in ("en", "sw", "yo", "wo", "fr", "fi")])
    runs = analysis.run_contrasts(analysis.degradation(results), "joshi_le2").set_index("inter_lang")
    # sw run: low = mean(yo, wo) = -3, other = mean(fr, fi) = 2 (sw itself and en left out): c = -5
    assert runs.loc["sw", ["low", "c", "n_low", "n_other"]].tolist() == [-3.0, -5.0, 2, 2]
    # its English control on the same languages: low 0, other 1, c_en = -1; D = -5 - -1 = -4
    assert runs.loc["sw", ["c_en", "D"]].tolist() == [-1.0, -4.0]
    assert runs.loc["sw", "english_control"] == "subtracted" and runs.loc["sw", "partner"] == "i-en"
    # the English run's own contrast keeps sw (joshi class 2: low-resource): low = mean(1, -1, 1) = 1/3
    assert runs.loc["en", "low"] == pytest.approx(1 / 3) and np.isnan(runs.loc["en", "D"])
    leak = analysis.leakage(analysis.degradation(results))
    assert sorted(zip(leak["inter_lang"], leak["eval_lang"], leak["why"])) == [
        ("en", "en", "English"), ("sw", "en", "English"), ("sw", "sw", "corpus language")]


def test_runs_sharing_an_english_control_are_one_unit():
    res = _analyse(make_results(inter_langs=("sw", "yo", "en"), sizes=(1000, 10000), seeds=(1, 2)))
    u = analysis.units(res["runs"][res["runs"]["inter_lang"] != "en"])
    assert len(u) == 4 and (u["n_runs"] == 2).all() and (u["var_factor"] == 1.5).all()
    assert set(u["languages"]) == {"sw, yo"}
    row = _one(res["primary"])
    assert row["n_runs"] == 8 and row["n_units"] == 4 and row["n_seeds"] == 2 and row["df"] == 2 - 1


def test_without_english_control_each_run_is_a_unit_and_the_answer_says_so():
    res = _analyse(make_results(inter_langs=("sw",)))
    row = _one(res["primary"])
    assert row["english_control"] == "none in the grid" and row["n_units"] == 9
    assert "not corrected for what more training" in answer.answer(res)


def test_untestable_when_size_does_not_vary():
    res = _analyse(make_results(inter_langs=("sw", "en"), sizes=(1000,)))
    row = _one(res["primary"])
    assert row["status"] == "untestable" and "size does not vary" in row["why"] and np.isnan(row["estimate"])
    assert "untestable (size does not vary" in answer.answer(res)
    assert "untestable" in answer.bottom_line(res)


def test_equivalence_is_claimed_only_when_its_interval_is_inside_the_bounds():
    """Tiny noise, no effect: the equivalence interval lies inside ±0.5 and the answer may say "no
    difference larger than"; with large noise it may not, and the answer gives the MDE."""
    res = _analyse(make_results(inter_langs=("sw", "en"), slope_low=0.0, noise=0.05, run_sd=0.05))
    row = _one(res["primary"])
    assert row["equivalent"] and not row["effect"] and -0.5 < row["eq_low"] < row["eq_high"] < 0.5
    assert "made no difference larger than ±0.5 points per tenfold size" in answer.answer(res)
    res = _analyse(make_results(inter_langs=("sw", "en"), slope_low=0.0, noise=3.0))
    row = _one(res["primary"])
    assert not row["equivalent"] and row["decision"] == "inconclusive" and row["underpowered"]
    text = answer.answer(res)
    assert "no difference larger" not in text and f"detects {row['mde']:.2f} points per decade" in text
    assert "underpowered" in text and "cannot tell whether corpus size matters" in text


def test_targets_are_matched_on_their_training_task_and_share_alpha():
    """Two targets evaluated on the same task but trained on different corpora: separate baselines,
    separate primary tests, α split between them (Bonferroni)."""
    a = make_results(inter_langs=("sw", "en"), seed=1)
    b = make_results(inter_langs=("sw", "en"), seed=2, slope_low=0.0).assign(train_task="udpos_other")
    b["score"] += 10  # a different baseline: matching on train_task keeps Δ as planted
    res = _analyse(pd.concat([a, b]))
    table = res["primary"].set_index("train_task")
    assert list(table.index) == ["udpos", "udpos_other"]
    assert np.allclose(table["alpha"], 0.025) and np.allclose(table["boundary_p"], 0.025)
    assert abs(res["runs"]["low"]).max() < 20


def test_small_grid_gives_nan_with_notes_not_errors():
    results = make_results(seeds=(1, 2), sizes=(100, 1000, 10_000), eval_langs=("en", "yo"))
    results.loc[results.index[7], "score"] = np.nan
    res = _analyse(results)
    row = _one(res["primary"])
    assert row["status"] == "untestable" and "no non-English run with a usable D" in row["why"]  # no 'other' language
    assert (res["correlations"]["r"].isna()).all() and res["secondary"]["coef"].isna().all()
    assert isinstance(answer.answer(res), str) and "untestable" in answer.bottom_line(res)
    deg0 = analysis.degradation(results[results["inter_size"] == 0])
    res0 = _analyse(results[results["inter_size"] == 0])
    assert "cannot answer" in answer.answer(res0) and "cannot answer" in answer.bottom_line(res0)
    from xfer import figures

    for fig in (figures.plot_degradation(deg0, "both"), figures.plot_heatmap(deg0, "both"),
                figures.plot_gap(deg0, "both"), figures.plot_primary(res0), figures.plot_dose(res0),
                figures.plot_primary(res), figures.plot_dose(res)):
        assert fig.axes or fig.texts


def test_secondary_model_finds_the_interaction_and_names_its_structure():
    res = _analyse(make_results(inter_langs=("sw",), slope_low=-2.0, eval_langs=LANGS + ("hi", "ur", "sw")))
    inter = _one(res["secondary"], term="log10_size:low_resource")
    assert inter["coef"] == pytest.approx(-2, abs=0.6) and "MixedLM" in inter["note"]
    assert "ci_low" not in res["secondary"]  # no interval that no simulation checks


def test_plan_prints_the_estimand_and_the_mde(data):
    from xfer.grid.plan import plan
    from xfer.paths import root

    # a model no finished report in this checkout used, so the run SD is the assumed one, not measured
    planned = plan(root() / "params" / "cpu.yaml", ["model.num_layers=3"])
    grid, runs = planned.grid, planned.runs
    text = stats.plan_lines(grid, runs)
    assert "primary estimand" in text and "per seed, the slope of D" in text and "equivalence within ±0.5" in text
    mde = float(text.split("minimum detectable slope at 80 % power, udpos: ")[1].split()[0])
    assert 0.5 < mde < 1000 and "run SD 1.00" in text and "warning: the minimum detectable slope exceeds" in text
    planned = plan(root() / "params" / "cpu.yaml", ["seeds=[1,2,3,4,5,6,7,8,9,10]",
                                                    "intermediate.sizes=[0,10,30,100,300,1000]",
                                                    "analysis.primary.smallest_effect=5"])
    text = stats.plan_lines(planned.grid, planned.runs)
    assert "warning" not in text


def test_degradation_arithmetic_by_hand():
    rows = [  # seed, inter_size, eval_lang, score
        (1, 0, "en", 90.0), (1, 0, "yo", 50.0), (1, 1000, "en", 91.0), (1, 1000, "yo", 45.0),
        (2, 0, "en", 80.0), (2, 0, "yo", 40.0), (2, 1000, "en", 80.0), (2, 1000, "yo", 44.0),
    ]
    results = pd.DataFrame([{
        "grid": "hand", "eval_run": f"e{size}-{seed}", "target_run": f"t{size}-{seed}",
        "intermediate_run": "" if size == 0 else f"i{seed}", "seed": seed,
        "inter_task": "none" if size == 0 else "panx", "inter_lang": "none" if size == 0 else "sw",
        "inter_size": size, "target_task": "udpos", "target_lang": "en", "eval_task": "udpos", "eval_lang": lang,
        "split": "test", "metric": "accuracy", "score": score, "n_examples": 10} for seed, size, lang, score in rows])
    deg = analysis.degradation(results).set_index(["seed", "inter_size", "eval_lang"])
    assert deg.loc[(1, 1000, "yo"), ["baseline", "delta", "gap_en"]].tolist() == [50.0, -5.0, -46.0]
    assert deg.loc[(1, 1000, "yo"), "delta_rel"] == pytest.approx(-0.1)
    assert deg.loc[(1, 1000, "en"), ["baseline", "delta", "gap_en"]].tolist() == [90.0, 1.0, 0.0]
    assert deg.loc[(2, 1000, "yo"), ["baseline", "delta", "gap_en"]].tolist() == [40.0, 4.0, -36.0]
    assert deg.loc[(2, 0, "yo"), ["delta", "gap_en"]].tolist() == [0.0, -40.0]
    assert deg["is_baseline"].sum() == 4 and deg.loc[(2, 1000, "yo"), "log10_size"] == pytest.approx(3.0)
    table = analysis.per_language_table(analysis.degradation(results), "both")
    assert table.loc[("udpos", "yo"), "baseline"] == 45.0 and table.loc[("udpos", "yo"), "Δ sw 1k"] == -0.5
    assert table.index.get_level_values("eval_lang").tolist() == ["yo", "en"]  # low-resource first


def test_resource_level_join():
    langs = analysis.load_languages()
    deg = analysis.degradation(make_results(eval_langs=("en", "yo", "sw")))
    meta = deg.drop_duplicates("eval_lang").set_index("eval_lang")
    for d in analysis.DEFINITIONS:
        assert meta.loc["yo", f"low_{d}"] and not meta.loc["en", f"low_{d}"]
    assert meta.loc["yo", "in_xlmr_pretraining"] == 0 and np.isnan(meta.loc["yo", "cc100_GiB"])
    assert meta.loc["en", "cc100_GiB"] == pytest.approx(300.8)
    # the computed flags agree with the source table's own flag columns, language by language
    for d, col in (("joshi_le2", "flag_joshi_le2"), ("cc100_lt_2GiB_or_unseen", "flag_cc100_lt_2GiB_or_unseen")):
        assert analysis.low_resource(langs, d).astype(bool).tolist() == langs[col].astype(bool).tolist()
    both = analysis.low_resource(langs, "both")
    assert sorted(both[both].index) == ["gu", "ht", "jv", "pa", "qu", "sw", "wo", "yo"]  # README's list
    udpos_test = ("af ar bg el en es et eu fa fi fr he hi hu id it ja kk ko lt mr nl pl pt ro ru ta te th tl tr uk "
                  "ur vi wo yo zh")
    assert set(udpos_test.split()) <= set(langs.index)


def test_unknown_language_is_unknown_not_high_resource():
    langs = analysis.load_languages()
    extra = pd.DataFrame({"iso639_1": ["xx"], "joshi_class": [np.nan], "cc100_GiB": [np.nan],
                          "in_xlmr_pretraining": [np.nan]}, index=pd.Index(["xx"], name="lang"))
    flags = analysis.low_resource(pd.concat([langs, extra]), "either")
    assert flags.loc["xx"] is pd.NA and bool(flags.loc["yo"])


def test_unknown_definition_names_the_allowed_values():
    with pytest.raises(ValueError) as err:
        analysis.low_resource(analysis.load_languages(), "tiny")
    for name in analysis.DEFINITIONS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="joshi_le2"):
        analysis.run_contrasts(analysis.degradation(make_results(seeds=(1, 2))), "tiny")


def test_load_results_round_trip(tmp_path):
    path = write_results(tmp_path / "res", make_results(seeds=(1, 2)))
    results, grid = analysis.load_results(path)
    assert grid["model"]["from_scratch"] and len(results) == 2 * 4 * 7
    base = results[results["inter_size"] == 0]
    assert (base["intermediate_run"] == "").all() and (base["inter_lang"] == "none").all()
    assert results["seed"].dtype.kind in "iu" or str(results["seed"].dtype) == "Int64"


def test_slope_test_is_pingouins_regression_with_seed_and_corpus_intercepts():
    """The pooled slope that measures the run SD for planning, against `pingouin.linear_regression`."""
    res = _analyse(make_results(inter_langs=("sw", "yo", "en"), seeds=(1, 2, 3), sizes=(100, 1000, 10000)),
                   exploratory=False)
    u = analysis.units(res["runs"][res["runs"]["inter_lang"] != "en"])
    ours = stats.slope_test(u)
    X = pd.get_dummies(u["seed"].astype(str), prefix="seed", drop_first=True, dtype=float)
    X.insert(0, "log10_size", u["log10_size"])
    fit = stats.pg.linear_regression(X, u["D"]).set_index("names").loc["log10_size"]
    assert ours["slope"][0] == pytest.approx(fit["coef"]) and ours["se"][0] == pytest.approx(fit["se"])
    assert ours["p"][0] == pytest.approx(fit["pval"]) and ours["ci_low"][0] == pytest.approx(fit["CI2.5"])
    assert ours["df"] == len(u) - 4


def test_smoke_shaped_grid_renders_every_table_and_figure():
    """smoke.yaml's shape (2 seeds, 3 sizes, sw and en corpora): numbers where the design allows them,
    NaN and the reason elsewhere, never an exception."""
    from xfer import figures, report

    results = make_results(seeds=(1, 2), sizes=(100, 300, 1000), inter_langs=("sw", "en"))
    deg = analysis.degradation(results)
    res = _analyse(results)
    row = _one(res["primary"])
    assert row["status"] == "tested" and row["n_seeds"] == 2 and row["df"] == 1 and np.isfinite(row["p"])
    assert "seed(s); rm_corr needs ≥ 3" in _one(res["correlations"], method="rm_corr")["note"]
    for name in ("primary", "leakage", "correlations", "secondary", "sensitivity"):
        report.table(res[name])
    text = answer.answer(res, GRID)
    said = {"inconclusive": "cannot tell whether corpus size matters", "effect": "relative to the other languages",
            "equivalent": "made no difference larger than"}[row["decision"]]
    assert said in text and f"detects {row['mde']:.2f} points per decade" in text
    for fig in (figures.plot_primary(res), figures.plot_dose(res), figures.plot_degradation(deg, "joshi_le2"),
                figures.plot_heatmap(deg, "joshi_le2"), figures.plot_gap(deg, "joshi_le2")):
        assert fig.axes


def test_plan_measures_the_run_sd_on_finished_results_of_the_same_model(tmp_path, monkeypatch, data):
    from xfer.paths import root
    from xfer.grid.plan import plan

    monkeypatch.setenv("XFER_OUTPUT", str(tmp_path.parent))  # report folders of this test live in tmp
    planned = plan(root() / "params" / "smoke.yaml", [f"report_dir={tmp_path}"])
    grid, runs = planned.grid, planned.runs
    results = make_results(inter_langs=("sw", "en"), slope_low=0.0, noise=4.0)
    write_results(tmp_path, results, params=grid.model_dump(mode="json"))
    sd, df, where = stats.measured_run_sd(grid)["udpos"]
    assert df == 9 - 3 - 1 and where == f"report/{tmp_path.name}"
    u = analysis.units(analysis.run_contrasts(analysis.degradation(results), "joshi_le2").query("inter_lang != 'en'"))
    assert sd == pytest.approx(stats.run_sd(u)[0])
    assert f"run SD {sd:.2f} measured on report/{tmp_path.name} (df 5)" in stats.plan_lines(grid, runs)
    other = grid.model_dump(mode="json") | {"model": {**grid.model_dump(mode="json")["model"], "name": "other"}}
    write_results(tmp_path, results, params=other)  # another model's results measure nothing
    assert stats.measured_run_sd(grid) == {}


def test_a_fixed_epochs_arm_is_exploratory_beside_the_fixed_steps_arm():
    """The same corpora under two budgets: the primary test uses fixed steps; the epochs arm, whose
    dose grows with size, appears in the sensitivity table with its confound flagged."""
    steps = make_results(inter_langs=("sw", "en"), slope_low=0.0, seed=3).assign(inter_budget="steps")
    epochs = make_results(inter_langs=("sw", "en"), slope_low={"sw": -3.0, "en": 0.0}, seed=4)
    epochs = epochs.assign(inter_budget="epochs")
    epochs["intermediate_run"] = epochs["intermediate_run"].str.replace("inter", "epochs")
    epochs = epochs[epochs["inter_size"] > 0]
    training = pd.concat([
        pd.DataFrame({"run_id": steps["intermediate_run"], "steps": 250}),
        pd.DataFrame({"run_id": epochs["intermediate_run"], "steps": epochs["inter_size"] // 16})]
    ).query("run_id != ''").drop_duplicates("run_id").set_index("run_id")
    res = _analyse(pd.concat([steps, epochs]), training=training)
    row = _one(res["primary"])
    assert row["budget"] == "steps" and row["n_runs"] == 9 and row["dose_confounded"] == ""
    other = _one(res["sensitivity"], budget="epochs")
    assert other["dose_confounded"] == "steps" and other["rci_high"] < 0


def test_plan_prints_the_cost_of_a_sequential_design(data):
    """The maximum and the expected runs and hours under no effect and under the smallest effect of
    interest, from simulating the rule: between the first look's and the maximum."""
    from xfer.paths import root
    from xfer.grid.plan import plan

    planned = plan(root() / "params" / "answer.yaml")
    grid, runs = planned.grid, planned.runs
    text = stats.plan_lines(grid, runs, hours=2.0)
    total = sum(len(v) for v in runs.values())
    line = next(li for li in text.splitlines() if li.startswith("  cost:"))
    assert f"at most {total} runs (12 seeds), 2.00 h" in line
    expected = [float(x) for x in re.findall(r"expected under [^:]+: (\d+) runs \((\d+\.\d) seeds", line)[0]]
    assert 3 < expected[1] < 12 and 1 + 20 * 3 <= expected[0] < total
    assert "expected under an effect of 0.5 per decade" in line
