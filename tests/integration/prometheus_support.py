"""Debian's Prometheus tools for tests: promtool and the server, installed on demand where that is possible."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest


@functools.cache
def _install() -> bool:
    """Install Debian's `prometheus` package (root on Debian only); True when the binaries are there after."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "prometheus"]):
        if subprocess.run(command, env=env, capture_output=True, timeout=600).returncode != 0:
            return False
    return shutil.which("promtool") is not None


def binary(name: str) -> str:
    """The path of `promtool` or `prometheus`; the test is skipped only when it is missing and not installable."""
    path = shutil.which(name) or (shutil.which(name) if _install() else None)
    if path is None:
        pytest.skip(f"{name} is missing and cannot be installed here (apt-get install prometheus; .ci/run does it)")
    return path
