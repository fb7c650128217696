"""The installed package registers both extensions, as `pip install` must leave them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import ambient_jupyter

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


def test_chat_widget_view_is_the_built_bundle():
    """``ambient_jupyter.chat()`` shows the sidebar's renderer, bundled by the install's build.

    ``jlpm build`` (scripts/build-widget.js) writes it into the package; it must not need
    JupyterLab's modules at runtime (VS Code and Colab have none).
    """
    from ambient_jupyter.widget import ChatWidget

    static = Path(ambient_jupyter.__file__).parent / "static"
    js, css = (static / "widget.js").read_text(), (static / "widget.css").read_text()
    assert str(ChatWidget._esm) == js and str(ChatWidget._css) == css
    assert re.search(r"export\s*\{[^}]*\bas default\b", js), "no default export for anywidget"
    assert not re.search(r"""\bimport\s*(\(|["'{*]|\w+\s+from)""", js), "the bundle imports modules at runtime"
    assert ".jp-Ambient-proposal" in css and ".jp-Ambient-chat" in css
