"""How many CPUs there are to share, and the thread counts the person set.

Both the server (which splits the CPUs between itself, the kernels and an in-process
model) and the llama.cpp backend (which uses its share) need these; they live here so
that the server does not reach into a backend for them.
"""

from __future__ import annotations

import os

from .config import env_number

__all__ = ["threads_from_env", "usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def threads_from_env(name: str = "AMBIENT_THREADS") -> int | None:
    """``AMBIENT_THREADS`` (or ``name``) as a positive int, or None (unset, or not a positive number: warned)."""
    return int(env_number(name, int, 0, 1)) or None
