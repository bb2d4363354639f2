"""``dynasim plot``: the Dynasor paper's figures from sweeps, batch runs and comparisons.

``dynasim plot RESULTS [RESULTS ...] --kind K --output DIR [--filter KEY=VALUE ...]
[--target 0.9]`` writes one figure per group (below) as
``DIR/<kind>-<workload>_<profile>[_rate<R>][_slo<S>].html`` and, when a Chromium is
installed, ``.png`` beside it (kaleido, one browser start for all PNGs; never downloads
a browser; without one it prints a line saying the PNGs were skipped), and prints the
files written. While it works it shows on stderr what it is doing: PNG export is most
of the time (a Chromium start of about 5 s, then about 1 s per figure); reading and
building take about a second even for a 35-cell sweep with records. The file names by
kind (:data:`NAMES`; numbers as ``%g``, other characters than ``A-Za-z0-9._-`` as
``_``):

* ``rate-attainment-<workload>_<profile>_slo<S>.html``
* ``slo-attainment-<workload>_<profile>_rate<R>.html``
* ``accuracy-attainment-<workload>_<profile>.html``
* ``token-accuracy-<workload>.html`` (batch runs have no profile)
* ``latency-cdf-<workload>_<profile>[_rate<R>][_slo<S>].html`` (and ``fairness-cdf-``;
  rate and scale left out where the pooled run folders differ in them; a replay's
  ``model`` stands in for its profile)
* ``sim-vs-real.html``

Kinds, their input (RESULTS) and what one figure covers (Dynasor §4's figure types):

* ``rate-attainment``: sweep ``results.parquet`` (or its folder); program arrival rate
  against SLO attainment, a figure per (workload, profile, SLO scale);
* ``slo-attainment``: sweep results; SLO scale against attainment, a figure per
  (workload, profile, program rate);
* ``accuracy-attainment``: sweep results; attainment against accuracy, a figure per
  (workload, profile);
* ``token-accuracy``: ``dynasim batch --output F.csv`` files; output tokens against
  accuracy, a figure per workload;
* ``latency-cdf``, ``fairness-cdf``: sweep results with their ``records/``, or run
  folders holding ``programs.parquet`` and ``summary.json``; a figure per (workload,
  profile, program rate, SLO scale) for sweeps, per (workload, profile) for runs;
* ``sim-vs-real``: ``compare.json`` files (``dynasim compare``) or ``fidelity.json``
  (``replay.fidelity``), or folders holding one; one figure for all inputs.

Sweep rows with a non-empty ``error`` are left out; ``--filter KEY=VALUE`` keeps the rows
(or runs) whose column (or summary key) ``KEY`` equals ``VALUE`` (numbers compared as
numbers). Seeds are averaged: lines are the mean over seeds, bands ± one standard
deviation (population std, as ``dynasim batch``), and titles give the seed count.

The figure builders (and the sim-vs-real reader) are in :mod:`dynasim.experiments.figures`,
the readers and attainment crossings in :mod:`dynasim.experiments.results`; this module
holds the kinds, :func:`plot` and the project's one figure writer (:func:`write_figures`).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from dynasim.errors import InputError

KINDS = ("rate-attainment", "slo-attainment", "accuracy-attainment", "token-accuracy",
         "latency-cdf", "fairness-cdf", "sim-vs-real")
#: File name of each kind's figures after ``<kind>-`` (module docstring); sim-vs-real
#: writes the one ``sim-vs-real.html``.
NAMES = {"rate-attainment": "<workload>_<profile>_slo<S>",
         "slo-attainment": "<workload>_<profile>_rate<R>",
         "accuracy-attainment": "<workload>_<profile>",
         "token-accuracy": "<workload>",
         "latency-cdf": "<workload>_<profile>[_rate<R>][_slo<S>]",
         "fairness-cdf": "<workload>_<profile>[_rate<R>][_slo<S>]"}
#: The line ``dynasim plot`` prints when PNGs are skipped for want of a browser.
PNG_SKIPPED = ("PNGs skipped: no Chromium on PATH (the HTML files are complete); for "
               "PNGs install one: apt-get install chromium")



# ------------------------------------------------------------------ figure writing
def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _stem(path: str | Path) -> Path:
    """``path`` without a figure suffix (``.html``, ``.png``, ``.json``), keeping dots
    that are part of the name (``..._slo0.5``)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".html", ".png", ".json") else path


def png_skipped() -> str | None:
    """:data:`PNG_SKIPPED` when no Chromium is on ``PATH`` (so :func:`write_figures`
    writes HTML only), else ``None``."""
    return None if _browser() else PNG_SKIPPED


def write_figures_noting_png(figs: dict, progress: Callable[[str], None] | None = None
                             ) -> tuple[list[str], str | None]:
    """:func:`write_figures`, also returning why the PNGs failed (``None`` if they did
    not, or were not attempted); ``progress`` is told each step (HTML, PNG)."""
    import plotly.io as pio

    say = progress or (lambda text: None)
    say(f"writing {len(figs)} HTML file{'s' * (len(figs) != 1)}")
    files, pngs = [], []
    for path, fig in figs.items():
        path = _stem(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        html = path.with_name(path.name + ".html")
        fig.write_html(html, include_plotlyjs="cdn")
        files.append(str(html))
        pngs.append(path.with_name(path.name + ".png"))
    if not figs or not _browser():
        return files, None
    say(f"writing {len(figs)} PNG{'s' * (len(figs) != 1)} (Chromium: about 5 s to "
        "start, then 1 s each)")
    try:  # one browser start for every PNG (kaleido >= 1.0)
        figs = list(figs.values())  # the layout's size (kaleido's default is 700x500)
        pio.write_images(figs, pngs, width=[f.layout.width or 960 for f in figs],
                         height=[f.layout.height or 560 for f in figs])
    except Exception as exc:  # kaleido missing or failing: the HTML is enough
        return files, str(exc)[:200]
    return files + [str(p) for p in pngs], None


def write_figures(figs: dict, progress: Callable[[str], None] | None = None) -> list[str]:
    """Write plotly figures: ``{path: Figure}`` -> ``path.html`` for each (always, plotly.js
    from its CDN), then ``path.png`` for all of them in one kaleido call (one browser
    start) when a Chromium is on ``PATH``; never downloads a browser. A ``.html``,
    ``.png`` or ``.json`` suffix of ``path`` is replaced, any other dot kept (``a_slo0.5``
    -> ``a_slo0.5.html``); parent folders are created.

    A PNG failure (kaleido not installed, browser crash) is a warning, not an error: the
    HTMLs are written first and are enough. ``progress``, when given, is called with a
    line saying what is being written (HTML, then PNG: most of the time).

    Returns:
        the files written, HTMLs first.
    """
    files, err = write_figures_noting_png(figs, progress)
    if err:
        warnings.warn(f"PNG export failed (HTML written): {err}", stacklevel=2)
    return files


# ------------------------------------------------------------------------ plot()
def plot(paths: Sequence[str | Path], kind: str, output: str | Path, filters: list[str] | dict | None = None,
         target: float = 0.9, progress: Callable[[str], None] | None = None) -> list[str]:
    """Read ``paths``, build the figures of ``kind`` (module table) and write them under
    ``output`` (:func:`write_figures`); returns the files written. ``progress``, when
    given, is called with a line saying each step (reading, building, writing).

    Raises:
        InputError: an unknown kind, a target outside (0, 1], or bad input (see the
            readers above).
    """
    from dynasim.experiments import figures as pk  # plotly and pandas: loaded on use
    from dynasim.experiments.results import parse_filters, read_batch, read_program_runs, read_sweep

    if kind not in KINDS:
        raise InputError(f"unknown plot kind (kinds: {', '.join(KINDS)})", field="kind",
                         source=kind)
    if not 0 < target <= 1:
        raise InputError(f"--target is a fraction in (0, 1], got {target}", field="target")
    if not paths:
        raise InputError("no RESULTS given", field="results")
    filt = filters if isinstance(filters, dict) else parse_filters(filters)
    say = progress or (lambda text: None)
    say(f"reading {len(paths)} input{'s' * (len(paths) != 1)} and building the "
        f"{kind} figures")
    if kind in ("rate-attainment", "slo-attainment", "accuracy-attainment"):
        need = ["slo_attainment"] + (["accuracy"] if kind == "accuracy-attainment" else [])
        figs = pk.BUILDERS[kind](read_sweep(paths, filt, need), target)
    elif kind == "token-accuracy":
        figs = pk.token_accuracy_figures(read_batch(paths, filt))
    elif kind in ("latency-cdf", "fairness-cdf"):
        value = "latency" if kind == "latency-cdf" else "fairness"
        figs = pk.cdf_figures(read_program_runs(paths, filt, value=value), kind)
    else:
        figs = {"sim-vs-real": pk.sim_vs_real_figure(pk.read_comparisons(paths))}
    out = Path(output)
    return write_figures({out / f"{kind}-{name}" if name != kind else out / name: fig
                          for name, fig in figs.items()}, progress)


