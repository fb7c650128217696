"""Plugins: widgets whose actions the model can call through a JSON API.

.. code-block:: python

    import traitlets
    import ambient_jupyter


    class Counter(ambient_jupyter.Plugin):
        \"\"\"A counter the model can move.\"\"\"

        _esm = "export default { render({ model, el }) { el.textContent = model.get('value'); } }"
        value = traitlets.Int(0).tag(sync=True)

        @ambient_jupyter.action(safe=True)
        def add(self, step: int = 1) -> int:
            \"\"\"Add to the counter.

            Parameters
            ----------
            step
                How much to add.
            \"\"\"
            self.value += step
            return self.value

The model sees ``counter.add(step: integer)``, proposes ``counter.add(step=2)``,
and the kernel runs it through :func:`dispatch` once the gate approves it.
"""

from __future__ import annotations

from typing import Any

from ._dispatch import dispatch
from ._schema import action

__all__ = ["Plugin", "action", "dispatch"]


def __getattr__(name: str) -> Any:
    # Plugin needs anywidget; dispatch does not (a kernel without anywidget has no
    # plugins, and should say so rather than fail to import).
    if name == "Plugin":
        from ._base import Plugin

        return Plugin
    msg = f"module 'ambient_jupyter.plugins' has no attribute {name!r}"
    raise AttributeError(msg)
