"""Publish an executed report: the runs behind its numbers copied beside it (`publish_runs`), every
path in the folder made relative and every file world-readable (`publishable`), and the notebook
rendered to `index.html` and `report.pdf` with Debian's chromium, no TeX and no downloaded browser
(`render`), each file replaced only once its successor is whole. The text itself is `xfer.report`."""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from xfer.analysis import fmt_size
from xfer.paths import root, writing
from xfer.report import CONTROL_ANCHOR, RUN_COLUMNS, _natural, anchor

CHROMIUM = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")  # XFER_CHROMIUM names another
LOCAL_MATHJAX = Path("/usr/share/javascript/mathjax/MathJax.js")
PRINT_CSS = """<style>
@page { size: A4; margin: 14mm 12mm 16mm;
  @bottom-center { content: "page " counter(page) " of " counter(pages); font: 8pt sans-serif; color: #555; } }
@media print {
  body { font-size: 10.5pt; }
  h1 { font-size: 17pt; }
  h2 { font-size: 14pt; break-after: avoid; }
  .jp-RenderedHTMLCommon table { font-size: 7pt; max-width: 100%; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal; overflow-wrap: break-word;
    padding: 0.2em 0.4em; }
  /* outputs as plain blocks that never scroll or clip: a table's last row or column prints, and a
     figure with its caption moves to the next page whole */
  .jp-OutputArea-child, .jp-OutputArea-output { display: block; width: auto; }
  .jp-OutputArea, .jp-OutputArea-child, .jp-OutputArea-output, .jp-MarkdownOutput { overflow: visible; }
  .jp-OutputArea-output img { max-width: 100%; max-height: 254mm; height: auto; }  /* figures.PRINT_HEIGHT */
  figure { break-inside: avoid; }
  .xfer-caption { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
</style>"""


def publish_runs(results_dir: str | Path, runs: str | Path | None = None) -> Path:
    """`<results_dir>/runs/`: a copy of what the report's numbers come from, so the folder can be
    published as it is: per run behind results.csv (evaluation, target and intermediate) its
    params.json, metrics.json and its executed notebook rendered to HTML (no checkpoint), and
    `runs/index.html`, which lists the runs per target and per table column (`anchor`) with
    links to them. Replaces an older copy whole."""
    import nbformat
    from nbconvert import HTMLExporter

    from xfer.analysis import load_results
    from xfer.paths import replace_dir, runs_dir

    results_dir = root() / results_dir  # an absolute one stays as it is
    runs = Path(runs or runs_dir())
    results, _ = load_results(results_dir)
    controls = _controls(results_dir)
    tmp = Path(tempfile.mkdtemp(dir=results_dir, prefix=".runs.partial-"))  # a report of its own: renders at once
    for stale in results_dir.glob(".runs.partial-*"):  # left by a killed render (not one running now: too new)
        if stale != tmp and time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    exporter = HTMLExporter(template_name="basic")
    have = set()
    for col, phase in RUN_COLUMNS.items():
        for rid in sorted((set(results[col]) | set(controls.get(col, []))) - {""}):
            src, dst = runs / phase / rid, tmp / phase / rid
            if not src.is_dir():
                continue
            dst.mkdir(parents=True)
            for name in ("params.json", "metrics.json"):
                if (src / name).is_file():
                    shutil.copyfile(src / name, dst / name)  # readable by a web server, as the report is
            if (src / "notebook.ipynb").is_file():
                body, _ = exporter.from_notebook_node(nbformat.read(src / "notebook.ipynb", as_version=4))
                (dst / "notebook.html").write_text(_page(f"{phase} run {rid}", body))
                have.add(f"{phase}/{rid}")
    (tmp / "index.html").write_text(_runs_index(results, have, controls))
    os.chmod(tmp, 0o755)  # mkdtemp's is 0700: published, readable by a web server
    replace_dir(tmp, results_dir / "runs")
    return results_dir / "runs"


def _controls(results_dir: Path) -> pd.DataFrame:
    """controls.csv (the random-weights control runs), empty where the grid has none."""
    path = Path(results_dir) / "controls.csv"
    if not path.exists() or path.stat().st_size <= 1:
        return pd.DataFrame(columns=list(RUN_COLUMNS) + ["target_task", "inter_task", "inter_lang", "inter_size",
                                                         "seed"])
    return pd.read_csv(path, dtype={c: str for c in RUN_COLUMNS}, keep_default_na=False)


def publishable(folder: Path) -> None:
    """Make a report folder one that can be moved and published as it is: every text file's
    machine paths made relative (`paths.portable`: run notebooks' parameters, params.json
    copies, grid.json, logs), every file world-readable and every folder world-listable.
    Rewrites go through a temp file and a rename, so a crash leaves the old text or the new."""
    from xfer.paths import portable

    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.is_symlink() and path.suffix in (".json", ".csv", ".txt", ".html", ".ipynb",
                                                                          ".md", ".log"):
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            new = portable(text)
            if new != text:
                _write_atomic(path, new.encode("utf-8", errors="surrogateescape"))
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
    Path(folder).chmod(Path(folder).stat().st_mode | 0o555)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            '<style>body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em} '
            'table{border-collapse:collapse} td,th{padding:0.2em 0.6em;border-bottom:1px solid #ddd;text-align:left} '
            f'pre{{overflow-x:auto}}</style></head><body>\n{body}\n</body></html>\n')


def _runs_index(results: pd.DataFrame, have: set, controls: pd.DataFrame | None = None) -> str:
    """The runs behind every number: per target, per baseline / corpus language × size, one row a
    seed; then the random-weights control runs (the Methods table's comparison)."""
    def cell(phase: str, rid: str) -> str:
        if not rid:
            return "–"
        name = html.escape(rid)
        return f'<a href="{phase}/{name}/notebook.html">{name}</a>' if f"{phase}/{rid}" in have else name

    out = [f"<h1>Runs behind the report's numbers</h1><p>{results['eval_run'].nunique()} evaluation runs. "
           "Each links to its executed notebook; params.json and metrics.json lie beside it.</p>"]
    cols = list(RUN_COLUMNS)
    for target, t in results.groupby("target_task", sort=True):
        out.append(f'<h2 id="{anchor(target)}">{html.escape(target)}</h2>')
        t = t.assign(label=[("baseline" if int(n) == 0 else f"{lang} {fmt_size(n)}")
                            for lang, n in zip(t["inter_lang"], t["inter_size"])])
        for label, g in sorted(t.groupby("label"), key=lambda kv: (kv[0] != "baseline", _natural(kv[0]))):
            rows = g.drop_duplicates(cols).sort_values(["inter_task", "seed"])
            out.append(f'<h3 id="{anchor(target, label)}">{html.escape(target)} · {html.escape(label)}</h3>'
                       "<table><tr><th>intermediate task</th><th>seed</th><th>evaluation run</th><th>target run</th>"
                       "<th>intermediate run</th></tr>")
            out += [f"<tr><td>{html.escape(str(r['inter_task']))}</td><td>{r['seed']}</td>"
                    + "".join(f"<td>{cell(RUN_COLUMNS[c], r[c])}</td>" for c in cols) + "</tr>"
                    for _, r in rows.iterrows()]
            out.append("</table>")
    if controls is not None and len(controls):
        out.append(f'<h2 id="{CONTROL_ANCHOR}">Control: the same architecture at random weights</h2>'
                   "<p>The baseline (no intermediate training) trained and evaluated from random weights.</p>"
                   "<table><tr><th>target</th><th>seed</th><th>evaluation run</th><th>target run</th></tr>")
        rows = controls.drop_duplicates(["eval_run", "target_run"]).sort_values(["target_task", "seed"])
        out += [f"<tr><td>{html.escape(str(r['target_task']))}</td><td>{r['seed']}</td>"
                f"<td>{cell('evaluate', r['eval_run'])}</td><td>{cell('target', r['target_run'])}</td></tr>"
                for _, r in rows.iterrows()]
        out.append("</table>")
    return _page("Runs behind the report", "\n".join(out))


# ----------------------------------------------------------------------------- rendering


def bottom_line(notebook: Path) -> str:
    """The executed report's bottom line as plain text: the Markdown under its title (the first
    output that starts with "# "), for the terminal that ran it."""
    import nbformat

    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown", "")
            if text.startswith("# "):
                lines = re.sub(r"\*\*|`", "", text.split("\n", 1)[1]).strip().splitlines()
                return "\n".join(line.rstrip() for line in lines)  # no Markdown line-break blanks
    return ""


def render(notebook: Path, out_dir: Path) -> dict[str, Path]:
    """Executed notebook → `out_dir/index.html` (inputs hidden, CDN MathJax as nbconvert ships it)
    and `out_dir/report.pdf` (printed by headless chromium from a copy whose MathJax is the local
    Debian one, so the PDF needs no network). Without chromium the HTML is the report: one line on
    stderr says how to add the PDF, and an earlier PDF stays (no PDF beats a lost one).

    Files are replaced, never removed first: the HTML is written aside first, then the PDF is printed,
    and only then are both replaced, so a kill while printing, or a disk too full for either file,
    leaves the last good HTML and PDF. Chromium runs in a process group of its
    own that dies with this process (`_print_pdf`); its temp folder lies in the report folder
    (`.pdf-<pid>`), and one a killed render left is cleared by the next."""
    import nbformat

    notebook, out_dir = Path(notebook), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    index, pdf = out_dir / "index.html", out_dir / "report.pdf"
    html = _staged(index, _html(nb).encode())  # first: a disk too full for it stops the render before chromium
    try:
        chromium, missing = _chromium()
        if missing:
            os.replace(html, index)
            print(f"report: no PDF, {missing} not found; `apt-get install chromium libjs-mathjax` adds it"
                  + (f" ({pdf} is an older one)" if pdf.exists() else ""), file=sys.stderr, flush=True)
            return {"html": index}
        for stale in out_dir.glob(".pdf-*"):  # left by a killed render (its process is gone)
            if not _alive(stale.name.rsplit("-", 1)[-1]):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = out_dir / f".pdf-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            page = tmp / "report.html"
            base = f'<base href="{out_dir.resolve().as_uri()}/">'  # the PDF's links open the report folder's runs/
            page.write_text(_html(nb, f"{LOCAL_MATHJAX.as_uri()}?config=TeX-AMS_SVG-full,Safe")
                            .replace("</head>", base + PRINT_CSS + "</head>", 1))
            printed = tmp / "report.pdf"
            error = _print_pdf(chromium, page, printed, tmp / "profile")
            if error:  # the HTML is still the report; an older PDF beside it would not match it
                os.replace(html, index)
                pdf.unlink(missing_ok=True)
                raise RuntimeError(f"chromium did not print {pdf}: {error}")
            os.replace(_staged(pdf, relative_links(printed.read_bytes(), f"{out_dir.resolve().as_uri()}/")), pdf)
            os.replace(html, index)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        html.unlink(missing_ok=True)  # not replaced: a failure on the way
    return {"html": index, "pdf": pdf}


def relative_links(pdf: bytes, base: str) -> bytes:
    """Chromium's PDF with its links under `base` (the report folder, whose runs/ they open)
    made relative to the PDF, so the folder can move: each `/URI (base…)` loses `base`, and the
    cross-reference table's offsets move with the bytes before them. Chromium writes one plain
    xref table (no object streams): anything else is returned as it is."""
    head = b"/URI (" + base.encode()
    tail = pdf.rfind(b"startxref")
    at = pdf.rfind(b"\nxref\n", 0, tail) + 1
    if head not in pdf or tail < 0 or at <= 0 or pdf.find(head, at) >= 0:
        return pdf
    cuts = [m.start() + len(b"/URI (") for m in re.finditer(re.escape(head), pdf[:at])]
    body, last = [], 0
    for c in cuts:
        body += [pdf[last:c]]
        last = c + len(base.encode())
    body = b"".join(body + [pdf[last:at]])

    def moved(offset: int) -> int:  # where the byte at `offset` of the old file now lies
        return offset - len(base.encode()) * sum(c < offset for c in cuts)

    lines = pdf[at:tail].split(b"\n")
    for i, line in enumerate(lines):
        m = re.fullmatch(rb"(\d{10}) (\d{5}) n ?\r?", line)
        if m:
            lines[i] = b"%010d %s n " % (moved(int(m.group(1))), m.group(2))
    return body + b"\n".join(lines) + b"startxref\n%d\n%%%%EOF\n" % len(body)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True


def _print_pdf(chromium: str, page: Path, printed: Path, profile: Path) -> str | None:
    """Print `page` to `printed` with headless chromium; None, or why it failed. Chromium and its
    helpers run in a process group of their own, armed to be killed when this process dies (even
    by SIGKILL), and the whole group is killed on the way out (an interrupt, a timeout)."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--no-pdf-header-footer", "--allow-file-access-from-files", "--virtual-time-budget=15000",
           f"--user-data-dir={profile}", f"--print-to-pdf={printed}", page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=functools.partial(_die_with_parent, os.getpid()))
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        return "no PDF after 300 s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its helpers too, whatever happened
        except ProcessLookupError:
            pass
        proc.wait()
    if not printed.exists() or printed.stat().st_size == 0:
        return f"exit {proc.returncode}: {stderr[-2000:]}"
    return None


def _die_with_parent(parent: int) -> None:
    """In a child before exec: SIGKILL when the parent dies (Linux PR_SET_PDEATHSIG); a parent
    already gone (killed between fork and here) ends it at once."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _html(nb, mathjax_url: str | None = None) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    if mathjax_url:
        exporter.mathjax_url = mathjax_url
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": "Intermediate-corpus size and "
                                                                              "zero-shot degradation"}})
    return body


def _chromium() -> tuple[str | None, str | None]:
    """The browser that prints the PDF (XFER_CHROMIUM, else Debian's chromium), or what is missing."""
    names = os.environ.get("XFER_CHROMIUM", "").split() or CHROMIUM
    found = next((p for p in (shutil.which(c) for c in names) if p), None)
    if found is None:
        return None, "chromium"
    return (found, None) if LOCAL_MATHJAX.exists() else (None, f"MathJax at {LOCAL_MATHJAX}")


def _staged(path: Path, data: bytes) -> Path:
    """`data` in a temp file beside `path`, readable by all (a published file), to replace `path`
    once what goes with it is written too; a failure (a full disk) removes it and names `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with writing(Path(tmp), name=path):  # a full disk: the file it was to replace is named
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # published files: readable by the web server, not only by us
    return Path(tmp)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = _staged(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
