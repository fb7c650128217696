"""The wheel, installed where there is no Node.js, gives a working sidebar.

``pip wheel .`` builds one wheel; its build hook (hatch-jupyter-builder) runs jlpm to
build the JupyterLab extension, or reuses the build output when it is already there
(``skip-if-exists``: presence only, not freshness, which is why the sources are
checked against the packaged build below). That wheel is installed with pip into a
fresh venv whose PATH has no ``node``, JupyterLab is started from that venv, and
Chromium must see the Ambient panel connect, record a cell and answer a question
(the model is a fake Ollama: the wheel is installed without the ``[embedded]`` extra).

The wheel is built once per module; the fresh venv's dependencies come from the
package indexes, pinned to the versions of the venv running the tests. It takes about
2-3 minutes on 2 cores, most of it ``pip install``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_lab import LabServer, launch_chromium, open_notebook, require_browser, run_cell
from conftest import ROOT, make_notebook
from fakes.ollama_server import FakeOllama

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(900)]

ARTIFACTS = ROOT / "tests" / "artifacts"
EXT = "share/jupyter/labextensions/ambient-jupyter"
FAKE_MODEL = "tiny:1b"
NODE_TOOLS = ("node", "nodejs", "npm", "npx", "yarn", "jlpm")
# What the labextension build reads: newer than the packaged build means a stale wheel.
LABEXTENSION_SOURCES = ("src", "style", "package.json", "tsconfig.json")


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    """No pytest-jupyter loop: JupyterLab runs in a subprocess, and Playwright's sync
    API keeps its own loop on this thread (as in test_browser.py)."""
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    yield


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path, timeout: float) -> str:
    """Run ``cmd``; fail the test with its output if it fails."""
    done = subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    # The machine's pip config names local indexes that lack most projects: noise.
    out = "\n".join(line for line in done.stdout.splitlines() if "is ignored: it is neither" not in line)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{out[-6000:]}"
    return out


def node_free_path(*first: Path) -> str:
    """``first``, then every directory of this PATH that holds none of the Node.js tools."""
    dirs = [str(d) for d in first]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and entry not in dirs and not any(shutil.which(t, path=entry) for t in NODE_TOOLS):
            dirs.append(entry)
    return os.pathsep.join(dirs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps . -w DIR`` in the checkout, with the project venv's pip."""
    out = tmp_path_factory.mktemp("wheelhouse")
    started = time.monotonic()
    log = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", str(ROOT), "-w", str(out)],
        env={**os.environ, "YARN_ENABLE_PROGRESS_BARS": "false", "PIP_PROGRESS_BAR": "off"},
        cwd=out,
        timeout=600,
    )
    skipped = "Skip-if-exists file(s) found" in log
    print(f"\npip wheel: {time.monotonic() - started:.0f} s, labextension build {'reused' if skipped else 'ran'}")
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, f"pip wheel made {[w.name for w in wheels]}"
    return wheels[0]


@pytest.fixture(scope="module")
def constraints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The versions of this venv, so the fresh one resolves to what the suite tests."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout
    pins = [
        line
        for line in frozen.splitlines()
        if re.match(r"^[A-Za-z0-9_.\-]+==\S+$", line) and not re.match(r"ambient[-_]jupyter==", line, re.IGNORECASE)
    ]
    path = tmp_path_factory.mktemp("constraints") / "constraints.txt"
    path.write_text("\n".join(pins) + "\n")
    return path


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, constraints: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A new venv with the wheel (and JupyterLab) installed by pip, with no Node.js on PATH."""
    base = tmp_path_factory.mktemp("fresh")
    venv = base / "venv"
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base, timeout=120)
    bindir = venv / "bin"
    path = node_free_path(bindir)
    found = {t: shutil.which(t, path=path) for t in NODE_TOOLS}
    assert not any(found.values()), f"Node.js tools on the install PATH: {found}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "CONDA"))}
    env.update(
        PATH=path,
        VIRTUAL_ENV=str(venv),
        PYTHONNOUSERSITE="1",
        # Jupyter's per-user dirs point into the test's tree: only the venv's share/ counts.
        JUPYTER_DATA_DIR=str(base / "jupyter-data"),
        JUPYTER_CONFIG_DIR=str(base / "jupyter-config"),
        PIP_PROGRESS_BAR="off",
    )
    python = str(bindir / "python")
    # A real install: pip resolves the wheel's dependencies (JupyterLab comes with the user).
    _run(
        [python, "-m", "pip", "install", str(wheel), "jupyterlab", "-c", str(constraints)],
        env=env,
        cwd=base,
        timeout=900,
    )
    print(f"\nfresh venv with the wheel: {time.monotonic() - started:.0f} s")
    return {"venv": venv, "python": python, "env": env, "base": base}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama({FAKE_MODEL: 4096}).start()
    try:
        yield fake
    finally:
        fake.stop()


# -- the wheel -----------------------------------------------------------------------


def test_wheel_carries_the_prebuilt_labextension(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        data = [n for n in names if n.split("/", 1)[0].endswith(".data")]
        assert data, f"no .data directory in {wheel.name}"
        prefix = data[0].split("/", 2)[0] + "/data/"
        ext = prefix + EXT + "/"
        assert ext + "package.json" in names, f"no labextension in the wheel:\n{chr(10).join(names)}"
        assert ext + "install.json" in names
        assert prefix + "etc/jupyter/jupyter_server_config.d/ambient_jupyter.json" in names
        entries = [n for n in names if re.fullmatch(re.escape(ext) + r"static/remoteEntry\.[0-9a-f]+\.js", n)]
        assert len(entries) == 1, f"expected one remoteEntry, found {entries}"
        built = json.loads(zf.read(ext + "package.json"))
        assert built["name"] == "ambient-jupyter"
        load = built["jupyterlab"]["_build"]["load"]
        assert ext + load in names, f"package.json loads {load}, which is not in the wheel"
        packaged = zf.read(ext + "package.json")
    # skip-if-exists reuses any build output that is present, however old: the wheel
    # must carry the checkout's build, and that build must not be older than what it
    # is built from (else `pip wheel .` ships an old sidebar without a word).
    output = ROOT / "ambient_jupyter" / "labextension" / "package.json"
    assert packaged == output.read_bytes(), "the wheel's labextension is not the checkout's build"
    src = ROOT / "labextension"
    inputs = [p for name in LABEXTENSION_SOURCES for p in [src / name, *(src / name).rglob("*")] if p.is_file()]
    newest = max(inputs, key=lambda p: p.stat().st_mtime)
    assert newest.stat().st_mtime <= output.stat().st_mtime, (
        f"the labextension build is older than {newest.relative_to(ROOT)}: "
        "rebuild it (cd labextension && jlpm build:prod) or remove ambient_jupyter/labextension"
    )


def test_wheel_carries_the_chat_widget_bundle(wheel: Path) -> None:
    """``ambient_jupyter.chat()``'s view: the sidebar's renderer, built with it (scripts/build-widget.js)."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        for name in ("widget.js", "widget.css"):
            member = f"ambient_jupyter/static/{name}"
            assert member in names, f"no {member} in {wheel.name}"
            built = ROOT / "ambient_jupyter" / "static" / name
            assert zf.read(member) == built.read_bytes(), f"the wheel's {name} is not the checkout's build"
    assert not [n for n in names if n in ("ambient_jupyter/static/chat.js", "ambient_jupyter/static/chat.css")]
    src = ROOT / "labextension"
    inputs = [p for name in LABEXTENSION_SOURCES for p in [src / name, *(src / name).rglob("*")] if p.is_file()]
    newest = max(inputs, key=lambda p: p.stat().st_mtime)
    built = ROOT / "ambient_jupyter" / "static" / "widget.js"
    assert newest.stat().st_mtime <= built.stat().st_mtime, (
        f"the chat widget's bundle is older than {newest.relative_to(ROOT)}: "
        "rebuild it (cd labextension && jlpm build:prod)"
    )


# -- installed with no Node.js -------------------------------------------------------


def test_fresh_install_without_node_registers_both_extensions(fresh_venv: dict[str, Any]) -> None:
    venv, env = fresh_venv["venv"], fresh_venv["env"]
    assert shutil.which("node", path=env["PATH"]) is None
    where = _run(
        [fresh_venv["python"], "-c", "import ambient_jupyter, shutil; print(ambient_jupyter.__file__); "
         "print(shutil.which('node'))"],
        env=env, cwd=fresh_venv["base"], timeout=60,
    ).split()
    assert Path(where[0]).is_relative_to(venv), f"ambient_jupyter imported from {where[0]}, not the fresh venv"
    assert where[1] == "None"
    assert (venv / EXT / "package.json").is_file()

    ansi = re.compile(r"\x1b\[[0-9;]*m")
    jupyter = str(venv / "bin" / "jupyter")
    labext = ansi.sub("", _run([jupyter, "labextension", "list"], env=env, cwd=fresh_venv["base"], timeout=120))
    assert re.search(r"ambient-jupyter v\S+ enabled\s+OK", labext), labext
    # The extension found is the venv's copy, not one from another Jupyter data dir.
    section = labext.split("ambient-jupyter v", 1)[0].rstrip().splitlines()
    headers = [line.strip() for line in section if line.strip().startswith("/")]
    assert headers and Path(headers[-1]) == venv / "share/jupyter/labextensions", labext
    serverext = _run([jupyter, "server", "extension", "list"], env=env, cwd=fresh_venv["base"], timeout=120)
    serverext = ansi.sub("", serverext)
    assert re.search(r"ambient_jupyter\s+enabled", serverext), serverext
    assert re.search(r"ambient_jupyter \S+ OK", serverext), serverext


def test_fresh_install_without_node_shows_a_working_sidebar(
    fresh_venv: dict[str, Any], browser: Any, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    fake_ollama.reply = "The wheel works."
    env = fresh_venv["env"]
    lab = LabServer(
        tmp_path / "lab",
        {
            "PATH": env["PATH"],
            "VIRTUAL_ENV": env["VIRTUAL_ENV"],
            "PYTHONNOUSERSITE": "1",
            "PYTHONPATH": "",
            "JUPYTER_DATA_DIR": str(tmp_path / "lab" / "jupyter-data"),
            "AMBIENT_MODEL": f"ollama:{FAKE_MODEL}",
            "OLLAMA_HOST": fake_ollama.url,
        },
        python=fresh_venv["python"],
    )
    lab.root.mkdir(parents=True)
    make_notebook(lab.root / "wheel.ipynb", ["%load_ext ambient_jupyter", "answer = 6 * 7\nprint(answer)"])
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        with lab:
            try:
                # The lab (and so its kernels) has no Node.js to fall back on.
                assert shutil.which("node", path=lab.extra_env["PATH"]) is None
                sidebar = open_notebook(page, lab, "wheel.ipynb")  # waits for the panel to connect
                assert sidebar.locator(".jp-Ambient-notebook").inner_text().strip() == "wheel.ipynb"

                run_cell(page, 0)
                run_cell(page, 1)
                card = sidebar.locator('.jp-Ambient-card[data-kind="cell_executed"]').filter(has_text="answer = 6 * 7")
                card.wait_for(timeout=60_000)
                assert "✓ ok" in card.inner_text()

                sidebar.send("Does the wheel work?")
                reply = sidebar.locator(".jp-Ambient-log > .jp-Ambient-assistant")
                reply.filter(has_text="The wheel works.").wait_for(timeout=60_000)
                assert FAKE_MODEL in sidebar.locator(".jp-Ambient-model").inner_text()
                assert errors == []
                # The server that answered is the fresh venv's.
                assert lab.proc is not None
                cmdline = Path(f"/proc/{lab.proc.pid}/cmdline").read_bytes().split(b"\0")
                assert cmdline[0].decode() == fresh_venv["python"]
            finally:
                # What the page looked like, before the server goes: the first thing to look at.
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(ARTIFACTS / "test_wheel_sidebar.png"))
    finally:
        context.close()
