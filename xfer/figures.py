"""The report's figures, each a matplotlib Figure built without pyplot (no global state): the data
as measured (Δ per language and size), the primary test's units, and Δ against training dose."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xfer import analysis as A


PRINT_WIDTH = 7.3  # inches: A4 less the report's print margins; a figure this wide prints at its own size
PRINT_HEIGHT = 10.0  # inches of a page a figure may take
LABEL_PT = 7  # the smallest font in a figure that prints at its own size


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
    against corpus size, seeds as points, the mean over seeds as a line, one
    colour per intermediate language."""
    d = A._intermediate(deg)
    tasks = sorted(d["target_task"].unique())
    target_task = target_task or (tasks[0] if tasks else None)
    d = d[d["target_task"] == target_task]
    if d.empty:
        return _empty("No intermediate-training results to plot yet.")
    langs = A._lang_order(d, definition)
    ncol = min(5, max(1, len(langs)))
    nrow = max(1, math.ceil(len(langs) / ncol))
    # a page wide and at most a page high, so every label prints at its size (≥ LABEL_PT)
    fig = Figure(figsize=(min(PRINT_WIDTH, 1.45 * ncol + 0.6), min(1.75, (PRINT_HEIGHT - 1.2) / nrow) * nrow + 1.2),
                 layout="constrained")
    axes = fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False).ravel()
    series = sorted(d.groupby(["inter_task", "inter_lang"]).groups)
    colors = _colors(series)
    jitter = np.random.default_rng(0)
    for ax, lang in zip(axes, langs):
        g = d[d["eval_lang"] == lang]
        low = bool(A._low(g, definition).iloc[0])
        ax.axhline(0, color="0.6", lw=0.8)
        for key in series:
            s = g[(g["inter_task"] == key[0]) & (g["inter_lang"] == key[1])]
            if s.empty:
                continue
            ax.scatter(s["log10_size"] + jitter.uniform(-0.04, 0.04, len(s)), s["delta"], s=9, alpha=0.5,
                       color=colors[key], lw=0)
            m = s.groupby("log10_size")["delta"].mean()
            ax.plot(m.index, m.to_numpy(), color=colors[key], lw=1.6, label=f"{key[0]} · {key[1]}")
        name = g["language"].iloc[0] if isinstance(g["language"].iloc[0], str) else "?"
        ax.set_title(f"{lang} · {name}" + (" (low)" if low else ""), fontsize=LABEL_PT,
                     color=A.LOW_COLOR if low else "black", fontweight="bold" if low else "normal")
        if low:
            ax.set_facecolor("#fbeeee")
    for ax in axes[len(langs):]:
        ax.set_visible(False)
    sizes = sorted(d["inter_size"].unique())
    for ax in axes[:len(langs)]:
        ax.set_xticks(np.log10(np.array(sizes, float)), [A.fmt_size(s) for s in sizes], fontsize=7)
        ax.tick_params(axis="both", labelsize=7, labelbottom=True)
    fig.supxlabel("intermediate corpus size (sentences, log scale)", fontsize=9)
    fig.supylabel("Δ score vs. no-intermediate baseline (points)", fontsize=9)
    fig.suptitle(f"{target_task}: degradation against intermediate corpus size "
                 f"(low-resource = '{definition}', tinted)", fontsize=10)
    if series:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", title="intermediate", fontsize=8, title_fontsize=8,
                   frameon=False, ncols=min(4, len(labels)))
    return fig


def plot_heatmap(deg: pd.DataFrame, definition: str) -> Figure:
    """Mean delta (over seeds) for every target task × intermediate language × size and evaluation
    language (low-resource first, labelled in red). The longer of the two goes down the page and
    the figure is at most `PRINT_WIDTH` wide, so its 7 pt cell labels print at 7 pt; where cells
    would be too narrow for a label, the per-language table has the numbers."""
    d = A._intermediate(deg)
    if d.empty:
        return _empty("No intermediate-training results to plot yet.")
    langs = A._lang_order(d, definition)
    d = d.assign(row=d["target_task"] + " · " + d["inter_task"] + " " + d["inter_lang"] + " · "
                 + d["inter_size"].map(A.fmt_size).astype(str))
    rows = d.sort_values(["target_task", "inter_task", "inter_lang", "inter_size"])["row"].unique().tolist()
    m = d.pivot_table(index="row", columns="eval_lang", values="delta", aggfunc="mean").reindex(index=rows,
                                                                                             columns=langs)
    langs_down = len(langs) > len(rows)
    if langs_down:
        m = m.T
    n_rows, n_cols = m.shape
    margin = 2.9  # inches for the row labels, the colour bar and its label
    cell_w = min(0.5, (PRINT_WIDTH - margin) / n_cols)
    cell_h = max(0.13, min(0.24, (PRINT_HEIGHT - 2.2) / n_rows))
    fig = Figure(figsize=(margin + cell_w * n_cols, 2.2 + cell_h * n_rows), layout="constrained")
    ax = fig.subplots()
    lim = np.nanmax(np.abs(m.to_numpy())) if np.isfinite(m.to_numpy()).any() else 1.0
    im = ax.imshow(m.to_numpy(float), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(n_cols), m.columns, fontsize=LABEL_PT, rotation=90)
    ax.set_yticks(range(n_rows), m.index, fontsize=LABEL_PT)
    low = set(d.loc[A._low(d, definition), "eval_lang"])
    for label in (ax.get_yticklabels() if langs_down else ax.get_xticklabels()):
        if label.get_text() in low:
            label.set_color(A.LOW_COLOR)
            label.set_fontweight("bold")
    if cell_w >= 0.36 and m.size <= 600:  # "-12.3" at 7 pt fits
        for (i, j), v in np.ndenumerate(m.to_numpy(float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=LABEL_PT,
                        color="white" if abs(v) > 0.6 * lim else "black")
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    bar.set_label("mean Δ score (points)", fontsize=8)
    bar.ax.tick_params(labelsize=LABEL_PT)
    ax.set_title(f"Mean change vs. baseline (red labels: low-resource, '{definition}')", fontsize=9)
    return fig


def plot_gap(deg: pd.DataFrame, definition: str) -> Figure:
    """The transfer gap to English (score − same run's English score) at each corpus size, for
    low-resource and other languages: language means as faint points, the mean over languages as a
    line. One panel per target task × intermediate language; the baseline is the first x."""
    d = A.headline(deg)
    d = d[d["gap_en"].notna() & (d["eval_lang"] != "en")]
    d = d.assign(level=np.where(A._low(d, definition), "low-resource", "other"))
    inter = d[~d["is_baseline"]]
    panels = sorted(inter.groupby(A.GROUP).groups)
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
        for level, color, dx in (("low-resource", A.LOW_COLOR, 0.08), ("other", A.HIGH_COLOR, -0.08)):
            lv = g[g["level"] == level]
            if lv.empty:
                continue
            per_lang = lv.groupby(["inter_size", "eval_lang"])["gap_en"].mean().reset_index()
            ax.scatter(per_lang["inter_size"].map(pos) + dx, per_lang["gap_en"], s=8, color=color, alpha=0.35, lw=0)
            m = per_lang.groupby("inter_size")["gap_en"].mean()
            ax.plot(m.index.map(pos) + dx, m.to_numpy(), color=color, marker="o", ms=4, lw=1.4,
                    label=f"{level} ({lv['eval_lang'].nunique()})")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(range(len(sizes)), [A.fmt_size(s) for s in sizes], fontsize=8)
        ax.set_title(f"{task} · {itask} {ilang}", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.supxlabel("intermediate corpus size (sentences)", fontsize=9)
    fig.supylabel("score − English score of the same run (points)", fontsize=9)
    fig.suptitle(f"Transfer gap to English by resource level ('{definition}')", fontsize=10)
    return fig


def plot_primary(stats: dict) -> Figure:
    """The primary test as data: each independent unit's D (non-English minus English control,
    low-resource minus other languages) against corpus size, one line per seed and corpus (the test
    takes each seed's slope), one panel per target, with the mean per-seed slope and its repeated CI
    in the title. Seeds past the look the rule stopped at are not drawn (not part of the study)."""
    runs, table = stats["runs"], stats["primary"]
    targets = [tuple(k) for k in table[A.TARGET].itertuples(index=False)]
    if not targets:
        return _empty("No primary test: no non-English intermediate run in the results.")
    fig = Figure(figsize=(3.6 * min(3, len(targets)) + 0.6, 3.0 * math.ceil(len(targets) / 3) + 0.6),
                 layout="constrained")
    axes = fig.subplots(math.ceil(len(targets) / 3), min(3, len(targets)), squeeze=False).ravel()
    for ax, key, (_, row) in zip(axes, targets, table.iterrows()):
        t = runs[(runs["target_task"] == key[0]) & (runs["train_task"] == key[1]) & (runs["inter_lang"] != "en")]
        t = t[t["inter_budget"] == (row["budget"] if row["budget"] != "one arm" else "")]
        u = A.units(t)
        colors = _colors(sorted(u["corpus"].unique()))
        for corpus, g in u.groupby("corpus"):
            for i, (_, s) in enumerate(g.sort_values("log10_size").groupby("seed")):
                ax.plot(s["log10_size"], s["D"], "o-", ms=3, lw=0.7, color=colors[corpus], alpha=0.6,
                        label=corpus if i == 0 else None)
        if row["status"] == "tested":
            x = np.linspace(u["log10_size"].min(), u["log10_size"].max(), 2)
            ax.plot(x, u["D"].mean() + row["estimate"] * (x - u["log10_size"].mean()), color="black", lw=1.6)
            title = (f"slope {row['estimate']:+.2f} [{row['rci_low']:+.2f}, {row['rci_high']:+.2f}] per decade, "
                     f"{int(row['n_seeds'])} seeds")
        else:
            title = f"untestable: {row['why']}"
        ax.axhline(0, color="0.6", lw=0.8)
        sizes = sorted(u["inter_size"].unique())
        ax.set_xticks(np.log10(np.array(sizes, float)), [A.fmt_size(s) for s in sizes], fontsize=7)
        ax.set_title(f"{key[0]} (trained on {key[1]})\n{title}", fontsize=8)
        if len(u):
            ax.legend(fontsize=LABEL_PT, frameon=False)
    for ax in axes[len(targets):]:
        ax.set_visible(False)
    fig.supxlabel("intermediate corpus size (sentences, log scale)", fontsize=9)
    fig.supylabel("D: low − other languages, non-English − English corpus (points)", fontsize=8)
    return fig


def plot_dose(stats: dict) -> Figure:
    """Each run's contrast c (low-resource − other languages) against corpus size and, beside it,
    against the training dose the run got (tokens seen, else examples, else steps): where dose moved
    with size, the two panels cannot be told apart by this grid."""
    runs = stats["runs"]
    col = next((c for c in ("tokens_seen", "examples_seen", "steps") if runs[c].notna().any()), None)
    if runs.empty:
        return _empty("No intermediate runs to plot yet.")
    fig = Figure(figsize=(8.5, 3.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    keys = sorted(runs.groupby(["target_task", "inter_task", "inter_lang"]).groups)
    colors = _colors(keys)
    for key, g in runs.groupby(["target_task", "inter_task", "inter_lang"]):
        label = f"{key[0]} · {key[1]} {key[2]}"
        axes[0].scatter(g["log10_size"], g["c"], s=12, color=colors[key], label=label, alpha=0.8, lw=0)
        if col:
            axes[1].scatter(np.log10(g[col].astype(float)), g["c"], s=12, color=colors[key], alpha=0.8, lw=0)
    axes[0].set_xlabel("log10 corpus size (sentences)", fontsize=9)
    axes[0].set_ylabel("c: mean Δ low-resource − other (points)", fontsize=9)
    if col:
        axes[1].set_xlabel(f"log10 {col.replace('_', ' ')}", fontsize=9)
    else:
        axes[1].text(0.5, 0.5, "training dose not recorded\nin training.csv", ha="center", va="center",
                     transform=axes[1].transAxes, color="0.3")
    for ax in axes:
        ax.axhline(0, color="0.6", lw=0.8)
    fig.legend(fontsize=LABEL_PT, loc="outside right upper", frameon=False)
    return fig
