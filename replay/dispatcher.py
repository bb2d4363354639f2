"""Open-loop replay of a trace or of reasoning programs, driven by a dynasim policy.

The same :class:`~dynasim.policies.base.Policy` object that orders the simulated engine's queue
orders the client's sends here (Dynasor's scheduling is program-level, App. D.3):

* **arrivals** are open-loop: a request (or a program's first wave) is due at its
  scheduled time whatever the server is doing, as in ``vllm bench serve``;
* **the client-side queue** is the policy's own waiting queue (``policy.new_queue()``):
  due requests are pushed, and admission groups are popped in the policy's order while
  ``--max-concurrency`` leaves room -- a gang (gang, SJF) is sent whole or waits, like the
  engine's head-of-line rule; without ``--max-concurrency`` everything is sent when due;
* **in-engine order** is the policy's integer priority (``policy.priority(req)``,
  computed at send time), sent as vLLM's ``priority`` field, which vLLM honours when it
  runs ``--scheduling-policy priority`` (lower first);
  :func:`replay.server_checks.probe_priority` checks that
  before the run, and priorities are left out when the server does not honour them;
* **programs** are the simulator's :class:`~dynasim.workloads.program.Program` state machines: a
  wave is sent when the previous one has finished; the intra-program policy (certaindex,
  caps) decides the waves from the answers recorded in the trace, so the server supplies
  the compute and the timing, not the reasoning. A program that stops early simply never
  sends its remaining samples; under eager dispatch the samples a program no longer
  needs after its detect step are aborted (queued ones dropped, in-flight streams
  closed, which makes vLLM abort the request), as the simulator's ``Engine.abort``;
  :meth:`Replay.cancel_program` aborts all of a program's queued and in-flight requests.

**Several servers** (``base_url`` a list): each request is routed, at the moment it is
sent, by a :mod:`dynasim.routers` router -- the very objects ``dynasim simulate
--replicas N --router R`` uses -- over one :class:`~replay.client.ServerView` per server
(in-flight counts, KV usage and prefix matches as a client can know them; see that
class), and its row's ``replica`` is the index of its server in the list. With one
server no router is consulted and every row has replica 0, as before.

LPM needs the server's prefix-tree state (SGLang's scheduler); vLLM exposes none, so it
cannot be replayed here and :func:`check_policy` says so.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiohttp

from dynasim.errors import InputError
from dynasim.request import Request
from replay.client import Outcome, ServerView, new_session, stream_completion
from replay.journal import Journal
from replay.programs import ProgramDriver
from replay.prompts import PromptBuilder, trace_segments
from replay.vllm_metrics import kv_usage, try_scrape

if TYPE_CHECKING:
    import numpy as np

    from dynasim.policies.base import Policy
    from dynasim.routers.base import Router
    from dynasim.workloads.program import ProgramSpec


def check_policy(policy: Policy) -> None:
    """Refuse policies a client cannot carry out against vLLM.

    Raises:
        InputError: LPM (longest prefix match orders by the server's radix cache, which
            only SGLang's own scheduler sees; a client-side imitation would be fake).
    """
    if policy.name == "lpm":
        raise InputError("LPM orders requests by the server's prefix-cache contents; "
                         "vLLM has no such scheduling policy and exposes no cache state, "
                         "so it cannot be replayed (run it on SGLang, whose default "
                         "policy is LPM, or simulate it with dynasim simulate)",
                         field="policy", source=policy.label)


def _dynasor_columns(report: dict | None) -> dict:
    """The journal's ``dynasor_*`` columns from a proxy report (defaults when none)."""
    from replay.journal import DYNASOR_DEFAULTS

    if not report:
        return dict(DYNASOR_DEFAULTS)
    return {"dynasor_probes": int(report.get("probes", -1)),
            "dynasor_tokens": int(report.get("tokens_generated", -1)),
            "dynasor_stopped_early": bool(report.get("stopped_early", False)),
            "dynasor_stop_token": int(report.get("stop_token", -1))}


def too_long(req: Request, max_model_len: int | None) -> str:
    """Why ``req`` can never be served (\"\" if it can): prompt + output tokens above the
    server's ``max_model_len`` -- vLLM answers HTTP 400, and ``dynasim simulate`` rejects
    it at arrival with this very reason (:meth:`dynasim.engine.Engine.submit`)."""
    total = req.prompt_tokens + req.output_tokens
    if max_model_len is None or total <= max_model_len:
        return ""
    return f"prompt + output = {total} tokens exceeds max_model_len {max_model_len}"


class Replay(ProgramDriver):
    """One live run: a policy, one or several servers (and a router), a journal.

    Args:
        base_url: server root, e.g. ``http://127.0.0.1:8000``, or a list of them (a
            fleet behind ``router``; module docstring).
        model: the served model name.
        policy: a dynasim policy (:func:`dynasim.policies.make_policy`), not LPM.
        journal: where rows go (:class:`~replay.journal.Journal`).
        prompts: token-id prompt builder (:class:`~replay.prompts.PromptBuilder`).
        api_key: sent as ``Authorization: Bearer``.
        max_concurrency: most requests in flight (``None``: unlimited).
        timeout: seconds per request (``None``: none).
        send_priority: whether to send the ``priority`` field.
        progress: called with (requests done, programs done) after each request.
        dynasor: a ``dynasor`` object sent with every request (Dynasor-CoT early exit
            through :mod:`replay.proxy.server`; ``None``: not sent); the proxy's report goes
            into the ``dynasor_*`` columns (:data:`replay.journal.DYNASOR_DEFAULTS`).
        max_model_len: the server's context length in tokens (``/v1/models``,
            :func:`replay.vllm_metrics.served_max_model_len`; ``None``: unknown). A request
            with prompt + output above it fails at arrival, unbuilt and unsent, with the
            reason ``dynasim simulate`` gives (:func:`too_long`).
        warn: called once with a line for the user when the run finds something it
            cannot fix (a ``dynasor`` object but no proxy report); default: ignored.
        router: with several servers, the router (:func:`dynasim.routers.make_router`;
            default ``least-outstanding``, as ``dynasim simulate``); unused with one.
        kv_every: seconds between the reads of each server's KV usage gauge
            (``/metrics``) that feed ``least-kv`` and ``prefix-affinity``
            (:class:`~replay.client.ServerView`); only these routers read it.

    Raises:
        InputError: LPM (:func:`check_policy`); an empty ``base_url`` list.
    """

    def __init__(self, base_url: str | Sequence[str], model: str, policy: Policy,
                 journal: Journal, prompts: PromptBuilder, api_key: str | None = None,
                 max_concurrency: int | None = None, timeout: float | None = None,
                 send_priority: bool = True,
                 progress: Callable[[int, int], None] | None = None,
                 dynasor: dict | None = None, max_model_len: int | None = None,
                 warn: Callable[[str], None] | None = None,
                 router: Router | None = None, kv_every: float = 1.0) -> None:
        check_policy(policy)
        bases = [base_url] if isinstance(base_url, str) else list(base_url)
        if not bases:
            raise InputError("no server given", field="base_url")
        self.base_urls = [b.rstrip("/") for b in bases]
        self.urls = [b + "/v1/completions" for b in self.base_urls]
        if router is None and len(bases) > 1:
            from dynasim.routers import make_router

            router = make_router("least-outstanding")
        self.router = router
        self.kv_every = kv_every
        self._routing: tuple[Request, list[int]] | None = None  # the request being routed
        self.views = [ServerView(self._routing_ids) for _ in bases]
        self._index_prefixes = router is not None and router.name == "prefix-affinity"
        self._replica: dict[Request, tuple[int, int]] = {}  # in flight: (server, tokens)
        if len(bases) > 1:
            journal.num_replicas = len(bases)
        self.dynasor = dynasor
        self.max_model_len = max_model_len
        self.warn = warn
        #: whether a proxy's dynasor report came back (None: no successful request yet)
        self.dynasor_reported: bool | None = None
        self.url = self.urls[0]
        self.model = model
        self.policy = policy
        self.journal = journal
        self.prompts = prompts
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.send_priority = send_priority
        self.progress = progress
        self.queue = policy.new_queue()
        self.in_flight: dict[Request, asyncio.Task] = {}
        self.t0 = 0.0
        self.done = 0
        self.programs_done = 0
        self._ids = itertools.count()
        self._due: dict[Request, tuple[float, float]] = {}  # scheduled, queued-at
        self._owner: dict[Request, tuple] = {}
        self._outstanding: dict[int, int] = {}
        self._ids_prompt: dict[Request, list[int]] = {}
        self._unsendable: dict[Request, str] = {}  # why a prompt could not be built
        self._idle = asyncio.Event()
        self._interrupted = False
        self._cancelled: set[int] = set()
        self._aborting: set[Request] = set()  # eager dispatch: streams being closed
        self._chain_ids: dict[Request, list[int]] = {}  # CoT main request: prompt ids

    # ------------------------------------------------------------------ clock
    def clock(self) -> float:
        """Seconds since the start of the arrival schedule."""
        return time.perf_counter() - self.t0

    async def _sleep_until(self, t: float) -> None:
        delay = t - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)

    # ------------------------------------------------------------- dispatch
    def _arrive(self, req: Request, scheduled: float) -> None:
        now = self.clock()
        reason = too_long(req, self.max_model_len) or self._unsendable.pop(req, "")
        if reason:  # never built nor sent: vLLM would answer HTTP 400
            out = Outcome(error=reason)  # as the engine: on_finish, no on_arrival
            self._record(req, out, scheduled, now, now, None)
            self._finished(req, out)
            return
        self._due[req] = (scheduled, now)
        self.policy.on_arrival(req, now)
        self.queue.push(req)
        self._dispatch()

    def _dispatch(self) -> None:
        self.policy.on_step(self.clock())
        refresh = getattr(self.queue, "refresh", None)
        if refresh is not None:
            refresh()
        cap = self.max_concurrency
        while len(self.queue):
            group = self.queue.peek()
            if cap and self.in_flight and len(self.in_flight) + len(group) > cap:
                break  # head-of-line: the group waits for room (a gang is sent whole)
            for req in self.queue.pop():
                task = asyncio.ensure_future(self._send(req))
                task.add_done_callback(lambda t, r=req: self._never_started(r, t))
                self.in_flight[req] = task
        self._idle.clear()

    async def _send(self, req: Request) -> None:
        scheduled, queued_at = self._due.pop(req)
        dispatched = self.clock()
        out = Outcome()
        priority = None
        on_tokens = None
        try:
            payload = {"model": self.model, "max_tokens": req.output_tokens,
                       "ignore_eos": True, "temperature": 0.0,
                       "prompt": self._ids_prompt.pop(req, None) or self._prompt(req)}
            if req.watch:  # a chain of thought probed as it goes: keep its token ids
                payload["return_token_ids"] = True
                self._chain_ids[req] = payload["prompt"]
                on_tokens = lambda n: self._chain_progress(req, n, out)  # noqa: E731
            priority = self.policy.priority(req) if self.send_priority else None
            if priority is not None:
                payload["priority"] = int(priority)
            if self.dynasor is not None:
                payload["dynasor"] = self.dynasor
            headers = dict(self.headers, **{"X-Request-Id": f"dynasim-{req.request_id}"})
            url = self.urls[self._route(req, payload["prompt"])]
            await stream_completion(self._client, url, payload, headers,
                                    self.timeout, self.clock, out, on_tokens)
        except asyncio.CancelledError:
            if req in self._aborting:  # eager dispatch: the program no longer needs it
                out.error = "aborted"
            self._record(req, out, scheduled, queued_at, dispatched, priority)
            if self._interrupted:
                raise
            self._finished(req, out)  # cancel_program: the run goes on
            return
        except Exception as exc:  # noqa: BLE001 -- one request's fault, not the run's
            out.error = f"client error: {type(exc).__name__}: {exc}"[:300]
        self._record(req, out, scheduled, queued_at, dispatched, priority)
        self._check_dynasor(out)
        self._finished(req, out)

    def _routing_ids(self, req: object) -> list[int] | None:
        """The prompt token ids of the request being routed (for prefix matches)."""
        r = self._routing
        return r[1] if r is not None and r[0] is req else None

    def _route(self, req: Request, ids: list[int]) -> int:
        """The server of ``req`` (its index), chosen by the router from the servers'
        views when there are several; counted in flight there until :meth:`_record`.

        Raises:
            RuntimeError: the router returned an index outside the server list.
        """
        i = 0
        if len(self.views) > 1:
            self._routing = (req, ids)
            try:
                i = self.router.route(req, self.views)
            finally:
                self._routing = None
            if not 0 <= i < len(self.views):
                raise RuntimeError(f"router {self.router.name} chose server {i} of "
                                   f"{len(self.views)}")
        req.replica = i
        tokens = req.prompt_tokens + req.output_tokens
        self.views[i].sent(tokens, ids if self._index_prefixes else None)
        self._replica[req] = (i, tokens)
        return i

    def _never_started(self, req: Request, task: asyncio.Task) -> None:
        """A send task cancelled before it ran (an abort in the same loop turn as its
        dispatch) never reaches ``_send``'s handler: account for its request here."""
        if not task.cancelled() or req not in self._due:
            return
        scheduled, queued_at = self._due.pop(req)
        if self._interrupted:  # Ctrl-C: recorded as never sent, the run ends
            self._record(req, Outcome(error="not sent (run interrupted)"), scheduled,
                         queued_at, queued_at, None)
            return
        out = Outcome(error="aborted" if req in self._aborting else "cancelled")
        self._record(req, out, scheduled, queued_at, queued_at, None)
        self._finished(req, out)

    def _check_dynasor(self, out: Outcome) -> None:
        """Say once when a ``dynasor`` object is sent but the first successful answer
        carries no proxy report (the server is not ``dynasim proxy``)."""
        if self.dynasor is None or out.error or self.dynasor_reported is not None:
            return
        self.dynasor_reported = out.dynasor is not None
        if not self.dynasor_reported and self.warn is not None:
            self.warn(f"{self.url}: the first answer carries no dynasor report: the "
                      "server is not a Dynasor proxy (dynasim proxy), so --dynasor has "
                      "no effect and the dynasor_* columns stay empty")

    def _prompt(self, req: Request) -> list[int]:
        if req.prompt is not None:
            return self.prompts.build(req.prompt)
        return self.prompts.build(trace_segments(req.request_id, req.prompt_tokens,
                                                 req.hash_ids))

    def _record(self, req: Request, out: Outcome, scheduled: float, queued_at: float,
                dispatched: float, priority: int | None) -> None:
        self.in_flight.pop(req, None)
        routed = self._replica.pop(req, None)
        if routed is not None:
            self.views[routed[0]].done(routed[1])
        # one server: every row on replica 0, as before; several: -1 for a request
        # never routed (unsendable, cancelled or aborted before it was sent)
        replica = routed[0] if routed is not None else (0 if len(self.views) == 1 else -1)
        queue_time = max(0.0, dispatched - queued_at)
        send = out.send_time if not math.isnan(out.send_time) else dispatched
        times = out.chunk_times
        self.journal.add_request({
            "request_id": req.request_id, "arrival_time": send - queue_time,
            "first_token_time": out.first_token_time, "finish_time": out.finish_time,
            "prompt_tokens": req.prompt_tokens, "output_tokens": out.output_tokens,
            "num_preemptions": 0, "error": out.error,
            "program_id": -1 if req.program_id is None else req.program_id,
            "cached_tokens": out.cached_tokens, "scheduled_time": scheduled,
            "send_time": send, "client_queue_time": queue_time,
            "dispatch_lag": send - scheduled - queue_time,
            "itl": [b - a for a, b in zip(times, times[1:])],
            "asked_output_tokens": req.output_tokens,
            "usage_prompt_tokens": out.prompt_tokens,
            "priority": -1 if priority is None else priority,
            "http_status": out.http_status, "replica": replica,
            **_dynasor_columns(out.dynasor)})
        self.done += 1

    def _finished(self, req: Request, out: Outcome) -> None:
        now = self.clock()
        self._chain_ids.pop(req, None)
        req.status = ("finished" if not out.error else
                      "aborted" if req in self._aborting else "rejected")
        req.error = out.error
        self.policy.on_finish(req, now)
        owner = self._owner.pop(req, None)
        if owner is not None:
            prog, call = owner
            if req in self._aborting:
                self._aborting.discard(req)
                prog.on_call_aborted(call)
            elif not out.error:
                prog.on_call_done(call)
                self._abort_calls(prog, prog.take_cancelled())
            else:
                prog.error = prog.error or out.error
            self._outstanding[prog.program_id] -= 1
            if self._outstanding[prog.program_id] == 0:
                self._start_wave(prog, prog.on_wave_done(now))
        if self.progress is not None:
            self.progress(self.done, self.programs_done)
        self._dispatch()
        if not self.in_flight and not len(self.queue):
            self._idle.set()

    # --------------------------------------------------------------- programs
    # -------------------------------------------------------------------- runs
    async def _open(self):
        self._client = new_session(self.max_concurrency)
        return self._client

    async def _drain(self) -> None:
        while self.in_flight or len(self.queue):
            self._idle.clear()
            await self._idle.wait()

    async def _periodic(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(self.journal.write, False)

    async def _refresh_kv(self, session: aiohttp.ClientSession) -> None:
        """Read every server's KV usage gauge into its view (``None`` where absent)."""
        scrapes = await asyncio.gather(*(try_scrape(session, b, self.headers)
                                         for b in self.base_urls), return_exceptions=True)
        for view, s in zip(self.views, scrapes):
            view.set_kv_usage(None if isinstance(s, BaseException) else kv_usage(s))

    async def _watch_kv(self, session: aiohttp.ClientSession) -> None:
        """Refresh the KV gauges every ``kv_every`` seconds (a scrape per routing
        decision would cost a round trip per request)."""
        while True:
            await asyncio.sleep(self.kv_every)
            await self._refresh_kv(session)

    async def _cancel_all(self) -> None:
        self._interrupted = True
        tasks = list(self.in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for req in list(self.queue):  # queued, never sent: accounted as not sent
            self.queue.remove(req)
            scheduled, queued_at = self._due.pop(req, (math.nan, math.nan))
            self._record(req, Outcome(error="not sent (run interrupted)"), scheduled,
                         queued_at, queued_at, None)

    async def run(self, requests: Sequence[Request] | None = None,
                  specs: Sequence[ProgramSpec] | None = None,
                  arrival_times: Sequence[float] | np.ndarray | None = None,
                  deadlines: Sequence[float] | np.ndarray | None = None,
                  flush_every: float = 10.0) -> dict:
        """Replay ``requests`` (trace mode) or programs ``specs`` arriving at
        ``arrival_times`` (seconds) with ``deadlines`` (seconds after arrival); returns
        the final summary. On cancellation (Ctrl-C) every in-flight request is aborted
        and recorded with its error, the summary says ``interrupted``, and the
        cancellation propagates after the files are written."""
        from dynasim.workloads.program import Program

        await self._open()
        writer = kv_watcher = kv_session = None
        interrupted = False
        try:
            if len(self.views) > 1 and self.router.name in ("least-kv", "prefix-affinity"):
                kv_session = new_session()  # not behind --max-concurrency's connections
                await self._refresh_kv(kv_session)
                kv_watcher = asyncio.ensure_future(self._watch_kv(kv_session))
            if requests is not None:  # build prompts before the clock starts
                for req in requests:
                    if too_long(req, self.max_model_len):
                        continue
                    try:
                        self._ids_prompt[req] = self._prompt(req)
                    except Exception as exc:  # noqa: BLE001 -- fails this request only
                        self._unsendable[req] = f"client error: {type(exc).__name__}: {exc}"
            # Issue 15: the start-up heap (pandas, pyarrow, aiohttp, the trace, the
            # prompts: ~10^5 objects) is never garbage, but it counts as "pending" for
            # CPython's cyclic GC, so a full (gen-2) collection that scans all of it
            # fires once the run's own allocations have driven ten gen-1 collections:
            # a ~100 ms stall of the event loop, about 3.6 s into every run at 40 req/s,
            # and more of them at 1000 req/s as the run's rows pile up. Collect once
            # now and freeze the survivors into the permanent generation (gc.freeze,
            # which the Python docs advise for exactly this), so that later
            # collections scan only what the run itself allocates; unfrozen at the end.
            gc.collect()
            gc.freeze()
            self.t0 = time.perf_counter()
            writer = asyncio.ensure_future(self._periodic(flush_every))
            if requests is not None:
                for req in requests:
                    await self._sleep_until(req.arrival_time)
                    self._arrive(req, req.arrival_time)
            else:
                for i, (spec, t) in enumerate(zip(specs, arrival_times)):
                    prog = Program(i, spec, self.policy.intra, float(t))
                    if deadlines is not None:
                        prog.deadline = float(deadlines[i])
                    await self._sleep_until(prog.arrival_time)
                    self.policy.on_program_arrival(prog, self.clock())
                    self._start_wave(prog, prog.start())
            await self._drain()
        except BaseException:  # Ctrl-C, SIGTERM, or a bug: record what is in flight
            interrupted = True
            await self._cancel_all()
            raise
        finally:
            gc.unfreeze()
            if writer is not None:
                writer.cancel()
            if kv_watcher is not None:
                kv_watcher.cancel()
            if kv_session is not None:
                await kv_session.close()
            await self._client.close()
            extra = {"interrupted": interrupted}
            if self.dynasor is not None:
                extra["dynasor_reported"] = self.dynasor_reported
            self.summary = self.journal.write(final=not interrupted, extra=extra)
            self.journal.close()
        return self.summary
