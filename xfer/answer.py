"""The answer to the research question in words, built only from the primary test's numbers
(xfer.stats.primary): what was compared, the slope and its interval, the direction from the sign of
Δ, the English control, the verdict the tests allow (an effect; no effect beyond the equivalence
bound; inconclusive with the minimum detectable slope), how training dose was controlled, and what
the encoder was. Nothing in it goes beyond a number in the report's primary table."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _count(n, noun: str) -> str:
    return f"{int(n)} {noun}{'' if int(n) == 1 else 's'}"


def _num(v: float, fmt: str = "+.2f") -> str:
    return format(v, fmt) if np.isfinite(v) else "n/a"


def verdict(row: pd.Series) -> str:
    """What the tests allow: effect, equivalent, inconclusive or untestable."""
    if row["status"] != "tested":
        return "untestable"
    if row["effect"]:
        return "effect"
    return "equivalent" if row["equivalent"] else "inconclusive"


def _direction(row: pd.Series) -> str:
    """The mean Δ on low-resource languages after the non-English corpora, and what its sign means."""
    m, lo, hi = row["mean_low_delta"], row["mean_low_ci_low"], row["mean_low_ci_high"]
    if not np.isfinite(m):
        return ""
    ci = (f"95 % CI {lo:+.2f} to {hi:+.2f} over {_count(row['n_seeds'], 'seed')}" if np.isfinite(lo) else
          f"{_count(row['n_seeds'], 'seed')}: no interval")
    sign = ("negative: a degradation on average" if m < 0 else "positive: a gain on average, not a degradation"
            if m > 0 else "zero")
    if np.isfinite(lo) and lo <= 0 <= hi:
        sign += ", though the interval includes zero"
    return f"Mean Δ on the low-resource languages after the non-English corpora: {m:+.2f} points ({ci}), {sign}. "


def _claim(row: pd.Series) -> str:
    """The effect in words, direction from the slope's sign and from the sign of Δ."""
    worse = row["slope"] < 0
    rel = ("lower" if worse else "higher") + " Δ on the low-resource languages relative to the other languages"
    beyond = (", beyond what the English corpus of the same content, size and seed did"
              if "subtracted" in row["english_control"] else "")
    if row["mean_low_delta"] < 0:
        what = "more degradation" if worse else "less degradation"
    elif row["mean_low_delta"] > 0:
        what = "smaller gains (Δ stayed positive on average: not degradation)" if worse else "larger gains"
    else:
        what = "a change whose sign the mean Δ does not settle"
    return f"larger non-English corpora went with a {rel}{beyond}: {what}"


def target_sentence(row: pd.Series, config: dict) -> str:
    """The paragraph's part for one target."""
    name = f"{row['target_task']}" + (f" (trained on {row['train_task']})" if row["train_task"] != row["target_task"]
                                      else "")
    if row["status"] != "tested":
        return f"{name}: untestable ({row['why']}). "
    bound, alpha = config["smallest_effect"], config["alpha"]
    control = row["english_control"]
    text = (f"{name}: {_count(row['n_runs'], 'non-English run')} ({row['corpora']}; sizes {row['sizes']}; "
            f"{_count(row['n_seeds'], 'seed')}) in {_count(row['n_units'], 'independent unit')}, English control "
            f"{control}; {_count(row['n_low'], 'low-resource language')} ({row['low_languages']}) against "
            f"{row['n_other']} others. Slope of D: {row['slope']:+.2f} points per tenfold corpus size (95 % CI "
            f"{row['ci_low']:+.2f} to {row['ci_high']:+.2f}, df {int(row['df'])}; p {_p(row['p'])}, permutation p "
            f"{_p(row['p_perm'])}, Holm p {_p(row['p_holm'])}). ")
    if "subtracted" in control and np.isfinite(row["slope_en"]):
        text += (f"The low-resource − other contrast moved {row['slope_nonen']:+.2f} points per decade after the "
                 f"non-English corpora and {row['slope_en']:+.2f} after the English one (point estimates; D is their "
                 "difference). ")
    elif "none in the grid" in control:
        text += ("With no English corpus of the same content in the grid, D is not corrected for what more "
                 "training of any language does, so a slope could not be attributed to the corpus being non-English. ")
    text += _direction(row)
    v = verdict(row)
    if v == "effect":
        text += f"Both tests reject at α = {alpha} after Holm: {_claim(row)}. "
    elif v == "equivalent":
        text += (f"No effect larger than ±{bound} points per decade: the equivalence test rejects both bounds "
                 f"(TOST p {_p(row['p_tost'])}). ")
    else:
        text += (f"Inconclusive, minimum detectable slope {_num(row['mde'], '.2f')} points per decade at "
                 f"{config['power'] * 100:.0f} % power (run SD {row['run_sd']:.2f}, {row['run_sd_source']})"
                 + (f"; underpowered: the smallest effect of interest is ±{bound}" if row["underpowered"] else "")
                 + f"; equivalence to ±{bound} not shown (TOST p {_p(row['p_tost'])}). ")
    return text


def dose_sentence(table: pd.DataFrame, grid: dict | None) -> str:
    """How training dose was controlled: from the per-run record where there is one, else the budget."""
    train = ((grid or {}).get("params", {}).get("intermediate", {}) or {}).get("train", {}) or {}
    confounded = table[table["dose_confounded"].fillna("") != ""]
    recorded = table[table["dose"].fillna("not recorded") != "not recorded"]
    if len(confounded):
        what = "; ".join(f"{r['target_task']}: {r['dose']}" for _, r in confounded.iterrows())
        return (f"Training dose moved with corpus size ({what}): size and dose are confounded in this grid, so a "
                "slope on size cannot be told from one on the amount of training (the dose figure shows Δ against "
                "both). ")
    if len(recorded):
        return f"Dose: {recorded['dose'].iloc[0]}; it did not move with corpus size. "
    if train.get("max_steps"):
        return (f"Dose: a fixed {train['max_steps']} optimizer steps per intermediate run (the grid's budget; no "
                "per-run record), so smaller corpora were repeated more often. ")
    if train.get("epochs"):
        return (f"Dose: a budget of {train['epochs']:g} epoch(s), so larger corpora also got more optimizer steps: "
                "size and dose are confounded in this grid. ")
    return ""


def caveat(grid: dict | None) -> str:
    model = (grid or {}).get("model", {})
    if not model:
        return ""
    if model.get("from_scratch"):
        return ("The encoder was trained from scratch, so these numbers demonstrate the pipeline and are not a "
                "finding about XLM-R.")
    if model.get("stand_in"):
        return f"The encoder is {model.get('name')}, a stand-in for XLM-R: the numbers speak for that model only."
    return ""


def answer(stats: dict, grid: dict | None = None) -> str:
    """The one-paragraph answer: per target the runs and languages behind the number, the primary
    slope with its CI, the English control, the direction, the verdict the tests allow; then dose,
    leakage, and the encoder."""
    table, config = stats["primary"], stats["config"]
    if table.empty:
        return ("This grid cannot answer the question yet: no intermediate run with a non-English corpus in the "
                "results. " + caveat(grid)).strip()
    lead = (f"Primary test, fixed in the grid's analysis block (low-resource = '{stats['definition']}'): for each "
            "non-English intermediate run, D = its mean Δ on the low-resource evaluation languages minus its mean Δ "
            "on the other ones (the corpus language and English left out), minus the same for the English corpus "
            "of the same content, size and seed; the slope of D on log10 corpus size, with seed and corpus "
            "intercepts and one value per independent unit of runs. ")
    body = "".join(target_sentence(row, config) for _, row in table.iterrows())
    tail = ("Scores in the corpus language and in English never enter the test (reported apart). Everything else "
            "in this report is exploratory. ")
    return (lead + body + dose_sentence(table, grid) + tail + caveat(grid)).strip()


def bottom_line(stats: dict) -> str:
    """Three lines the report puts first: the estimate, its interval, and what it means."""
    table, config = stats["primary"], stats["config"]
    tested = table[table["status"] == "tested"]
    if tested.empty:
        why = "; ".join(sorted(set(table["why"]) - {""})) or "no non-English intermediate run in the results"
        return ("**Estimate:** none.  \n**95 % CI:** none.  \n"
                f"**Meaning:** untestable: the grid cannot test the question yet ({why}).")
    est = "; ".join(f"{r['target_task']} {r['slope']:+.2f}" for _, r in tested.iterrows())
    ci = "; ".join(f"{r['target_task']} {r['ci_low']:+.2f} to {r['ci_high']:+.2f} (Holm p {_p(r['p_holm'])})"
                   for _, r in tested.iterrows())
    meaning = []
    for _, r in table.iterrows():
        v = verdict(r)
        meaning.append(f"{r['target_task']}: " + {
            "effect": _claim(r) if r["status"] == "tested" else "",
            "equivalent": f"no effect larger than ±{config['smallest_effect']} points per decade",
            "inconclusive": f"inconclusive, minimum detectable slope {_num(r['mde'], '.2f')} points per decade"
                            + (" (underpowered)" if r["underpowered"] else ""),
            "untestable": f"untestable ({r['why']})"}[v])
    return (f"**Estimate:** {est} points of D per tenfold non-English corpus size (low-resource minus other "
            "languages, minus the English control).  \n"
            f"**95 % CI:** {ci}.  \n**Meaning:** " + "; ".join(meaning) + ".")
