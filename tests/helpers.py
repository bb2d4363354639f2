"""Small builders shared by the tests (hand-checkable profiles and traces)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dynasim.profiles import Profile
from dynasim.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (tests/ lies one level below it)."""


def make_profile(scheduling: str = "v1", kv_capacity_tokens: int = 65536,
                 max_num_seqs: int = 256, max_num_batched_tokens: int = 4096,
                 max_model_len: int | None = None, sloped: bool = False) -> Profile:
    """Prefill 10 ms + 0.1 ms/token; decode 5 ms (+ 0.01 ms/context token and
    0.2 ms/request when ``sloped``); no overheads."""
    decode = (5.0, 0.01, 0.2) if sloped else (5.0, 0.0, 0.0)
    return Profile(name="hand", model="toy", gpu="none", tensor_parallel_size=1,
                   kv_capacity_tokens=kv_capacity_tokens, block_size=16,
                   max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                   max_model_len=max_model_len, scheduling=scheduling,
                   step_time={"form": "distserve", "prefill": (10.0, 0.1, 0.0),
                              "decode_small_batch": decode, "decode_large_batch": decode})


def make_trace(n: int, seed: int = 0, rate: float = 20.0) -> Trace:
    """A random trace of ``n`` requests (Poisson arrivals, lengths 1..400 / 1..200)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"arrival_time": np.cumsum(rng.exponential(1 / rate, n)),
                          "prompt_tokens": rng.integers(1, 400, n),
                          "output_tokens": rng.integers(1, 200, n)})
    frame.index.name = "request_id"
    return Trace("random", frame)


def interrupt_replay(trace: Path, out: Path, sig: signal.Signals) -> tuple[int, bytes]:
    """Run ``dynasim replay`` of ``trace`` against a stub in a child process, send it
    ``sig`` once at least 20 requests have finished, and return (exit status, stderr)."""
    from replay.testing.stub import StubServer

    with StubServer(token_delay_ms=20) as url:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "dynasim", "replay", "--base-url", url,
                                 "--model", "stub", "--trace", str(trace), "--output-dir",
                                 str(out), "--no-progress"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline:  # wait until some requests have finished
            p = out / "requests.jsonl"
            if p.exists() and len(p.read_text().splitlines()) >= 20:
                break
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    return proc.returncode, err
