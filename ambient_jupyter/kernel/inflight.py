"""The cell this kernel is running, kept where the kernel after it can read it.

A kernel cannot record its own death. The server (through its restarter) and
``ambient-jupyter run`` record it from outside; a frontend with neither of them (VS
Code, ``jupyter console``, a server without this extension) leaves no witness but
the next kernel. So each kernel keeps the cell it is running in a small file mapped
into its memory: writing it is a memory copy (no system call, nothing waits on the
disk), and what was written stays in the operating system's page cache when the
process is killed. The next kernel that loads the extension on the same history
reads the files of processes that are gone: one that still names a cell is a death
during that cell, recorded once, under the key the server and the runner use too.

A shutdown the person asked for (a restart, even of a busy kernel, which ends in a
kill) is not a death: ipykernel sets ``exit_now`` when it handles the request, and
the cell is forgotten then.

The folder may sit where others can write (``AMBIENT_DB`` in a shared folder), so
nothing in it is trusted: the folder must be ours and private, pages are opened
without following links and read only up to their size, a page's content must be
exactly what a kernel writes, and a death is recorded only for a notebook that
already has a history. Pages are named by machine (boot) and process start, so a
kernel on another machine sharing the folder, or a new process that got an old
pid, never judges or overwrites another's page.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

from ..events import KernelDied, death_key
from ..history import History

__all__ = ["InFlight", "folder_for", "record_deaths"]

log = logging.getLogger("ambient_jupyter.kernel")

SIZE = 64 * 1024
"""Bytes per kernel: the header and the cell (a longer cell is kept up to this)."""
_MAGIC = b"AJC1"
_HEADER = struct.Struct("<4sId")
"""Magic, length of the cell's JSON (0: no cell running), the process's start time."""
_BODY = SIZE - _HEADER.size
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _machine() -> str:
    """This machine since its last boot: process ids mean something only within it."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return hashlib.sha256(f"{socket.gethostname()}|{boot}".encode()).hexdigest()[:12]


MACHINE = _machine()


def folder_for(history_path: Path) -> Path:
    """Where the kernels of one history file keep their cells: next to it, private."""
    return history_path.with_name(history_path.name + ".running")


def _private_folder(folder: Path, *, create: bool) -> bool:
    """True if ``folder`` is a real folder of ours that nobody else can reach (made so if ours)."""
    if create:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "geteuid") and info.st_uid != os.geteuid()):
        log.warning("ambient-jupyter does not use %s: it is not a folder of this user's", folder)
        return False
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return True


def _started(pid: int) -> float | None:
    """When process ``pid`` started, or None if there is none."""
    try:
        import psutil  # type: ignore[import-untyped]  # ipykernel's own dependency

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 (gone, or not ours to see: either way not a live kernel of ours)
        return None


class InFlight:
    """This kernel's page: ``running(code)`` as a cell starts, ``idle()`` when it ends."""

    def __init__(self, folder: Path, connection_file: str, redact: Callable[[str], str] | None = None) -> None:
        if not _private_folder(folder, create=True):
            raise PermissionError(f"{folder} is not a private folder of this user's")
        pid = os.getpid()
        started = _started(pid) or time.time()
        self.path = folder / f"{MACHINE}-{pid}-{time.time_ns()}.cell"
        self._connection = os.path.basename(connection_file)
        self._redact = redact
        # A new name, never an existing file: a link planted there is not followed.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._map[: _HEADER.size] = _HEADER.pack(_MAGIC, 0, started)

    def running(self, notebook: str, code: str) -> None:
        if self._redact is not None:
            code = self._redact(code)
        body = _encode(notebook, code, self._connection)
        # The cell first, its length last: a kernel killed between the two leaves a
        # length that still describes what is there (the previous cell's, or none).
        self._map[_HEADER.size : _HEADER.size + len(body)] = body
        self._map[4:8] = struct.pack("<I", len(body))

    def idle(self) -> None:
        self._map[4:8] = b"\0\0\0\0"

    def close(self) -> None:
        """A clean end: nothing for the next kernel to report."""
        with contextlib.suppress(Exception):
            self._map.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _encode(notebook: str, code: str, connection: str) -> bytes:
    """The page's JSON, cut to fit: the cell keeps its beginning."""
    code = code[:_BODY]  # (a character is at least a byte: nothing longer can fit)
    body = json.dumps([notebook, code, connection], ensure_ascii=False).encode()
    while len(body) > _BODY and code:
        code = code[: max(0, len(code) - (len(body) - _BODY) - 16)]
        body = json.dumps([notebook, code, connection], ensure_ascii=False).encode()
    return body if len(body) <= _BODY else b""


def _read(path: Path) -> tuple[float, tuple[str, str, str] | None] | None:
    """(start time, (notebook, code, connection file) or None when idle); None if not a page."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != SIZE:
            return None
        data = os.read(fd, SIZE)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        magic, length, started = _HEADER.unpack_from(data)
        if magic != _MAGIC or length > _BODY:
            return None
        if not length:
            return started, None
        cell = json.loads(data[_HEADER.size : _HEADER.size + length].decode())
    except (ValueError, struct.error, RecursionError):
        return None
    if not (isinstance(cell, list) and len(cell) == 3 and all(isinstance(part, str) for part in cell)):
        return None
    notebook, code, connection = cell
    return started, (notebook, code, connection) if notebook else None


def _pid_of(path: Path) -> int | None:
    machine, _, rest = path.stem.partition("-")
    pid, _, _ = rest.partition("-")
    return int(pid) if machine == MACHINE and pid.isdigit() else None


def record_deaths(history: History, folder: Path) -> int:
    """Record the death of every kernel of this history that died during a cell; returns how many.

    Only this machine's pages are judged. A page of a gone process is removed once
    read, whatever it held; a page that cannot be read is left while its process
    lives (it may be one being created right now).
    """
    if not _private_folder(folder, create=False):
        return 0
    recorded = 0
    for path in folder.glob(f"{MACHINE}-*.cell"):
        try:
            recorded += _settle(history, path)
        except Exception:  # one page must not stop the others
            log.warning("ambient-jupyter could not read %s", path, exc_info=True)
    return recorded


def _settle(history: History, path: Path) -> int:
    pid = _pid_of(path)
    if pid is None:
        return 0
    read = _read(path)
    alive = _started(pid)
    if alive is not None and (read is None or abs(alive - read[0]) < 1.0):
        return 0  # a kernel running now (or a page being made): not ours to judge
    found = 0
    cell = read[1] if read is not None else None
    if cell is not None:
        notebook, code, connection = cell
        # Only a notebook that has a history: a page can name no other (nothing of ours
        # ever recorded there), and one that does not is not a kernel's.
        if history.last_seq(notebook):
            history.append(notebook, KernelDied(code=code, by="kernel"), dedup_key=death_key(connection, pid))
            found = 1
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return found
