"""The report's text: what the report notebook shows around the analysis (what was run, on which
model, with which caveats, from which code and data), its tables and figures, numbered and linked
to the runs behind each number, and the pre-registration they are checked against. Publishing the
executed notebook (HTML, PDF, the runs folder beside it) is `xfer.publish`."""

from __future__ import annotations

import html
import json
import os
import re
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from xfer.analysis import DEFINITIONS, fmt_size
from xfer.config import run_id
from xfer.figures import PRINT_WIDTH
from xfer.paths import read_json, runs_dir

QUESTION = ("To what extent does the size of the non-English intermediate training corpus correlate with "
            "zero-shot performance degradation on low-resource target languages?")


# ----------------------------------------------------------------------------- report text


TITLE = "Intermediate-corpus size and zero-shot degradation on low-resource languages"


def header(grid: dict, deg: pd.DataFrame, definition: str, results_dir: str | Path | None = None) -> str:
    """First page, under the title and the bottom line: the question, the model and the data behind
    the numbers, every approximation, and whether the analysis plan is the one registered before
    the runs, so that no figure can be read without them."""
    model = grid.get("model", {})
    name = model.get("name", "unknown model")
    lines = [f"**Research question.** {QUESTION}",
             f"**Grid** `{grid.get('name', '?')}` · created {grid.get('provenance', {}).get('created', 'unknown')} "
             f"· low-resource = `{definition}`: {DEFINITIONS.get(definition, '?')} (the other definitions are a "
             f"sensitivity analysis below).",
             f"**Pre-registration.** {registered(results_dir, grid)}",
             f"**Model.** {name} (source: {model.get('source', '?')}) — {model.get('description', 'no description')}."]
    if model.get("from_scratch"):
        lines.append("**This encoder was trained from scratch on the study's own data: the numbers in this report "
                     "demonstrate the pipeline, not a scientific finding.**")
    elif model.get("stand_in"):
        lines.append(f"**{name} is a stand-in for XLM-R, not XLM-R:** the numbers describe this model; whether "
                     "they carry over to XLM-R is not tested here.")
    approx = model.get("approximations") or []
    lines.append("**Approximations.** " + ("none stated." if not approx else "")
                 + "".join(f"\n- {a}" for a in approx))
    d = deg[~deg["is_baseline"]]
    lines.append(_data_line(deg, d, definition))
    if unread := unread_words(deg):
        lines.append(unread)
    return "\n\n".join(lines)


def unread_words(deg: pd.DataFrame) -> str:
    """A warning when some evaluation words never reached the model (a word the tokenizer gives no
    subword, or the tail of a single word longer than the window; a long sentence is scored in
    windows): they are scored as wrong, so the language's score is too low."""
    if "words_not_encoded" not in deg or not deg["words_not_encoded"].gt(0).any():
        return ""
    per = deg[deg["words_not_encoded"] > 0].groupby(["eval_task", "eval_lang"])["words_not_encoded"].max()
    where = ", ".join(f"{t} {lang} ({n:.0f})" for (t, lang), n in per.items())
    return (f"**Warning: words not encoded.** In {where}, some evaluation words (most in one run in brackets) "
            "never reached the model and are scored as wrong: those languages' scores are too low.")


def _data_line(deg: pd.DataFrame, inter: pd.DataFrame, definition: str) -> str:
    def join(values):
        return ", ".join(str(v) for v in sorted(set(values))) or "none"

    low = sorted(deg.loc[deg[f"low_{definition}"].fillna(False).astype(bool), "eval_lang"].unique())
    return (f"**Data.** Target task {join(deg['target_task'])} trained on {join(deg['target_lang'])}, evaluated "
            f"zero-shot in {deg['eval_lang'].nunique()} languages ({join(deg['eval_lang'])}; split "
            f"{join(deg['split'])}, metric {join(deg['metric'])}), of which low-resource: {', '.join(low) or 'none'}. "
            f"Intermediate task {join(inter['inter_task'])} in {join(inter['inter_lang'])} at "
            f"{', '.join(fmt_size(n) for n in sorted(set(inter['inter_size']))) or 'no'} sentences; "
            f"seeds {join(deg['seed'].astype(int))}; "
            f"baseline = no intermediate training, same seed.")


def analysis_plan(grid) -> dict:
    """The settings the primary test depends on (a Grid, or grid.json's validated `params`), with
    their hash: grid.json and the runs' pre-registration record (`preregister`) carry it."""
    if isinstance(grid, dict):
        from xfer.config import Grid

        grid = Grid.model_validate(grid)
    plan = {"low_resource": grid.low_resource, "analysis": grid.analysis.model_dump(mode="json")}
    return {**plan, "hash": run_id(plan)}


def preregister(grid, first: str, finished: int, total: int) -> dict:
    """The analysis plan as registered for the grid's runs, whatever its report_dir: a record in
    `runs/.preregistration/`, keyed by the grid's first run (its pretrained run) and its name,
    holding the plan, the time, and how many of the grid's `total` evaluation runs had `finished`
    then (0: before any result could be seen). Written once (atomically, first writer wins), never
    overwritten; a deleted one is written again with the count of that moment, so deleting it
    cannot pass a later plan off as one made before the runs. Returns the record with its `path`,
    or {"path", "problem"} when it is damaged or cannot be written (a read-only runs folder): the
    report then says so, and still renders."""
    from datetime import datetime, timezone

    path = runs_dir() / ".preregistration" / f"{first}-{run_id({'grid': grid.name})}.json"
    for attempt in (1, 2):
        try:
            rec = read_json(path)
        except FileNotFoundError:
            rec = None
        except (ValueError, OSError) as e:
            return {"path": str(path), "problem": str(e)}
        if rec is not None:
            if not isinstance(rec, dict) or not {"hash", "time", "finished"} <= set(rec):
                return {"path": str(path), "problem": f"{path}: not a pre-registration record (no hash, time, finished)"}
            return {**rec, "path": str(path)}
        if attempt == 2:
            break
        rec = {**analysis_plan(grid), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "finished": finished, "evaluations": total}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:  # the temp file goes on every path, a full disk included
                with os.fdopen(fd, "w") as f:
                    json.dump(rec, f, indent=2, sort_keys=True)
                os.link(tmp, path)  # fails if another process registered first: its record stands
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError as e:
            return {"path": str(path), "problem": f"{path}: no record, and none can be written ({e.strerror or e})"}
    return {"path": str(path), "problem": f"{path}: written but not found again"}


def checked_registration(rec: dict, recorded: list[dict]) -> dict:
    """`rec` (from `preregister`) checked against the registrations the grid's finished
    evaluation runs recorded when they ran (params.json): when they differ, the record was deleted
    or rewritten after the runs began, and the runs' earliest one is the plan to compare against."""
    seen = sorted({(r["time"], r["hash"]) for r in recorded if isinstance(r, dict) and "time" in r and "hash" in r})
    if not seen or "problem" in rec or (rec["time"], rec["hash"]) in seen:
        return rec
    return {**rec, "runs_registered": {"time": seen[0][0], "hash": seen[0][1]}}


def registered(results_dir: str | Path | None, grid: dict) -> str:
    """The grid's current analysis plan against the one registered for its runs (grid.json's
    `preregistration`, from `preregister` and `checked_registration`), in words. Never "before the
    first run" unless the record shows no evaluation had finished when it was written."""
    reg = grid.get("preregistration")
    after = " Read the primary test as chosen after the results could be seen."
    if not reg:
        return ("no pre-registration record with these results (xfer keeps one in the runs folder from the first "
                "run on; older results have none): the low-resource definition and the primary block may have been "
                "set after the results were seen.")
    if "problem" in reg:
        return f"**no usable record**: {reg['problem']}." + after
    try:
        now = analysis_plan(grid.get("params", {}))
    except ValueError:
        return f"registered {reg.get('time')}; the grid's settings could not be read to compare."
    if "runs_registered" in reg:
        runs = reg["runs_registered"]
        return (f"**the record was deleted or rewritten after the runs began**: it says hash `{reg['hash']}` at "
                f"{reg['time']}, the runs were started under hash `{runs['hash']}` at {runs['time']}; the plan now "
                f"{'matches' if now['hash'] == runs['hash'] else 'differs from'} the runs' one." + after)
    n = reg.get("finished")
    when = ("before the first run" if n == 0 else
            f"**after {n} of the grid's {reg.get('evaluations', '?')} evaluation runs had finished**")
    if now["hash"] == reg.get("hash"):
        return (f"the low-resource definition and the primary test's settings are those registered at "
                f"{reg.get('time')}, {when} (hash `{reg.get('hash')}`)." + ("" if n == 0 else after))
    changed = [k for k in ("low_resource", "analysis") if now[k] != reg.get(k)]
    return (f"**changed after the runs began**: {', '.join(changed)} differ from the record of {reg.get('time')}, "
            f"registered {when.replace('**', '')} (registered: {reg.get('low_resource')}, {reg.get('analysis')}; "
            f"now: {now['low_resource']}, {now['analysis']})." + after)


# the design's defining settings, shown even at their default values
DESIGN_KEYS = {"seeds", "low_resource", "analysis.primary.smallest_effect", "analysis.primary.alpha",
               "analysis.primary.power", "analysis.primary.assumed_run_sd", "model.source", "model.name",
               "intermediate.task",
               "intermediate.languages", "intermediate.sizes", "target.task", "target.language",
               "evaluate.languages", "evaluate.split"}


def params_table(params: dict) -> pd.DataFrame:
    """The grid's parameters as one row per setting (nested keys dotted, targets by index): the
    design's defining settings and every other one that differs from xfer's defaults. grid.json
    beside the report has every validated value."""
    from xfer.config import Grid

    try:
        grid = Grid.model_validate(params)
    except ValueError:  # a results table from an older xfer: show all it stored
        grid = None
    if grid is not None:
        params = grid.model_dump(mode="json")
        changed = set(_flat(grid.model_dump(mode="json", exclude_defaults=True)))
    rows = [{"setting": k, "value": ", ".join(map(str, v)) if isinstance(v, list) else str(v)}
            for k, v in _flat({k: v for k, v in params.items() if k != "description"}).items()  # prose: see Methods
            if grid is None or k in changed or re.sub(r"\.\d+\.", ".", k) in DESIGN_KEYS]
    return pd.DataFrame(rows, columns=["setting", "value"])


def _flat(value, prefix: str = "") -> dict:
    """Nested settings as {dotted key: value}; a list of groups (several targets) by index."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        value = dict(enumerate(value))
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: value}


def methods(results_dir: str | Path, grid: dict) -> tuple[str, pd.DataFrame]:
    """What pre-training buys: the no-intermediate baseline of the study's encoder beside the same
    architecture at random weights (the grid's `random_init_control`), per evaluation language."""
    from xfer.analysis import load_results

    results, _ = load_results(results_dir)
    base = results[results["inter_size"] == 0]
    model = grid.get("model", {})
    text = [f"**Study.** {grid.get('params', {}).get('description', '').strip()}",
            f"**Encoder.** {model.get('description', '?')}."]
    path = Path(results_dir) / "controls.csv"
    controls = pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else pd.DataFrame()
    cols = ["eval_task", "eval_lang"]
    table = base.groupby(cols)["score"].mean().rename(f"{model.get('name', 'encoder')} (baseline)").to_frame()
    if len(controls):
        table["same architecture, random weights"] = controls.groupby(cols)["score"].mean()
        table["pre-training gain"] = table.iloc[:, 0] - table.iloc[:, 1]
        means = table.mean()
        text.append(f"**Control.** The baseline (no intermediate training) was also trained and evaluated on the "
                    f"same architecture with random weights: mean zero-shot score over {len(table)} languages "
                    f"{means.iloc[0]:.1f} with the pretrained encoder vs {means.iloc[1]:.1f} at random weights "
                    f"(gain {means.iloc[2]:+.1f} points; means over seeds).")
    else:
        text.append("**Control.** No random-weights control in this grid (`random_init_control: false`).")
    return "\n\n".join(text), table.round(1).reset_index()


def training(results_dir: str | Path) -> pd.DataFrame:
    """One row per training run (training.csv): whether each phase learned before its scores are
    read. Empty for a results folder written before xfer recorded it."""
    path = Path(results_dir) / "training.csv"
    if not path.exists() or path.stat().st_size <= 1:
        return pd.DataFrame()
    df = pd.read_csv(path)
    df = df.sort_values(["phase", "random_init", "task", "language", "upstream", "size", "seed"],
                        key=lambda s: s.astype(str).map(_natural) if s.name in ("upstream", "size") else s)
    df["size"] = df["size"].map(lambda v: "all" if pd.isna(v) else fmt_size(float(v)) if _number(v) else v)
    df["selected_step"] = df["selected_step"].astype("Int64")
    return df.drop(columns=[c for c in ("train_seconds",) if c in df]).round(3).reset_index(drop=True)


def _natural(label: str) -> str:
    """Sort key that orders run labels by the numbers in them: sst2-en-300 before sst2-en-1000."""
    return re.sub(r"\d+", lambda m: m.group().zfill(12), label)


def _number(v) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def failures(grid: dict) -> pd.DataFrame:
    """Runs that failed, with the notebook that holds the traceback."""
    return pd.DataFrame(grid.get("failures") or [], columns=["phase", "run_id", "error", "notebook"])


def provenance(grid: dict) -> str:
    """Code, packages, device and data checksums the numbers come from."""
    prov = grid.get("provenance", {})
    runs = grid.get("runs", {})
    packages = prov.get("packages") or {}
    checksums = prov.get("data_checksums") or {}
    lines = [f"- git commit: `{prov.get('git_commit', 'unknown')}`",
             f"- device: {prov.get('device', 'unknown')}",
             f"- created: {prov.get('created', 'unknown')}",
             "- runs: " + (", ".join(f"{k} {v}" for k, v in runs.items()) or "unknown"),
             "- packages: " + (", ".join(f"{k} {v}" for k, v in sorted(packages.items())) or "not recorded")]
    hub = prov.get("hub_revisions") or {}
    if hub:
        lines += ["", "| from the hub | revision |", "|---|---|"]
        lines += [f"| `{k}` | `{v}` |" for k, v in sorted(hub.items())]
    if checksums:
        lines += ["", "| data file | sha256 |", "|---|---|"]
        lines += [f"| `{f}` | `{h}` |" for f, h in sorted(checksums.items())]
    else:
        lines.append("- data checksums: not recorded")
    return "\n".join(lines)


def runs_table(results: pd.DataFrame) -> pd.DataFrame:
    """The run ids behind every number: one row per evaluated run."""
    cols = ["eval_run", "target_run", "intermediate_run", "inter_task", "inter_lang", "inter_size", "seed"]
    return (results[cols].drop_duplicates().sort_values(["inter_task", "inter_lang", "inter_size", "seed"])
            .reset_index(drop=True))


# A reader-facing table (`facts`): {column: (label with its unit, format)}. The format is a
# str.format template over the row's fields ("{ci_low:+.2f} to {ci_high:+.2f}") or over the
# column's own value ("{:.2g}"); a field that is missing shows as a dash. The primary test's:
PRIMARY_LABELS = {
    "decision": ("Decision of the pre-registered rule", "{decision} {why}"),
    "estimate": ("Slope of D (points per tenfold corpus size)", "{:+.2f}"),
    "rci_low": ("95 % CI of the slope (points per tenfold size; repeated CI, valid at the look it stopped)",
                "{rci_low:+.2f} to {rci_high:+.2f}"),
    "p": ("p (t-test across seeds, two-sided)", "{:.2g}"),
    "boundary_p": ("Boundary at that look (nominal p the test had to beat)", "{:.2g}"),
    "eq_low": ("Equivalence interval (inside ± the smallest effect of interest: equivalent)",
               "{eq_low:+.2f} to {eq_high:+.2f} (bound ±{bound:g})"),
    "n_seeds": ("Seeds used, of the design's maximum", "{n_seeds:.0f} of {n_max:.0f}"),
    "look": ("Look it stopped at", "{look_no:.0f} of {n_looks:.0f}"),
    "mde": ("Minimum detectable slope of the rule at the declared power (points per tenfold size)", "{:.2f}"),
    "sd_seed": ("SD of one seed's slope (points per tenfold size)", "{sd_seed:.2f}, {sd_source}"),
    "slope_c": ("Parts of D: slope of the non-English contrast / of the English control's contrast",
                "{slope_c:+.2f} / {slope_c_en:+.2f}"),
    "slope_low": ("Slope of the low-resource languages' own Δ after the non-English corpora", "{:+.2f}"),
    "mean_low_delta": ("Mean Δ on low-resource languages, non-English corpora (points, 95 % CI)",
                       "{mean_low_delta:+.2f} ({mean_low_ci_low:+.2f} to {mean_low_ci_high:+.2f})"),
    "low_delta_largest": ("The same at the largest size, {largest_size} (points, 95 % CI)",
                          "{low_delta_largest:+.2f} ({low_largest_ci_low:+.2f} to {low_largest_ci_high:+.2f})"),
    "n_runs": ("Runs with a non-English corpus, and the units they form", "{n_runs:.0f} runs, {n_units:.0f} units"),
    "sizes": ("Corpus sizes (sentences)", "{}"),
    "corpora": ("Corpora (English control: {english_control})", "{}"),
    "n_low": ("Evaluation languages: low-resource / other", "{n_low:.0f} ({low_languages}) / {n_other:.0f}"),
    "dose": ("Training dose", "{}"),
}


LOOK_LABELS = {  # stats.look_path's columns, one column per target and look
    "n_seeds": ("Seeds finished", "{:.0f}"),
    "estimate": ("Slope of D (points per tenfold corpus size)", "{:+.2f}"),
    "rci_low": ("95 % repeated CI", "{rci_low:+.2f} to {rci_high:+.2f}"),
    "p": ("p (t-test across seeds)", "{:.2g}"),
    "boundary_p": ("Boundary (nominal p the test had to beat)", "{:.2g}"),
    "eq_low": ("Equivalence interval", "{eq_low:+.2f} to {eq_high:+.2f}"),
    "decision": ("Decision", "{}"),
}


def facts(df: pd.DataFrame, labels: dict, by=("target_task",), links=None) -> pd.DataFrame:
    """A result table turned for readers: one row per quantity, labelled with its unit (`labels`,
    see PRIMARY_LABELS), one column per record of `df` named by its `by` fields, every value
    formatted, no raw column name left. `links(row, column)` as in `table`."""
    records = [df.iloc[i] for i in range(len(df))]
    names = [" · ".join(str(r[b]) for b in by if b in r.index) or f"{i + 1}" for i, r in enumerate(records)]
    out = {}
    for col, (label, fmt) in labels.items():
        if col not in df.columns:
            continue
        cells = []
        for r in records:
            text = _format(fmt, col, r)
            href = links(r, col) if links is not None and text != "–" else None
            cells.append(_Link(text, href) if href else text)
        out[_format(label, col, records[0]) if records and "{" in label else label] = cells
    return pd.DataFrame(out, index=names).T.rename_axis("").reset_index()


def _format(fmt: str, col: str, row: pd.Series) -> str:
    """`fmt` over the row's fields ({name}) or the column's own value ({}); a dash if one is missing."""
    fields = [f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None]
    values = {f: row.get(f or col) for f in fields}
    missing = [f for f, v in values.items()
               if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v))]
    if len(missing) == len(values):
        return "–"
    for f in missing:  # a part that is missing (one seed: no interval) shows as a dash, the rest as it is
        fmt = re.sub(r"\{" + re.escape(f) + r"(:[^}]*)?\}", "–", fmt)
        del values[f]
    try:
        text = fmt.format(*[values[""]] if "" in values else [], **{k: v for k, v in values.items() if k})
    except (ValueError, TypeError):  # a text where a number was expected
        text = " ".join(str(v) for v in values.values())
    return _no_negative_zero(text.strip())


def _no_negative_zero(text: str) -> str:
    """"-0.00" → "0.00": a value that rounds to zero has no sign."""
    return re.sub(r"(?<![\w.])[-−](0(?:\.0+)?)(?![\d.])", r"\1", text)


class _Link:
    """A table cell that links to the runs behind it (`links` of `table`)."""

    def __init__(self, value, href: str):
        self.value, self.href = value, href

    def __str__(self):
        return f"{self.value} {self.href}"


def table(df: pd.DataFrame, collapse: bool = True, links=None, caption: str = ""):
    """A DataFrame as the report prints it. With `collapse`, columns (and index levels) that hold
    one value in every row go into a line above the table, so wide statistics tables fit a page,
    and a single row is shown as a list of fields.
    p-values in two significant digits, other numbers in two decimals, missing values as a dash,
    long notes wrapped. `links(row, column)` gives the relative link of a number's runs (or None);
    `caption` goes above the table ("Table 2. …", see `Numbering`)."""
    from IPython.display import HTML

    df = df.copy()
    if links is not None:
        for col in df.columns:
            df[col] = [_Link(v, href) if (href := links(df.iloc[i], col)) else v
                       for i, v in enumerate(df[col].astype(object))]
    cap = f'<p class="xfer-caption" style="margin: 0.8em 0 0.3em">{caption}</p>' if caption else ""
    if collapse and len(df) == 1:  # one row reads better as a list of fields than as a very wide row
        row = df.iloc[0] if isinstance(df.index, pd.RangeIndex) else df.reset_index().iloc[0]
        pairs = pd.DataFrame([(html.escape(str(c)), _cell(str(c), v)) for c, v in row.items() if str(v) != ""],
                             columns=["", "value"])
        return HTML(cap + pairs.style.hide(axis="index").set_properties(**{"text-align": "left"}).to_html())
    shared = []
    if collapse and len(df) > 1:
        for col in [c for c in df.columns if df[c].astype(str).nunique(dropna=False) == 1]:
            value = df[col].iloc[0]
            if str(value) not in ("", "nan", "<NA>", "None"):
                shared.append(f"{col} <b>{_cell(col, value)}</b>")  # _cell escapes
            df = df.drop(columns=col)
        if isinstance(df.index, pd.MultiIndex):
            for level in [n for n in df.index.names if df.index.get_level_values(n).nunique() == 1]:
                shared.append(f"{level} <b>{html.escape(str(df.index.get_level_values(level)[0]))}</b>")
                df = df.droplevel(level)
    # long notes, and language lists that repeat over rows (one per regression term), become
    # numbered footnotes under the table
    footnotes = []
    for col in [c for c in ("note", "languages") if c in df.columns]:
        cells = df[col].fillna("").astype(str)
        if col == "languages" and cells.nunique() == len(cells):
            continue
        texts = [t for t in dict.fromkeys(cells) if t]
        first = len(footnotes) + 1
        footnotes += [f"[{i}] {t}" for i, t in enumerate(texts, first)]
        df[col] = cells.map(lambda t, texts=texts, first=first: f"[{texts.index(t) + first}]" if t else "")
    small = '<p style="font-size: 85%; margin: 0.2em 0">'
    head = f'{small}In every row: {" · ".join(shared)}</p>' if shared else ""
    foot = "".join(f"{small}{html.escape(f)}</p>" for f in footnotes)
    body = "".join((f"{small}(continued)</p>" if i else "") + _styled(df[cols])
                   for i, cols in enumerate(_split_wide(df)))
    return HTML(cap + head + body + foot)


PAGE_CHARS = 130  # characters of 7 pt table text across an A4 page between the report's margins


def _split_wide(df: pd.DataFrame) -> list[list]:
    """Column groups that each fit the printed page's width (estimated from the widest text of
    each column, a wrapped column at 24 characters); the leading label columns, and the index,
    repeat in every group."""
    def width(col) -> int:
        words = max((len(w) for w in re.split(r"[\s_]+", str(col))), default=1)
        cells = df[col].map(lambda v: len(re.sub(r"<[^>]+>", "", _cell(str(col), v)))).max() if len(df) else 0
        return max(words, min(int(cells), 24)) + 2

    index = sum(max((len(str(v)) for v in df.index.get_level_values(n)), default=0) + 2
                for n in range(df.index.nlevels)) if not isinstance(df.index, pd.RangeIndex) else 0
    keys = []
    for col in df.columns[:2]:  # label columns (text) at the left repeat; numbers start the split part
        if df[col].map(lambda v: _is_number(v.value if isinstance(v, _Link) else v)).any():
            break
        keys.append(col)
    rest = [c for c in df.columns if c not in keys]
    budget = PAGE_CHARS - index - sum(width(c) for c in keys)
    if sum(width(c) for c in rest) <= budget:
        return [list(df.columns)]
    groups, current, used = [], [], 0
    for col in rest:
        if current and used + width(col) > budget:
            groups.append(current)
            current, used = [], 0
        current.append(col)
        used += width(col)
    groups.append(current)
    return [keys + g for g in groups]


def _styled(df: pd.DataFrame) -> str:
    """One table as HTML: numbers formatted (`_cell`), long texts and run labels wrapped."""
    styler = df.style.format({c: (lambda v, c=c: _cell(c, v)) for c in df.columns})
    wrap = [c for c in ("languages", "error") if c in df.columns]
    if wrap:
        styler = styler.set_properties(subset=wrap, **{"white-space": "normal", "min-width": "12em",
                                                       "text-align": "left"})
    labels = [c for c in ("run_id", "upstream") if c in df.columns]  # long run labels break at a hyphen
    if labels:
        styler = styler.set_properties(subset=labels, **{"white-space": "normal"})
    if len(df.columns) and len(df) and df.iloc[:, 0].map(lambda v: isinstance(v, str)).all():
        styler = styler.set_properties(subset=[df.columns[0]], **{"text-align": "left"})  # row labels read left
    # headers break after an underscore, not between any two letters
    styler = styler.format_index(lambda c: html.escape(str(c)).replace("_", "_<wbr>"), axis=1)
    if isinstance(df.index, pd.RangeIndex):
        styler = styler.hide(axis="index")
    return styler.to_html()


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)


def _cell(col: str, v) -> str:
    if isinstance(v, _Link):
        return f'<a href="{html.escape(v.href)}">{_cell(col, v.value)}</a>'
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return _no_negative_zero(f"{v:.2g}" if col in ("p", "pval") or col.startswith(("p_", "var_")) else f"{v:.2f}")
    return html.escape(str(v))


def figure(fig, caption: str = "", alt: str = "", dpi: int = 144):
    """A matplotlib Figure as an embedded PNG with its alt text and caption: sharp in the PDF
    (rendered at `dpi`), laid out at its own size in inches (so a font of 7 pt prints at 7 pt on
    a figure no wider than the page, `figures.PRINT_WIDTH`), without touching matplotlib's backend
    or pyplot's global state. The image is HTML, not an image output, because nbconvert would give
    it the alt text "No description has been provided"."""
    import base64
    from io import BytesIO

    from IPython.display import HTML

    if not (alt or caption).strip():
        raise ValueError("figure: alt text (or a caption) is required; allowed: a sentence saying what it shows")
    if fig.get_figwidth() > PRINT_WIDTH:  # laid out again at the page's width: its fonts then print at their size
        fig.set_size_inches(PRINT_WIDTH, fig.get_figheight())
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    width = buf.getvalue()[16:20]  # the PNG header's width in pixels, after bbox_inches="tight"
    inches = int.from_bytes(width, "big") / dpi
    data = base64.b64encode(buf.getvalue()).decode()
    text = html.escape(_plain(alt or caption))
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return HTML(f'<figure style="margin: 0.8em 0"><img src="data:image/png;base64,{data}" alt="{text}" '
                f'style="width: {inches:.2f}in; max-width: 100%; height: auto">{cap}</figure>')


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text)).strip()


class Numbering:
    """Figure and table numbers in the order the report shows them ("Figure 1. …", "Table 2. …")."""

    def __init__(self):
        self.figures = self.tables = 0

    def figure(self, fig, caption: str, alt: str):
        self.figures += 1
        return figure(fig, f"<b>Figure {self.figures}.</b> {_code(caption)}", alt)

    def table(self, df: pd.DataFrame, caption: str, collapse: bool = True, links=None):
        self.tables += 1
        return table(df, collapse, links, f"<b>Table {self.tables}.</b> {_code(caption)}")


def _code(text: str) -> str:
    """A caption's text as HTML, `names` in code type as in the notebook's Markdown."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


# ----------------------------------------------------------------------------- the runs behind the numbers


def anchor(target_task: str, label: str = "") -> str:
    """The id of a group of runs in `runs/index.html`: a target (all its runs), or within it
    "baseline" or "<corpus language> <size>" as the per-language table labels its columns."""
    return "t-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{target_task} {label}".strip())


def by_target(row: pd.Series, col) -> str | None:
    """`links` for a table with a `target_task` column: every number to its target's runs."""
    return f"runs/index.html#{anchor(row['target_task'])}" if _is_number(row[col]) and "target_task" in row.index \
        else None


def by_cell(row: pd.Series, col) -> str | None:
    """`links` for `analysis.per_language_table` (index target task × language): the baseline
    column to the baseline runs, a "Δ <language> <size>" column to that corpus's runs."""
    target = row.name[0]
    if not _is_number(row[col]):
        return None
    if col == "baseline":
        return f"runs/index.html#{anchor(target, 'baseline')}"
    return f"runs/index.html#{anchor(target, col[2:])}" if str(col).startswith("Δ ") else None


def by_control(row: pd.Series, col) -> str | None:
    """`links` for the Methods table: the random-weights column to the control runs."""
    return f"runs/index.html#{CONTROL_ANCHOR}" if col == "same architecture, random weights" and \
        _is_number(row[col]) else None


RUN_COLUMNS = {"eval_run": "evaluate", "target_run": "target", "intermediate_run": "intermediate"}
CONTROL_ANCHOR = "control"  # the random-weights control runs in runs/index.html


def by_run(row: pd.Series, col) -> str | None:
    """`links` for a table of run ids (`runs_table`): each id to its run's notebook."""
    return f"runs/{RUN_COLUMNS[col]}/{row[col]}/notebook.html" if col in RUN_COLUMNS and row[col] else None
