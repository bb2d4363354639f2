"""Profiles fitted to published measurements (Splitwise, Vidur, LLMServingSim).

Each shipped JSON must equal a fresh build from its sha256-checked sources, each fit must
hold a held-out error bound, step times must sit where physics puts them, and each
profile must simulate a trace.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest

from dynasim.cli import main
from dynasim.errors import InputError
from dynasim.policies import FCFS
from dynasim.profiles import llmservingsim, load_profile, shipped_profiles, splitwise, vidur
from dynasim.profiles.builders import BUILDERS, RUN_PROFILES
from dynasim.profiles.fit import predict_ms
from dynasim.simulation import simulate
from tests.helpers import make_trace

NEW = [n for n in BUILDERS if n != "distserve-opt13b-a100"]
# fitted to published step timings (a StepTimeFit report); the others of NEW are fitted
# by simulating recorded runs (tests/profiles/test_fit_runs.py, and their per-run errors
# in tests/experiments/test_validate_recorded.py). Rebuilding those six takes ~100 s.
STEP_FITTED = [n for n in NEW if n not in RUN_PROFILES]

# Held-out median error bounds (fractions), each from what limits the fit:
# * splitwise: medians of 5-15 repeats whose spread is ~1% typically and up to 12%
#   (coefficient of variation), and a linear-in-tokens form on prefills that grow a
#   little faster than linearly; fits land at 0.3-4.7%. Wrong row mapping (contexts,
#   batch sizes, a unit) lands far above 8%.
# * vidur: smooth operator sums, but GEMM wave quantisation makes 3-5% steps in the
#   per-token cost that a straight line cannot follow; fit 2.2%.
# * llmservingsim: ten interpolated kernel tables composed; small prefill chunks over
#   long caches are KV-read bound, which the form only charges per query-key pair
#   (those rows err up to ~45%), yet the median stays at ~5%.
BOUNDS = {"splitwise-": 0.08, "vidur-": 0.05, "llmservingsim-": 0.08}


def _bound(name: str) -> float:
    return next(v for k, v in BOUNDS.items() if name.startswith(k))


def _same(a, b, path="") -> None:
    """Equal JSON trees; floats to 1e-4 relative (the least-squares fit stops at its own
    tolerance, so another BLAS or scipy build lands 1e-9 to 1e-6 away, as seen on a fresh
    venv: held-out median error 0.0130439701 against 0.0130439413; anything a user sees is
    identical)."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-12), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _shipped(name: str) -> dict:
    return json.loads((resources.files("dynasim") / "profiles" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", NEW)
def test_shipped_equals_fresh_build(data_dir, name):
    _same(json.loads(BUILDERS[name]().model_dump_json()), _shipped(name))


def test_cli_builds_one_profile_of_a_multi_profile_source(data_dir, capsys, tmp_path):
    name = "splitwise-llama2-70b-h100-tp4"
    assert main(["profiles", "--build", name, "--output", str(tmp_path / "p.json")]) == 0
    _same(json.loads((tmp_path / "p.json").read_text()), _shipped(name))


def test_every_builder_ships_and_is_listed(capsys):
    assert set(NEW) <= set(shipped_profiles())
    assert main(["profiles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "model", "gpu"]
    listed = {line.split()[0]: line.split() for line in lines[1:]}
    for name in NEW:
        p = load_profile(name)
        cols = listed[name]
        assert cols[1:4] == [p.model, p.gpu, str(p.tensor_parallel_size)]
        assert cols[4:8] == [str(p.kv_capacity_tokens), str(p.max_num_seqs),
                             str(p.max_num_batched_tokens),
                             str(p.max_model_len) if p.max_model_len else "-"]
        assert cols[8:10] == ["v1", "tokens"]
        assert cols[10] == (f"{100 * p.fit.held_out_median_error:.1f}%" if p.fit
                            else "-")
    assert listed["distserve-opt13b-a100"][-1] == "-"  # not fitted


def test_splitwise_tp2_batch64_is_inconsistent_in_the_data(data_dir):
    """The evidence: only these groups have e2e_time far above prompt_time + token_size
    x token_time (the batch ran in waves); early-stopped long runs fall below it."""
    ratios = {}
    for _, r in splitwise.read_measurements():
        if r["hardware"] == "h100-80gb-pcap":
            continue
        key = (r["model"], r["hardware"], r["tensor_parallel"], r["batch_size"],
               r["prompt_size"], r["token_size"])
        ratios.setdefault(key, []).append(
            r["e2e_time"] / (r["prompt_time"] + r["token_size"] * r["token_time"]))
    far_above = {k[:4] for k, v in ratios.items() if np.median(v) > 2}
    assert far_above == splitwise.DROPPED_GROUPS


def test_splitwise_dropped_group_absent_from_fit_rows(data_dir):
    raw = [(line, r) for line, r in splitwise.read_measurements()
           if (r["model"], r["hardware"], r["tensor_parallel"], r["batch_size"])
           in splitwise.DROPPED_GROUPS]
    assert len(raw) == 10  # the group is in the source ...
    for hardware in ("a100-80gb", "h100-80gb"):
        rows, dropped = splitwise.step_rows("llama2-70b", hardware, 2)
        assert rows
        assert not any(r.num_decode == 64 or len(r.prefill) == 64 for r in rows)
        assert not any(" b64" in r.group for r in rows)  # ... but not in the fit
        lines = [str(line) for line, r in raw if r["hardware"] == hardware]
        key = next(k for k in dropped if "batch_size 64" in k)
        assert key.endswith(", ".join(lines))
        assert key in _shipped(f"splitwise-llama2-70b-{hardware[:4]}-tp2")["provenance"][
            "dropped"]
        # the same batch size stays where it is consistent: the filter is that group only
        rows4, _ = splitwise.step_rows("llama2-70b", hardware, 4)
        assert any(r.num_decode == 64 for r in rows4)


def test_splitwise_skips_combinations_whose_weights_do_not_fit(monkeypatch):
    bloom = splitwise.MODELS["bloom-176b"]
    # 4 x 72 GiB = 309 GB < 352 GB of BLOOM weights
    assert splitwise.kv_capacity_tokens(80, 4, bloom.weight_bytes,
                                        bloom.kv_bytes_per_token) == 0
    monkeypatch.setitem(splitwise.MEASURED_TP, "bloom-176b", (4, 8))
    assert "splitwise-bloom-176b-a100-tp4" not in splitwise.combos()
    assert "splitwise-bloom-176b-a100-tp8" in splitwise.combos()


def _fit_rows(name: str):
    if name.startswith("splitwise-"):
        return splitwise.step_rows(*splitwise.combos()[name])[0]
    if name.startswith("vidur-"):
        return vidur.step_rows()
    return llmservingsim.composed_rows()[0]


@pytest.mark.parametrize("name", STEP_FITTED)
def test_fit_error_within_bound(data_dir, name):
    p = load_profile(name)
    assert p.fit.held_out_rows >= 7
    assert p.fit.held_out_median_error <= _bound(name)
    # recomputed from the data, not trusted from the report: the shipped model on every
    # fit row (Vidur's rows are non-attention time, so compare the fitted dense part)
    rows = _fit_rows(name)
    model = p.step_time
    if name.startswith("vidur-"):
        model = model.model_copy(update={"step_ms": model.step_ms - vidur.LM_HEAD_MS,
                                         "prefill_attention_ms_per_pair": 0.0})
    y = np.array([r.ms for r in rows])
    err = np.abs(predict_ms(model, rows) - y) / y
    assert len(rows) == p.fit.rows + p.fit.held_out_rows
    assert np.median(err) <= _bound(name)


# Physical floors: a batch-1 decode step reads every weight but the input embedding
# once (peak HBM bandwidth), a 2048-token prefill does 2 x params FLOPs per token (peak
# dense bf16); both split over TP. Datasheet peaks; RTX PRO 6000: 1.597 TB/s (as
# LLMServingSim models it) and ~500 TFLOPS (its own gate_up GEMM reaches 417).
def _physics(name: str):
    if name.startswith("splitwise-"):
        model, hardware, tp = splitwise.combos()[name]
        m, g = splitwise.MODELS[model], splitwise.GPUS[hardware]
        embedding = 0 if model == "bloom-176b" else 32000 * 8192 * 2  # BLOOM ties it
        return m.params, m.weight_bytes - embedding, tp, g.hbm_tb_s, g.bf16_tflops
    llama3_embedding = 128256 * 4096 * 2
    if name.startswith("vidur-"):
        return (vidur.MODEL.params, vidur.MODEL.weight_bytes - llama3_embedding, 1,
                2.039, 312)
    m = llmservingsim.MODEL
    return m.params, m.weight_bytes - llama3_embedding, 1, 1.597, 500


@pytest.mark.parametrize("name", STEP_FITTED)
def test_step_times_are_physical(name):
    params, read_bytes, tp, tb_s, tflops = _physics(name)
    st = load_profile(name).step_time
    decode_ms = 1000 * st.step_time([], 1, 1025)
    decode_floor = 1e3 * read_bytes / tp / (tb_s * 1e12)
    prefill_ms = 1000 * st.step_time([(2048, 0)], 0, 0)
    prefill_floor = 1e3 * 2 * params * 2048 / tp / (tflops * 1e12)
    # 8x: TP 8 decode runs 5-6x its floor in Splitwise's own measurements (all-reduces,
    # launch overhead); a unit slip (1000x) or a per-layer time (1/32) falls outside
    assert decode_floor <= decode_ms <= 8 * decode_floor
    assert prefill_floor <= prefill_ms <= 8 * prefill_floor
    # bigger batches and longer contexts never get cheaper
    assert st.step_time([], 64, 64 * 2000) > st.step_time([], 1, 1025)
    assert st.step_time([(1024, 1024)], 0, 0) > st.step_time([(1024, 0)], 0, 0)


def test_llama3_8b_a100_magnitudes():
    st = load_profile("vidur-llama3-8b-a100").step_time
    assert 5 <= 1000 * st.step_time([], 1, 1025) <= 15
    # ~15k tokens/s prefill on an A100 for an 8B model (peers' figure): 2048 in ~140 ms
    assert 100 <= 1000 * st.step_time([(2048, 0)], 0, 0) <= 250


@pytest.mark.parametrize("name", NEW)
def test_profile_simulates_a_trace(name):
    profile = load_profile(name)
    records, engine = simulate(make_trace(60, seed=1, rate=5.0), profile, FCFS())
    assert len(records) == 60
    assert (records["error"] == "").all()
    assert (records["ttft"] > 0).all()
    # no token is faster than a one-request decode step (max(GPU, CPU) under async)
    one_step = (max(profile.step_time.split([], 1, 2)) if profile.async_scheduling
                else profile.step_time.step_time([], 1, 2))
    tpot = records["tpot"].dropna()
    assert len(tpot) and (tpot >= one_step * (1 - 1e-9)).all()
    assert engine.num_steps > 0


def test_simulate_cli_with_a_published_profile(data_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["simulate", "--trace", "azure-conv-2023", "--num-prompts", "200",
                 "--request-rate", "2", "--profile", "vidur-llama3-8b-a100",
                 "--no-progress", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] + summary["failed"] == 200 and summary["completed"] > 150


def test_malformed_sources_name_file_line_field(tmp_path):
    bad = tmp_path / "perf_model.csv"
    bad.write_text("model,hardware,tensor_parallel,prompt_size,batch_size,token_size,"
                   "prompt_time,token_time,e2e_time\n"
                   "llama2-70b,a100-80gb,2,512,1,128,196.2,54.9,7169.0\n"
                   "llama2-70b,a100-80gb,2,512,1,128,-3,54.9,7169.0\n")
    with pytest.raises(InputError) as exc:
        splitwise.step_rows("llama2-70b", "a100-80gb", 2, path=bad)
    assert (exc.value.source, exc.value.line, exc.value.field) == (str(bad), 3, "prompt_time")
    bad.write_text("model,hardware\nllama2-70b,a100-80gb\n")
    with pytest.raises(InputError) as exc:
        splitwise.step_rows("llama2-70b", "a100-80gb", 2, path=bad)
    assert exc.value.field == "tensor_parallel"
    meta = tmp_path / "meta.yaml"
    meta.write_text("model: meta-llama/Llama-3.1-8B\nthis line has no colon\n")
    with pytest.raises(InputError) as exc:
        llmservingsim.read_meta(meta)
    assert (exc.value.source, exc.value.line) == (str(meta), 2)
    meta.write_text("model: meta-llama/Llama-3.1-8B\ntp_degrees: [1, 2]\n")
    with pytest.raises(InputError) as exc:
        llmservingsim.engine_flags(meta)
    assert exc.value.field == "engine_effective.hf_overrides.num_hidden_layers"


def test_vidur_rejects_another_models_operator_file(data_dir, tmp_path):
    src = (data_dir / "vidur/profiling__compute__a100__meta-llama__Meta-Llama-3-8B__mlp.csv"
           ).read_text().splitlines()
    header = src[0].split(",")
    row = src[1].split(",")
    row[header.index("n_kv_head")] = "32"  # a Llama-2-style MHA shape
    bad = tmp_path / "mlp.csv"
    bad.write_text("\n".join([src[0], ",".join(row)]) + "\n")
    with pytest.raises(InputError) as exc:
        vidur.step_rows(bad)
    assert (exc.value.line, exc.value.field) == (2, "n_kv_head")
