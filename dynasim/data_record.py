"""The one flat output record: a row per request, the table every metric and plot reads.

Columns (times in seconds on the trace's clock, sizes in tokens):

====================  =========================================================
``request_id``        0-based line index in the input trace
``arrival_time``      when the request reached the server
``first_token_time``  when its first token was sampled (NaN if it never was)
``finish_time``       when its last token was sampled (rejection time if rejected)
``prompt_tokens``     prompt length
``output_tokens``     tokens generated (0 for a rejected request)
``ttft``              first_token_time - arrival_time
``tpot``              (e2e_latency - ttft) / (output_tokens - 1); NaN if output_tokens < 2
``e2e_latency``       finish_time - arrival_time
``num_preemptions``   times the request was preempted (recompute)
``error``             empty when served; why not otherwise (vLLM would answer HTTP 400)
====================  =========================================================

The definitions are ``vllm bench serve``'s (``vllm/benchmarks/serve.py``,
``calculate_metrics``), with the server-side arrival standing for the client's send time.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from dynasim.request import FINISHED, Request

COLUMNS = ["request_id", "arrival_time", "first_token_time", "finish_time",
           "prompt_tokens", "output_tokens", "ttft", "tpot", "e2e_latency",
           "num_preemptions", "error"]


def records_frame(requests: Iterable[Request]) -> pd.DataFrame:
    """The record table of ``requests`` (finished or rejected), sorted by request_id."""
    rows = [(r.request_id, r.arrival_time, r.first_token_time, r.finish_time,
             r.prompt_tokens, r.output_tokens if r.status == FINISHED else 0,
             r.num_preemptions, r.error) for r in requests]
    df = pd.DataFrame(rows, columns=["request_id", "arrival_time", "first_token_time",
                                     "finish_time", "prompt_tokens", "output_tokens",
                                     "num_preemptions", "error"])
    df = df.sort_values("request_id", kind="stable").reset_index(drop=True)
    df["ttft"] = df["first_token_time"] - df["arrival_time"]
    df["e2e_latency"] = df["finish_time"] - df["arrival_time"]
    decode_tokens = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
    df["tpot"] = (df["e2e_latency"] - df["ttft"]) / decode_tokens
    df["error"] = df["error"].astype(str)
    return df[COLUMNS].astype({"request_id": np.int64, "prompt_tokens": np.int64,
                               "output_tokens": np.int64, "num_preemptions": np.int64})
