"""A tiny random-weight Llama model directory for a real vLLM server, with no download.

``write_tiny_llama(directory)`` writes a complete Hugging Face model directory:

- a byte-level BPE tokenizer (about 1k tokens) trained here on generated English-like text
  with digits and the arithmetic symbols of Game of 24 (``+ - * / ( ) =``), saved with
  ``transformers.PreTrainedTokenizerFast`` together with ``<s>``/``</s>``/``<unk>``/``<pad>``
  special tokens and a generic chat template, so ``/v1/completions``,
  ``/v1/chat/completions`` and ``/tokenize`` all work;
- ``config.json`` for a 2-layer ``LlamaForCausalLM`` (hidden size 128, 2 heads of
  head_dim 64; the vLLM CPU attention kernel rejects head_dim 16 at the first request);
  ``torch_dtype`` float32 (vLLM still downcasts to bfloat16 unless started with
  ``--dtype float32``, as :mod:`replay.testing.vllm_server` does: bf16 matmuls have no oneDNN kernel on
  AVX2-only CPUs and run at about half speed);
- ``generation_config.json`` with the bos/eos ids.

There are no weight files: serve it with ``--load-format dummy`` (vLLM fills the weights
with random values), so generated text is gibberish but token counts, timings, batching,
prefix caching and priorities behave as in a real model.

The same ``seed`` gives byte-identical files. This module needs ``tokenizers`` and
``transformers`` (both come with vLLM) and nothing from this project, so it runs by path
under the vLLM virtual environment::

    /path/to/vllm-venv/bin/python replay/testing/tiny_model.py DIR
    /path/to/vllm-venv/bin/python -m replay.testing.tiny_model DIR     # from the repository root
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
SPECIAL_TOKENS = [BOS, EOS, UNK, PAD]

# A generic chat template: one "<|role|>" header line per message, each message ended by
# the eos token; the generation prompt opens an assistant turn. Content given as a list of
# OpenAI text parts is joined.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_WORDS = (
    "the a an and or but if then so because when while with without of to in on at by "
    "for from into over under between after before again each every all some any no not "
    "this that these those it its we you they he she I me us them my your our their "
    "is are was were be been being have has had do does did can could will would should "
    "may might must let make use find try get give take keep check solve answer question "
    "number numbers value values sum product difference quotient result total equal "
    "equals left right first second third last next step steps think thought reason "
    "reasoning idea plan try again correct wrong true false yes no maybe possible "
    "impossible card cards four game twenty target reach combine operation operations "
    "add subtract multiply divide plus minus times over brackets order remaining pair "
    "good bad small large more less most least only also just now here there how what "
    "why which who where time way work part line problem example solution final output "
    "user assistant system please thank okay sure well look see know need want like"
).split()

_OPS = "+-*/"


def _expression(rng: random.Random) -> str:
    """One Game-of-24 style line, e.g. ``(8 - 4) * (3 + 3) = 24``."""
    a, b, c, d = (rng.randint(1, 13) for _ in range(4))
    o1, o2, o3 = (rng.choice(_OPS) for _ in range(3))
    shape = rng.randrange(4)
    if shape == 0:
        expr = f"({a} {o1} {b}) {o2} ({c} {o3} {d})"
    elif shape == 1:
        expr = f"(({a} {o1} {b}) {o2} {c}) {o3} {d}"
    elif shape == 2:
        expr = f"{a} {o1} ({b} {o2} ({c} {o3} {d}))"
    else:
        expr = f"{a} {o1} {b} = {rng.randint(0, 169)}"
        return expr
    return f"{expr} = {rng.choice((24, rng.randint(0, 200)))}"


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 1000)))
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".?!.,:")


def corpus(seed: int = 0, lines: int = 4000) -> list[str]:
    """Deterministic English-like training text mixed with Game-of-24 arithmetic."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.55:
            out.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
        elif kind < 0.85:
            nums = " ".join(str(rng.randint(1, 13)) for _ in range(4))
            out.append(f"Input: {nums}. Steps: {_expression(rng)}. {_sentence(rng)}")
        else:
            out.append(_expression(rng))
    return out


def _train_tokenizer(vocab_size: int, seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(seed), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    # Like Llama: encoding text with special tokens prepends <s>.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def write_tiny_llama(directory: str | Path, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write the tiny Llama model directory and return its path.

    ``vocab_size`` is the BPE target (the 4 special tokens and 256 byte tokens included);
    ``config.json`` takes the trained tokenizer's actual size. ``seed`` drives the
    generated training text, so equal seeds give identical files.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size, seed),
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(path))

    bos_id, eos_id, pad_id = (tokenizer.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "initializer_range": 0.02,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    generation = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    for name, data in (("config.json", config), ("generation_config.json", generation)):
        (path / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="folder to write (created if missing)")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_llama(args.directory, vocab_size=args.vocab_size, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
