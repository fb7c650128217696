"""The assistant's settings, one set for every host, as traitlets with environment overrides.

Every host reads the same :class:`AmbientSettings`: the kernel (``c.AmbientSettings.x``
in an IPython config, ``%ambient``), the Jupyter server (``c.AmbientSettings.x`` in a
Jupyter config, ``--AmbientSettings.x=...``) and ``ambient-jupyter run`` (its flags).
Precedence: an explicit value (a flag, ``%ambient``, a config file) beats the
environment, which beats the default. Each setting has an environment variable
(:data:`ENV`); that is also how the runner hands its settings to the kernel it starts.
"""

from __future__ import annotations

import logging
import math
import os

from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode, default
from traitlets.config import Configurable

__all__ = ["ENV", "AmbientSettings", "env_flag"]

log = logging.getLogger("ambient_jupyter")

ENV = {
    "model": "AMBIENT_MODEL",
    "expert": "AMBIENT_EXPERT",
    "quiet": "AMBIENT_QUIET",
    "agent": "AMBIENT_AGENT",
    "cooldown": "AMBIENT_COOLDOWN",
    "output_limit": "AMBIENT_OUTPUT_LIMIT",
    "max_reply_tokens": "AMBIENT_MAX_REPLY_TOKENS",
    "redact": "AMBIENT_REDACT",
    "warm": "AMBIENT_WARM",
}
"""The environment variable of each setting."""


def env_flag(name: str, fallback: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return fallback
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_number(name: str, kind: type[int] | type[float], fallback: float, minimum: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return fallback
    try:
        value = kind(text)
    except ValueError:
        value = math.nan
    if not value >= minimum:  # also refuses nan
        # A typo in the environment should not stop a server or a run from starting.
        log.warning("ignoring %s=%r: expected a number, at least %g; using %g", name, text, minimum, fallback)
        return fallback
    return value


class AmbientSettings(Configurable):
    """What the assistant uses and how chatty it is."""

    model = Unicode(
        help="The watcher's model: auto, embedded, ollama:<name>, llamacpp:<path.gguf>, openai:<name>. "
        "Env: AMBIENT_MODEL."
    ).tag(config=True)

    @default("model")
    def _model_default(self) -> str:
        return os.environ.get(ENV["model"], "").strip() or "auto"

    expert = Unicode(
        help="The frontier model a turn can be handed to (/expert, %%ask --expert, or by the watcher after "
        "two invalid actions), e.g. openai:<name>; empty for none. Env: AMBIENT_EXPERT."
    ).tag(config=True)

    @default("expert")
    def _expert_default(self) -> str:
        return os.environ.get(ENV["expert"], "").strip()

    quiet = Bool(help="Never speak unprompted (no diagnosis of failures). Env: AMBIENT_QUIET.").tag(config=True)

    @default("quiet")
    def _quiet_default(self) -> bool:
        return env_flag(ENV["quiet"])

    warm = Bool(
        help="Let the model read new events while the notebook is quiet, so a failure or a question "
        "costs only its own tokens (paused while a turn runs or the kernel is busy). Off: the model "
        "reads the notebook when it is asked. Env: AMBIENT_WARM (default on)."
    ).tag(config=True)

    @default("warm")
    def _warm_default(self) -> bool:
        return env_flag(ENV["warm"], fallback=True)

    redact = Bool(
        help="Remove common secrets (API keys, tokens, passwords in assignments, credentials in URLs) from "
        "every event before it is stored, so they reach neither the history nor a model. Best effort: a "
        "secret with no telltale shape or name is kept. Env: AMBIENT_REDACT."
    ).tag(config=True)

    @default("redact")
    def _redact_default(self) -> bool:
        return env_flag(ENV["redact"])

    agent = CaselessStrEnum(
        ["off", "ask", "auto"],
        help="Default agent mode of a notebook: off (never proposes code), ask (runs code only once "
        "approved), auto (runs its own code). Env: AMBIENT_AGENT.",
    ).tag(config=True)

    @default("agent")
    def _agent_default(self) -> str:
        value = os.environ.get(ENV["agent"], "").strip().lower()
        return value if value in ("off", "ask", "auto") else "ask"

    cooldown = Float(
        min=0.0,
        help="Seconds after an unprompted reply during which further failures are left alone. Env: AMBIENT_COOLDOWN.",
    ).tag(config=True)

    @default("cooldown")
    def _cooldown_default(self) -> float:
        return env_number(ENV["cooldown"], float, 30.0, 0.0)

    output_limit = Int(
        min=1,
        help="Characters kept of each output (head and tail) when a cell is recorded. Env: AMBIENT_OUTPUT_LIMIT.",
    ).tag(config=True)

    @default("output_limit")
    def _output_limit_default(self) -> int:
        return int(env_number(ENV["output_limit"], int, 8000, 1))

    max_reply_tokens = Int(
        min=1,
        help="Longest turn the model may write, in tokens (its strings are limited to fit). "
        "Env: AMBIENT_MAX_REPLY_TOKENS.",
    ).tag(config=True)

    @default("max_reply_tokens")
    def _max_reply_tokens_default(self) -> int:
        return int(env_number(ENV["max_reply_tokens"], int, 1024, 1))

    def environ(self) -> dict[str, str]:
        """These settings as environment variables, for a process this one starts (a kernel)."""
        values = {variable: getattr(self, name) for name, variable in ENV.items()}
        return {variable: str(int(v)) if isinstance(v, bool) else str(v) for variable, v in values.items()}
