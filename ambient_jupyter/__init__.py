"""ambient-jupyter: an assistant that watches the notebook as it runs.

``%load_ext ambient_jupyter`` records every executed cell and widget change into one
durable history per notebook; a local model reads it and answers.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

__version__ = "0.1.0"
__all__ = [
    "Plugin",
    "__version__",
    "_jupyter_labextension_paths",
    "_jupyter_server_extension_points",
    "action",
    "chat",
    "load_ipython_extension",
    "unload_ipython_extension",
]

# Loaded on first use: the server extension imports this package, and must not pay
# for (or need) anywidget and ipywidgets.
_LAZY = {"Plugin": "plugins", "action": "plugins", "chat": "widget"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'ambient_jupyter' has no attribute {name!r}"
        raise AttributeError(msg)
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


# What loading the extension imports into a kernel: the recorder, its pydantic event
# models, ipywidgets for the widget watcher.
_KERNEL_MODULES = (
    "ambient_jupyter.kernel",
    "ambient_jupyter.kernel.magics",
    "ambient_jupyter.kernel.widgets",
    "ambient_jupyter.kernel.output_widgets",
    "ipywidgets",
)
_OPTIONAL = frozenset({"ipywidgets"})


def _import_aside(names: tuple[str, ...]) -> None:
    """Import ``names`` on a short-lived helper thread, not on the calling (main) thread.

    Why: a kernel whose main thread did these imports itself ran every later cell about
    20% slower (1,000 tiny cells, benchmark P1 interleaved), even with the extension
    unloaded again, while the same imports on another thread left the cells' speed as
    it was. Most of it comes with pydantic (``from pydantic import BaseModel`` alone
    does it; ``pydantic_core``, ``sqlite3`` or 200 stdlib modules do not). Why the
    importing thread matters is not settled: not the garbage collector (``gc.freeze()``
    changed nothing), and not glibc's per-thread arenas (``MALLOC_ARENA_MAX=1`` changed
    nothing). Already imported modules cost nothing here.
    """
    from importlib import import_module

    failed: list[BaseException] = []

    def work() -> None:
        try:
            for name in names:
                if name in _OPTIONAL:
                    # Missing or broken: the widget watcher does without (it says so itself).
                    with contextlib.suppress(Exception):
                        import_module(name)
                else:
                    import_module(name)
        except BaseException as exc:  # noqa: BLE001 (raised again on the caller's thread)
            failed.append(exc)

    worker = threading.Thread(target=work, name="ambient-import", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]


def load_ipython_extension(ipython: Any) -> None:
    _import_aside(_KERNEL_MODULES)
    from .kernel import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .kernel import unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import AmbientExtension

    return [{"module": "ambient_jupyter", "app": AmbientExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "ambient-jupyter"}]
