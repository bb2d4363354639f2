"""``dynasim profiles``: list shipped profiles, rebuild one from its sources, build a
roofline profile for a model nobody has measured (``--roofline``), or print the
roofline's leave-one-model-out error (``--roofline-validate``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynasim.errors import InputError


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``profiles``."""
    p = sub.add_parser("profiles", help="list shipped profiles, build one, or build a "
                       "roofline profile from a model config")
    p.add_argument("--build", metavar="NAME", help="rebuild a profile from its sources")
    p.add_argument("--output", help="file for --build / --roofline (default stdout)")
    g = p.add_argument_group("--roofline: a profile from a Hugging Face config.json "
                             "(dynasim/profiles/roofline.py)")
    g.add_argument("--roofline", action="store_true", help="build a roofline profile")
    g.add_argument("--model-config", metavar="CONFIG.json", help="the model's config.json "
                   "(or a known Hugging Face id, e.g. meta-llama/Llama-2-7b-hf)")
    g.add_argument("--gpu", help="h100-sxm, h100-nvl, h200, a100-80gb, a100-40gb, l40s, "
                   "rtx4090, rtxpro6000")
    g.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default 1)")
    g.add_argument("--max-num-seqs", type=int, default=256)
    g.add_argument("--max-num-batched-tokens", type=int, default=8192)
    g.add_argument("--kv-blocks", type=int, default=None, help="KV blocks (default: "
                   "0.9 x GPU memory less the weights, over the bytes of a block)")
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--name", help="profile name (default roofline-MODEL-GPU-tpN)")
    g.add_argument("--vllm-version", metavar="X.Y.Z", help="the engine switches of this "
                   "vLLM version (async scheduling from 0.14, full-prompt admission from "
                   "0.18, client timeouts; dynasim/profiles/run_switches.py) and the "
                   "coefficients learned for them (default: every switch off)")
    p.add_argument("--roofline-validate", action="store_true", help="print the roofline's "
                   "leave-one-model-out error on the recorded runs (about a minute)")
    p.set_defaults(func=cmd_profiles)


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text)
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def cmd_roofline(args: argparse.Namespace) -> None:
    """``dynasim profiles --roofline``: write a roofline profile."""
    from dynasim.profiles.gpus import get_gpu
    from dynasim.profiles.model_config import load_model_config
    from dynasim.profiles.roofline import learned_for, roofline_profile, version_switches

    if not args.model_config or not args.gpu:
        raise InputError("--roofline needs --model-config and --gpu", field="roofline")
    model = load_model_config(args.model_config)
    switches = version_switches(args.vllm_version)
    extra = {"vllm_version": args.vllm_version} if args.vllm_version else {}
    prof = roofline_profile(model, get_gpu(args.gpu), args.tp,
                            learned_for(switches["async_scheduling"]), name=args.name,
                            max_num_seqs=args.max_num_seqs,
                            max_num_batched_tokens=args.max_num_batched_tokens,
                            kv_blocks=args.kv_blocks, max_model_len=args.max_model_len,
                            provenance={"model_config": args.model_config, **extra},
                            switches=switches)
    _write(prof.model_dump_json(indent=2) + "\n", args.output)


def cmd_profiles(args: argparse.Namespace) -> None:
    """``dynasim profiles``: list shipped profiles, build one, or a roofline profile."""
    if args.roofline:
        cmd_roofline(args)
        return
    if args.roofline_validate:
        from dynasim.profiles.roofline_validate import main as validate

        validate([])
        return
    from dynasim.profiles import load_profile, shipped_profiles
    from dynasim.profiles.builders import BUILDERS

    if args.build:
        if args.build not in BUILDERS:
            raise InputError(f"no builder (buildable: {', '.join(BUILDERS)})",
                             source=args.build)
        _write(BUILDERS[args.build]().model_dump_json(indent=2) + "\n", args.output)
        return
    header = ("name", "model", "gpu", "TP", "KV tokens", "seqs", "batched", "max len",
              "sched", "form", "held-out median")
    rows = []
    for name in shipped_profiles():
        p = load_profile(name)
        rows.append((name, p.model, p.gpu, str(p.tensor_parallel_size),
                     str(p.kv_capacity_tokens), str(p.max_num_seqs),
                     str(p.max_num_batched_tokens),
                     "-" if p.max_model_len is None else str(p.max_model_len),
                     p.scheduling, p.step_time.form,
                     "-" if p.fit is None else f"{100 * p.fit.held_out_median_error:.1f}%"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2, 8, 9}  # text columns; numbers are right-aligned
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) if i in left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
