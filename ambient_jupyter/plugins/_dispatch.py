"""``dispatch``: run an approved plugin action in the kernel, and record what happened.

Hosts do not call plugins themselves: they ask the kernel to run
``dispatch(action_id)`` (the server as a silent execute, the in-kernel host
directly). The gate is enforced here, where the code runs: the approval is read
from the history (never from a notebook file), must be bound to the sha256 of the
proposed call, and the stored arguments must be exactly the ones that call shows.
"""

from __future__ import annotations

import threading
from typing import Any

from .._trim import json_safe
from ..actions import plugin_call_code
from ..events import ActionExecuted
from ..gate import NotApproved, approval
from ..history import History
from ..identity import current_recorder
from . import _registry

__all__ = ["dispatch"]

_started: set[str] = set()
"""Action ids run in this process: an approval is good for one run, even before its
``action_executed`` has been committed."""
_started_lock = threading.Lock()


def _where(recorder: Any) -> tuple[History, str, str, bool]:
    """The history and notebook to check and record in, the default agent mode, and
    True if we opened the history."""
    if recorder is not None:
        return recorder.writer.history, recorder.notebook, recorder.settings.agent, False
    from IPython import get_ipython

    from ..config import AmbientSettings
    from ..identity import detect_notebook

    return History(), detect_notebook(get_ipython())[0], AmbientSettings().agent, True


def _record(recorder: Any, history: History, notebook: str, event: ActionExecuted) -> None:
    record = event.model_dump(exclude={"seq", "notebook"})
    if recorder is None:
        history.append(notebook, record, dedup_key=f"executed:{event.action_id}")
        return
    # Through the writer, so it lands after the widget changes the call made; then wait
    # for the commit, so whoever dispatched can read the result back.
    recorder.writer.submit(lambda: record)
    recorder.writer.flush()


def dispatch(action_id: str) -> Any:
    """Run the approved plugin call ``action_id`` and return what the action returned.

    Parameters
    ----------
    action_id
        The ``action_id`` of an ``action_proposed`` event of this notebook.

    Raises
    ------
    NotApproved
        No approval in the history for exactly this call, the proposal is not a
        plugin call, its arguments do not match the approved code, or it already ran.
        Nothing is called.
    LookupError
        The plugin or action does not exist in this kernel (recorded as a failed run).
    Exception
        Whatever the action raised (recorded as a failed run, then re-raised).
    """
    recorder = current_recorder()
    history, notebook, default_mode, opened = _where(recorder)
    try:
        # Judged by the agent mode in force now, as the act engine judges it.
        approved = approval(history, notebook, action_id, mode=history.agent_mode(notebook, default_mode))
        proposal = approved.proposal
        if proposal.action != "call_plugin":
            msg = f"action {action_id} is {proposal.action}, not a plugin call; dispatch runs only plugin calls"
            raise NotApproved(msg)
        call = proposal.args
        plugin_name, name, args = call.get("plugin"), call.get("name"), call.get("args", {})
        if not (isinstance(plugin_name, str) and isinstance(name, str) and isinstance(args, dict)):
            msg = f"action {action_id}: the stored plugin call is malformed; nothing runs"
            raise NotApproved(msg)
        # The approval is bound to the code's hash; the call must be exactly that code.
        if plugin_call_code(plugin_name, name, args) != approved.code:
            msg = f"action {action_id}: the stored arguments are not the approved call; nothing runs"
            raise NotApproved(msg)
        try:
            method, safe = _resolve(plugin_name, name)
        except LookupError as exc:
            if _start(action_id):
                _record(recorder, history, notebook, ActionExecuted(action_id=action_id, ok=False, error=str(exc)))
            raise
        if approved.rule == "safe_plugin" and not safe:
            # Approved unasked because it was announced as safe; the plugin here says otherwise.
            msg = f"{plugin_name}.{name} is not declared safe in this kernel, so it needs a person's approval"
            raise NotApproved(msg)
        if not _start(action_id):
            msg = f"action {action_id} has already run; an approval is good for one run"
            raise NotApproved(msg)
        try:
            result = method(**args)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            _record(recorder, history, notebook, ActionExecuted(action_id=action_id, ok=False, error=error))
            raise
        _record(recorder, history, notebook, ActionExecuted(action_id=action_id, ok=True, result=json_safe(result)))
        return result
    finally:
        if opened:
            history.close()


def _start(action_id: str) -> bool:
    """Claim ``action_id`` for one run; False if it was claimed before."""
    with _started_lock:
        if action_id in _started:
            return False
        _started.add(action_id)
        return True


def _resolve(plugin_name: str, name: str) -> tuple[Any, bool]:
    """The bound action method and whether it is declared safe."""
    plugin = _registry.find(plugin_name)
    if plugin is None:
        known = ", ".join(sorted(_registry.registered())) or "none"
        msg = f"there is no plugin {plugin_name!r} in this kernel (plugins here: {known}); run the cell that creates it"
        raise LookupError(msg)
    found = plugin.action_method(name)
    if found is None:
        msg = f"plugin {plugin_name!r} has no action {name!r}"
        raise LookupError(msg)
    method, mark = found
    return method, mark.safe
