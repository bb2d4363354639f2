"""Start ``dynasim serve`` in a child process for a test (port chosen by the OS)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import ROOT

_LISTENING = re.compile(r"listening on (http://\S+)")


@contextmanager
def twin_server(*flags: str, timeout: float = 30.0) -> Iterator[str]:
    """``with twin_server("--profile", P) as url:``: ``dynasim serve --port 0 FLAGS``
    running, ``url`` its root; terminated (SIGTERM, then killed) on exit. A server that
    does not print its address within ``timeout`` s fails the test with its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "dynasim", "serve", "--port", "0",
                             *flags], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line, deadline = b"", time.monotonic() + timeout
        while not line.endswith(b"\n") and time.monotonic() < deadline \
                and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                byte = os.read(proc.stdout.fileno(), 1)
                if not byte:
                    break
                line += byte
        match = _LISTENING.search(line.decode(errors="replace"))
        if match is None:
            proc.kill()
            raise AssertionError(f"dynasim serve did not start: {line!r} "
                                 f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
