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

# ----------------------------------------------------------- recorded vLLM runs
# Per-request measurements of real vLLM servers, read by dynasim.runs (one reader per
# source). Residency: vLLM 0.23, H100, Qwen3-14B; BLIS training: vLLM 0.15.1, H100,
# inference-perf; LLMServingSim: vLLM 0.19 engine timestamps. Source = (repository,
# commit, license, mirror folder); licenses as in shared/data/README.md.
_RESIDENCY = ("inference-sim/residency-vllm", "2641b576210e5875ff1bf88c317b807c28dfa3bc",
              "none stated: test input only", "residency_vllm_h100_qwen3_14b")
_BLIS = ("inference-sim/training", "c4f03409b4489891482bcd63797cfe3a92fc262d",
         "none stated: test input only", "blis_training_h100")
_LLMSS_RUNS = (*_LLMSS, "MIT", "llmservingsim_vllm019_runs")
_BLIS_ARGS = ("inference-sim/training", "ed5c1d26900e6909758d5e1641a18edaf56a1caf",
              "none stated: test input only", "blis_training_h100")  # default_args/
_RECORDED_FILES = (  # (source, name, path in the repository, sha256)
    (_RESIDENCY, "residency-qwen3-14b-rate2-trace",
     "results/sweep_rate/agg_2rps/vanilla/trace.csv",
     "79563a1017105b4582e975afb8c5635a3354ff777eb432b7c10a6e21fb9eeec1"),
    (_RESIDENCY, "residency-qwen3-14b-rate2-itl",
     "results/sweep_rate/agg_2rps/vanilla/trace.itl.csv",
     "e4bd552e6b07331883566ac6632ff4521b02e4db78c45e67cce18a6c3c25a563"),
    (_RESIDENCY, "residency-qwen3-14b-rate4-trace",
     "results/sweep_rate/agg_4rps/vanilla/trace.csv",
     "28fe878a6907045e7c1f2046083bebd20bef35fdf8297fafa13fbf829904afd0"),
    (_RESIDENCY, "residency-qwen3-14b-rate6-trace",
     "results/sweep_rate/agg_6rps/vanilla/trace.csv",
     "a9bb11ac22e5faeb33d3f8771f1da7a9c3d73d1278198c840e90c7938f506712"),
    (_RESIDENCY, "residency-qwen3-14b-rate8-trace",
     "results/sweep_rate/agg_8rps/vanilla/trace.csv",
     "a84d7c8e27e58f167dcca847f9d5e86ba7d1726cc12eff6acdc595172e0c7d9c"),
    (_RESIDENCY, "residency-qwen3-14b-w7-agg6-trace",
     "results/w7_sweep/agg6/trace.csv",
     "8e90bf8a86fbd63e526ca35abbff1a93340573794271938fb630ee35a944853a"),
    (_RESIDENCY, "residency-qwen3-14b-w7-agg12-trace",
     "results/w7_sweep/agg12/trace.csv",
     "865f8d4c66bc38fb737064aed676b48ea4132e4a1110092089cc3664f77e6129"),
    (_RESIDENCY, "residency-qwen3-14b-server-config",
     "server_config.json",
     "ffa228c309678bdf70d0aafefd2d8b21fbd5c60a75bb279a6ef288bd1d8f50a3"),
    (_BLIS, "blis-llama-2-7b-tp1-codegen",
     "replay_data/20260217-155451-llama-2-7b-tp1-codegen.json",
     "cb5467183636789a92ff0aa3792dc425f9e76fe511eec3402e59f15891894574"),
    (_BLIS, "blis-llama-2-7b-tp1-codegen-ground-truth",
     "replay_data/20260217-155451-llama-2-7b-tp1-codegen_ground_truth.json",
     "e1a1e0234c53ce71107e466b193ac57a5b8c5cb99ad349a7665b8b3a0692196a"),
    (_BLIS, "blis-llama-2-7b-tp1-roleplay",
     "replay_data/20260217-162547-llama-2-7b-tp1-roleplay.json",
     "600091b1196931cd784ab41372e2b37e0961114173df4a33f349085393caed68"),
    (_BLIS, "blis-llama-2-7b-tp1-roleplay-ground-truth",
     "replay_data/20260217-162547-llama-2-7b-tp1-roleplay_ground_truth.json",
     "ee70038a3e18b607cf1999622991bb36b0605e4929d6016c5ef80f1e8fe4929c"),
    (_BLIS, "blis-llama-2-70b-tp4-general",
     "replay_data/20260217-202857-llama-2-70b-tp4-general.json",
     "d4ee3052f091d723a49b79da97e6bb87ba1a6ae8dddde51a03255d34a6825908"),
    (_BLIS, "blis-llama-2-70b-tp4-general-ground-truth",
     "replay_data/20260217-202857-llama-2-70b-tp4-general_ground_truth.json",
     "b78a5433fb03e0bc6977010c9f257c61cffbb88ea6020a4ada7a01f2e2ff6837"),
    (_BLIS, "blis-llama-2-70b-hf-tp4-codegen",
     "replay_data/20260217-203421-llama-2-70b-hf-tp4-codegen.json",
     "4a85dfd07ab3a2f6614ab7905794b395d3e3cf97fea207c701b222ed4367708a"),
    (_BLIS, "blis-llama-2-70b-hf-tp4-codegen-ground-truth",
     "replay_data/20260217-203421-llama-2-70b-hf-tp4-codegen_ground_truth.json",
     "7d175f04b3b357e6e247869ace0969cb3ac339c43a8207e5dda3d17192be2e40"),
    (_BLIS, "blis-llama-2-7b-tp1-general",
     "replay_data/20260217-231439-llama-2-7b-tp1-general.json",
     "1c85919158f2fe71cd86021668a1635f4356b75faeccb9d601c9e5296cf5e75f"),
    (_BLIS, "blis-llama-2-7b-tp1-general-ground-truth",
     "replay_data/20260217-231439-llama-2-7b-tp1-general_ground_truth.json",
     "1e19cd6f488dad36d07ecc193799e9d2a61eb2c5cbdd1fe3832b2f850ce0c5d3"),
    (_BLIS, "blis-llama-2-70b-tp4-roleplay",
     "replay_data/20260218-084319-llama-2-70b-tp4-roleplay.json",
     "9eccd62150470586ddacc2f54e53ec3a1588eeffa3bb2e8e3cc594f125081ced"),
    (_BLIS, "blis-llama-2-70b-tp4-roleplay-ground-truth",
     "replay_data/20260218-084319-llama-2-70b-tp4-roleplay_ground_truth.json",
     "098d6ac6d4f76f7e35fd94c0f987f04951159c70eb71d728c5a3da6a2529bc80"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-codegen",
     "replay_data/20260218-120914-mixtral-8x7b-v0-1-tp2-codegen.json",
     "89a84a9baed5bbaab5d592c7dbb828023ed2ee5560938860972a8512c2f510ed"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-codegen-ground-truth",
     "replay_data/20260218-120914-mixtral-8x7b-v0-1-tp2-codegen_ground_truth.json",
     "f4a9d90b89bd4ac36eae9df38763ce721ecea6bbf07dbb3a8949d032b71fed94"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-general",
     "replay_data/20260218-130541-mixtral-8x7b-v0-1-tp2-general.json",
     "95b4876c7e8b6d1735759d105d72a944941d9e066ca394c214295ba739b49990"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-general-ground-truth",
     "replay_data/20260218-130541-mixtral-8x7b-v0-1-tp2-general_ground_truth.json",
     "654f10fdd7cdbe62325d405c294a4c0d243e5fba8aa1a4ec3a018731d1bd38ac"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-reasoning",
     "replay_data/20260218-135247-mixtral-8x7b-v0-1-tp2-reasoning.json",
     "add3ebdf16a35326c072ad968e1014b6afcac9f83c6fa583694975db4aa95632"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-reasoning-ground-truth",
     "replay_data/20260218-135247-mixtral-8x7b-v0-1-tp2-reasoning_ground_truth.json",
     "641ec7ff9447bf9c45b925963a964e9101f8d73a648b5930b2626ce0ffa5e87a"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-roleplay",
     "replay_data/20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay.json",
     "0b152f1ea0fc116d12e1191c343990f94a02c7569f2a7e4aa1755b2330a65724"),
    (_BLIS, "blis-mixtral-8x7b-v0-1-tp2-roleplay-ground-truth",
     "replay_data/20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay_ground_truth.json",
     "56e7f17bd13baf6f2123560f1ad2bf18ca5793433d85f9f100940efe8c62ac52"),
    (_LLMSS_RUNS, "llmservingsim-rtx4090-llama3.1-8b-requests",
     "bench/examples/RTX4090/Llama-3.1-8B/vllm/requests.jsonl",
     "5a6f2a0b09d5eb84bd75b30ed625d883c22b4bcc0a839cd1128ae42f74ecc90d"),
    (_LLMSS_RUNS, "llmservingsim-rtx4090-llama3.1-8b-meta",
     "bench/examples/RTX4090/Llama-3.1-8B/vllm/meta.json",
     "56cbcb2a08e9fe6f67d60cad8ee545f86c874f82b46ab413da484f331417b2fc"),
    (_LLMSS_RUNS, "llmservingsim-rtx4090-llama3.1-8b-summary",
     "bench/examples/RTX4090/Llama-3.1-8B/validation/summary.txt",
     "80c1b498f741d798e705fc83dfe79394cabee41eb18cfba6957ae17f01062f25"),
    (_LLMSS_RUNS, "llmservingsim-rtxpro6000-qwen3-32b-requests",
     "bench/examples/RTXPRO6000/Qwen3-32B/vllm/requests.jsonl",
     "7751686bb9f927f5cd39adf901b2d0755b8f1a1182561c3df5446c927f95342f"),
    (_LLMSS_RUNS, "llmservingsim-rtxpro6000-qwen3-32b-meta",
     "bench/examples/RTXPRO6000/Qwen3-32B/vllm/meta.json",
     "9b56098c6e028d17417a392d041af32cf0cfa741dff07fdd1d0ea9ecba5c0236"),
    (_LLMSS_RUNS, "llmservingsim-rtxpro6000-qwen3-32b-summary",
     "bench/examples/RTXPRO6000/Qwen3-32B/validation/summary.txt",
     "9801c5d5cec84608108bffd327fdd3007b9a41d2a88b8f418de7b69d6d33d1d4"),
    (_BLIS_ARGS, "blis-llama-2-7b-tp1-codegen-profile",
     "default_args/20260217-155451-llama-2-7b-tp1-codegen/profile.yaml",
     "e72908b2acbd29eb279dd0560ad56d141c23fbe69f8e47f615a348b8b93bc93a"),
    (_BLIS_ARGS, "blis-llama-2-7b-tp1-roleplay-profile",
     "default_args/20260217-162547-llama-2-7b-tp1-roleplay/profile.yaml",
     "382f1ee8bb01d2907c954e58ccfab3166638abb91877d6cd4d4a360df2a3ed7f"),
    (_BLIS_ARGS, "blis-llama-2-70b-tp4-general-profile",
     "default_args/20260217-202857-llama-2-70b-tp4-general/profile.yaml",
     "fce1f990bf66ab2809c1d60da95bb3402fce60df0b63b50aafa9e458c972cade"),
    (_BLIS_ARGS, "blis-llama-2-70b-hf-tp4-codegen-profile",
     "default_args/20260217-203421-llama-2-70b-hf-tp4-codegen/profile.yaml",
     "0f7d8a0d4a1425424e144950ab386b5ea591c0dd8f5cc09edab287c6eea034a1"),
    (_BLIS_ARGS, "blis-llama-2-7b-tp1-general-profile",
     "default_args/20260217-231439-llama-2-7b-tp1-general/profile.yaml",
     "a033f58c72a3760d513b3d1a946ba2a41139a2998b3ee076d93ac7483b0f1446"),
    (_BLIS_ARGS, "blis-llama-2-70b-tp4-roleplay-profile",
     "default_args/20260218-084319-llama-2-70b-tp4-roleplay/profile.yaml",
     "446dc86c566bf5668bf8be0df00cb50251c6e949f8b3627051fd2bb6ccd11dda"),
    (_BLIS_ARGS, "blis-mixtral-8x7b-v0-1-tp2-codegen-profile",
     "default_args/20260218-120914-mixtral-8x7b-v0-1-tp2-codegen/profile.yaml",
     "5b3b2d132e26f152f7dc1d5d831ca64dba278e8fe182f2da9af32209768d1a2f"),
    (_BLIS_ARGS, "blis-mixtral-8x7b-v0-1-tp2-general-profile",
     "default_args/20260218-130541-mixtral-8x7b-v0-1-tp2-general/profile.yaml",
     "d2ecc396c8f35ccdf6442a8a147b682b65fe064f1ccff2e898be0f4eee902ad1"),
    (_BLIS_ARGS, "blis-mixtral-8x7b-v0-1-tp2-reasoning-profile",
     "default_args/20260218-135247-mixtral-8x7b-v0-1-tp2-reasoning/profile.yaml",
     "01ddd3eaef334ae1f7948866b8dbec3d87adf9c7f23222ba07d00c2e48e26fcc"),
    (_BLIS_ARGS, "blis-mixtral-8x7b-v0-1-tp2-roleplay-profile",
     "default_args/20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay/profile.yaml",
     "55647721bc2b880557bd68e842a1ebd760369bd434e21f3c32b7bee0fc2d40ad"),
)
REGISTRY.update({name: DataFile(name, repo, commit, path, sha, f"{mirror}/{path}", lic,
                                f"recorded vLLM run file {path} ({repo})")
                 for (repo, commit, lic, mirror), name, path, sha in _RECORDED_FILES})
# ------------------------------------------------------- end recorded vLLM runs

# ---------------------------------------------------------------------------------------
# long chain of thought: governor_cot_probes
# Dynasor "probe in the middle" on real reasoning-model trajectories (Antony-zdh/Governor,
# a fork of hao-ai-lab/Dynasor, MIT; benchmark/FalseConsensus/results/). One probes.csv per
# cell (results folder, phase, model, dataset, seed), named ``cot-probes-<cell>``, and the
# derived per-trajectory table ``cot-trajectories`` (read by dynasim.workloads.cot).
_GOVERNOR = ("Antony-zdh/Governor", "6a22a59cd704c498c04ffa47229decca56d6a5a2")
_GOVERNOR_DIR = "benchmark/FalseConsensus/results"
_COT_MODELS = {"r1-llama8b": "deepseek-ai-deepseek-r1-distill-llama-8b",
               "r1-qwen7b": "deepseek-ai-deepseek-r1-distill-qwen-7b",
               "qwen3-8b": "qwen-qwen3-8b"}
#: (results folder, phase, model key of _COT_MODELS, dataset, seed, sha256 of probes.csv)
_COT_PROBES = (
    ("governor_v2", "confirmation", "r1-llama8b", "aime24", 45,
     "ad37526dc654fa5f1f0cb056e8b675ecdafe7680223eb0f1c746dbe270a80de4"),
    ("governor_v2", "confirmation", "r1-llama8b", "aime24", 46,
     "0fe29ff52f9a0d5b63de7f42c2a2881bd78dc6e74794d8ab55a375dfee48e0a3"),
    ("governor_v2", "confirmation", "r1-llama8b", "aime24", 47,
     "c1e9f6a268daab635acaf8ddff3d1e875f3edc43d0b0ae09d8b514062f242fc9"),
    ("governor_v2", "confirmation", "r1-llama8b", "amc23", 45,
     "edd74700f20abac04329ae8983bb8ceb059e51b4c82c999fe49febf120d0c887"),
    ("governor_v2", "confirmation", "r1-llama8b", "amc23", 46,
     "5df55e3faf8fe4822ff25d06a77c05441bbf2301775a8dd7e0b3a853b199c0df"),
    ("governor_v2", "confirmation", "r1-llama8b", "amc23", 47,
     "f8a54440b404fbfd5e6daa8778b489c4f74d7e3a1019d8972f312f34162cec72"),
    ("governor_v2", "confirmation", "r1-llama8b", "math500", 45,
     "61b249ea6d2743827708fcddc2e7071bc93d43749cd696faf315c95ffa3be44d"),
    ("governor_v2", "confirmation", "r1-llama8b", "math500", 46,
     "854178d8b66aa03ce5b1f64c0be68fe835769b5f795a6b857a186b5f3b520369"),
    ("governor_v2", "confirmation", "r1-llama8b", "math500", 47,
     "f8931e4b9e95de9b268cb0e648bd92cd151266dba4f6e311c16af22dc067fd53"),
    ("governor_v2", "confirmation", "r1-qwen7b", "aime24", 45,
     "100e320eb1dd1840f9b37881d368650e5663790bde687e1e5c7247ff0335cebc"),
    ("governor_v2", "confirmation", "r1-qwen7b", "aime24", 46,
     "49432d05370d57c29bd4d9f3a27fa8bfa75ba79efc7fb565f8c3064530116a9a"),
    ("governor_v2", "confirmation", "r1-qwen7b", "aime24", 47,
     "ee6ccb6df52b048b06a5070d9cc8c84cd4308b9ad8e6ba481de0c17d2682a53d"),
    ("governor_v2", "confirmation", "r1-qwen7b", "amc23", 45,
     "49cdceffdaafbc7bc28bf43c2ed65249ce334472a75a348f66a70eab97255462"),
    ("governor_v2", "confirmation", "r1-qwen7b", "amc23", 46,
     "40d037c6833bbbac7dc7ffe174b77ae17e010090b0b5b0dc1be93c574688f1f7"),
    ("governor_v2", "confirmation", "r1-qwen7b", "amc23", 47,
     "3194230beacef1f54abb64af928585b3e5b27faf27e2b34f6e5d93acf2b494a3"),
    ("governor_v2", "confirmation", "r1-qwen7b", "math500", 45,
     "2687b3c2d25ac9e1bd15f1c9a975376c3bf1c6cff58bde5b0f64234e8cceeeed"),
    ("governor_v2", "confirmation", "r1-qwen7b", "math500", 46,
     "3f9bce8253d0a2ba52fe35b083cdc4a02ca25a13e2e780cfe1c400240d47c95d"),
    ("governor_v2", "confirmation", "r1-qwen7b", "math500", 47,
     "493e0651a1797568c442bce22763ac221c5b868eec7817efde07bc6800e5be9e"),
    ("governor_v2", "confirmation", "qwen3-8b", "aime24", 45,
     "a2f066db69a8f43dea584b2340dd1d1b92dd01cb8ec21114056c573e1081a1dc"),
    ("governor_v2", "confirmation", "qwen3-8b", "aime24", 46,
     "3ef42a1e3bb7563bb4334d95e0e6017dce3f801aaffeb0bdf1f4cb75a9adc396"),
    ("governor_v2", "confirmation", "qwen3-8b", "aime24", 47,
     "851da1aa4e6338f004ea7be59a077a627dc298af09d9be3b9e7377dc8cf0b9c2"),
    ("governor_v2", "confirmation", "qwen3-8b", "amc23", 45,
     "490d93551d37fc6c840e8ed8b60b3fe942a7da4659a2570a46a3025b9f416dbe"),
    ("governor_v2", "confirmation", "qwen3-8b", "amc23", 46,
     "1591a06cd3044d8f1cb92f428ee3bfb8f20c56b3bf38d7a3ba7bd168ecc5667e"),
    ("governor_v2", "confirmation", "qwen3-8b", "amc23", 47,
     "b40606b6115c7314e1ef14c1fcff9281acf80683678af02af651be27a1c0b849"),
    ("governor_v2", "confirmation", "qwen3-8b", "math500", 45,
     "c4cb6b638e8c7026e553d2b4c5705e60b8cb0a5d8b5c45415e02867d80ce5489"),
    ("governor_v2", "confirmation", "qwen3-8b", "math500", 46,
     "a688996f0433e79990434b49addae0ea97af52f2b048b05f37e6ede0e6d2dcff"),
    ("governor_v2", "confirmation", "qwen3-8b", "math500", 47,
     "d9074080c2c65f4c449710f731f8ab3bc34e11097951adb7b365de2e2ec87011"),
    ("governor_v2", "development", "r1-qwen7b", "aime24", 42,
     "b64dcdc8b1ca95f4a44423851a68990ca6df03841efc87149dc5a025234ea999"),
    ("governor_v2", "development", "r1-qwen7b", "aime24", 43,
     "753315d8ee994e2c05aa64bf6b0c39401d728168cb65057fbbb7cd5d287a6de4"),
    ("governor_v2", "development", "r1-qwen7b", "aime24", 44,
     "08e9f085aa0e6fce25b9e4a1fdbe59837d5d5a2bfd7cf5582cf866a9e2cd6924"),
    ("governor_v2", "development", "r1-qwen7b", "amc23", 42,
     "e0eda6b44b0254389c99ac02dc6840c5143126f575041459f0690fbb86237b95"),
    ("governor_v2", "development", "r1-qwen7b", "amc23", 43,
     "7e12132ae551ab2e41bd66cf23b13d14a9f5655f5a520c9ff1c6b911025a83bb"),
    ("governor_v2", "development", "r1-qwen7b", "amc23", 44,
     "8c760d40f4221af29263b9054a6fe1aa58bcf1adb53f17f3a34be9afa32f918a"),
    ("governor_v2", "development", "r1-qwen7b", "math500", 42,
     "ee28b5eb93e2f139ea3dc8cc5c838b7a42257fc78a936010cc44e0b459af32fd"),
    ("governor_v2", "development", "r1-qwen7b", "math500", 43,
     "42a0db9903e8b750aad07617df6e05518398809e341d170aa0bbbebfcba122a4"),
    ("governor_v2", "development", "r1-qwen7b", "math500", 44,
     "1eb6f3a4c09a544efb7877bed02318372e89cfc456083f1a963e61892eefaa0f"),
    ("governor_v2", "development", "qwen3-8b", "aime24", 42,
     "dc9c249d932b26ab63916dad047f12e2a09769bfdd04d75af77086bd6c812590"),
    ("governor_v2", "development", "qwen3-8b", "aime24", 43,
     "0ba1c39d8869334d0580660c477790f999e55d31bd79e4a17366b064961ef667"),
    ("governor_v2", "development", "qwen3-8b", "aime24", 44,
     "75f5dac7dbd04a80e51a2fd5529dee090d2e2a4c526c58f392ac155e8718e448"),
    ("governor_v2", "development", "qwen3-8b", "amc23", 42,
     "17335cf5d5ab7681f8322a47639072f5c09e9dc968fa6ccbce4c0ebb5c9fa004"),
    ("governor_v2", "development", "qwen3-8b", "amc23", 43,
     "7888604b6a48dfc3ff718767d35cf07d4ba7055b07056639563774fe4371f790"),
    ("governor_v2", "development", "qwen3-8b", "amc23", 44,
     "ba44a2b5f1dc47b621c75f92a2b61d6a0b2ff014d87f1f46879c7473b15ba071"),
    ("governor_v2", "development", "qwen3-8b", "math500", 42,
     "091b7ff709b8d890a6c499b0f4d7b8b2c0b1e4b67d5239ff2f0df3bea2a22bb3"),
    ("governor_v2", "development", "qwen3-8b", "math500", 43,
     "ad25ecc6d3bbae76f5bb9954ff54905e1f2088c5c509830eb939494884893596"),
    ("governor_v2", "development", "qwen3-8b", "math500", 44,
     "e5e78717a382c50f1fa76e19ee23814663829fb176b1da215ec4b3d4ba4ef343"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "aime24", 42,
     "bacc35070637cb29cc6a663ca40d3defc0dbecb0a135d7973df7b72b69bd0aac"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "aime24", 43,
     "edb8e12a9c683e2ed673ed7ac8c2b7e82e207368a63c63443c6b87eb969846c6"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "aime24", 44,
     "d4cc9c18e392b27b6c0dd41c44424aba6078e0cf8a115a45df1a7e2fb0258ebc"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "amc23", 42,
     "5fdd2e9792a7343fc3519451eb7b9bc9a623477e47779075acdc4e58d460c8c6"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "amc23", 43,
     "1d168417b39f8ec220a56f97e641c8ea37fc21587d35120943c1541ae1f0f701"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "amc23", 44,
     "d162eb34d85ba10b5ef9983c9c500ecf34b021db34a29118e86815c84e501f7b"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "math500", 42,
     "188fcf0e2230a3e85092f01ee16fdbbc11d52200add2db5444cb4b8f37c592e3"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "math500", 43,
     "0e5be77e224c4298bf091f3860296cc5cd8c514cee6276380f66b6c452f19db8"),
    ("governor_v2_scale_dev", "development", "r1-llama8b", "math500", 44,
     "ee8704c6552dac4d6e52bc7f3fe2537fc9175dcfdb3d901e304326f309cec519"),
)


def cot_cell(group: str, phase: str, model: str, dataset: str, seed: int) -> str:
    """The folder of one governor_cot_probes cell, relative to ``raw/``."""
    return f"{group}/{phase}__{_COT_MODELS[model]}__{dataset}__seed_{seed}"


REGISTRY["cot-trajectories"] = DataFile(
    "cot-trajectories", None, None, None,
    "2f953f3ee780ab17fb430a303a5ec1d98358101aff66bccea0219341f38cb171",
    "governor_cot_probes/trajectories.csv", "MIT",
    "derived from Antony-zdh/Governor results/*/main/traj/problem_<id>.json: one row per "
    "main trajectory (5,472): tokens, finish reason, final answer, correctness")
for _g, _ph, _m, _ds, _seed, _sha in _COT_PROBES:
    _rel = f"{cot_cell(_g, _ph, _m, _ds, _seed)}/dense_simple32/probes.csv"
    _name = f"cot-probes-{_g}-{_ph}-{_m}-{_ds}-{_seed}"
    REGISTRY[_name] = DataFile(
        _name, *_GOVERNOR, f"{_GOVERNOR_DIR}/{_rel}", _sha,
        f"governor_cot_probes/raw/{_rel}", "MIT",
        f"Dynasor-CoT probes every 64 tokens, {_m} on {_ds}, seed {_seed} ({_ph})")

#: governor_cot_probes probe files by (model key, dataset): their REGISTRY names.
COT_PROBE_FILES: dict[tuple[str, str], tuple[str, ...]] = {}
for _g, _ph, _m, _ds, _seed, _sha in _COT_PROBES:
    COT_PROBE_FILES.setdefault((_m, _ds), ())
    COT_PROBE_FILES[(_m, _ds)] += (f"cot-probes-{_g}-{_ph}-{_m}-{_ds}-{_seed}",)
# end of long chain of thought: governor_cot_probes
# ---------------------------------------------------------------------------------------


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
