"""Settings shared by every host, as traitlets with environment-variable overrides.

Precedence: an explicit value (CLI flag, ``%ambient``, ``c.AmbientSettings.x`` in a
Jupyter/IPython config file) beats the environment, which beats the default.
"""

from __future__ import annotations

import os

from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode, default
from traitlets.config import Configurable

__all__ = ["AmbientSettings", "env_flag"]


def env_flag(name: str, fallback: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return fallback
    return value.strip().lower() in ("1", "true", "yes", "on")


class AmbientSettings(Configurable):
    """What the assistant uses and how chatty it is."""

    model = Unicode(
        help="Model spec: auto, embedded, ollama:<name>, llamacpp:<path.gguf>, openai:<name>. Env: AMBIENT_MODEL."
    ).tag(config=True)

    @default("model")
    def _model_default(self) -> str:
        return os.environ.get("AMBIENT_MODEL", "").strip() or "auto"

    expert = Unicode(
        help="The frontier model a turn can be handed to (%%ask --expert, /expert), e.g. openai:<name>; "
        "empty for none. Env: AMBIENT_EXPERT."
    ).tag(config=True)

    @default("expert")
    def _expert_default(self) -> str:
        return os.environ.get("AMBIENT_EXPERT", "").strip()

    quiet = Bool(help="Never speak unprompted (no diagnosis of failures). Env: AMBIENT_QUIET.").tag(config=True)

    @default("quiet")
    def _quiet_default(self) -> bool:
        return env_flag("AMBIENT_QUIET")

    agent = CaselessStrEnum(
        ["off", "ask", "auto"],
        help="Agent mode: off (never proposes code), ask (runs code only once approved), "
        "auto (runs its own code). Env: AMBIENT_AGENT.",
    ).tag(config=True)

    @default("agent")
    def _agent_default(self) -> str:
        value = os.environ.get("AMBIENT_AGENT", "").strip().lower()
        return value if value in ("off", "ask", "auto") else "ask"

    cooldown = Float(
        30.0, help="Seconds after an unprompted reply during which further failures are left alone."
    ).tag(config=True)

    output_limit = Int(
        8000, help="Characters kept of each output (head and tail) when a cell is recorded."
    ).tag(config=True)

    max_reply_tokens = Int(
        1024, help="Longest turn the model may write, in tokens (its strings are limited to fit)."
    ).tag(config=True)
