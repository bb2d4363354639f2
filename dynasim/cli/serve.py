"""``dynasim serve``: the digital twin, an OpenAI-compatible server whose answers stream
at the times the simulated engine computes them (:mod:`dynasim.serve`)."""

from __future__ import annotations

import argparse

from dynasim.cli.common import add_limit_flags, serve_until_stopped
from dynasim.errors import InputError


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``serve``."""
    p = sub.add_parser("serve", help="serve a simulated vLLM (or fleet) over HTTP in real "
                       "time: an OpenAI-compatible twin to replay against")
    p.add_argument("--profile", required=True, help="profile name or JSON file")
    p.add_argument("--policy", default="fcfs", help="scheduling policy of the engine: "
                   "fcfs (default), priority (vLLM's --scheduling-policy priority: "
                   "requests' priority field honoured), lpm, gang, sjf")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on "
                   "(default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any "
                   "free port, printed at start)")
    p.add_argument("--served-model-name", help="model name of the API (default: the "
                   "profile's model)")
    g = p.add_argument_group("a fleet of replicas behind a router")
    g.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="number of replicas (default 1, or one per --replica-profile)")
    g.add_argument("--replica-profile", nargs="+", metavar="P",
                   help="profiles of the replicas in order, repeated to fill --replicas")
    g.add_argument("--router", default="least-outstanding",
                   help="round-robin, least-outstanding, least-kv, prefix-affinity or "
                        "program-affinity (default least-outstanding)")
    g.add_argument("--router-knob", nargs="+", metavar="KEY=VALUE", default=[],
                   help="router knobs (as dynasim simulate --router-knob)")
    add_limit_flags(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    """``dynasim serve``: build the twin from the flags, listen, serve until Ctrl-C.

    Raises:
        InputError: a bad flag (port out of range, unknown profile, policy or router,
            bad override), or a port that cannot be bound.
    """
    import asyncio

    from dynasim.cli.common import profile_from_args
    from dynasim.cli.simulate import fleet_profiles, router_knobs
    from dynasim.policies import make_policy
    from dynasim.routers import make_router

    if not 0 <= args.port <= 65535:
        raise InputError(f"must be between 0 and 65535, got {args.port}", field="port")
    profile = profile_from_args(args)
    profiles = fleet_profiles(args, profile)
    make_policy(args.policy)  # an unknown name fails here, before anything starts
    router = make_router(args.router, **router_knobs(args.router_knob))
    model = args.served_model_name or profile.model
    limits = [p.max_model_len for p in profiles if p.max_model_len is not None]
    try:
        asyncio.run(_serve(args, profiles, router, model, min(limits) if limits else None))
    except KeyboardInterrupt:
        pass


async def _serve(args: argparse.Namespace, profiles: list, router: object, model: str,
                 max_model_len: int | None) -> None:
    from aiohttp import web

    from dynasim.policies import make_policy
    from dynasim.serve.app import TwinServer
    from dynasim.serve.twin import Twin

    policy = args.policy
    twin = Twin(profiles, lambda: make_policy(policy), router)  # type: ignore[arg-type]
    server = TwinServer(twin, model, max_model_len,
                        priority_enabled=twin.policy.name == "priority")
    runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InputError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})",
                         field="port") from None
    host, port = runner.addresses[0][:2]
    print(f"dynasim serve: listening on http://{host}:{port} (model {model}, "
          f"{len(profiles)} replica(s) of {profiles[0].name}, policy {twin.policy.label})",
          flush=True)
    await serve_until_stopped(runner)
