"""``dynasim plot``: every kind from real simulations, checked against the figure JSON.

The sweep-shaped fixture really simulates game24-sc on vidur-llama3-8b-a100 (small:
20 programs, 3 rates, 2 SLO scales, 2 seeds, 2 policies) and writes what ``dynasim
sweep`` writes (``results.parquet`` + ``records/<cell_id>.parquet``); expected values
are recomputed here from that frame, independently of the plotting code.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynasim.errors import InputError

RATES = (2.0, 8.0, 24.0)
SCALES = (1.0, 3.0)
SEEDS = (0, 1)
POLICIES = ("lpm", "sjf+certaindex")
INTRA = {"cap": 20, "detect_at": 5, "threshold": None, "reward_threshold": None,
         "gamma": 1.0, "max_tokens": 0}


def build_sweep(out: Path, workload="game24-sc", profile="vidur-llama3-8b-a100",
                rates=RATES, scales=SCALES, seeds=SEEDS, policies=POLICIES,
                num_programs=20) -> pd.DataFrame:
    """Run the cells (really simulated) and write a sweep-shaped results folder."""
    from dynasim.metrics import summarize_programs
    from dynasim.policies import make_policy
    from dynasim.profiles import load_profile
    from dynasim.simulation import online_programs, simulate_programs
    from dynasim.workloads.catalog import load_workload

    w = load_workload(workload)
    prof = load_profile(profile).with_overrides(enable_prefix_caching=True)
    (out / "records").mkdir(parents=True, exist_ok=True)
    rows, base = [], None
    for rate in rates:
        for scale in scales:
            for seed in seeds:
                specs, times, deadlines, base = online_programs(
                    w, prof, rate, seed=seed, num_programs=num_programs,
                    slo_scale=scale, base=base, cap=INTRA["cap"])
                for name in policies:
                    _, progs, _ = simulate_programs(specs, times, prof,
                                                    make_policy(name, **INTRA), deadlines)
                    cid = re.sub(r"[^a-z0-9]+", "-", f"{name} {rate} {scale} {seed}")
                    progs.to_parquet(out / "records" / f"{cid}.parquet", index=False)
                    rows.append({"cell_id": cid, "workload": w.name, "profile": prof.name,
                                 "policy": name, "program_rate": rate, "slo_scale": scale,
                                 "seed": seed, "num_programs": num_programs,
                                 **summarize_programs(progs), "error": ""})
    df = pd.DataFrame(rows)
    df.to_parquet(out / "results.parquet", index=False)
    return df


@pytest.fixture(scope="session")
def sweep(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, build_sweep(out)


def figure(html: str | Path) -> dict:
    """The figure JSON embedded in a plotly HTML file."""
    text = Path(html).read_text()
    m = re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"responsive',
                  text, re.S)
    assert m, "no figure in " + str(html)
    return {"data": json.loads(m.group(1)), "layout": json.loads(m.group(2))}


def lines(fig: dict) -> dict[str, dict]:
    """Mean lines by name (the traces drawn with markers, not bands or crossings)."""
    return {t["name"]: t for t in fig["data"]
            if t.get("mode") == "lines+markers" or (t.get("mode") == "lines"
                                                    and "line" in t and "shape" in t["line"])}


def values(t: dict, axis: str) -> np.ndarray:
    """A trace's x or y as floats (plotly may store arrays as typed base64)."""
    v = t[axis]
    if isinstance(v, dict):  # {"dtype": "f8", "bdata": ...}
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, float)


@pytest.fixture(autouse=True)
def no_png(monkeypatch):
    """HTML only (fast, same on every machine); PNGs are tested on their own below."""
    from dynasim.experiments import plots

    monkeypatch.setattr(plots, "_browser", lambda: None)


def run_plot(tmp_path, paths, kind, *extra) -> list[str]:
    """``dynasim plot`` into a fresh folder; the HTML files written, sorted."""
    from dynasim.cli import main

    n = len(list(tmp_path.glob(f"{kind}*")))
    out = tmp_path / f"{kind}{n}"
    assert main(["plot", *map(str, paths), "--kind", kind, "--output", str(out),
                 *extra]) == 0
    return sorted(str(p) for p in out.glob("*.html"))


# ------------------------------------------------------------ hand-made frames
def frame(rows):
    return pd.DataFrame(rows, columns=["workload", "profile", "policy", "slo_scale",
                                       "program_rate", "seed", "slo_attainment"])


def test_max_rate_interpolates_between_last_above_and_first_below():
    from dynasim.experiments.results import max_rate_at_attainment

    df = frame([
        # a: seeds average to 1.0, 0.95, 0.80, 0.95 at rates 1, 2, 4, 8:
        # cross between 2 (0.95) and 4 (0.80): 2 + (0.95 - 0.9) / 0.15 * 2 = 2.6667
        ("w", "p", "a", 1, 1, 0, 1.0), ("w", "p", "a", 1, 1, 1, 1.0),
        ("w", "p", "a", 1, 2, 0, 1.0), ("w", "p", "a", 1, 2, 1, 0.9),
        ("w", "p", "a", 1, 4, 0, 0.7), ("w", "p", "a", 1, 4, 1, 0.9),
        ("w", "p", "a", 1, 8, 0, 0.95),  # recovers later: ignored
        ("w", "p", "a", 1, 16, 0, math.nan),  # NaN row dropped
        # b: always above -> the highest rate, flagged
        ("w", "p", "b", 1, 1, 0, 1.0), ("w", "p", "b", 1, 3, 0, 0.91),
        # c: below at the lowest rate -> NaN
        ("w", "p", "c", 1, 1, 0, 0.5), ("w", "p", "c", 1, 2, 0, 0.2),
        # a at another SLO scale: 0.92 at 1, 0.88 at 3 -> 1 + 0.02/0.04 * 2 = 2
        ("w", "p", "a", 2, 1, 0, 0.92), ("w", "p", "a", 2, 3, 0, 0.88),
    ])
    r = max_rate_at_attainment(df, 0.9).set_index(["policy", "slo_scale"])
    assert list(r.columns) == ["workload", "profile", "max_rate", "status"]
    assert r.loc[("a", 1), "max_rate"] == pytest.approx(2 + 0.05 / 0.15 * 2)
    assert r.loc[("a", 1), "status"] == "interpolated"
    assert r.loc[("a", 2), "max_rate"] == pytest.approx(2.0)
    assert r.loc[("b", 1), "max_rate"] == 3 and r.loc[("b", 1), "status"] == "beyond_range"
    assert math.isnan(r.loc[("c", 1), "max_rate"])
    assert r.loc[("c", 1), "status"] == "below_target"
    # exactly on target (rate 4: 0.80) counts as meeting it, so at 0.8 policy a never
    # drops below (the NaN at rate 16 is dropped): the highest finite rate, flagged
    low = max_rate_at_attainment(df, 0.8).set_index(["policy", "slo_scale"])
    assert low.loc[("a", 1), "max_rate"] == 8.0
    assert low.loc[("a", 1), "status"] == "beyond_range"


def test_max_rate_errors_and_min_slo_scale():
    from dynasim.experiments.results import max_rate_at_attainment, min_slo_scale_at_attainment

    df = frame([("w", "p", "a", s, 1, 0, att) for s, att in
                ((0.5, 0.2), (1, 0.6), (2, 0.95), (4, 1.0))])
    r = min_slo_scale_at_attainment(df, 0.9)
    # walking scales down: 2 (0.95) then 1 (0.6): 2 - 0.05 / 0.35 * 1
    assert r["min_slo_scale"].iloc[0] == pytest.approx(2 - 0.05 / 0.35)
    with pytest.raises(InputError) as e:
        max_rate_at_attainment(df.drop(columns="slo_attainment"))
    assert e.value.field == "slo_attainment"
    with pytest.raises(InputError):
        max_rate_at_attainment(df, 90)
    errored = df.assign(error=["", "", "boom", ""])  # the 0.95 row is dropped
    assert min_slo_scale_at_attainment(errored)["min_slo_scale"].iloc[0] == \
        pytest.approx(4 - 0.1 / 0.4 * 3)


# --------------------------------------------------------------- every kind
def test_rate_attainment(sweep, tmp_path):
    out, df = sweep
    files = run_plot(tmp_path, [out / "results.parquet"], "rate-attainment")
    assert [Path(f).name for f in files] == [
        f"rate-attainment-game24-sc_vidur-llama3-8b-a100_slo{s:g}.html" for s in SCALES]
    fig = figure(files[0])
    sub = df[df.slo_scale == SCALES[0]]
    ls = lines(fig)
    assert set(ls) == set(POLICIES)
    for policy, t in ls.items():
        want = sub[sub.policy == policy].groupby("program_rate").slo_attainment.mean()
        assert values(t, "x").tolist() == list(RATES)
        assert values(t, "y") == pytest.approx(want.to_numpy() * 100)
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [90]
    assert fig["layout"]["shapes"][0]["line"]["dash"] == "dash"
    title = fig["layout"]["title"]["text"]
    assert "game24-sc" in title and "vidur-llama3-8b-a100" in title and "2 seeds" in title
    assert "programs/s" in fig["layout"]["xaxis"]["title"]["text"]
    assert "%" in fig["layout"]["yaxis"]["title"]["text"]
    # each interpolated crossing sits on the 90% line at max_rate_at_attainment's rate
    from dynasim.experiments.results import max_rate_at_attainment

    mr = max_rate_at_attainment(sub)
    marks = {t["name"].split(":")[0]: t for t in fig["data"] if t.get("meta")}
    for r in mr.itertuples():
        if math.isnan(r.max_rate):  # only a legend entry saying why
            assert marks[r.policy]["x"] == [None] and r.status == "below_target"
        else:  # on the line at the crossing; met everywhere: at the last rate's own y
            assert values(marks[r.policy], "x")[0] == pytest.approx(r.max_rate)
            last = sub[(sub.policy == r.policy) & (sub.program_rate == r.max_rate)]
            assert values(marks[r.policy], "y")[0] == pytest.approx(
                90 if r.status == "interpolated" else last.slo_attainment.mean() * 100)
    # the sweep really crosses 90% somewhere, or the markers go untested
    assert (mr.status == "interpolated").any()
    # --filter narrows the policies; --target moves the line
    files = run_plot(tmp_path, [out], "rate-attainment", "--filter", "policy=lpm",
                     "--filter", "slo_scale=1", "--target", "0.5")
    fig = figure(files[0])
    assert len(files) == 1 and set(lines(fig)) == {"lpm"}
    assert fig["layout"]["shapes"][0]["y0"] == 50


def test_slo_and_accuracy_attainment(sweep, tmp_path):
    out, df = sweep
    files = run_plot(tmp_path, [out], "slo-attainment")
    assert len(files) == len(RATES)
    fig = figure(next(f for f in files if f.endswith(f"rate{RATES[1]:g}.html")))
    sub = df[df.program_rate == RATES[1]]
    for policy, t in lines(fig).items():
        want = sub[sub.policy == policy].groupby("slo_scale").slo_attainment.mean()
        assert values(t, "x").tolist() == list(SCALES)
        assert values(t, "y") == pytest.approx(want.to_numpy() * 100)
    assert "SLO scale" in fig["layout"]["xaxis"]["title"]["text"]

    files = run_plot(tmp_path, [out], "accuracy-attainment")
    fig = figure(files[0])
    ls = {t["name"]: t for t in fig["data"] if t.get("mode") == "markers+text"}
    assert set(ls) == set(POLICIES)
    for policy, t in ls.items():
        want = df[df.policy == policy].groupby(["program_rate", "slo_scale"])[
            ["slo_attainment", "accuracy"]].mean()
        got = np.array(sorted(zip(values(t, "x"), values(t, "y"))))
        exp = np.array(sorted(zip(want.slo_attainment * 100, want.accuracy * 100)))
        assert got.ravel() == pytest.approx(exp.ravel())
    assert [s["x0"] for s in fig["layout"]["shapes"]] == [90]


def test_token_accuracy_from_batch_csv(data_dir, tmp_path):
    from dynasim.cli import main

    csv = tmp_path / "b.csv"
    assert main(["batch", "--workload", "date-sc", "--policy", "even,certaindex",
                 "--caps", "5,10,20", "--seeds", "3", "--output", str(csv)]) == 0
    b = pd.read_csv(csv)
    files = run_plot(tmp_path, [csv], "token-accuracy")
    fig = figure(files[0])
    ls = lines(fig)
    assert set(ls) == {"even", "certaindex"}
    for policy, t in ls.items():
        rows = b[b.policy == policy].sort_values("cap")
        assert values(t, "x") == pytest.approx(rows.output_tokens_mean.to_numpy())
        assert values(t, "y") == pytest.approx(rows.accuracy_mean.to_numpy() * 100)
    bands = [t for t in fig["data"] if t["name"].endswith("± std")]
    for t in bands:  # upper edge = mean + std
        policy = t["name"].removesuffix(" ± std")
        rows = b[b.policy == policy].sort_values("cap")
        assert values(t, "y")[:len(rows)] == pytest.approx(
            (rows.accuracy_mean + rows.accuracy_std).to_numpy() * 100)
    assert "3 seeds" in fig["layout"]["title"]["text"]
    assert "tokens" in fig["layout"]["xaxis"]["title"]["text"]


def test_cdfs_from_sweep_records_and_run_dirs(sweep, tmp_path):
    out, df = sweep
    files = run_plot(tmp_path, [out], "latency-cdf", "--filter", f"program_rate={RATES[1]:g}",
                     "--filter", "slo_scale=1")
    assert len(files) == 1
    fig = figure(files[0])
    cells = df[(df.program_rate == RATES[1]) & (df.slo_scale == 1)]
    for policy, t in lines(fig).items():
        lat = np.sort(np.concatenate([pd.read_parquet(
            out / "records" / f"{c}.parquet").latency for c in
            cells[cells.policy == policy].cell_id]))
        assert values(t, "x") == pytest.approx(lat)
        assert values(t, "y")[-1] == pytest.approx(100)
    assert set(lines(fig)) == set(POLICIES)
    assert "(s)" in fig["layout"]["xaxis"]["title"]["text"]

    # run directories written by `dynasim simulate --workload`
    from dynasim.cli import main

    dirs = []
    for policy in POLICIES:
        d = tmp_path / policy.replace("+", "_")
        assert main(["simulate", "--workload", "game24-sc", "--profile",
                     "vidur-llama3-8b-a100", "--request-rate", "4", "--policy", policy,
                     "--num-programs", "20", "--no-progress", "--output-dir", str(d)]) == 0
        dirs.append(d)
    files = run_plot(tmp_path, dirs, "fairness-cdf")
    fig = figure(files[0])
    for d, policy in zip(dirs, POLICIES):
        phi = np.sort(pd.read_parquet(d / "programs.parquet").fairness.dropna())
        assert values(lines(fig)[policy], "x") == pytest.approx(phi * 1e3)
    assert "ms/token" in fig["layout"]["xaxis"]["title"]["text"]
    assert "4 programs/s" in fig["layout"]["title"]["text"]


def test_sim_vs_real_from_compare(data_dir, tmp_path):
    """Two simulated runs of the same programs (one standing in for the replay) through
    `dynasim compare`, then plotted."""
    from dynasim.cli import main

    runs = {}
    for name, profile in (("sim", "vidur-llama3-8b-a100"),
                          ("real", "llmservingsim-llama3.1-8b-rtxpro6000")):
        runs[name] = tmp_path / name
        assert main(["simulate", "--workload", "game24-sc", "--profile", profile,
                     "--request-rate", "4", "--num-programs", "20", "--base-deadline",
                     "3", "--no-progress", "--output-dir", str(runs[name])]) == 0
    assert main(["compare", str(runs["sim"]), str(runs["real"])]) == 0
    cmp_json = runs["real"] / "compare.json"
    c = json.loads(cmp_json.read_text())
    files = run_plot(tmp_path, [runs["real"]], "sim-vs-real")
    fig = figure(files[0])
    att = next(t for t in fig["data"] if t["name"].startswith("attainment"))
    assert values(att, "x") == pytest.approx([c["slo_attainment_real"] * 100])
    assert values(att, "y") == pytest.approx([c["slo_attainment_sim"] * 100])
    med = next(t for t in fig["data"] if t["name"] == "median E2E")
    assert values(med, "x") == pytest.approx([c["median_e2e_s"]["real"]])
    assert values(med, "y") == pytest.approx([c["median_e2e_s"]["sim"]])
    p90 = next(t for t in fig["data"] if t["name"] == "p90 program latency")
    real_p = pd.read_parquet(runs["real"] / "programs.parquet").latency
    assert values(p90, "x") == pytest.approx([np.percentile(real_p, 90)])
    assert any(t["name"] == "sim = real" for t in fig["data"])
    assert "game24-sc" in fig["layout"]["title"]["text"]
    assert "(%)" in fig["layout"]["xaxis"]["title"]["text"]
    assert "(s)" in fig["layout"]["xaxis2"]["title"]["text"]


def test_sim_vs_real_reads_fidelity_rows(tmp_path):
    """replay.fidelity's fidelity.json (hand-written here: it needs a live server)."""
    row = {"load": "light", "median_e2e_sim_s": 1.1, "median_e2e_real_s": 1.25,
           "median_ttft_sim_s": 0.05, "median_ttft_real_s": 0.055,
           "e2e_attainment_sim": 0.98, "e2e_attainment_real": 0.95,
           "ttft_attainment_sim": 0.99, "ttft_attainment_real": 0.97}
    d = tmp_path / "fid"
    d.mkdir()
    (d / "fidelity.json").write_text(json.dumps({"profile": {"name": "live"},
                                                 "rows": [row]}))
    fig = figure(run_plot(tmp_path, [d], "sim-vs-real")[0])
    by = {t["name"]: t for t in fig["data"]}
    assert values(by["attainment: E2E SLO (fidelity)"], "x") == pytest.approx([95])
    assert values(by["attainment: TTFT SLO (fidelity)"], "y") == pytest.approx([99])
    assert values(by["median TTFT"], "x") == pytest.approx([0.055])
    assert "live" in fig["layout"]["title"]["text"]
    del row["median_e2e_sim_s"]
    (d / "fidelity.json").write_text(json.dumps({"rows": [row]}))
    with pytest.raises(InputError) as e:
        from dynasim.experiments.plots import plot

        plot([d], "sim-vs-real", tmp_path / "o")
    assert "median_e2e_sim_s" in e.value.field and "fidelity.json" in str(e.value)


# ---------------------------------------------------------------- bad input
def test_bad_input_names_file_and_field(tmp_path):
    from dynasim.experiments.plots import plot

    df = frame([("w", "p", "a", 1, 1, 0, 1.0)]).assign(cell_id="c", error="")
    res = tmp_path / "results.parquet"
    df.drop(columns="slo_attainment").to_parquet(res)
    with pytest.raises(InputError) as e:
        plot([res], "rate-attainment", tmp_path / "o")
    assert e.value.field == "slo_attainment" and str(res) in str(e.value)
    df.to_parquet(res)
    with pytest.raises(InputError) as e:
        plot([res], "accuracy-attainment", tmp_path / "o")
    assert e.value.field == "accuracy"
    with pytest.raises(InputError) as e:
        plot([tmp_path / "missing.parquet"], "rate-attainment", tmp_path / "o")
    assert "missing.parquet" in str(e.value)
    with pytest.raises(InputError) as e:
        plot([res], "bar-chart", tmp_path / "o")
    assert e.value.field == "kind"
    with pytest.raises(InputError) as e:
        plot([res], "rate-attainment", tmp_path / "o", ["nosuch=1"])
    assert e.value.field == "nosuch"
    with pytest.raises(InputError) as e:
        plot([res], "rate-attainment", tmp_path / "o", ["policy=zzz"])
    assert e.value.field == "policy"
    with pytest.raises(InputError) as e:  # records not kept
        plot([res], "latency-cdf", tmp_path / "o")
    assert e.value.field == "cell_id" and "records" in str(e.value)
    bad = tmp_path / "b.csv"
    bad.write_text("workload,policy,cap\nw,even,5\n")
    with pytest.raises(InputError) as e:
        plot([bad], "token-accuracy", tmp_path / "o")
    assert e.value.field == "output_tokens_mean" and "b.csv" in str(e.value)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError) as e:
        plot([tmp_path / "x.json"], "sim-vs-real", tmp_path / "o")
    assert "x.json" in str(e.value)
    assert not (tmp_path / "o").exists()


def test_error_rows_are_left_out(tmp_path):
    df = frame([("w", "p", "a", 1, r, 0, att) for r, att in ((1, 1.0), (2, 0.5))]
               + [("w", "p", "a", 1, 2, 1, 0.0)]).assign(cell_id="c", error="")
    df.loc[2, "error"] = "cell failed"  # its attainment must not enter the mean
    df.to_parquet(tmp_path / "results.parquet")
    fig = figure(run_plot(tmp_path, [tmp_path], "rate-attainment")[0])
    assert values(lines(fig)["a"], "y") == pytest.approx([100, 50])
    assert "1 seed;" in fig["layout"]["title"]["text"]


def test_cli_error_exit(tmp_path, capsys):
    from dynasim.cli import main

    assert main(["plot", str(tmp_path / "nope"), "--kind", "rate-attainment",
                 "--output", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_write_figures_html_always_png_only_with_browser(tmp_path, monkeypatch):
    import plotly.graph_objects as go
    import plotly.io as pio

    from dynasim.experiments import plots

    figs = {tmp_path / "a" / "one_slo0.5": go.Figure(go.Scatter(x=[1], y=[2])),
            tmp_path / "two.png": go.Figure()}
    calls = []
    monkeypatch.setattr(pio, "write_images", lambda f, p, **kw: calls.append((f, p, kw)))
    monkeypatch.setattr(plots, "_browser", lambda: None)
    assert plots.write_figures(figs) == [str(tmp_path / "a" / "one_slo0.5.html"),
                                         str(tmp_path / "two.html")]
    assert not calls  # no browser: no PNG attempt (and never a download)
    monkeypatch.setattr(plots, "_browser", lambda: "/usr/bin/chromium")
    files = plots.write_figures(figs)
    assert len(calls) == 1 and len(calls[0][0]) == 2  # one call, so one browser start
    assert calls[0][2]["width"] == [960, 960]  # the layout size, not kaleido's 700
    assert files[2:] == [str(tmp_path / "a" / "one_slo0.5.png"), str(tmp_path / "two.png")]

    def boom(f, p, **kw):
        raise RuntimeError("kaleido broke")

    monkeypatch.setattr(pio, "write_images", boom)
    with pytest.warns(UserWarning, match="kaleido broke"):
        assert len(plots.write_figures(figs)) == 2
    from replay.compare import save_figure

    assert save_figure(go.Figure(), tmp_path / "c.html") == (
        [str(tmp_path / "c.html")], "kaleido broke")


def test_png_export_one_browser_start(tmp_path, monkeypatch):
    """Real PNGs through kaleido where a Chromium is installed (skipped elsewhere)."""
    import shutil

    import plotly.graph_objects as go

    from dynasim.experiments import plots

    pytest.importorskip("kaleido")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("no Chromium: PNG export is skipped by design")
    monkeypatch.setattr(plots, "_browser", lambda: browser)
    files = plots.write_figures({tmp_path / f"f{i}": go.Figure(go.Scatter(y=[i, 2]))
                                 for i in range(3)})
    pngs = [f for f in files if f.endswith(".png")]
    assert len(pngs) == 3
    assert all(Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in pngs)


# ------------------------------------------------------ issue 15: figure details
def _rows(policy, pts, scale=1.0, seeds=(0,)):
    """Sweep rows of one policy: ``pts`` = [(rate, attainment per seed...)]."""
    return [("w", "p", policy, scale, rate, s, att[i]) for rate, *att in pts
            for i, s in enumerate(seeds)]


def test_rate_attainment_coinciding_lines_bounds_and_error_bars():
    from dynasim.experiments.figures import rate_attainment_figures

    same = [(1, 1.0, 1.0), (2, 0.95, 0.85), (4, 0.5, 0.3)]
    df = frame(_rows("fcfs", same, seeds=(0, 1)) + _rows("lpm", same, seeds=(0, 1))
               + _rows("gang", [(1, 1.0, 1.0), (2, 1.0, 0.96), (4, 0.96, 0.94)],
                       seeds=(0, 1)))
    fig = next(iter(rate_attainment_figures(df, 0.9).values()))
    sub = fig.layout.title.text
    assert "fcfs = lpm" in sub  # coinciding lines are said to coincide
    by = {t.name: t for t in fig.data}
    assert (by["lpm"].line.dash, by["lpm"].marker.symbol) != \
        (by["fcfs"].line.dash, by["fcfs"].marker.symbol)
    assert by["lpm"].line.dash  # the one on top is dashed, so the one below shows
    # gang meets 90% at every rate: marked at its last rate and its own attainment, "≥"
    mark = next(t for t in fig.data if t.meta and t.name.startswith("gang"))
    assert mark.meta["status"] == "beyond_range"
    assert list(mark.x) == [4] and list(mark.y) == pytest.approx([95.0])
    assert "≥" in mark.name and "≥" in "".join(mark.text)
    # seed spread as error bars in the policy's colour, no fills that blend together
    assert not [t for t in fig.data if t.fill]
    assert list(by["fcfs"].error_y.arrayminus) == pytest.approx([0, 5, 10])
    assert by["fcfs"].error_y.color == by["fcfs"].line.color


def test_slo_attainment_x_axis_covers_the_data():
    from dynasim.experiments.figures import slo_attainment_figures

    df = frame([("w", "p", "a", s, 1, 0, att) for s, att in ((2, 0.5), (3, 0.95), (4, 1))])
    fig = next(iter(slo_attainment_figures(df).values()))
    lo, hi = fig.layout.xaxis.range
    assert 1.5 <= lo < 2 and 4 < hi <= 4.5


def test_accuracy_attainment_points_labelled_not_joined():
    from dynasim.experiments.figures import accuracy_attainment_figures

    df = frame([("w", "p", "a", s, r, 0, att) for (r, s, att) in
                ((1, 1, 0.99), (2, 1, 0.7), (1, 2, 1.0))]).assign(accuracy=0.6)
    fig = next(iter(accuracy_attainment_figures(df).values()))
    (t,) = [t for t in fig.data if t.name == "a"]
    assert "lines" not in t.mode and "text" in t.mode
    got = dict(zip(zip(t.x, t.y), t.text))
    assert got[(99, 60)] == "(1/s, ×1)" and got[(70, 60)] == "(2/s, ×1)"
    assert got[(100, 60)] == "(1/s, ×2)"


def test_cdfs_count_per_policy_fairness_in_ms_single_run_in_legend():
    from dynasim.experiments.figures import cdf_figures

    g = {"workload": "w", "profile": "p", "program_rate": 1.0, "slo_scale": 1.0,
         "seeds": 1, "lines": {"lpm": np.array([0.002, 0.001, 0.003])}}
    fig = next(iter(cdf_figures([g], "fairness-cdf").values()))
    (t,) = fig.data
    assert list(t.x) == pytest.approx([1, 2, 3])  # ms per token
    assert "ms/token" in fig.layout.xaxis.title.text
    assert "lower is fairer" in fig.layout.xaxis.title.text
    assert t.showlegend and fig.layout.showlegend  # one policy still named
    assert "lpm 3" in fig.layout.title.text
    g2 = dict(g, lines={"lpm": np.ones(3), "sjf": np.ones(5)})
    fig = next(iter(cdf_figures([g2], "latency-cdf").values()))
    assert "lpm 3, sjf 5" in fig.layout.title.text
    assert list(fig.data[0].x) == [1, 1, 1]  # latency stays in seconds


def test_token_accuracy_bands_per_policy_and_padded_y():
    from dynasim.experiments.figures import token_accuracy_figures

    rows = [("w", pol, cap, 1000 * cap, 10.0, acc, sd, 3) for pol, cap, acc, sd in
            (("even", 5, 0.500, 0.0005), ("even", 10, 0.501, 0.0005),
             ("certaindex", 5, 0.501, 0.0005), ("certaindex", 10, 0.502, 0.0005))]
    df = pd.DataFrame(rows, columns=["workload", "policy", "cap", "output_tokens_mean",
                                     "output_tokens_std", "accuracy_mean", "accuracy_std",
                                     "seeds"])
    fig = next(iter(token_accuracy_figures(df).values()))
    lo, hi = fig.layout.yaxis.range
    assert hi - lo >= 2 and lo <= 50 and hi >= 50.25
    by = {t.name: t for t in fig.data}
    for pol in ("even", "certaindex"):
        band = by[f"{pol} ± std"]
        rgb = by[pol].line.color
        assert band.fill == "toself" and band.line.color == rgb  # its own edge
        h = rgb.lstrip("#")
        assert band.fillcolor.startswith(f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},")


def test_sim_vs_real_empty_panel_says_why():
    from dynasim.experiments.figures import sim_vs_real_figure

    fig = sim_vs_real_figure([{"label": "a vs b", "slo": "SLO", "attainment": None,
                               "latency": {"median E2E": (1.0, 1.1)}, "workload": "w",
                               "profile": "p", "seed": 0}])
    notes = [a.text for a in fig.layout.annotations]
    assert any("no SLO attainment" in n and "--goodput" in n for n in notes)


def test_file_names_follow_the_documented_pattern(tmp_path):
    """Each kind's file name pattern in plots.py's docstring is what plot() writes."""
    from dynasim.experiments import plots

    doc = plots.__doc__
    for kind in ("rate-attainment", "slo-attainment", "accuracy-attainment"):
        assert f"``{kind}-{plots.NAMES[kind]}.html``" in doc
    df = frame([("w", "p", "a", s, r, 0, 1.0) for r in (1, 2) for s in (1, 2)]).assign(
        accuracy=0.5, cell_id="c", error="")
    df.to_parquet(tmp_path / "results.parquet")
    pats = {"rate-attainment": r"w_p_slo[12]", "slo-attainment": r"w_p_rate[12]",
            "accuracy-attainment": r"w_p"}
    for kind, pat in pats.items():
        files = plots.plot([tmp_path], kind, tmp_path / "o")
        got = {Path(f).name for f in files if Path(f).name.startswith(kind)}
        assert got and all(re.fullmatch(f"{kind}-{pat}\\.html", n) for n in got), got


def test_cdf_reads_replay_folders_without_profile(data_dir, tmp_path):
    """A replay's summary.json names base_url and model, not a profile."""
    from dynasim.cli import main

    d = tmp_path / "replayed"
    assert main(["simulate", "--workload", "game24-sc", "--profile", "vidur-llama3-8b-a100",
                 "--request-rate", "4", "--num-programs", "10", "--no-progress",
                 "--output-dir", str(d)]) == 0
    s = json.loads((d / "summary.json").read_text())
    del s["profile"]
    s.update(base_url="http://127.0.0.1:8000/v1", model="tiny-llama")
    (d / "summary.json").write_text(json.dumps(s))
    files = run_plot(tmp_path, [d], "latency-cdf")
    assert [Path(f).name for f in files] == ["latency-cdf-game24-sc_tiny-llama_rate4_slo1.html"]
    assert "tiny-llama at http://127.0.0.1:8000/v1" in figure(files[0])["layout"]["title"]["text"]


def test_cli_says_when_pngs_are_skipped(tmp_path, capsys):
    from dynasim.cli import main

    frame([("w", "p", "a", 1, 1, 0, 1.0)]).assign(error="").to_parquet(
        tmp_path / "results.parquet")
    assert main(["plot", str(tmp_path), "--kind", "rate-attainment", "--output",
                 str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out.splitlines()
    skipped = [line for line in out if "PNG" in line]
    assert len(skipped) == 1 and "apt-get install chromium" in skipped[0]


def test_calibration_report_shares_the_style_and_empty_panels_say_why():
    """replay/calibrate/report.py: the plot style, and an empty panel names what is missing."""
    from dynasim.profiles import load_profile
    from replay.calibrate.report import report_figure
    from replay.calibrate.run import Calibration

    prof = load_profile("vidur-llama3-8b-a100")
    lone = [{"prompt": p, "client_ttft_ms": 20.0 + p / 100, "prefill_ms": 10 + p / 100}
            for p in (128, 512)]
    cal = Calibration(profile=prof, data={"lone": lone, "decode": [], "mixed": []},
                      medians={"decode": []})
    fig = report_figure(cal)
    assert fig.layout.template.layout.paper_bgcolor == "white"  # plotly_white, as plots
    assert fig.layout.font.size == 14 and fig.layout.title.x == 0.02
    notes = {a.name: a for a in fig.layout.annotations if a.name}
    assert set(notes) == {"empty 1,2", "empty 2,1", "empty 2,2"}
    assert "no decode steps measured" in notes["empty 1,2"].text
    mid = fig.get_subplot(2, 1)  # written in the middle of its own panel
    assert (notes["empty 2,1"].x, notes["empty 2,1"].y) == pytest.approx(
        (sum(mid.xaxis.domain) / 2, sum(mid.yaxis.domain) / 2))
