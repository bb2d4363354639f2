"""Roofline profiles and the engine switches (dynasim.profiles.roofline): the split
into GPU (roofline terms) and CPU (overheads), the learner charging each server as the
engine does (``max(GPU, CPU)`` under async scheduling), ``--vllm-version`` on the CLI,
and the all-reduce over PCIe (dynasim.profiles.gpus)."""

from __future__ import annotations

import pytest

from dynasim.cli.main import main
from dynasim.errors import InputError
from dynasim.profiles import load_profile
from dynasim.profiles.gpus import PCIE_ALLREDUCE_FRACTION, get_gpu
from dynasim.profiles.model_config import load_model_config
from dynasim.profiles.roofline import (
    LEARNED,
    LEARNED_ASYNC,
    Coefficients,
    effective_ms,
    learn_coefficients,
    roofline_profile,
    step_time_coefficients,
    version_switches,
)

COEF = Coefficients(mem_eff=0.8, kv_eff=0.6, compute_eff=0.9, attn_eff=0.7, link_eff=1.0,
                    step_ms=3.0, layer_ms=0.01, allreduce_ms=0.005, seq_ms=0.05)


def test_split_is_roofline_gpu_and_overhead_cpu():
    m = load_model_config("Qwen/Qwen3-32B")
    g = get_gpu("rtxpro6000")
    st = roofline_profile(m, g, 2, COEF).step_time
    prefill, n, ctx = [(512, 1024)], 8, 8000
    gpu, cpu = st.split(prefill, n, ctx)
    # CPU: the per-step overheads (step, per layer, per all-reduce) and per sequence
    assert cpu * 1e3 == pytest.approx(3.0 + 0.01 * 64 + 0.005 * 2 * 64 + 0.05 * 9)
    # GPU: weights or FLOPs (+ all-reduce bytes), attention FLOPs, KV bytes; by hand
    ar = 2 * 64 * 5120 * 2  # bytes per token: 2 all-reduces per layer, ring of 2
    dense = (m.flops_per_token / 2 / (503.8e12 * 0.9) + ar / (16e9 * 1.0)) * 1e3
    floor = m.step_weight_bytes / 2 / (1597e9 * 0.8) * 1e3
    pairs = 512 * 1024 + 512 * 513 / 2
    attn = pairs * m.attention_flops_per_pair / 2 / (503.8e12 * 0.7) * 1e3
    kv = ctx * m.kv_bytes_per_token(2) / (1597e9 * 0.6) * 1e3
    assert gpu * 1e3 == pytest.approx(max(floor, dense * 520) + attn + kv, rel=1e-5)


def test_pcie_allreduce_is_a_quarter_of_the_link():
    """LLMServingSim's calibrated 16 GB/s for NCCL all-reduce on two RTX PRO 6000 over
    PCIe Gen5 x16 (64 GB/s per direction); NVLink cards keep half their datasheet
    NVLink figure."""
    assert PCIE_ALLREDUCE_FRACTION == 0.25
    assert get_gpu("rtxpro6000").link_gbs == 16 and get_gpu("rtx4090").link_gbs == 8
    assert get_gpu("h100-sxm").link_gbs == 450
    m = load_model_config("Qwen/Qwen3-32B")
    one = step_time_coefficients(m, get_gpu("rtxpro6000"), 1, COEF)["dense_ms_per_token"]
    two = step_time_coefficients(m, get_gpu("rtxpro6000"), 2, COEF)["dense_ms_per_token"]
    assert two - one / 2 == pytest.approx(2 * 64 * 5120 * 2 / 16e9 * 1e3)


def test_effective_time_is_max_under_async_and_sum_otherwise():
    st = roofline_profile(load_model_config("meta-llama/Llama-3.1-8B"), get_gpu("h100-sxm"),
                          1, COEF).step_time
    steps = [([], 4, 4000), ([(2048, 0)], 0, 0)]
    parts = [st.split(*s) for s in steps]
    assert list(effective_ms(st, steps, False)) == pytest.approx(
        [1e3 * (g + c) for g, c in parts])
    assert list(effective_ms(st, steps, True)) == pytest.approx(
        [1e3 * max(g, c) for g, c in parts])


def _server(name: str, gpu: str, tp: int, async_: bool):
    m, g = load_model_config(name), get_gpu(gpu)
    p = roofline_profile(m, g, tp, COEF, max_num_seqs=64, max_num_batched_tokens=2048,
                         kv_blocks=1000, switches={"async_scheduling": async_})
    return p, m, g, []


def test_learner_charges_each_server_as_the_engine_does():
    """Servers whose profiles are roofline profiles of known coefficients, two of them
    with async scheduling: learned with the roofline charged like each profile, every
    step time is reproduced; charged additively (the learner before the switches) the
    async servers are not."""
    train = [_server("meta-llama/Llama-2-7b-hf", "h100-sxm", 1, True),
             _server("Qwen/Qwen3-14B", "h100-sxm", 1, False),
             _server("meta-llama/Llama-2-70b-hf", "h100-sxm", 4, False),
             _server("meta-llama/Llama-3.1-8B", "rtx4090", 1, True)]
    flags = [p.async_scheduling for p, *_ in train]
    right = learn_coefficients(train, async_roofline=flags)
    wrong = learn_coefficients(train, async_roofline=False)

    def worst(coef: Coefficients, charge_async: list[bool]) -> float:
        out = 0.0
        for (p, m, g, _), a in zip(train, charge_async):
            steps = [([], 1, 1000), ([], 64, 64 * 2000), ([(2048, 0)], 0, 0)]
            y = effective_ms(p.step_time, steps, p.async_scheduling)
            st = roofline_profile(m, g, p.tensor_parallel_size, coef, kv_blocks=1000).step_time
            out = max(out, float(max(abs(effective_ms(st, steps, a) / y - 1))))
        return out

    assert worst(right, flags) < 0.02
    assert worst(wrong, [False] * 4) > 0.05


def test_version_switches_and_cli(tmp_path, capsys):
    assert not any(version_switches(None).values())
    assert version_switches("0.15.1") == {"async_scheduling": True,
                                          "admit_full_prompt": False,
                                          "client_timeouts": True}
    assert version_switches("0.19.0")["admit_full_prompt"]
    with pytest.raises(InputError, match="vLLM version"):
        version_switches("latest")
    out = tmp_path / "p.json"
    base = ["profiles", "--roofline", "--model-config", "Qwen/Qwen3-32B", "--gpu",
            "rtxpro6000", "--tp", "2", "--output", str(out)]
    assert main(base) == 0
    prof = load_profile(str(out))
    assert not prof.async_scheduling and not prof.admit_full_prompt
    floor = prof.step_time.dense_floor_ms
    assert prof.step_time.seq_ms == pytest.approx(LEARNED.seq_ms)
    assert main([*base, "--vllm-version", "0.19.0"]) == 0
    prof = load_profile(str(out))
    assert prof.async_scheduling and prof.admit_full_prompt and prof.client_timeouts
    assert prof.step_time.dense_floor_ms / floor == pytest.approx(
        LEARNED.mem_eff / LEARNED_ASYNC.mem_eff, rel=1e-4)
    assert prof.provenance["vllm_version"] == "0.19.0"
    assert main([*base, "--vllm-version", "v19"]) == 2
    assert "vllm-version" in capsys.readouterr().err
