"""A transformer's architecture from its Hugging Face ``config.json``, and the roofline
quantities of one engine step derived from it (:mod:`dynasim.profiles.roofline`).

Fields read (Hugging Face ``transformers`` names; Llama, Qwen2/3, Mistral, Mixtral,
Qwen-MoE layouts):

=================================  ========================================================
``num_hidden_layers``              decoder layers ``L`` (required)
``hidden_size``                    ``h`` (required)
``num_attention_heads``            query heads (required)
``num_key_value_heads``            KV heads (GQA; default: the query heads)
``head_dim``                       per-head size (default ``hidden_size / heads``)
``intermediate_size``              the gated MLP's width (required unless MoE sets
                                   ``moe_intermediate_size``)
``num_local_experts`` or           routed experts ``E`` (absent or 0: a dense MLP)
``num_experts``
``num_experts_per_tok``            experts each token uses ``k`` (required with ``E``)
``moe_intermediate_size``          one expert's width (default ``intermediate_size``)
``shared_expert_intermediate_size``  a shared expert every token uses (default none)
``vocab_size``                     (required)
``tie_word_embeddings``            one matrix for embedding and LM head (default false)
``torch_dtype`` / ``dtype``        weight and KV dtype (default ``bfloat16``)
=================================  ========================================================

Every MLP (dense or expert) is gated (SwiGLU: gate, up, down = 3 h x I matrices), every
layer is MoE when ``E > 0`` (Qwen-MoE's ``mlp_only_layers`` are not read). Norms and
biases are ignored (< 0.1% of the weights).

Step quantities, whole model (divide by TP for one shard; :meth:`ModelConfig.shard`):
linear-layer FLOPs per token ``2 (L (attn + mlp_active))``; LM-head FLOPs per sequence
``2 V h`` (vLLM computes logits only at each sequence's last token); attention FLOPs
per causal query-key pair ``4 L heads d`` (QK^T and PV); KV bytes per context token
``2 L kv_heads d dtype``; weight bytes read per step: every layer's matrices (all
experts: a step of more than a few tokens touches every expert) plus the LM head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dynasim.errors import InputError, read_text

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1, "fp8": 1}


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer's shape (module table); ``dtype_bytes`` per weight
    and KV element."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    tie_word_embeddings: bool = False
    dtype_bytes: int = 2

    @property
    def attention_params(self) -> int:
        """Parameters of one layer's Q, K, V and O projections."""
        h, d = self.hidden_size, self.head_dim
        return 2 * h * self.num_heads * d + 2 * h * self.num_kv_heads * d

    def mlp_params(self, active: bool) -> int:
        """Parameters of one layer's MLP: all of them, or (``active``) those one token
        uses (``k`` experts + router + shared expert for MoE)."""
        h = self.hidden_size
        if not self.num_experts:
            return 3 * h * self.intermediate_size
        n = self.experts_per_token if active else self.num_experts
        return (n * 3 * h * self.moe_intermediate_size + h * self.num_experts
                + 3 * h * self.shared_expert_intermediate_size)

    @property
    def params(self) -> int:
        """All parameters (embedding and LM head counted once each unless tied)."""
        emb = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * (self.attention_params + self.mlp_params(False)) + emb

    @property
    def weight_bytes(self) -> float:
        """Bytes of the weights in GPU memory, whole model."""
        return float(self.params * self.dtype_bytes)

    @property
    def step_weight_bytes(self) -> float:
        """Bytes of weights read once per step, whole model: the layers and the LM head
        (the embedding is gathered row by row)."""
        layers = self.num_layers * (self.attention_params + self.mlp_params(False))
        return float((layers + self.vocab_size * self.hidden_size) * self.dtype_bytes)

    @property
    def flops_per_token(self) -> float:
        """Linear-layer FLOPs per token computed, whole model."""
        return 2.0 * self.num_layers * (self.attention_params + self.mlp_params(True))

    @property
    def lm_head_flops_per_seq(self) -> float:
        """LM-head FLOPs per sequence in the step (logits of its last token)."""
        return 2.0 * self.vocab_size * self.hidden_size

    @property
    def attention_flops_per_pair(self) -> float:
        """Attention FLOPs per causal query-key pair, whole model."""
        return 4.0 * self.num_layers * self.num_heads * self.head_dim

    def kv_bytes_per_token(self, tp: int = 1) -> float:
        """KV-cache bytes per token on one of ``tp`` shards: KV heads split over the
        shards, replicated when there are fewer heads than shards (vLLM)."""
        heads = max(self.num_kv_heads / tp, 1.0)
        return 2.0 * self.num_layers * heads * self.head_dim * self.dtype_bytes


def _line_of(text: str, key: str) -> int | None:
    """1-based line of the first ``"key"`` in ``text`` (None if absent)."""
    pos = text.find(f'"{key}"')
    return None if pos < 0 else text.count("\n", 0, pos) + 1


def parse_config(data: dict, source: str, text: str = "") -> ModelConfig:
    """A :class:`ModelConfig` from a parsed ``config.json`` object (module table).

    Raises:
        InputError: a missing required field, or a value that is not a positive
            integer (or unknown dtype), naming ``source``, the line in ``text`` and
            the field.
    """
    def get(key: str, default: object = None, required: bool = True,
            minimum: int = 1) -> int:
        value = data.get(key, default)
        if value is None:
            if required:
                raise InputError("missing field (a Hugging Face config.json needs it)",
                                 source=source, field=key)
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(f"expected an integer >= {minimum}, got {value!r}",
                             source=source, line=_line_of(text, key), field=key)
        return value

    if not isinstance(data, dict):
        raise InputError("a model config must be a JSON object", source=source)
    layers = get("num_hidden_layers")
    hidden = get("hidden_size")
    heads = get("num_attention_heads")
    kv = get("num_key_value_heads", heads)
    head_dim = get("head_dim", hidden // heads if hidden % heads == 0 else None)
    ekey = "num_local_experts" if "num_local_experts" in data else "num_experts"
    experts = get(ekey, 0, minimum=0)
    moe_i = get("moe_intermediate_size", required=False) if experts else 0
    inter = get("intermediate_size", required=not (experts and moe_i))
    k = get("num_experts_per_tok") if experts else 0
    dtype = str(data.get("torch_dtype") or data.get("dtype") or "bfloat16")
    if dtype not in DTYPE_BYTES:
        raise InputError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPE_BYTES)})",
                         source=source, line=_line_of(text, "torch_dtype"),
                         field="torch_dtype")
    return ModelConfig(
        name=str(data.get("_name_or_path") or data.get("model_type") or Path(source).stem),
        num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, intermediate_size=inter, vocab_size=get("vocab_size"),
        num_experts=experts, experts_per_token=k, moe_intermediate_size=moe_i or inter,
        shared_expert_intermediate_size=get("shared_expert_intermediate_size", 0,
                                            minimum=0),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        dtype_bytes=DTYPE_BYTES[dtype])


def load_model_config(path_or_name: str) -> ModelConfig:
    """A model's shape from a ``config.json`` path, or from :data:`KNOWN_MODELS` by
    Hugging Face id (``meta-llama/Llama-2-7b-hf``).

    Raises:
        InputError: a missing file, invalid JSON (with line) or a bad field (with line
            and field).
    """
    if path_or_name in KNOWN_MODELS:
        return parse_config(dict(KNOWN_MODELS[path_or_name], _name_or_path=path_or_name),
                            f"model {path_or_name}")
    path = Path(path_or_name)
    if not path.is_file():
        raise InputError(f"no such file (known models: {', '.join(KNOWN_MODELS)})",
                         source=path_or_name)
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", source=str(path),
                         line=exc.lineno) from None
    return parse_config(data, str(path), text)


def _cfg(layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int,
         source: str, **extra: object) -> dict:
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": vocab,
            "torch_dtype": "bfloat16", "_source": source, **extra}


_HF = "https://huggingface.co/{}/blob/main/config.json"
KNOWN_MODELS: dict[str, dict] = {
    # the BLIS runs' replay_data/*.json "model_config" agree with these
    "meta-llama/Llama-2-7b-hf": _cfg(32, 4096, 32, 32, 11008, 32000,
                                     _HF.format("meta-llama/Llama-2-7b-hf")),
    "meta-llama/Llama-2-70b-hf": _cfg(80, 8192, 64, 8, 28672, 32000,
                                      _HF.format("meta-llama/Llama-2-70b-hf")),
    "mistralai/Mixtral-8x7B-v0.1": _cfg(32, 4096, 32, 8, 14336, 32000,
                                        _HF.format("mistralai/Mixtral-8x7B-v0.1"),
                                        num_local_experts=8, num_experts_per_tok=2),
    "meta-llama/Llama-3.1-8B": _cfg(32, 4096, 32, 8, 14336, 128256,
                                    _HF.format("meta-llama/Llama-3.1-8B")),
    "Qwen/Qwen3-14B": _cfg(40, 5120, 40, 8, 17408, 151936, _HF.format("Qwen/Qwen3-14B"),
                           head_dim=128),
    "Qwen/Qwen3-32B": _cfg(64, 5120, 64, 8, 25600, 151936, _HF.format("Qwen/Qwen3-32B"),
                           head_dim=128),
}
"""The recorded runs' models (:mod:`dynasim.runs`), their public ``config.json`` fields
(``_source``), for the leave-one-model-out check without network access."""
