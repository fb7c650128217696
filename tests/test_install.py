"""The installed package registers both extensions, as `pip install` must leave them."""

from __future__ import annotations

import re
import subprocess
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _jupyter(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "jupyter", *args], capture_output=True, text=True, timeout=120)
    return ANSI.sub("", done.stdout + done.stderr)


def test_server_extension_is_enabled_and_valid():
    out = _jupyter("server", "extension", "list")
    assert re.search(r"ambient_jupyter\s+enabled", out), out
    assert re.search(r"ambient_jupyter \S+ OK", out), out


def test_labextension_is_enabled_and_ok():
    out = _jupyter("labextension", "list")
    assert re.search(r"ambient-jupyter v\S+ enabled OK", out), out
