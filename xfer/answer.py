"""The answer to the research question in words, built only from the primary test's numbers
(xfer.stats.primary): first a sentence a reader outside statistics understands, then how sure and
why (the rule, where it stopped, the interval, the MDE), then what limits it (dose, model, leakage).

Words come from the parts: "more degradation with size" is said only when the slope of D, the
slope of the non-English contrast it is made of, the low-resource languages' own Δ trend and their
Δ at the largest size all point the same way; otherwise each part is described. Nothing mentions
an English control the grid does not have, and nothing goes beyond a number in the primary table."""

from __future__ import annotations

import numpy as np
import pandas as pd

D_PLAIN = ("how much more the low-resource target languages lose (or the less they gain) than the other target "
           "languages after intermediate training")


def _p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _count(n, noun: str) -> str:
    return f"{int(n)} {noun}{'' if int(n) == 1 else 's'}"


def _num(v: float, fmt: str = "+.2f") -> str:
    return format(v, fmt).replace("-0.00", "0.00").replace("+0.00", "0.00") if np.isfinite(v) else "n/a"


def _has_control(row) -> bool:
    return "subtracted" in str(row["english_control"])


def verdict(row: pd.Series) -> str:
    """What the rule decided: effect, equivalent, futile, inconclusive (last look, no decision),
    continue (more looks to come) or untestable."""
    return row["decision"] if row["status"] == "tested" else "untestable"


def _sign(v: float) -> int:
    return 0 if not np.isfinite(v) or v == 0 else (1 if v > 0 else -1)


def parts_agree(row: pd.Series) -> bool:
    """The slope of D is the low-resource languages' own story: the non-English contrast carries at
    least half of it with the same sign, the low-resource Δ itself moved that way, and their Δ at
    the largest size has that sign too (a loss for a negative slope, a gain for a positive one)."""
    s = _sign(row["estimate"])
    return (s != 0 and _sign(row["slope_c"]) == s and abs(row["slope_c"]) >= 0.5 * abs(row["estimate"])
            and _sign(row["slope_low"]) == s and _sign(row["low_delta_largest"]) == s)


def _parts(row: pd.Series) -> str:
    """Each part of D's slope in words, per tenfold size."""
    other = row["slope_low"] - row["slope_c"]
    text = (f"after the non-English corpora, the low-resource languages' Δ changed by {_num(row['slope_low'])} points "
            f"per tenfold size and the other languages' by {_num(other)}")
    if _has_control(row):
        text += (f"; after the English corpus of the same content, the low-resource minus other contrast changed by "
                 f"{_num(row['slope_c_en'])}")
    if np.isfinite(row["low_delta_largest"]):
        text += (f"; at the largest size ({row['largest_size']}) the low-resource languages' Δ was "
                 f"{_num(row['low_delta_largest'])} points")
    return text


def _what(row: pd.Series) -> str:
    """The finding for one target, in one plain sentence."""
    v, est, bound = verdict(row), row["estimate"], row["bound"]
    ci = f"between {_num(row['rci_low'])} and {_num(row['rci_high'])} points per tenfold corpus size"
    if v == "untestable":
        return f"cannot be answered yet ({row['why']})"
    if v == "effect" and parts_agree(row):
        return (f"the larger the non-English intermediate corpus, the more the low-resource languages "
                f"{'lose' if est < 0 else 'gain'} relative to the other languages: {_num(abs(est), '.2f')} points per "
                f"tenfold corpus size (likely {ci})")
    if v == "effect":
        return (f"the gap between low-resource and other languages {'widened' if est < 0 else 'narrowed'} with corpus size "
                f"({_num(est)} points per tenfold size, likely {ci}), but its parts do not make it a story about the "
                f"low-resource languages alone: {_parts(row)}")
    if v == "equivalent":
        return (f"the size of the non-English intermediate corpus made no difference larger than ±{bound:g} points per "
                f"tenfold size to how the low-resource languages fared against the others (the change is likely {ci})")
    if v == "continue":
        return (f"undecided so far, after {_count(row['n_seeds'], 'seed')} of {int(row['n_max'])}: the change is "
                f"{ci} (more seeds are to run)")
    reason = "it stopped early for futility" if v == "futile" else "it reached its last look without a decision"
    need = (f"; deciding at ±{bound:g} would take about {int(row['seeds_needed'])} seeds at this noise"
            if np.isfinite(row.get("seeds_needed", np.nan)) else "")
    return (f"this study cannot tell whether corpus size matters: {reason} after {_count(row['n_seeds'], 'seed')}, "
            f"and the change is {ci}{need}")


def _name(row: pd.Series) -> str:
    return row["target_task"] + (f" (trained on {row['train_task']})" if row["train_task"] != row["target_task"] else "")


def _model(grid: dict | None) -> str:
    model = (grid or {}).get("model", {})
    return model.get("name") or "the encoder"


def found(stats: dict, grid: dict | None = None) -> str:
    """The first paragraph: what was found, for which model and target, in plain words."""
    table = stats["primary"]
    if table.empty:
        return "This grid cannot answer the question yet: no intermediate run with a non-English corpus in the results."
    said = "; ".join(f"for {_name(r)}, {_what(r)}" for _, r in table.iterrows())
    return f"With {_model(grid)}: {said}."


def how_sure(stats: dict) -> str:
    """The second paragraph: the test, the look it stopped at and why, the interval and the MDE."""
    table, r = stats["primary"], stats.get("rule", {})
    out = [f"D, the extra loss of the low-resource languages, is {D_PLAIN}, beyond what the English corpus of the same "
           "content does where the grid has one. The test takes, for each seed, the slope of D on log10 corpus size, then a one-sample t-test "
           "across seeds, so each seed counts once."]
    if r.get("sequential"):
        out.append(f"Seeds were added in looks of {', '.join(map(str, r['looks']))} with {r['kind'].upper()}-type "
                   f"alpha spending (α {r['alpha']:g} per target), declared before the first run; the study stops at the "
                   f"first look that shows an effect, equivalence within ±{r['bound']:g}"
                   + (" or futility" if r.get("futility") else "") + ".")
    for _, row in table.iterrows():
        v = verdict(row)
        if v == "untestable":
            out.append(f"{_name(row)}: untestable ({row['why']}).")
            continue
        look = (f"At look {int(row['look']) + 1} of {int(row['n_looks'])} ({_count(row['n_seeds'], 'seed')})"
                if r.get("sequential") else f"Over {_count(row['n_seeds'], 'seed')}")
        why = {"effect": f"the t-test's p {_p(row['p'])} is below the look's boundary {row['boundary_p']:.3g}",
               "equivalent": f"the equivalence interval {_num(row['eq_low'])} to {_num(row['eq_high'])} lies inside "
                             f"±{row['bound']:g}",
               "futile": "neither an effect nor equivalence was reachable by the last look",
               "inconclusive": f"p {_p(row['p'])} stayed above the boundary {row['boundary_p']:.3g} and the "
                               f"equivalence interval {_num(row['eq_low'])} to {_num(row['eq_high'])} is not inside "
                               f"±{row['bound']:g}",
               "continue": "no boundary was crossed yet"}[v]
        out.append(f"{look}, {_name(row)}: slope {_num(row['estimate'])} points of D per tenfold size (95 % repeated "
                   f"CI {_num(row['rci_low'])} to {_num(row['rci_high'])}, df {int(row['df'])}); {why}. The design "
                   f"detects {_num(row['mde'], '.2f')} points per decade with {stats['config']['power'] * 100:.0f} % "
                   f"power (one seed's slope SD {_num(row['sd_seed'], '.2f')}, {row['sd_source']})"
                   + (f", more than the smallest effect of interest (±{row['bound']:g}): underpowered."
                      if row["underpowered"] else "."))
    return " ".join(out)


def dose_sentence(table: pd.DataFrame, grid: dict | None) -> str:
    """How training dose was controlled: from the per-run record where there is one, else the budget."""
    train = ((grid or {}).get("params", {}).get("intermediate", {}) or {}).get("train", {}) or {}
    confounded = table[table["dose_confounded"].fillna("") != ""]
    recorded = table[table["dose"].fillna("not recorded") != "not recorded"]
    if len(confounded):
        what = "; ".join(f"{r['target_task']}: {r['dose']}" for _, r in confounded.iterrows())
        return (f"Training dose moved with corpus size ({what}): size and dose are confounded in this grid, so a "
                "slope on size cannot be told from one on the amount of training.")
    if len(recorded):
        return f"Dose was equal at every size ({recorded['dose'].iloc[0]}), so size means more distinct examples."
    if train.get("max_steps"):
        return f"Dose: a fixed {train['max_steps']} optimizer steps per intermediate run (no per-run record)."
    if train.get("epochs"):
        return (f"Dose: {train['epochs']:g} epoch(s), so larger corpora also got more optimizer steps: size and "
                "dose are confounded in this grid.")
    return ""


def limits(stats: dict, grid: dict | None = None) -> str:
    """The third paragraph: what limits the answer."""
    table = stats["primary"]
    out = [dose_sentence(table, grid)] if len(table) else []
    tested = table[table["status"] == "tested"]
    if len(tested):
        r = tested.iloc[0]
        out.append(f"Low-resource means '{stats['definition']}': {_count(r['n_low'], 'language')} ({r['low_languages']}) "
                   f"against {r['n_other']} others; the answer is about these languages, not languages in general.")
        if not tested["english_control"].str.contains("subtracted").any():
            out.append("The grid has no English corpus of the same content, so D is not corrected for what more "
                       "training of any language does.")
    out.append("Scores in the corpus language and in English never enter the test (reported apart as leakage); "
               "everything after the primary table is exploratory.")
    out.append(caveat(grid))
    return " ".join(o for o in out if o)


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
    """Three short paragraphs: what was found, how sure and why, what limits it."""
    return "\n\n".join(p for p in (found(stats, grid), how_sure(stats), limits(stats, grid)) if p)


def bottom_line(stats: dict, grid: dict | None = None) -> str:
    """The lines the report puts first: the finding in plain words, then the decision and interval."""
    table = stats["primary"]
    lines = [f"**Finding:** {found(stats, grid)}"]
    tested = table[table["status"] == "tested"]
    lines.append(f"**D**, the extra loss of the low-resource languages, is {D_PLAIN}" + (", minus the same for the English corpus of the same content"
                                          if len(tested) and tested["english_control"].str.contains("subtracted").any()
                                          else "") + "; negative means the low-resource languages lose more.")
    if len(table):
        lines.append("**Decision:** " + "; ".join(
            f"{_name(r)}: {verdict(r)} after {_count(r['n_seeds'], 'seed')}, slope of D {_num(r['estimate'])} points "
            f"per tenfold size (95 % CI {_num(r['rci_low'])} to {_num(r['rci_high'])})" if r["status"] == "tested"
            else f"{_name(r)}: untestable ({r['why']})" for _, r in table.iterrows()))
    return "  \n".join(lines)

