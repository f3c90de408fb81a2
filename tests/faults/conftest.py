"""Shared pieces of the fault suite: run our code in a child process (as a stage or a command runs),
with this checkout first on the path, and a free loopback port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # stage_helpers, as the other tests use it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), str(REPO / "tests" / "faults"),
                                   env.get("PYTHONPATH", "")])
    return env


def run_python(code: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), **kw)


def popen_python(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(REPO), **kw)


@pytest.fixture
def port() -> int:
    return free_port()
