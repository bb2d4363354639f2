"""``dynasim fidelity``, the live fidelity check (:mod:`replay.fidelity`): its flags, the
run from parsed flags and the rich table. ``dynasim fidelity --base-url URL --model M
[--profile P | --quick] [--num-requests N] [--lengths L] [--output-dir D]``;
``add_fidelity_flags(parser, required=False)`` + ``cmd_fidelity(args)`` plug it into
another command (``dynasim validate --base-url``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dynasim.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console

    from dynasim.profiles.profile import Profile


def print_table(rows: list[dict], console: Console | None = None) -> None:
    """The fidelity rows as a rich table (errors and attainment in %)."""
    from rich.console import Console
    from rich.table import Table

    from replay.fidelity import E2E_SLO_SCALE, TTFT_SLO_SCALE

    t = Table(title=f"live fidelity (SLOs: TTFT <= {TTFT_SLO_SCALE:g}x, E2E <= "
                    f"{E2E_SLO_SCALE:g}x the isolated latency)")
    for col in ("load", "req/s", "n", "E2E err med/p90", "TTFT err med/p90",
                "E2E SLO real/sim/diff", "TTFT SLO real/sim/diff",
                "decode ms/tok engine/sim", "p99 lag ms", "CPU PSI %"):
        t.add_column(col, justify="right")
    for r in rows:
        real = r.get("engine_decode_ms_per_token", r["client_decode_ms_per_token"])
        t.add_row(r["load"], f"{r['rate']:.2f}", str(r["requests"]),
                  f"{r['median_e2e_error']:.1%} / {r['p90_e2e_error']:.1%}",
                  f"{r['median_ttft_error']:.1%} / {r['p90_ttft_error']:.1%}",
                  *(f"{r[f'{m}_attainment_real']:.2f} / {r[f'{m}_attainment_sim']:.2f} / "
                    f"{100 * r[f'{m}_attainment_diff']:+.0f} pt" for m in ("e2e", "ttft")),
                  f"{real:.2f} / {r['sim_decode_ms_per_token']:.2f}",
                  f"{r['p99_dispatch_lag_ms']:.0f}",
                  " / ".join("-" if v is None else f"{v:.0f}"
                             for v in r["cpu_pressure_pct"]))
    (console or Console(width=170)).print(t)
    if rows and "median_e2e_repeat_error" in rows[0]:
        t = Table(title="the server against itself: the same trace replayed twice, "
                        "|second - first| / first per request")
        for col in ("load", "E2E med/p90", "TTFT med/p90"):
            t.add_column(col, justify="right")
        for r in rows:
            t.add_row(r["load"], *(f"{r[f'median_{m}_repeat_error']:.1%} / "
                                   f"{r[f'p90_{m}_repeat_error']:.1%}"
                                   for m in ("e2e", "ttft")))
        (console or Console(width=170)).print(t)


def add_fidelity_flags(p: argparse.ArgumentParser, required: bool = True,
                       live_prefix: bool = False) -> None:
    """Flags of the live fidelity run; ``required=False`` for a command where
    ``--base-url`` is optional, ``live_prefix`` where ``--profile`` and ``--output-dir``
    are taken (``dynasim validate``: ``--live-profile``, ``--live-output-dir``; pass
    :func:`live_args` to :func:`cmd_fidelity`)."""
    live = "live-" if live_prefix else ""
    p.add_argument("--base-url", required=required, help="live server root, e.g. "
                   "http://127.0.0.1:8000")
    p.add_argument("--model", required=required, help="served model name")
    p.add_argument("--api-key", default=None, help="bearer token")
    p.add_argument(f"--{live}profile", help="calibrated profile of the live server "
                   "(default: calibrate first)")
    p.add_argument("--num-requests", type=int, default=60, help="requests per load")
    p.add_argument("--lengths", help="trace to draw (prompt, output) pairs from, or "
                   "uniform:PMIN-PMAX:OMIN-OMAX (default azure-conv-2023)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=f"quick calibration (no --{live}profile)")
    p.add_argument(f"--{live}output-dir", help="keep per-load records here")
    p.add_argument("--recalibrate", action="store_true", help="also run a quick "
                   "calibration just before each load and simulate that load with it "
                   "(separate measurements; follows the machine's speed drift)")
    p.add_argument("--real-repeats", type=int, choices=(1, 2), default=1,
                   help="2: replay each trace twice and print how much the server "
                        "differs from itself (the noise floor of the comparison)")
    p.add_argument("--client-cpus", metavar="LIST", help="pin this client to these CPUs "
                   "(comma-separated), e.g. 1 with a server started by `python -m "
                   "replay.testing.vllm_server --pin` (engine core on CPU 0)")
    p.add_argument("--wait-calm", type=float, metavar="PSI", help="local server: before "
                   "calibrating and before each load, wait (up to 10 min) until this "
                   "machine's CPU pressure (PSI some avg10, %%) is below PSI")


def live_args(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` parsed with ``live_prefix=True``, as :func:`cmd_fidelity` reads them."""
    return argparse.Namespace(**{**vars(args), "profile": args.live_profile,
                                 "output_dir": args.live_output_dir})


def cmd_fidelity(args: argparse.Namespace) -> list[dict]:
    """Run from parsed flags (:func:`add_fidelity_flags`); prints and returns the rows."""
    from rich.console import Console

    from dynasim.profiles import load_profile
    from replay.fidelity import run_fidelity
    from replay.vllm_metrics import wait_calm

    console = Console(stderr=True)
    if args.num_requests < 1:
        raise InputError("--num-requests must be >= 1", field="num_requests")
    calm = getattr(args, "wait_calm", None)
    if getattr(args, "client_cpus", None):
        try:
            cpus = {int(c) for c in args.client_cpus.split(",") if c.strip()}
            os.sched_setaffinity(0, cpus)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot pin the client to {args.client_cpus!r} ({exc})",
                             field="client_cpus") from None
        console.print(f"client pinned to CPUs {sorted(cpus)}")

    def before() -> None:
        if calm is not None:
            psi = wait_calm(args.base_url, calm)
            if psi is not None:
                console.print(f"CPU pressure {psi:.1f}%")

    def recal() -> Profile:
        from replay.calibrate.run import calibrate

        console.print("quick calibration before the load")
        return calibrate(args.base_url, args.model, quick=True,
                         api_key=args.api_key).profile

    if args.profile:
        profile = load_profile(args.profile)
    else:
        from replay.calibrate.run import calibrate

        console.print("calibrating first (no --profile given)")
        before()
        profile = calibrate(args.base_url, args.model, quick=args.quick,
                            api_key=args.api_key).profile
    rows = run_fidelity(args.base_url, args.model, profile, num_requests=args.num_requests,
                        seed=args.seed,
                        **({"lengths": args.lengths} if args.lengths else {}), api_key=args.api_key,
                        output_dir=args.output_dir, before_load=before,
                        recalibrate=recal if getattr(args, "recalibrate", False) else None,
                        real_repeats=getattr(args, "real_repeats", 1),
                        progress=lambda msg: console.print(f"replaying {msg}"))
    print_table(rows)
    if args.output_dir:
        import json

        path = Path(args.output_dir) / "fidelity.json"
        path.write_text(json.dumps({"profile": profile.model_dump(), "rows": rows},
                                   indent=1) + "\n")
        console.print(f"wrote {path}")
    return rows
