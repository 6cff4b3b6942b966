"""The statistics on data whose answer is known, and the arithmetic on a table small enough to check
by hand. `write_results` is also the report test's stand-in for a grid run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from xfer import analysis

LANGS = ("en", "fr", "fi", "mr", "te", "wo", "yo")  # joshi_le2 low-resource: mr te wo yo


def make_results(seed=0, seeds=(1, 2, 3), sizes=(1_000, 10_000, 100_000), inter_langs=("sw",),
                 eval_langs=LANGS, slope_low=-2.0, slope_high=0.0, noise=1.0, definition="joshi_le2",
                 inter_tasks=None):
    """A results table in the grid runner's format with a planted effect: for low-resource
    languages delta = slope_low · log10(size) + c + noise, for the others slope_high.
    `slope_low` may be a dict per intermediate language; `inter_tasks` names each one's task."""
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
            for lang in eval_langs:
                slope = (slope_low.get(il, 0.0) if isinstance(slope_low, dict) else slope_low) if low[lang] else slope_high
                score = base[lang] + (0.0 if n == 0 else slope * (np.log10(n) - 3) + rng.normal(0, noise))
                rows.append({"grid": "synthetic", "eval_run": f"eval-{il}-{n}-s{s}",
                             "target_run": f"target-{il}-{n}-s{s}",
                             "intermediate_run": inter, "seed": s, "inter_task": task, "inter_lang": il,
                             "inter_size": n, "target_task": "udpos", "target_lang": "en", "eval_task": "udpos",
                             "eval_lang": lang, "split": "test", "metric": "accuracy",
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


@pytest.fixture(scope="module")
def planted():
    deg = analysis.degradation(make_results())
    return deg, analysis.statistics(deg, "joshi_le2")


@pytest.fixture(scope="module")
def null():
    deg = analysis.degradation(make_results(slope_low=0.0, seed=1))
    return deg, analysis.statistics(deg, "joshi_le2")


# x = log10 size uniform on {3, 4, 5} (variance 2/3), delta = -2 x + N(0, 1):
PLANTED_R = -2 * np.sqrt(2 / 3) / np.sqrt(4 * 2 / 3 + 1)


def test_planted_correlation_is_found(planted):
    _, stats = planted
    for method in ("spearman", "pearson"):
        row = _one(stats["correlation"], method=method)
        assert row["r"] < 0 and row["ci_high"] < 0 and row["p_holm"] < 0.05
        assert row["n"] == 4 * 3 * 3 and row["languages"] == "mr, te, wo, yo"
    pearson = _one(stats["correlation"], method="pearson")
    assert pearson["ci_low"] <= PLANTED_R <= pearson["ci_high"]
    rm = _one(stats["rm_corr"])
    assert rm["ci_low"] <= PLANTED_R <= rm["ci_high"] and rm["ci_high"] < 0
    boot = _one(stats["bootstrap"])
    assert boot["slope_ci_low"] <= -2 <= boot["slope_ci_high"] and boot["spearman_ci_high"] < 0
    assert _one(stats["partial_corr"])["r"] < 0
    # models: no slope for the other languages, a slope of -2 on top of it for low-resource ones
    for table in ("regression", "mixed"):
        size = _one(stats[table], term="log10_size")
        inter = _one(stats[table], term="log10_size:low_resource")
        assert size["ci_low"] <= 0 <= size["ci_high"], table
        assert inter["ci_low"] <= -2 <= inter["ci_high"] and inter["p_holm"] < 0.05, table


def test_no_correlation_gives_ci_covering_zero(null):
    _, stats = null
    for method in ("spearman", "pearson"):
        row = _one(stats["correlation"], method=method)
        assert row["ci_low"] <= 0 <= row["ci_high"]
    rm = _one(stats["rm_corr"])
    assert rm["ci_low"] <= 0 <= rm["ci_high"]
    boot = _one(stats["bootstrap"])
    assert boot["slope_ci_low"] <= 0 <= boot["slope_ci_high"]
    inter = _one(stats["regression"], term="log10_size:low_resource")
    assert inter["ci_low"] <= 0 <= inter["ci_high"]
    assert "neither shows nor rules out" in analysis.answer(stats)


def test_answer_quotes_the_numbers(planted):
    _, stats = planted
    row = _one(stats["correlation"], method="spearman")
    text = analysis.answer(stats, {"model": {"from_scratch": True}, "params": {}})
    assert f"ρ = {row['r']:+.2f}" in text and f"n = {row['n']}" in text
    assert "exclude zero after Holm correction" in text and "more degradation" in text
    assert "demonstrate the pipeline" in text and "confounded" in text


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
        analysis.statistics(analysis.degradation(make_results(seeds=(1, 2))), "tiny")


def test_small_grid_gives_nan_with_notes_not_errors():
    results = make_results(seeds=(1, 2), sizes=(100, 1000, 10_000), eval_langs=("en", "yo"))
    results.loc[results.index[7], "score"] = np.nan
    deg = analysis.degradation(results)
    stats = analysis.statistics(deg, "cc100_lt_2GiB_or_unseen")
    assert "needs ≥ 3" in _one(stats["rm_corr"])["note"] and np.isnan(_one(stats["rm_corr"])["r"])
    assert stats["mixed"]["coef"].isna().all() and "language" in stats["mixed"]["note"].iloc[0]
    assert "coarse" in _one(stats["bootstrap"])["note"]
    assert isinstance(analysis.answer(stats), str)
    for fig in (analysis.plot_degradation(deg, "both"), analysis.plot_heatmap(deg, "both"),
                analysis.plot_forest(stats), analysis.plot_gap(deg, "both")):
        assert fig.axes
    # nothing but baselines: every statistic is NaN, the answer says why, figures still come back
    deg0 = analysis.degradation(results[results["inter_size"] == 0])
    stats0 = analysis.statistics(deg0, "both")
    assert "cannot answer" in analysis.answer(stats0)
    assert analysis.plot_forest(stats0) is not None and analysis.plot_gap(deg0, "both") is not None


def test_holm_across_groups():
    deg = analysis.degradation(make_results(inter_langs=("sw", "en", "pt"), seeds=(1, 2)))
    corr = analysis.correlations(deg, "joshi_le2")
    for method, g in corr.groupby("method"):
        assert len(g) == 3
        np.testing.assert_allclose(g["p_holm"], analysis.pg.multicomp(g["p"].to_numpy(), method="holm")[1])
        assert (g["p_holm"] >= g["p"]).all()


def test_load_results_round_trip(tmp_path):
    path = write_results(tmp_path / "res", make_results(seeds=(1, 2)))
    results, grid = analysis.load_results(path)
    assert grid["model"]["from_scratch"] and len(results) == 2 * 4 * 7
    base = results[results["inter_size"] == 0]
    assert (base["intermediate_run"] == "").all() and (base["inter_lang"] == "none").all()
    assert results["seed"].dtype.kind in "iu" or str(results["seed"].dtype) == "Int64"


def test_language_contrast_finds_a_planted_language_effect_at_identical_content():
    """SST-2 vs its Portuguese translation: only Portuguese hurts, more with size. The contrast
    (pt − en at the same size and seed) is negative, grows with size, and is flagged aligned."""
    kw = dict(inter_langs=("en", "pt"), inter_tasks={"en": "sst2", "pt": "sst2_pt"})
    deg = analysis.degradation(make_results(slope_low={"en": 0.0, "pt": -2.0}, **kw))
    row = _one(analysis.contrast(deg, "joshi_le2"), inter_lang="pt")
    assert row["aligned"] and row["english_task"] == "sst2" and row["n_languages"] == 4  # mr te wo yo
    assert row["ci_low"] < row["mean_diff"] < row["ci_high"] < 0  # planted mean: -2 · mean(0, 1, 2) = -2
    assert row["ci_low"] < -2 < row["ci_high"]
    assert row["size_r"] < 0 and row["size_ci_high"] < 0 and row["p_holm"] < 0.05
    assert row["n"] == 4 * 3 * 3  # languages × sizes × seeds, pairs matched on size and seed

    null = analysis.degradation(make_results(slope_low={"en": -2.0, "pt": -2.0}, **kw))
    row = _one(analysis.contrast(null, "joshi_le2"), inter_lang="pt")
    assert row["ci_low"] < 0 < row["ci_high"] and row["size_ci_low"] < 0 < row["size_ci_high"]


def test_language_contrast_says_when_content_differs_or_english_is_missing():
    deg = analysis.degradation(make_results(inter_langs=("en", "sw")))  # PAN-X sw vs PAN-X en
    row = _one(analysis.contrast(deg, "joshi_le2"), inter_lang="sw")
    assert not row["aligned"] and "content differs" in row["note"] and np.isfinite(row["mean_diff"])
    row = _one(analysis.contrast(analysis.degradation(make_results()), "joshi_le2"), inter_lang="sw")
    assert np.isnan(row["mean_diff"]) and "no English panx" in row["note"]
