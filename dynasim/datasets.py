"""Named public data files: where each comes from, its sha256, and how to get it.

dynasim never ships third-party data. Each file is named by its public source (GitHub
repository, commit and path) and its sha256. :func:`fetch` resolves a name to a local
path in this order:

1. the local mirror ``$DYNASIM_DATA_DIR/<mirror>`` (a folder laid out like
   ``../shared/data``), checked against the sha256;
2. the download cache ``$DYNASIM_CACHE_DIR`` (default ``~/.cache/dynasim``), filled by
   pooch from ``https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH`` and checked
   against the same sha256.

A checksum mismatch or an unreachable source is an :class:`~dynasim.errors.InputError`
naming the file, never a silent fallback.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from dynasim.errors import InputError


@dataclass(frozen=True)
class DataFile:
    """One public file. ``mirror`` is its path relative to ``$DYNASIM_DATA_DIR``.

    A *derived* file (``repo is None``) re-shapes a public file and adds token counts
    (cl100k_base, which needs a tokenizer download dynasim cannot do offline); it has no
    download URL and is read from the local mirror only, still checked by sha256.
    """

    name: str
    repo: str | None
    commit: str | None
    path: str | None
    sha256: str
    mirror: str
    license: str
    description: str

    @property
    def url(self) -> str:
        """Raw download URL (GitHub's ``raw.githubusercontent.com`` pattern)."""
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"


_AZURE = ("Azure/AzurePublicDataset", "b469a113cedca53ddc3bdea71a143dc4b7d8700c")
_MOONCAKE = ("kvcache-ai/Mooncake", "3b5a594133958449a1feaf1c9e0fc1b553e34a28")
_DISTSERVE = ("LLMServe/DistServe", "82831f1604cc6b10bebd360f6c437a07790dde9f")
_DISTSERVE_GT = ("LLMServe/DistServe", "20a1633ed6f2be5f456d84d1c283865c3e5112d5")
_TOT = ("princeton-nlp/tree-of-thought-llm", "ab400345c5ea39d28ea6d7d3be0e417b11113c87")
_TOT_DIR = "logs/game24"
_FCOT = ("veronica320/Faithful-COT", "301784317c99cf348cfad92a1b3e8810900e095b")
_GT_DIR = "simdistserve/benchmarks/alignment/data-ground-truth/opt-13b-sharegpt"
_SPLITWISE = ("Mutinifni/splitwise-sim", "8f99e7dc9b407f4ce2488d03dd44c0b8b946dab0")
_VIDUR = ("microsoft/vidur", "7d47513363ec447a741ac5e47241580b47724fbf")
_LLMSS = ("casys-kaist/LLMServingSim", "5daddb21a545658d5150b535712d0494584b5278")
_LLMSS_DIR = "profiler/perf/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
_LLMSS_MIRROR = "llmservingsim_profiles/RTXPRO6000_Llama-3.1-8B_bf16"

REGISTRY: dict[str, DataFile] = {f.name: f for f in [
    DataFile("azure-conv-2023", *_AZURE, "data/AzureLLMInferenceTrace_conv.csv",
             "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
             "azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "CC-BY-4.0",
             "Azure LLM inference trace 2023, conversation, 1 h, 19,366 requests"),
    DataFile("azure-code-2023", *_AZURE, "data/AzureLLMInferenceTrace_code.csv",
             "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
             "azure_llm_2023/AzureLLMInferenceTrace_code.csv", "CC-BY-4.0",
             "Azure LLM inference trace 2023, code, 1 h, 8,819 requests"),
    DataFile("mooncake-conversation", *_MOONCAKE,
             "FAST25-release/traces/conversation_trace.jsonl",
             "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
             "mooncake/conversation_trace.jsonl", "Apache-2.0",
             "Mooncake (Kimi) conversation trace, 1 h, 12,031 requests, with hash_ids"),
    DataFile("mooncake-synthetic", *_MOONCAKE,
             "FAST25-release/traces/synthetic_trace.jsonl",
             "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
             "mooncake/synthetic_trace.jsonl", "Apache-2.0",
             "Mooncake synthetic trace, Poisson arrivals, 3,993 requests, with hash_ids"),
    DataFile("distserve-profiler-a100-vllm", *_DISTSERVE,
             "simdistserve/estimators/profile_data/profiler-a100-80g.vllm.json",
             "ab24e00e0e1165fc45c9fbaeaa36aeb1f67cfe21d3961cb995b385a31c95f751",
             "distserve_vllm_a100_opt13b/profiler-a100-80g.vllm.json", "Apache-2.0",
             "DistServe fitted vLLM step-time coefficients (ms), OPT-13B/66B, A100-80GB"),
    DataFile("distserve-max-num-tokens", *_DISTSERVE,
             "simdistserve/estimators/profile_data/max_num_tokens.csv",
             "7a70549e4235a6d45fec6a311a5acf3078c1e5400709450e09afcb8be9ca09d3",
             "distserve_vllm_a100_opt13b/max_num_tokens.csv", "Apache-2.0",
             "DistServe KV-cache capacity in tokens per model and parallel layout"),
    DataFile("distserve-vllm-100-1", *_DISTSERVE_GT, f"{_GT_DIR}/vllm-100-1.exp",
             "d7c0514f9ee3d519b0a4813c8580d891cd91fd8cd3d2f039989e166d353aa161",
             "distserve_vllm_a100_opt13b/raw_exp/vllm-100-1.exp", "Apache-2.0",
             "real vLLM run, OPT-13B, one A100-80GB, ShareGPT, 100 requests, Poisson 1 req/s"),
    DataFile("distserve-vllm-200-2", *_DISTSERVE_GT, f"{_GT_DIR}/vllm-200-2.exp",
             "fbfaa7ecd537732c976f20c71d248ef4598456fde9f8887a2e8fff2a879e3693",
             "distserve_vllm_a100_opt13b/raw_exp/vllm-200-2.exp", "Apache-2.0",
             "real vLLM run, OPT-13B, one A100-80GB, ShareGPT, 200 requests, Poisson 2 req/s"),
    DataFile("distserve-vllm-300-3", *_DISTSERVE_GT, f"{_GT_DIR}/vllm-300-3.exp",
             "a31487bb706bbe4ba30db9e3181db18510e6e3f5a11a544659624007001652a4",
             "distserve_vllm_a100_opt13b/raw_exp/vllm-300-3.exp", "Apache-2.0",
             "real vLLM run, OPT-13B, one A100-80GB, ShareGPT, 300 requests, Poisson 3 req/s"),
    DataFile("game24-cot-log", *_TOT, f"{_TOT_DIR}/gpt-4_0.7_naive_cot_sample_100_start900_end1000.json",
             "fd2850ed9f9265129d9dca1d9de306e2026bdf0e367668eb99146e64922d6824",
             "tot_game24/gpt-4_0.7_naive_cot_sample_100_start900_end1000.json", "MIT",
             "Game of 24, GPT-4, 100 puzzles x 100 chain-of-thought samples, OpenAI usage"),
    DataFile("game24-standard-log", *_TOT,
             f"{_TOT_DIR}/gpt-4_0.7_naive_standard_sample_100_start900_end1000.json",
             "1147c5c0bd61d59ce7320bb11dd2b897f56cf19e1dade865bf4649f63173169d",
             "tot_game24/gpt-4_0.7_naive_standard_sample_100_start900_end1000.json", "MIT",
             "Game of 24, GPT-4, 100 puzzles x 100 direct-answer samples, OpenAI usage"),
    DataFile("game24-tot-log", *_TOT,
             f"{_TOT_DIR}/gpt-4_0.7_propose1_value3_greedy5_start900_end1000.json",
             "e08f019024c99e83e540f8feec99acf619f30b0cf047278a03f62ff45888571b",
             "tot_game24/gpt-4_0.7_propose1_value3_greedy5_start900_end1000.json", "MIT",
             "Game of 24, GPT-4 Tree-of-Thoughts BFS logs: proposals, values, kept branches"),
    DataFile("game24-puzzles", *_TOT, "src/tot/data/24/24.csv",
             "b9f12b3e36d987a3c714c4cef17d89a137d7c59da26532fcfb93b4821d8111b5",
             "tot_game24/24.csv", "MIT", "Game of 24 puzzles with human solve rates"),
    DataFile("game24-cot-samples", None, None, None,
             "4c6dc04d99dbf7250c4fb1b34be104c0a334b7ea3843feeea3588d8628d8bba4",
             "tot_game24/normalized_cot_samples.csv", "MIT",
             "derived from game24-cot-log: per-sample answer, correctness, cl100k tokens"),
    DataFile("game24-standard-samples", None, None, None,
             "134bfec4a72a877ae316950c5a424cca125b8614cbd35469ddd3269254825f7d",
             "tot_game24/normalized_standard_samples.csv", "MIT",
             "derived from game24-standard-log: per-sample answer, correctness, cl100k tokens"),
    DataFile("date-predictions", *_FCOT,
             "output_dir/date/test/code002_LtM_n:40/predictions.jsonl",
             "3be92fe1d1ad93301a61f163029dc1743aca0d0997e9330ec6c810da2731b193",
             "faithful_cot_date_n40/date_test_code002_LtM_n40_predictions.jsonl", "MIT",
             "Date Understanding, code-davinci-002 least-to-most, 359 questions x 40 samples"),
    DataFile("date-gold", *_FCOT, "data/date/test.jsonl",
             "55098fe0373ab2bd4be922385c45e383fb24e127d2e86ceef89234f69f9a2f88",
             "faithful_cot_date_n40/date_test_gold.jsonl", "MIT",
             "Date Understanding test questions and gold answers"),
    DataFile("date-samples", None, None, None,
             "d57811fc8d347d282200269d96f018f400cf06e1b1aef62d81d93a3bc90ed941",
             "faithful_cot_date_n40/normalized_samples.csv", "MIT",
             "derived from date-predictions: per-sample answer, correctness, cl100k tokens"),
    DataFile("splitwise-perf-model", *_SPLITWISE, "data/perf_model.csv",
             "dbbe505d1d64fc4bd1ec03c50edf944643586de4f68a81e94cbd55dd5bdfbf41",
             "splitwise_sim/perf_model.csv", "MIT",
             "Splitwise measured prefill and per-token decode times (ms), Llama-2-70B and "
             "BLOOM-176B on A100/H100 at TP 2/4/8, 1,260 rows"),
    DataFile("vidur-a100-llama3-8b-mlp", *_VIDUR,
             "data/profiling/compute/a100/meta-llama/Meta-Llama-3-8B/mlp.csv",
             "98c26488298e324e89db7349e213f75c856ae83dc6b17548a68636d2cb5efff0",
             "vidur/profiling__compute__a100__meta-llama__Meta-Llama-3-8B__mlp.csv", "MIT",
             "Vidur per-operator GPU times (ms, non-attention), Llama-3-8B on A100, by "
             "num_tokens and TP 1/2/4/8"),
    DataFile("llmservingsim-rtxpro6000-llama31-8b-meta", *_LLMSS, f"{_LLMSS_DIR}/meta.yaml",
             "01c964ad3e8ce9604773e7c0b3ae815c22545385d789842a920d8f33b1ce8b98",
             f"{_LLMSS_MIRROR}/meta.yaml", "MIT",
             "LLMServingSim profiler run: vLLM 0.19, engine flags, attention grid"),
    DataFile("llmservingsim-rtxpro6000-llama31-8b-attention", *_LLMSS,
             f"{_LLMSS_DIR}/tp1/attention.csv",
             "dd802390245b2c215a491b78c390482fbc6e49afc760182d7ce15fddff369175",
             f"{_LLMSS_MIRROR}/tp1_attention.csv", "MIT",
             "per-layer attention time (us), Llama-3.1-8B, RTX PRO 6000, TP 1, by prefill "
             "chunk, its context, decode count and decode context"),
    DataFile("llmservingsim-rtxpro6000-llama31-8b-dense", *_LLMSS, f"{_LLMSS_DIR}/tp1/dense.csv",
             "6f23be95325a16544319b78c477d71bec8996fdc826ae55140c36f36e17973c4",
             f"{_LLMSS_MIRROR}/tp1_dense.csv", "MIT",
             "per-layer dense operator times (us), Llama-3.1-8B, RTX PRO 6000, TP 1, by tokens"),
    DataFile("llmservingsim-rtxpro6000-llama31-8b-per-sequence", *_LLMSS,
             f"{_LLMSS_DIR}/tp1/per_sequence.csv",
             "af9abb35ef5eb7c98e1856fa5fe5090008d8b98f1b6278b6d081577451d9c618",
             f"{_LLMSS_MIRROR}/tp1_per_sequence.csv", "MIT",
             "lm_head and sampler times (us), Llama-3.1-8B, RTX PRO 6000, TP 1, by sequences"),
]}

#: Request traces among :data:`REGISTRY` (usable as ``--trace NAME``).
TRACES = ("azure-conv-2023", "azure-code-2023", "mooncake-conversation", "mooncake-synthetic")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_dir() -> Path | None:
    """The local mirror folder from ``$DYNASIM_DATA_DIR``, or ``None`` when unset."""
    value = os.environ.get("DYNASIM_DATA_DIR")
    return Path(value).expanduser() if value else None


def fetch(name: str) -> Path:
    """Return a local, checksum-verified path for the public file called ``name``.

    Raises:
        InputError: unknown name; a mirror or downloaded file whose sha256 differs;
            no mirror and no network.
    """
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise InputError(f"unknown dataset name (known: {known})", source=name)
    entry = REGISTRY[name]
    mirror = data_dir()
    if mirror is not None and (mirror / entry.mirror).is_file():
        path = mirror / entry.mirror
        digest = _sha256(path)
        if digest != entry.sha256:
            raise InputError(f"sha256 {digest} differs from the published {entry.sha256}",
                             source=str(path))
        return path
    if entry.repo is None:
        hint = (f"no file at {mirror / entry.mirror}" if mirror is not None
                else "DYNASIM_DATA_DIR is not set")
        raise InputError(f"derived file with no public download URL ({entry.description})"
                         f" and {hint}; set DYNASIM_DATA_DIR to a folder laid out like "
                         "shared/data", source=name)
    import pooch  # imported late: only needed when downloading

    cache = Path(os.environ.get("DYNASIM_CACHE_DIR", pooch.os_cache("dynasim")))
    try:
        got = pooch.retrieve(entry.url, known_hash=f"sha256:{entry.sha256}",
                             fname=f"{entry.name}-{Path(entry.path).name}", path=cache,
                             progressbar=False)
    except ValueError as exc:  # pooch's hash mismatch
        raise InputError(f"download does not match sha256 {entry.sha256}: {exc}",
                         source=entry.url) from None
    except Exception as exc:  # network errors of any kind
        hint = (f"no mirror at {mirror / entry.mirror}" if mirror is not None
                else "DYNASIM_DATA_DIR is not set")
        raise InputError(f"cannot download ({type(exc).__name__}) and {hint}; set "
                         "DYNASIM_DATA_DIR to a folder laid out like shared/data",
                         source=name) from None
    return Path(got)
