"""The durable conversation history: one SQLite file, one ordered stream per notebook.

Design notes
------------
* WAL + ``synchronous=FULL``: an append returns only after its commit is on disk, so
  an acknowledged event survives a SIGKILL or a power cut.
* ``seq`` is allocated inside a ``BEGIN IMMEDIATE`` transaction, which takes SQLite's
  write lock; several processes (a kernel, a runner, a server) can append to one file
  and each notebook's ``seq`` stays strictly increasing with no gaps.
* A file that is not a usable database (garbage, truncated, written by a newer
  version) is renamed aside, never deleted, and a fresh one is started. Several
  processes may find the same bad file at once: moving aside is serialised by an
  exclusive ``flock`` on ``<db>.lock``, and a process moves the file aside only if
  the path still names the very file it found unusable (otherwise another process
  already did, and it opens the fresh one). Opening takes the same lock shared, so
  no process opens the path half-way through a move.
* Lookups by action and "the latest event of a kind" go through indexes (schema v2),
  so approving an action or reading the agent mode costs the same in a notebook of
  100,000 events as in one of 100. A v1 file is upgraded in place when opened, under
  SQLite's write lock, so several processes opening it at once upgrade it once.
* The file holds people's code and outputs, secrets included: it is private to its
  owner. The folder is created 0700 and the file 0600 before SQLite opens it (SQLite
  gives ``-wal`` and ``-shm`` the main file's mode); looser files are tightened on open.
* This module imports only the standard library when loaded (and ``redact``, which
  does too): it is imported by the kernel extension and by the crash-test child
  processes, where start-up time counts. The typed lookups (an action's events, the
  undecided proposals, the unanswered questions) import the event models when first
  called; reads for fan-out and prompts pass the stored JSON through as dicts.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

from ._clock import now_iso
from .redact import redact as _redact

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: no flock; moving aside still tolerates races)
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .events import ActionProposed, Event, UserMessage

__all__ = [
    "AGENT_MODES",
    "SCHEMA_VERSION",
    "History",
    "HistoryError",
    "UnreadableEvent",
    "default_path",
    "normalize_notebook",
]

log = logging.getLogger("ambient_jupyter.history")

SCHEMA_VERSION = 2

AGENT_MODES = ("off", "ask", "auto")
"""The values of a ``settings_changed`` event's ``agent`` (the same as ``gate.AGENT_MODES``,
repeated because this module imports only the standard library)."""

# Added in v2. Index entries of a WITHOUT ROWID table end with its primary key, so
# both come out in seq order per notebook with no sort.
_INDEXES_V2 = """
CREATE INDEX IF NOT EXISTS events_action
    ON events (notebook_id, action_id) WHERE action_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_kind
    ON events (notebook_id, kind, seq);
"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS notebooks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    notebook_id INTEGER NOT NULL REFERENCES notebooks(id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    dedup_key TEXT,
    body TEXT NOT NULL,
    action_id TEXT,
    PRIMARY KEY (notebook_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_dedup
    ON events (notebook_id, dedup_key) WHERE dedup_key IS NOT NULL;
"""
    + _INDEXES_V2
)

# A v1 file gets the column, its values and the indexes; nothing else changes.
_MIGRATE_V1 = (
    """
ALTER TABLE events ADD COLUMN action_id TEXT;
"""
    + _INDEXES_V2
)

# The same rule as ``_action_id`` below: only a string ``action_id`` is indexed. A body
# that is not valid JSON (there should be none) is skipped rather than failing the upgrade.
_BACKFILL_SQL = """
UPDATE events SET action_id = json_extract(body, '$.action_id')
WHERE json_valid(body) AND json_type(body, '$.action_id') = 'text'
"""
# A process still running v1 code (a kernel started before the upgrade) keeps
# appending without the column; this fills it in for those rows, so no decision or
# outcome it records is missed by a lookup. Rows this version writes already have it
# (or have no string action_id), so for them the trigger stops at its WHEN clause.
_FILL_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS events_action_id_fill AFTER INSERT ON events
WHEN NEW.action_id IS NULL AND instr(NEW.body, '"action_id":"') > 0
BEGIN
    UPDATE events SET action_id = json_extract(NEW.body, '$.action_id')
    WHERE notebook_id = NEW.notebook_id AND seq = NEW.seq
        AND json_valid(NEW.body) AND json_type(NEW.body, '$.action_id') = 'text';
END
"""
_BACKFILL_PY = "UPDATE events SET action_id = ambient_action_id(body) WHERE instr(body, '\"action_id\"') > 0"

# INDEXED BY: without ANALYZE statistics SQLite prefers the primary key here (it
# already yields seq order), which walks every event of the notebook.
_FIND_ACTION = "SELECT body FROM events INDEXED BY events_action WHERE notebook_id = ? AND action_id = ? ORDER BY seq"
_LATEST_OF_KIND = "SELECT body FROM events INDEXED BY events_kind WHERE notebook_id = ? AND kind = ? ORDER BY seq DESC"
_OF_KIND = "SELECT body FROM events INDEXED BY events_kind WHERE notebook_id = ? AND kind = ? ORDER BY seq"
_KEYED = "SELECT body FROM events WHERE notebook_id = ? AND dedup_key = ?"
_UNDECIDED = """
SELECT p.body FROM events p INDEXED BY events_kind
WHERE p.notebook_id = ? AND p.kind = 'action_proposed' AND p.action_id IS NOT NULL
AND NOT EXISTS (
    SELECT 1 FROM events d INDEXED BY events_action
    WHERE d.notebook_id = p.notebook_id AND d.action_id = p.action_id AND d.kind = 'action_decided'
)
ORDER BY p.seq
"""


class _Model(Protocol):
    """An event model of ``events.py`` (duck-typed: this module imports no pydantic)."""

    def model_dump(self, *, exclude: Any = None) -> dict[str, Any]: ...


NewEvent = Union[Mapping[str, Any], _Model]
"""What can be appended: an event model, or its fields as a mapping."""


class HistoryError(RuntimeError):
    """The history cannot be opened or written, with a message that says what to do."""


class UnreadableEvent(ValueError):
    """A stored event does not fit its model in ``events.py`` (the message says which, and why).

    Whoever decides on an action treats this as "no": an event that cannot be read
    may be the decision or the run that forbids another.
    """


def _typed(body: str) -> Event:
    # Imported here, not at the top: kernels import this module as they start, and only
    # the hosts' lookups need the models (by then the kernel imported them aside).
    from .events import parse_event

    try:
        # Through json.loads, not pydantic's own JSON parser: that one refuses the lone
        # surrogates ``_dumps`` writes as escapes (an undecodable file name in an output).
        return parse_event(json.loads(body))
    except ValueError as exc:  # pydantic's ValidationError and json's errors are ValueErrors
        msg = f"a stored event cannot be read ({body[:200]}): {exc}"
        raise UnreadableEvent(msg) from None


def default_path() -> Path:
    """``$AMBIENT_DB`` if set, else ``ambient_jupyter/history.sqlite`` in the Jupyter data dir."""
    env = os.environ.get("AMBIENT_DB")
    if env:
        return Path(env).expanduser()
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "ambient_jupyter" / "history.sqlite"


def normalize_notebook(notebook: str) -> str:
    """One spelling per notebook: an absolute path for files, other ids unchanged."""
    if not notebook:
        msg = "a notebook identifier is required"
        raise ValueError(msg)
    if "\x00" in notebook:
        msg = "a notebook identifier cannot contain NUL"
        raise ValueError(msg)
    if notebook.startswith(("kernel:", "ipython:")):
        return notebook
    return os.path.abspath(os.path.expanduser(notebook))


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (code & 0xFF) in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB: not a healthy database
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


class _Unusable(Exception):
    """Raised while opening: the file must be moved aside (the message says why)."""


def _check_version(version: int) -> None:
    if version > SCHEMA_VERSION:
        msg = f"schema version {version} is newer than this ambient-jupyter ({SCHEMA_VERSION})"
        raise _Unusable(msg)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _action_id(record: Any) -> str | None:
    """What the ``action_id`` column holds for an event: its ``action_id`` when that is a string."""
    value = record.get("action_id") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def _action_id_of_body(body: str) -> str | None:
    try:
        return _action_id(json.loads(body))
    except ValueError:
        return None


def _has_sql_json(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has the JSON functions (built in since 3.38, an option before)."""
    try:
        conn.execute("SELECT json_type('{}', '$.x')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def _tighten(path: str | os.PathLike[str], mode: int) -> None:
    """Drop every permission of ``path`` beyond ``mode``, if it is ours and looser."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if current & ~mode == 0 or st.st_uid != os.getuid():
        return
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        log.warning("%s can be read by others (mode %o) and could not be made private: %s", path, current, exc)
        return
    log.warning("%s could be read by others (mode %o); it is now private (%o)", path, current, current & mode)


def _make_private(path: Path, *, own_dir: bool) -> None:
    """Create ``path`` (and its folder) private to this user, before SQLite opens it.

    ``own_dir``: the folder is ours alone (the default location), so an existing
    one is tightened too; a folder named by ``AMBIENT_DB`` may be shared, and only
    the history's own files are.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif own_dir and os.name == "posix":
        _tighten(path.parent, 0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600))
    if os.name == "posix":
        for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}.lock"):
            _tighten(name, 0o600)


def _statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


class History:
    """A handle on the history file, safe to share between threads of one process.

    Parameters
    ----------
    path
        The SQLite file; defaults to :func:`default_path`.
    busy_timeout
        Seconds to wait for another process's write lock before giving up.
    redact
        Remove common secrets from every event before it is stored
        (:mod:`ambient_jupyter.redact`, best effort); default: ``$AMBIENT_REDACT``.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, busy_timeout: float = 30.0, redact: bool | None = None
    ):
        if redact is None:
            redact = os.environ.get("AMBIENT_REDACT", "").strip().lower() in ("1", "true", "yes", "on")
        self.redact = redact
        self._own_dir = path is None and not os.environ.get("AMBIENT_DB")
        self.path = Path(path) if path is not None else default_path()
        self._busy_ms = int(busy_timeout * 1000)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file self._conn has open
        self._open()

    # -- opening and recovery -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        _make_private(self.path, own_dir=self._own_dir)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is implicit.
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            _check_version(version)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("SQLite refused WAL mode for %s (got %s)", self.path, mode)
            conn.execute("PRAGMA synchronous=FULL")
            if version > 0:
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    msg = f"integrity check failed: {check}"
                    raise _Unusable(msg)
            if version < SCHEMA_VERSION:
                self._prepare_schema(conn)
            return conn
        except BaseException:
            conn.close()
            raise

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a new file, or upgrade an older one in place.

        Several processes may open the same new or old file at once. The write lock
        orders them, and each reads the version again once it holds the lock: the
        first does the work, the others find it done.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            _check_version(version)
            sql_json = _has_sql_json(conn)
            if version == 0:
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
            elif version == 1:
                self._upgrade_from_v1(conn, sql_json=sql_json)
            if sql_json:
                conn.execute(_FILL_TRIGGER)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _upgrade_from_v1(self, conn: sqlite3.Connection, *, sql_json: bool) -> None:
        started = time.monotonic()
        for statement in _statements(_MIGRATE_V1):
            conn.execute(statement)
        # Fill the new column from the stored bodies (inside the caller's transaction).
        if sql_json:
            conn.execute(_BACKFILL_SQL)
        else:
            # Without SQLite's JSON functions, Python reads the bodies; only rows that mention
            # the key at all are decoded (``_dumps`` writes keys quoted, with no space).
            conn.create_function("ambient_action_id", 1, _action_id_of_body, deterministic=True)
            try:
                conn.execute(_BACKFILL_PY)
            finally:
                conn.create_function("ambient_action_id", 1, None)
            log.warning(
                "This SQLite has no JSON functions: events that processes still running an older "
                "ambient-jupyter append to %s will not be found by action until they restart.",
                self.path,
            )
        log.info(
            "Upgraded the history %s from schema 1 to %d in %.1f s.",
            self.path,
            SCHEMA_VERSION,
            time.monotonic() - started,
        )

    def _reconnect(self) -> None:
        """``_connect``, retried while another process holds a lock; ``_conn`` then has the file at ``path`` open.

        Switching a fresh file to WAL and creating the schema can report "database is
        locked" at once, without SQLite's busy handler, when several processes open
        the same new file together; they simply take turns.
        """
        deadline = time.monotonic() + self._busy_ms / 1000
        delay = 0.005
        while True:
            try:
                self._conn = self._connect()
                self._file = _file_id(self.path)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    @contextlib.contextmanager
    def _file_lock(self, exclusive: bool) -> Iterator[None]:
        """``flock`` on ``<db>.lock``: shared while opening, exclusive while moving aside.

        Best effort: where there is no ``flock`` or the lock file cannot be created
        (a read-only directory), it does nothing, and moving aside still tolerates a
        race (see ``_move_aside``). Waits at most ``busy_timeout``.
        """
        fd = self._open_lock_file() if fcntl is not None else None
        if fd is None:
            yield
            return
        try:
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            deadline = time.monotonic() + self._busy_ms / 1000
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise HistoryError(self._locked_message(f"{self.path}.lock is held")) from None
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    break  # a file system without flock (some network mounts): go on without
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)  # also releases the lock

    def _open_lock_file(self) -> int | None:
        lock_path = Path(f"{self.path}.lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            return os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            log.debug("no lock file %s (%s); going on without it", lock_path, exc)
            return None

    def _locked_message(self, detail: object) -> str:
        return (
            f"the ambient-jupyter history at {self.path} is locked by another process "
            f"({detail}; waited {self._busy_ms / 1000:g} s). Another kernel or "
            "`ambient-jupyter run` is probably stuck holding it: stop that process and try "
            "again, or point AMBIENT_DB at another file."
        )

    def _open(self) -> None:
        for attempt in range(5):
            with self._file_lock(exclusive=False):
                found = _file_id(self.path)
                try:
                    self._reconnect()
                    return
                except _Unusable as exc:
                    why = str(exc)
                except sqlite3.DatabaseError as exc:
                    if isinstance(exc, sqlite3.OperationalError) and not _is_corruption(exc):
                        if _is_busy(exc):
                            raise HistoryError(self._locked_message(exc)) from None
                        msg = (
                            f"cannot open the ambient-jupyter history at {self.path}: {exc}. "
                            "Check that the directory is writable, or point AMBIENT_DB at another file."
                        )
                        raise HistoryError(msg) from None
                    why = f"not a usable SQLite database ({exc})"
            # Several processes may have found this file unusable at once: the first to
            # take the lock moves it aside; the others find a different file (or none)
            # at the path and open that instead.
            with self._file_lock(exclusive=True):
                if _file_id(self.path) != found and attempt < 4:
                    continue  # already moved aside by another process: open what is there now
                self._move_aside(why)
                self._reconnect()
                return

    def _move_aside(self, why: str) -> bool:
        """Rename the main file (and its -wal/-shm) to ``<name>.bad-<time>``.

        Returns False when the main file was already gone: another process moved it
        aside first, which is not an error.
        """
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = self.path.with_name(f"{self.path.name}.bad-{stamp}")
        try:
            self.path.rename(target)
        except FileNotFoundError:
            log.info("The unusable history file %s was already moved aside by another process.", self.path)
            return False
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").rename(Path(f"{target}{suffix}"))
        log.error(
            "The history file %s is unusable (%s). It was moved aside to %s and a new "
            "history was started; nothing was deleted.",
            self.path,
            why,
            target,
        )
        return True

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """The file went bad while in use: move it aside and start a fresh one."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        with self._file_lock(exclusive=True):
            # Another process using the same file may have moved it aside already.
            if self._file is not None and _file_id(self.path) == self._file:
                self._move_aside(f"became corrupt while in use ({exc})")
            self._reconnect()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            msg = "this History has been closed"
            raise HistoryError(msg)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------

    def append(self, notebook: str, event: NewEvent, *, dedup_key: str | None = None) -> dict[str, Any]:
        """Append one event and return it with ``seq`` and ``notebook`` set.

        Returns only after the transaction has committed (``synchronous=FULL``). When
        ``dedup_key`` was already used for this notebook, nothing is written and the
        stored event is returned instead: this is what makes a resent chat idempotent.
        """
        return self.append_many(notebook, [(event, dedup_key)])[0]

    def append_many(self, notebook: str, items: Sequence[tuple[NewEvent, str | None]]) -> list[dict[str, Any]]:
        """Append several events in one transaction (one disk sync for the batch)."""
        nb = normalize_notebook(notebook)
        # seq and notebook are the history's to assign.
        fields = [(e.model_dump(exclude={"seq", "notebook"}) if hasattr(e, "model_dump") else e, k) for e, k in items]
        if self.redact:
            # Before the write lock: the patterns run on this thread, not on everyone's time.
            fields = [(_redact(dict(event)), key) for event, key in fields]
        with self._lock:
            try:
                return self._append_locked(nb, fields)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._recover(exc)
                return self._append_locked(nb, fields)

    def _append_locked(self, nb: str, items: Sequence[tuple[Mapping[str, Any], str | None]]) -> list[dict[str, Any]]:
        conn = self.conn
        # One timestamp per transaction: its events are committed together, and this
        # runs on the kernel's writer thread, where every microsecond is the user's.
        now = now_iso()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT id, last_seq FROM notebooks WHERE path = ?", (nb,)).fetchone()
            if row is None:
                cur = conn.execute("INSERT INTO notebooks (path, last_seq, updated_at) VALUES (?, 0, ?)", (nb, now))
                nb_id, seq = cur.lastrowid, 0
            else:
                nb_id, seq = row
            stored: list[dict[str, Any]] = []
            rows: list[tuple[int | None, int, str, str | None, str, str | None]] = []
            keyed: dict[str, dict[str, Any]] = {}  # dedup keys first used in this batch
            for event, dedup_key in items:
                if dedup_key is not None:
                    dup = keyed.get(dedup_key)
                    if dup is None:
                        found = conn.execute(_KEYED, (nb_id, dedup_key)).fetchone()
                        dup = json.loads(found[0]) if found is not None else None
                    if dup is not None:
                        stored.append(dup)
                        continue
                seq += 1
                record = {**event, "seq": seq, "notebook": nb}
                record.setdefault("at", now)
                rows.append((nb_id, seq, str(record.get("kind", "")), dedup_key, _dumps(record), _action_id(record)))
                if dedup_key is not None:
                    keyed[dedup_key] = record
                stored.append(record)
            conn.executemany(
                "INSERT INTO events (notebook_id, seq, kind, dedup_key, body, action_id) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("UPDATE notebooks SET last_seq = ?, updated_at = ? WHERE id = ?", (seq, now, nb_id))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return stored

    # -- reading --------------------------------------------------------------

    def read(self, notebook: str, after: int = 0, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Events of ``notebook`` with ``seq > after``, oldest first."""
        sql = (
            "SELECT e.body FROM events e JOIN notebooks n ON n.id = e.notebook_id "
            "WHERE n.path = ? AND e.seq > ? ORDER BY e.seq LIMIT ?"
        )
        params = (normalize_notebook(notebook), after, -1 if limit is None else limit)  # a negative LIMIT: no limit
        with self._lock:
            rows = self.conn.execute(sql, params).fetchall()
        return [json.loads(body) for (body,) in rows]

    def iter_events(self, notebook: str, after: int = 0, *, page: int = 1000) -> Iterator[dict[str, Any]]:
        """Every event of ``notebook`` after ``after``, oldest first, read ``page`` at a time.

        A long history is never held whole in memory, and the lock is held only while
        a page is read, so appends go on while a caller works through the events.
        """
        if page < 1:
            msg = "page must be at least 1"
            raise ValueError(msg)
        while True:
            events = self.read(notebook, after, limit=page)
            yield from events
            if len(events) < page:
                return
            after = int(events[-1]["seq"])

    def find_action(self, notebook: str, action_id: str) -> tuple[ActionProposed | None, list[Event]]:
        """The ``action_proposed`` event of ``action_id``, and every other event that names it.

        The proposal is the first ``action_proposed`` with that id (None if there is
        none); the other events (decisions, outcomes, any later proposal with the
        same id) come in seq order. One indexed lookup: its cost does not grow with
        the notebook. Raises :class:`UnreadableEvent` if any of them does not fit its
        model: an action whose record cannot be read whole is not decided on.
        """
        proposal: ActionProposed | None = None
        related: list[Event] = []
        for body in self._bodies(notebook, _FIND_ACTION, action_id):
            event = _typed(body)
            if proposal is None and event.kind == "action_proposed":
                proposal = event
            else:
                related.append(event)
        return proposal, related

    def agent_mode(self, notebook: str, default: str) -> str:
        """The ``agent`` of the latest ``settings_changed`` event that sets a valid mode, else ``default``.

        Walks the notebook's settings changes newest first through an index, and stops
        at the first one whose ``agent`` is one of :data:`AGENT_MODES`.
        """
        with self._lock:
            nb_id = self._notebook_id(notebook)
            if nb_id is None:
                return default
            with contextlib.closing(self.conn.execute(_LATEST_OF_KIND, (nb_id, "settings_changed"))) as cursor:
                for (body,) in cursor:
                    agent = json.loads(body).get("agent")
                    if agent in AGENT_MODES:
                        return str(agent)
        return default

    def undecided(self, notebook: str) -> list[ActionProposed]:
        """Every ``action_proposed`` event that no ``action_decided`` names yet, oldest first.

        Through the indexes: the cost grows with the notebook's proposals, not its events.
        One that does not fit its model is given as stored, unchecked: enough to reject
        it by its ``action_id`` and ``sha256`` (it can never be approved here).
        """
        from .events import ActionProposed

        found: list[ActionProposed] = []
        for body in self._bodies(notebook, _UNDECIDED):
            try:
                event = _typed(body)
            except UnreadableEvent as exc:
                log.warning("%s", exc)
                try:
                    raw = json.loads(body)
                except ValueError:
                    continue  # not even JSON: nothing to name it by
                sha256 = raw.get("sha256")
                event = ActionProposed.model_construct(
                    **{**raw, "sha256": sha256 if isinstance(sha256, str) else None}
                )
            if event.kind == "action_proposed":
                found.append(event)
        return found

    def unanswered(self, notebook: str) -> list[UserMessage]:
        """Every ``user_message`` that no ``assistant_message`` replies to, oldest first.

        Through the kind index: the cost grows with the notebook's chat, not its events.
        """
        with self._lock:
            asked = self._bodies(notebook, _OF_KIND, "user_message")
            replied = {json.loads(b).get("reply_to") for b in self._bodies(notebook, _OF_KIND, "assistant_message")}
        found: list[UserMessage] = []
        for body in asked:
            try:
                event = _typed(body)
            except UnreadableEvent as exc:  # a question is not worth failing a recovery for
                log.warning("%s", exc)
                continue
            if event.kind == "user_message" and event.seq not in replied:
                found.append(event)
        return found

    def _notebook_id(self, notebook: str) -> int | None:
        row = self.conn.execute("SELECT id FROM notebooks WHERE path = ?", (normalize_notebook(notebook),)).fetchone()
        return int(row[0]) if row else None

    def _bodies(self, notebook: str, sql: str, *params: Any) -> list[str]:
        """The bodies ``sql`` selects with the notebook's id then ``params`` (none for an unknown notebook)."""
        with self._lock:
            nb_id = self._notebook_id(notebook)
            return [] if nb_id is None else [body for (body,) in self.conn.execute(sql, (nb_id, *params))]

    def last_seq(self, notebook: str) -> int:
        nb = normalize_notebook(notebook)
        with self._lock:
            row = self.conn.execute("SELECT last_seq FROM notebooks WHERE path = ?", (nb,)).fetchone()
        return int(row[0]) if row else 0

    def keyed(self, notebook: str, dedup_key: str) -> dict[str, Any] | None:
        """The event stored under ``dedup_key`` for this notebook, if any."""
        bodies = self._bodies(notebook, _KEYED, dedup_key)
        return json.loads(bodies[0]) if bodies else None

    def notebooks(self) -> list[tuple[str, int, str]]:
        """``(notebook, last_seq, updated_at)`` for every notebook, most recent first."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT path, last_seq, updated_at FROM notebooks ORDER BY updated_at DESC, id DESC"
            ).fetchall()
        return [(str(p), int(s), str(u)) for p, s, u in rows]

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "anything new?" probe."""
        with self._lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])


def _dumps(record: dict[str, Any]) -> str:
    # ensure_ascii keeps the stored text pure ASCII, so lone surrogates or odd bytes
    # that slipped through capture can never make SQLite reject a row.
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=repr)
