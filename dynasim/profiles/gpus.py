"""GPU specifications for roofline profiles (:mod:`dynasim.profiles.roofline`).

Each entry is the vendor's public datasheet figure (the source is in the entry):

* ``bf16_tflops``: dense BF16 tensor-core peak (TFLOP/s). Datasheets print the figure
  *with sparsity* (2:4) for Hopper; the dense peak is half of it;
* ``mem_bandwidth_gbs``: memory bandwidth (GB/s, 10^9 B/s);
* ``memory_gib``: memory size as marketed (``80GB``); HBM and GDDR stacks are binary
  sizes, so it is read as GiB (vLLM sees ``torch.cuda.mem_get_info`` total, ~1% less);
* ``link_gbs``: GPU-to-GPU bandwidth *per direction* (GB/s) that a ring all-reduce
  achieves: half the bidirectional NVLink figure of the datasheet for NVLink cards; for
  cards without NVLink a fraction (:data:`PCIE_ALLREDUCE_FRACTION`) of the PCIe
  link's per-direction rate.

The H100 figures are the ``datasheets/`` of the BLIS training data
(``blis_training_h100/datasheets/h100-{sxm,nvl}.json``, NVIDIA datasheet 2430615).

The RTX 4090 and RTX PRO 6000 entries are checked against the vLLM 0.19 per-layer
timings recorded on those cards (``llmservingsim_vllm019_runs/profiler/perf/``, one
layer, ``tp1/dense.csv``): RTX 4090 Llama-3.1-8B ``gate_up_proj`` reads its 235 MB in
247 us at 1 token (950 GB/s, 94% of 1,008) and computes 2,048 tokens at 166 TFLOP/s
(the whitepaper's 165.2 dense BF16 with FP32 accumulate, GeForce half rate); RTX PRO
6000 *Server Edition* (the card named in ``meta.yaml``) Qwen3-32B ``down_proj`` reads
262 MB in 182 us (1,440 GB/s: 90% of the Server Edition's 1,597 GB/s, 80% of the
Workstation Edition's 1,792) and ``gate_up_proj`` at 2,048 tokens runs 408 TFLOP/s
(81% of 503.8). The Server Edition's 1,597 GB/s is kept (the 4090's 94% makes 90% the
plausible ratio); the A100, H200 and L40S entries are unverified here.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynasim.errors import InputError

#: Fraction of a PCIe x16 link's per-direction rate that a TP all-reduce between cards
#: without NVLink achieves. Source: LLMServingSim (casys-kaist/LLMServingSim at
#: 5daddb2, ``bench/examples/RTXPRO6000/*/config.json`` ``link_bw: 16`` GB/s, with the
#: comment in ``serving/__main__.py`` that this value calibrates AllReduce against
#: real NCCL on PCIe 5.0 under its ring model) for two RTX PRO 6000 on PCIe Gen5 x16
#: (64 GB/s per direction): 16 / 64. The vLLM 0.19 run on those cards agrees
#: (``llmservingsim_vllm019_runs``, Qwen3-32B TP 2): while requests wait, its steps of
#: 2,048 prompt tokens take about 350 ms (~5,900 tokens/s in ``timeseries.csv``), the
#: GEMMs ~165 ms (``profiler/perf``), leaving ~170 ms for 128 all-reduces of 21 MB
#: (~16 GB/s). The same fraction is applied to the PCIe Gen4 cards (RTX 4090, L40S:
#: 32 GB/s per direction -> 8), unmeasured here.
PCIE_ALLREDUCE_FRACTION = 0.25


@dataclass(frozen=True)
class GPU:
    """One GPU's roofline ceilings (module docstring for units) and the source."""

    name: str
    bf16_tflops: float
    mem_bandwidth_gbs: float
    memory_gib: float
    link_gbs: float
    source: str

    @property
    def flops(self) -> float:
        """Dense BF16 peak in FLOP/s."""
        return self.bf16_tflops * 1e12

    @property
    def bandwidth(self) -> float:
        """Memory bandwidth in B/s."""
        return self.mem_bandwidth_gbs * 1e9

    @property
    def memory_bytes(self) -> float:
        """Memory size in bytes (``memory_gib`` GiB)."""
        return self.memory_gib * 2**30

    @property
    def link(self) -> float:
        """Per-direction GPU-to-GPU bandwidth in B/s."""
        return self.link_gbs * 1e9


_HOPPER = "NVIDIA H100 datasheet 2430615 (blis_training_h100/datasheets/{}.json)"
GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("h100-sxm", 1979 / 2, 3350, 80, 900 / 2, _HOPPER.format("h100-sxm")),
    GPU("h100-nvl", 1671 / 2, 3900, 94, 600 / 2, _HOPPER.format("h100-nvl")),
    GPU("h200", 1979 / 2, 4800, 141, 900 / 2,
        "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM: 1,979 TFLOPS BF16 with "
        "sparsity, 4.8 TB/s, 141 GB, NVLink 900 GB/s)"),
    GPU("a100-80gb", 312, 2039, 80, 600 / 2,
        "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM: 312 TFLOPS BF16 dense, "
        "2,039 GB/s, NVLink 600 GB/s)"),
    GPU("a100-40gb", 312, 1555, 40, 600 / 2,
        "NVIDIA A100 Tensor Core GPU datasheet (A100 40GB SXM: 312 TFLOPS BF16 dense, "
        "1,555 GB/s, NVLink 600 GB/s)"),
    GPU("l40s", 733 / 2, 864, 48, 32 * PCIE_ALLREDUCE_FRACTION,
        "NVIDIA L40S datasheet (733 TFLOPS BF16 with sparsity, 864 GB/s, 48 GB; PCIe "
        "Gen4 x16: 32 GB/s per direction, all-reduce at PCIE_ALLREDUCE_FRACTION)"),
    GPU("rtx4090", 165.2, 1008, 24, 32 * PCIE_ALLREDUCE_FRACTION,
        "NVIDIA Ada GPU architecture whitepaper, appendix (RTX 4090: 165.2 TFLOPS "
        "FP16/BF16 tensor with FP32 accumulate, 1,008 GB/s, 24 GB; PCIe Gen4 x16, "
        "all-reduce at PCIE_ALLREDUCE_FRACTION)"),
    GPU("rtxpro6000", 503.8, 1597, 96, 64 * PCIE_ALLREDUCE_FRACTION,
        "NVIDIA RTX PRO 6000 Blackwell Server Edition datasheet (96 GB GDDR7, 1,597 "
        "GB/s; PCIe Gen5 x16: 64 GB/s per direction, all-reduce at "
        "PCIE_ALLREDUCE_FRACTION) and RTX Blackwell architecture whitepaper (503.8 "
        "TFLOPS FP16/BF16 tensor with FP32 accumulate, dense)"),
)}

#: GPU names as the recorded runs and shipped profiles spell them -> table key
ALIASES = {"h100-80gb": "h100-sxm", "h100-sxm-80gb": "h100-sxm", "h100": "h100-sxm",
           "rtx-4090-24gb": "rtx4090", "rtx-pro-6000-blackwell-96gb": "rtxpro6000",
           "a100-80gb-sxm": "a100-80gb", "a100": "a100-80gb"}


def get_gpu(name: str) -> GPU:
    """The :class:`GPU` named ``name`` (a :data:`GPUS` key or an :data:`ALIASES` key,
    case-insensitive).

    Raises:
        InputError: an unknown GPU (the message lists the known ones).
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in GPUS:
        raise InputError(f"unknown GPU {name!r} (known: {', '.join(GPUS)})", field="gpu")
    return GPUS[key]
