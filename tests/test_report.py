"""The report renders from a stored results table, without training anything: papermill runs
notebooks/04_report.ipynb on a synthetic results folder, then `render` writes the HTML and the PDF."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from test_analysis import LANGS, make_results, write_results
from xfer import publish, report
from xfer.paths import root

NOTEBOOK = root() / "notebooks" / "04_report.ipynb"


def _ensure_kernel():
    """papermill needs a kernel named python3 for this interpreter (the Makefile registers it too)."""
    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    _ensure_kernel()
    tmp = tmp_path_factory.mktemp("report")
    results = make_results(inter_langs=("sw", "en"), slope_low={"sw": -2.0, "en": 0.0})
    results_dir = write_results(tmp / "results", results)
    # as the default preset has them: the random-weights control and the training record, whose
    # dose (steps) grows with size here, so the primary table carries the long dose text
    controls = results[results["inter_size"] == 0].assign(
        eval_run=lambda d: "ctl-" + d["eval_run"], target_run=lambda d: "ctl-" + d["target_run"],
        score=lambda d: d["score"] - 20)
    controls.to_csv(results_dir / "controls.csv", index=False)
    inter = results[results["inter_size"] > 0].drop_duplicates("intermediate_run")
    pd.DataFrame({"phase": "intermediate", "run_id": inter["intermediate_run"], "task": inter["inter_task"],
                  "language": inter["inter_lang"], "size": inter["inter_size"], "seed": inter["seed"],
                  "upstream": "pretrained", "random_init": False, "n_train": inter["inter_size"],
                  "steps": inter["inter_size"] // 16, "examples_seen": inter["inter_size"],
                  "tokens_seen": inter["inter_size"] * 21, "loss_start": 1.9, "loss_end": 0.4,
                  "dev_score": 71.2, "selected_step": inter["inter_size"] // 16, "train_seconds": 10.0}
                 ).to_csv(results_dir / "training.csv", index=False)
    runs = tmp / "runs"  # each run's folder as the runner leaves it (the executed notebook and its record)
    for col, phase in report.RUN_COLUMNS.items():
        for rid in (set(results[col]) | set(controls[col])) - {""}:
            (runs / phase / rid).mkdir(parents=True)
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {phase} run {rid}")])
            nbformat.write(nb, runs / phase / rid / "notebook.ipynb")
            (runs / phase / rid / "metrics.json").write_text('{"scores": {}}')
    publish.publish_runs(results_dir, runs)
    executed = tmp / "04_report.ipynb"
    pm.execute_notebook(NOTEBOOK, executed, kernel_name="python3", parameters={"results_dir": str(results_dir)},
                        cwd=str(root()), progress_bar=False)
    site = results_dir  # as `xfer report` does: the report beside its results and its runs/ copy
    try:
        publish.render(executed, site)
        missing = None
    except RuntimeError as e:  # chromium absent: the HTML is still there
        if "apt-get install chromium" not in str(e):
            raise
        missing = str(e)
    return {"executed": executed, "site": site, "missing": missing}


def _text(s: str) -> str:
    return re.sub(r"\s+", " ", s)


def test_html_states_question_model_and_results(rendered):
    html = (rendered["site"] / "index.html").read_text()
    text = _text(re.sub(r"<[^>]+>", " ", html))
    assert report.QUESTION in text
    assert "tiny-bert (source: scratch)" in text and "not a scientific finding" in text
    assert "2 layers of hidden size 64" in text  # every approximation
    assert "Finding:" in text and "Decision:" in text  # the bottom line first
    assert re.search(r"slope [-+]?\d+\.\d\d points of D per tenfold size \(95 % repeated CI [-+]?\d+\.\d\d to", text)
    assert "no pre-registration record" in text  # this results folder has none
    assert "rm_corr" in text and "log10_size:low_resource" in text  # exploratory tables
    assert "0123abc" in text and "eval-sw-1000-s1" in text  # provenance and run ids
    assert html.count("data:image/png;base64") >= 5  # primary, dose, degradation, heatmap, gap
    assert "cdnjs.cloudflare.com/ajax/libs/mathjax" in html  # published HTML keeps the CDN MathJax
    nb = nbformat.read(rendered["executed"], as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error" or o.get("name") == "stderr"]


def test_pdf_has_pages_and_the_question(rendered):
    if rendered["missing"]:
        pytest.skip(f"chromium not installed: {rendered['missing']}")
    pdf = rendered["site"] / "report.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 2
    text = _text(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout)
    assert report.QUESTION in text
    assert "not a scientific finding" in text
    for n in range(1, pages + 1):  # every page numbered, by the print CSS's @page footer
        page = subprocess.run(["pdftotext", "-f", str(n), "-l", str(n), str(pdf), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert f"page {n} of {pages}" in _text(page)


def test_bottom_line_comes_first_and_quotes_the_primary_table(rendered):
    """Under the title, before any figure: the finding in plain words, D defined, then the decision
    with the very numbers of the primary test's table (Table 1)."""
    html = (rendered["site"] / "index.html").read_text()
    text = _text(re.sub(r"<[^>]+>", " ", html))
    assert html.index("Finding:") < html.index("<img") and html.index("Finding:") < html.index("Research question")
    assert html.index(report.TITLE) < html.index("Finding:") < html.index("the extra loss of the low-resource")
    decision, est, lo, hi = re.search(r"Decision: udpos: (\w+) after \d+ seeds, slope of D ([-+]?\d+\.\d\d) points "
                                      r"per tenfold size \(95 % CI ([-+]?\d+\.\d\d) to ([-+]?\d+\.\d\d)\)", text).groups()
    assert decision in ("effect", "equivalent", "inconclusive", "futile")
    primary = _text(re.sub(r"<[^>]+>", " ", html[html.index("Table 1."):html.index("Figure 1.")]))
    assert f"Slope of D (points per tenfold corpus size) {est} " in primary, primary
    assert f"95 % CI of the slope (points per tenfold size; repeated CI, valid at the look it stopped) {lo} to {hi} " \
        in primary, primary
    assert f"Decision of the pre-registered rule {decision}" in primary
    assert not re.search(r"\b(rci_low|eq_low|n_low|sd_source|dose_confounded)\b", primary)  # labels, not names


def test_figures_and_tables_are_numbered_with_captions_and_alt_text(rendered):
    html = (rendered["site"] / "index.html").read_text()
    figures = [int(n) for n in re.findall(r"<b>Figure (\d+)\.</b>", html)]
    tables = [int(n) for n in re.findall(r"<b>Table (\d+)\.</b>", html)]
    assert figures == list(range(1, len(figures) + 1)) and len(figures) >= 5
    assert tables == list(range(1, len(tables) + 1)) and len(tables) >= 8
    images = re.findall(r"<img[^>]*>", html)
    assert len(images) == len(figures)
    alts = [re.search(r'alt="([^"]*)"', img).group(1) for img in images]
    assert all(len(a) > 40 and "No description" not in a for a in alts), alts
    assert len(set(alts)) == len(alts)  # each says what its figure shows


def test_per_language_numbers_link_to_their_runs_inside_the_report_folder(rendered):
    """Every number of the per-language table is a relative link to the group of runs behind it in
    runs/index.html, whose links open each run's notebook copied beside the report."""
    site = rendered["site"]
    html = (site / "index.html").read_text()
    start = html.index("Baseline score (mean over seeds) and mean Δ per")
    table = html[start:html.index("</table>", start)]
    head = [h for h in re.findall(r"<th[^>]*>(.*?)</th>", table.split("</tr>")[0]) if h != "\xa0"]
    first = head.index("baseline")  # the results; the columns before it describe the language (languages.csv)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S) for r in table.split("</tr>")[2:-1]]
    numbers = [c.strip() for r in rows for c in r[first:] if c.strip() != "–"]
    assert len(rows) == len(LANGS) and len(numbers) == len(rows) * 7  # baseline and 6 corpora × sizes
    assert all(re.fullmatch(r'<a href="runs/index.html#[^"]+">-?\d+\.\d\d</a>', c) for c in numbers), numbers
    index = (site / "runs" / "index.html").read_text()
    for href in set(re.findall(r'<a href="([^"]+)"', table)):
        path, anchor = href.split("#")
        assert not Path(path).is_absolute() and (site / path).is_file() and f'id="{anchor}"' in index, href
    runs = re.findall(r'<a href="([^"]+)"', index)
    # per seed: the baseline's eval + target, each corpus run's three, the control's eval + target
    assert len(runs) == 3 * (2 + 2 * 3 * 3 + 2)
    assert all((site / "runs" / r).is_file() for r in runs)
    assert "eval-sw-1000-s1" in (site / "runs" / "evaluate" / "eval-sw-1000-s1" / "notebook.html").read_text()
    # the Methods table's random-weights numbers open the control runs
    start = html.index("beside the same architecture at random weights")
    assert f'<a href="runs/index.html#{report.CONTROL_ANCHOR}">' in html[start:html.index("</table>", start)]
    assert f'id="{report.CONTROL_ANCHOR}"' in index and 'href="evaluate/ctl-eval-none-0-s1/notebook.html"' in index
    start = html.index("The primary test, one column per target")
    assert '<a href="runs/index.html#t-udpos">' in html[start:html.index("</table>", start)]


def test_heatmap_cell_labels_print_at_7_pt_or_more():
    """At most a page wide (so it prints at its own size), with a label in every cell at ≥ 7 pt,
    for 37 evaluation languages as the cpu preset has."""
    from test_analysis import make_results

    from xfer import analysis, figures

    langs = tuple(analysis.load_languages().index[:37])
    deg = analysis.degradation(make_results(eval_langs=langs, inter_langs=("sw", "en"), sizes=(50, 150, 500)))
    fig = figures.plot_heatmap(deg, "joshi_le2")
    assert fig.get_figwidth() <= figures.PRINT_WIDTH and fig.get_figheight() <= figures.PRINT_HEIGHT + 0.5
    ax = fig.axes[0]
    cells = [t for t in ax.texts if re.fullmatch(r"-?\d+\.\d", t.get_text())]
    assert len(cells) == np.isfinite(np.ma.filled(ax.images[0].get_array(), np.nan)).sum() > 37  # every cell
    texts = cells + ax.get_xticklabels() + ax.get_yticklabels()
    assert min(t.get_fontsize() for t in texts) >= 7


def test_render_without_chromium_writes_html_keeps_old_pdf_and_says_how_to_add_it(rendered, tmp_path):
    """In a fresh interpreter whose finder sees no chromium: no exception, the new HTML, the
    earlier PDF byte for byte, and one line of advice on stderr."""
    old = b"%PDF-1.4 an earlier report"
    (tmp_path / "report.pdf").write_bytes(old)
    env = {**os.environ, "XFER_CHROMIUM": "no-such-chromium", "PATH": str(Path(sys.executable).parent)}
    code = "import sys; from xfer.publish import render; print(sorted(render(sys.argv[1], sys.argv[2])))"
    proc = subprocess.run([sys.executable, "-c", code, str(rendered["executed"]), str(tmp_path)], env=env,
                          cwd=root(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['html']"
    assert report.QUESTION in _text((tmp_path / "index.html").read_text())
    assert (tmp_path / "report.pdf").read_bytes() == old
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install chromium libjs-mathjax" in lines[0], proc.stderr


def test_disk_full_while_the_html_is_written_keeps_the_last_report(rendered, tmp_path):
    """A real full disk (a tmpfs in a user and mount namespace) under a report folder holding an
    earlier report: the render stops at the HTML, before chromium starts, with an error naming
    index.html; the earlier HTML and PDF stay byte for byte, and no temp file or folder is left."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("no user/mount namespaces here to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    code = ("import sys\nfrom xfer.publish import render\ntry:\n    render(sys.argv[1], sys.argv[2])\n"
            "except OSError as e:\n    print(e.filename, e.strerror, sep='|')\n    sys.exit(3)")
    script = textwrap.dedent(f"""\
        mount -t tmpfs -o size=1m tmpfs {disk} || exit 99
        printf 'an earlier html' >{disk}/index.html && printf '%%PDF an earlier pdf' >{disk}/report.pdf
        dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null  # fails when the disk is full
        {sys.executable} -c "{code}" {rendered["executed"]} {disk} >{tmp_path}/stdout 2>{tmp_path}/stderr
        echo $? >{tmp_path}/rc
        ls -A {disk} >{tmp_path}/left
        cat {disk}/index.html >{tmp_path}/index.html; cat {disk}/report.pdf >{tmp_path}/report.pdf
        """)
    subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=root(), check=True, timeout=300)
    stderr = (tmp_path / "stderr").read_text()
    assert (tmp_path / "rc").read_text().strip() == "3", stderr
    assert (tmp_path / "stdout").read_text().strip() == f"{disk}/index.html|No space left on device"
    assert (tmp_path / "left").read_text().split() == ["filler", "index.html", "report.pdf"]
    assert (tmp_path / "index.html").read_text() == "an earlier html"
    assert (tmp_path / "report.pdf").read_text() == "%PDF an earlier pdf"


def test_table_moves_shared_columns_and_notes_out_of_the_way():
    import pandas as pd

    df = pd.DataFrame({"task": ["udpos", "udpos"], "lang": ["sw", "en"], "p": [0.0123, float("nan")],
                       "note": ["n = 3 < 4", ""]})
    html = report.table(df).data
    assert "In every row: task <b>udpos</b>" in html and "0.012" in html and "–" in html
    assert "[1] n = 3 &lt; 4" in html


def test_table_footnotes_a_language_list_repeated_over_regression_terms():
    import pandas as pd

    df = pd.DataFrame({"term": ["Intercept", "log10_size", "Intercept"], "coef": [1.0, 2.0, 3.0],
                       "note": ["", "few seeds", ""], "languages": ["sw, yo", "sw, yo", "ht, qu"]})
    html = report.table(df).data
    assert "[1] few seeds" in html and "[2] sw, yo" in html and "[3] ht, qu" in html
    assert html.count("sw, yo") == 1  # once, under the table, not once per row
    unique = report.table(df.assign(languages=["a", "b", "c"])).data
    assert ">b<" in unique  # a list that differs in every row stays in its cell


def test_training_table_orders_runs_by_size_not_by_text(tmp_path):
    import pandas as pd

    pd.DataFrame({"phase": ["target"] * 3, "run_id": ["r1", "r2", "r3"], "task": ["panx"] * 3,
                  "language": ["en"] * 3, "size": [500] * 3, "seed": [1] * 3,
                  "upstream": ["sst2-en-3000", "sst2-en-300", "sst2-en-1000"], "random_init": [False] * 3,
                  "selected_step": [250.0, None, 125.0], "train_seconds": [1.0] * 3}).to_csv(
        tmp_path / "training.csv", index=False)
    table = report.training(tmp_path)
    assert list(table["upstream"]) == ["sst2-en-300", "sst2-en-1000", "sst2-en-3000"]
    assert list(table.index) == [0, 1, 2] and str(table["selected_step"].dtype) == "Int64"


def test_table_shows_a_single_row_as_fields():
    import pandas as pd

    html = report.table(pd.DataFrame({"method": ["rm_corr"], "r": [float("nan")], "note": ["2 languages < 3"]})).data
    assert "rm_corr" in html and "–" in html and "2 languages &lt; 3" in html


def test_design_table_lists_the_non_default_settings_with_targets_by_index():
    from xfer.config import load_grid
    from xfer.report import params_table

    grid = load_grid(root() / "params" / "demo.yaml", ["target.size=500", "target.2.size=null"]).model_dump(mode="json")
    rows = dict(zip(*params_table(grid).T.values))
    assert rows["target.0.task"] == "udpos" and rows["target.2.train_task"] == "copa"
    assert rows["target.0.size"] == "500" and "target.2.size" not in rows  # null is the default
    assert rows["intermediate.sizes"] == "0, 300, 1000, 3000, full"
    assert "evaluate.batch_size" in rows and "intermediate.oversize" not in rows
    assert rows["low_resource"] == "joshi_le2"  # a defining setting, shown at its default too


def test_preregistration_is_written_once_and_compared(tmp_path, monkeypatch):
    """The record lives in the runs folder, keyed by the grid's first run: another report_dir
    finds the same one; it is never overwritten; a plan registered after evaluations had finished
    says so, and one the runs recorded differently is shown as rewritten."""
    from xfer.config import load_grid

    monkeypatch.setenv("XFER_OUTPUT", str(tmp_path))
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    grid = load_grid(root() / "params" / "smoke.yaml", [f"report_dir={tmp_path}"])
    rec = report.preregister(grid, "pre1", 0, 4)
    first = Path(rec["path"]).read_text()
    assert '"low_resource": "joshi_le2"' in first and '"smallest_effect": 0.5' in first and '"time"' in first
    later = load_grid(root() / "params" / "smoke.yaml", [f"report_dir={tmp_path / 'new'}", "low_resource=either",
                                                          "analysis.primary.smallest_effect=1"])
    assert report.preregister(later, "pre1", 4, 4) == rec  # never overwritten, whatever the report_dir
    same = report.registered(tmp_path, {"params": grid.model_dump(mode="json"), "preregistration": rec})
    assert "are those registered at" in same and "before the first run" in same and rec["hash"] in same
    changed = report.registered(tmp_path, {"params": later.model_dump(mode="json"), "preregistration": rec})
    assert "changed after the runs began" in changed and "low_resource, analysis" in changed
    assert "no pre-registration record" in report.registered(tmp_path / "elsewhere", {})
    assert report.analysis_plan(later)["hash"] != report.analysis_plan(grid)["hash"]

    Path(rec["path"]).unlink()  # deleted after 4 evaluations finished: registered again, and saying so
    again = report.preregister(later, "pre1", 4, 4)
    text = report.registered(tmp_path, {"params": later.model_dump(mode="json"), "preregistration": again})
    assert "after 4 of the grid's 4 evaluation runs had finished" in text and "before the first run" not in text
    runs_said = [{"hash": rec["hash"], "time": rec["time"]}]  # what the evaluations recorded in params.json
    text = report.registered(tmp_path, {"params": later.model_dump(mode="json"),
                                        "preregistration": report.checked_registration(again, runs_said)})
    assert "deleted or rewritten after the runs began" in text and "differs from the runs' one" in text
    Path(again["path"]).write_text("{not json")
    damaged = report.preregister(later, "pre1", 4, 4)
    assert "not valid JSON" in damaged["problem"] and Path(again["path"]).read_text() == "{not json"
    text = report.registered(tmp_path, {"params": later.model_dump(mode="json"), "preregistration": damaged})
    assert "no usable record" in text and "before the first run" not in text

def _words(text: str) -> list[str]:
    """Words as a printed table may break them: at blanks, and after a hyphen or an underscore."""
    return [w for w in re.split(r"\s+|(?<=[-_])", text) if w]


def test_pdf_prints_every_table_whole_and_links_relative(rendered):
    """Each table of the default report whole in the PDF (`pdftotext -layout`): every word of every
    header and cell between its caption and the next table's, the primary table's dose text in
    full; each figure's caption on its image's page; every link relative to the report folder,
    to a file inside it."""
    import html as html_lib

    if rendered["missing"]:
        pytest.skip(f"chromium not installed: {rendered['missing']}")
    site = rendered["site"]
    pdf = site / "report.pdf"
    layout = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                            check=True).stdout
    html = (site / "index.html").read_text().replace("<wbr>", "")
    captions = [m.start() for m in re.finditer(r"<b>Table \d+\.</b>", html)]
    assert len(captions) >= 10
    for k, start in enumerate(captions, 1):
        end = captions[k] if k < len(captions) else len(html)
        chunk = html[start:end]
        chunk = chunk[:chunk.rindex("</table>")] if "</table>" in chunk else chunk
        cells = [html_lib.unescape(re.sub(r"<[^>]+>", " ", c))
                 for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", chunk, re.S)]
        words = {w for c in cells for w in _words(c)}
        text = layout[layout.index(f"Table {k}."):layout.index(f"Table {k + 1}.") if k < len(captions) else None]
        printed = set(_words(text))
        assert words <= printed, (k, sorted(words - printed)[:20])
    primary = layout[layout.index("Table 1."):layout.index("Table 2.")]
    dose = re.search(r"Training dose</td>\s*<td[^>]*>(.*?)</td>", html, re.S).group(1)
    assert "rank correlation with size" in dose and set(_words(dose)) <= set(_words(primary)), dose
    # a figure's caption prints on its image's page
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = [int(line.split()[0]) for line in images.splitlines()[2:] if line.split()[2] == "image"]
    figures = len(re.findall(r"<b>Figure \d+\.</b>", html))
    assert len(pages) == figures
    for k, n in enumerate(pages, 1):
        text = subprocess.run(["pdftotext", "-f", str(n), "-l", str(n), str(pdf), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert f"Figure {k}." in text, (k, n)
    # links: relative, to files inside the folder (the runs behind the numbers)
    links = re.findall(rb"/URI \(([^)]*)\)", pdf.read_bytes())
    assert len(links) > 100
    for link in {li.decode() for li in links}:
        path = link.split("#")[0]
        assert ":" not in path and not path.startswith("/") and (site / path).is_file(), link


def test_figures_print_their_text_at_7_pt_or_more(rendered):
    """Every text of every figure (ticks, legends, labels, titles) is ≥ 7 pt at print size: a
    figure wider than the page is laid out again at the page's width, not scaled down."""
    from xfer import analysis, figures, stats

    results, grid = analysis.load_results(rendered["site"])
    deg = analysis.degradation(results)
    res = stats.analyse(deg, grid, analysis.load_training(rendered["site"]))
    many = analysis.degradation(make_results(eval_langs=tuple(analysis.load_languages().index[:37]),
                                             inter_langs=("sw", "en"), sizes=(50, 150, 500)))  # as the cpu preset
    made = [figures.plot_primary(res), figures.plot_dose(res), figures.plot_degradation(deg, "joshi_le2", "udpos"),
            figures.plot_heatmap(deg, "joshi_le2"), figures.plot_gap(deg, "joshi_le2"),
            figures.plot_degradation(many, "joshi_le2", "udpos")]
    for fig in made:
        report.figure(fig, alt="a figure")
        assert fig.get_figwidth() <= figures.PRINT_WIDTH and fig.get_figheight() <= figures.PRINT_HEIGHT
        texts = [t for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text"))
                 if t.get_text().strip() and t.get_visible()]
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 7]
        assert not small, small


def test_facts_labels_every_quantity_and_shows_no_negative_zero():
    """The reader-facing table: one labelled row per quantity with its unit, one column per
    target; a missing part a dash; a value that rounds to zero has no sign."""
    df = pd.DataFrame([{"target_task": "udpos", "estimate": -0.001, "rci_low": -1.5, "rci_high": 1.49,
                        "p": 0.5, "n_runs": 6, "n_units": 3, "mean_low_delta": 1.2, "mean_low_ci_low": np.nan,
                        "mean_low_ci_high": np.nan, "dose": "steps 16 in every run", "largest_size": "500",
                        "low_delta_largest": -2.0, "low_largest_ci_low": -3.0, "low_largest_ci_high": -1.0}])
    out = report.facts(df, report.PRIMARY_LABELS)
    rows = dict(zip(out[""], out["udpos"]))
    assert rows["Slope of D (points per tenfold corpus size)"] == "0.00"
    assert rows["95 % CI of the slope (points per tenfold size; repeated CI, valid at the look it stopped)"] \
        == "-1.50 to +1.49"
    assert rows["Runs with a non-English corpus, and the units they form"] == "6 runs, 3 units"
    assert rows["Mean Δ on low-resource languages, non-English corpora (points, 95 % CI)"] == "+1.20 (– to –)"
    assert rows["The same at the largest size, 500 (points, 95 % CI)"] == "-2.00 (-3.00 to -1.00)"
    assert rows["Training dose"] == "steps 16 in every run"
    assert "eq_low" not in rows and not any("_" in label for label in rows)
    assert report._cell("delta", -0.004) == "0.00" and report._cell("delta", -0.006) == "-0.01"
