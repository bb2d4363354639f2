"""``dynasim proxy``: the OpenAI-compatible Dynasor-CoT proxy in front of a vLLM
server (:mod:`replay.proxy`)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from dynasim.errors import InputError

if TYPE_CHECKING:
    from replay.proxy.config import DynasorConfig


def _defaults_from_args(args: argparse.Namespace) -> DynasorConfig:
    """The proxy's server-wide :class:`DynasorConfig` from its flags."""
    from dataclasses import fields

    from replay.proxy.config import DynasorConfig

    kw = {f.name: getattr(args, f.name) for f in fields(DynasorConfig)
          if getattr(args, f.name, None) is not None}
    if "hesitation_words" in kw:
        kw["hesitation_words"] = tuple(w for w in kw["hesitation_words"].split(",") if w)
    return DynasorConfig(**kw)


def add_proxy_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``dynasim proxy`` (its defaults read from :class:`DynasorConfig`)."""
    from replay.proxy.config import DynasorConfig

    p = sub.add_parser("proxy", help="OpenAI-compatible proxy with Dynasor-CoT early "
                       "exit (certaindex probing) in front of a vLLM server")
    p.add_argument("--target-base-url", required=True,
                   help="upstream server root, e.g. http://127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default "
                   "127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=8001, help="TCP port (default 8001)")
    p.add_argument("--probe-timeout", type=float, default=60.0,
                   help="seconds per probe before it counts as failed (default 60)")
    g = p.add_argument_group("server-wide defaults of the per-request dynasor object")
    d = DynasorConfig()
    g.add_argument("--probe-interval", type=int, help=f"T tokens (default {d.probe_interval})")
    g.add_argument("--certainty-window", type=int,
                   help=f"w probes (default {d.certainty_window})")
    g.add_argument("--threshold", type=float, help=f"tau (default {d.threshold:g})")
    g.add_argument("--probe-text", help="text appended for a probe (default Dynasor's)")
    g.add_argument("--probe-max-tokens", type=int,
                   help=f"tokens per probe (default {d.probe_max_tokens})")
    g.add_argument("--probe-temperature", type=float,
                   help=f"(default {d.probe_temperature:g})")
    g.add_argument("--probe-top-p", type=float, help=f"(default {d.probe_top_p:g})")
    g.add_argument("--hesitation-words", help="comma-separated (default: "
                   + ",".join(d.hesitation_words) + ")")
    p.set_defaults(func=cmd_proxy)


def _log_to_stderr() -> None:
    """The proxy's access log and warnings (``replay.proxy`` loggers) on stderr."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("replay.proxy")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def cmd_proxy(args: argparse.Namespace) -> None:
    """``dynasim proxy``: serve until Ctrl-C or SIGTERM."""
    from dynasim.cli.common import serve_until_stopped
    from replay.proxy.config import BadField
    from replay.proxy.server import make_app, serve

    try:
        defaults = _defaults_from_args(args).validated("defaults")
    except BadField as exc:
        raise InputError(exc.message, field=exc.field.replace("defaults.", "")) from exc
    if not args.target_base_url.startswith(("http://", "https://")):
        raise InputError("must start with http:// or https://", field="target_base_url")
    if not 1 <= args.port <= 65535:
        raise InputError(f"must be a TCP port 1-65535, got {args.port}", field="port")
    _log_to_stderr()
    app = make_app(args.target_base_url, defaults, args.probe_timeout)

    async def main() -> None:
        try:
            runner = await serve(app, args.host, args.port)
        except (OSError, OverflowError) as exc:  # the session is closed by serve
            raise InputError(f"cannot listen on {args.host}:{args.port}: "
                             f"{getattr(exc, 'strerror', None) or exc}",
                             field="port") from None
        print(f"dynasor proxy on http://{args.host}:{args.port} -> "
              f"{args.target_base_url}; Ctrl-C stops", flush=True)
        await serve_until_stopped(runner)

    asyncio.run(main())
