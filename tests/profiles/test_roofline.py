"""Roofline profiles (dynasim.profiles.roofline): config parsing, the roofline's
quantities against a hand computation, a profile that runs, the CLI, and the
leave-one-model-out error within the bound measured when it was built."""

from __future__ import annotations

import json

import pytest

from dynasim.cli.main import main
from dynasim.errors import InputError
from dynasim.policies import make_policy
from dynasim.profiles import load_profile
from dynasim.profiles.gpus import get_gpu
from dynasim.profiles.model_config import load_model_config
from dynasim.profiles.roofline import LEARNED, derive_kv_blocks, roofline_profile
from dynasim.simulation import simulate
from tests.helpers import make_trace

LLAMA2_7B = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
             "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
             "torch_dtype": "bfloat16"}


def test_missing_field_names_file_and_field(write):
    cfg = {k: v for k, v in LLAMA2_7B.items() if k != "hidden_size"}
    path = write("config.json", json.dumps(cfg, indent=1))
    with pytest.raises(InputError) as err:
        load_model_config(str(path))
    assert err.value.field == "hidden_size" and err.value.source == str(path)


def test_bad_value_names_its_line(write):
    text = json.dumps(dict(LLAMA2_7B, num_hidden_layers="32"), indent=1)
    path = write("config.json", text)
    with pytest.raises(InputError) as err:
        load_model_config(str(path))
    assert err.value.field == "num_hidden_layers" and err.value.line == 2
    with pytest.raises(InputError, match="not valid JSON"):
        load_model_config(str(write("bad.json", "{")))
    with pytest.raises(InputError, match="unknown GPU"):
        get_gpu("tpu-v5")


def test_llama2_7b_quantities_match_hand_computation(write):
    m = load_model_config(str(write("config.json", json.dumps(LLAMA2_7B))))
    layer = 4 * 4096 * 4096 + 3 * 4096 * 11008  # QKVO + gate/up/down
    assert m.params == 32 * layer + 2 * 32000 * 4096 == 6_738_149_376
    assert m.flops_per_token == 2 * 32 * layer
    assert m.kv_bytes_per_token() == 2 * 32 * 32 * 128 * 2 == 524_288
    assert m.kv_bytes_per_token(tp=4) == 524_288 / 4
    assert m.attention_flops_per_pair == 4 * 32 * 32 * 128
    assert m.step_weight_bytes == (32 * layer + 32000 * 4096) * 2
    # vLLM's rule: 0.9 x 80 GiB less the weights, over 16 tokens' KV; the recorded
    # server (vLLM 0.15.1, H100 SXM) had 7462 blocks
    blocks = derive_kv_blocks(m, get_gpu("h100-sxm"), 1)
    assert blocks == int((0.9 * 80 * 2**30 - m.weight_bytes) // (16 * 524_288))
    assert 7462 < blocks < 7462 * 1.05


def test_moe_counts_active_experts_only_in_flops():
    m = load_model_config("mistralai/Mixtral-8x7B-v0.1")
    assert 46e9 < m.params < 47.5e9  # Mixtral-8x7B: 46.7B parameters
    assert 12.5e9 < m.flops_per_token / 2 < 13.5e9  # 12.9B active


def test_roofline_profile_runs_in_the_simulator():
    m = load_model_config("Qwen/Qwen3-14B")
    prof = roofline_profile(m, get_gpu("a100-80gb"), 2, LEARNED)
    assert prof.tensor_parallel_size == 2 and prof.step_time.dense_floor_ms > 0
    records, _ = simulate(make_trace(50), prof, make_policy("fcfs"))
    served = records[records["error"] == ""]
    assert len(served) == 50 and (served["e2e_latency"] > served["ttft"]).all()
    with pytest.raises(InputError, match="does not fit"):
        roofline_profile(load_model_config("meta-llama/Llama-2-70b-hf"),
                         get_gpu("rtx4090"), 1, LEARNED)


def test_cli_writes_a_profile(tmp_path, write, capsys):
    cfg = write("config.json", json.dumps(LLAMA2_7B))
    out = tmp_path / "p.json"
    assert main(["profiles", "--roofline", "--model-config", str(cfg), "--gpu",
                 "h100-sxm", "--tp", "1", "--kv-blocks", "1000", "--max-num-seqs", "64",
                 "--output", str(out)]) == 0
    prof = load_profile(str(out))
    assert prof.kv_capacity_tokens == 16000 and prof.max_num_seqs == 64
    assert main(["profiles", "--roofline", "--model-config", str(cfg),
                 "--gpu", "tpu"]) == 2
    assert "unknown GPU" in capsys.readouterr().err


def test_learned_coefficients_are_a_fresh_fit(data_dir):
    from dynasim.profiles.roofline import LEARNED_ASYNC
    from dynasim.profiles.roofline_validate import learn_all

    for shipped, async_ in ((LEARNED, False), (LEARNED_ASYNC, True)):
        fresh = learn_all(async_)
        for k, v in vars(shipped).items():
            assert getattr(fresh, k) == pytest.approx(v, rel=1e-3, abs=1e-6), (async_, k)


def test_leave_one_model_out_within_measured_bound(data_dir):
    """Bounds measured at build time (python -m dynasim.profiles.roofline_validate):
    RTX 4090 Llama-3.1-8B 1.1% E2E / 1.3% TTFT, RTX PRO 6000 Qwen3-32B 27.9% / 31.0%
    (30.7% / 39.2% before the PCIe all-reduce rate, dynasim.profiles.gpus)."""
    from dynasim.profiles.roofline_validate import leave_one_model_out

    rows = {r["server"]: r for r in leave_one_model_out(
        only=["vllm019-llama3.1-8b-rtx4090", "vllm019-qwen3-32b-rtxpro6000-tp2"])}
    r = rows["vllm019-llama3.1-8b-rtx4090"]
    assert r["e2e"] < 0.05 and r["ttft"] < 0.05
    assert r["switches"] == ["admit_full_prompt", "async_scheduling", "client_timeouts"]
    r = rows["vllm019-qwen3-32b-rtxpro6000-tp2"]
    assert r["e2e"] < 0.33 and r["ttft"] < 0.37


def test_per_version_refit_keeps_efficiencies_and_takes_family_front_end():
    """``learn_coefficients(train, family)``: the efficiencies of the shared fit, the
    overheads and front-end latency of the family (the ``--per-version`` option)."""
    from dynasim.profiles.roofline import learn_coefficients
    from dynasim.profiles.roofline_validate import server

    train = [(*server(n), []) for n in ("vllm0151-llama2-7b-h100",
                                         "vllm019-llama3.1-8b-rtx4090",
                                         "vllm019-qwen3-32b-rtxpro6000-tp2")]
    shared = learn_coefficients(train)
    fam = learn_coefficients(train, train[1:2])
    for k in shared.EFFICIENCIES:
        assert getattr(fam, k) == getattr(shared, k)
    assert fam.frontend_latency_ms == pytest.approx(train[1][0].frontend_latency_ms, abs=1e-3)
    # the RTX 4090 server charges ~0.4 ms per sequence (host work), the shared fit less
    assert fam.seq_ms > shared.seq_ms
