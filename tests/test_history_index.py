"""Schema v2: lookups by action and by kind through indexes, and the upgrade of v1 files.

Real SQLite files throughout. A v1 file is made here exactly as the v1 code made it
(its schema and its INSERT), so the upgrade is tested against what users have on disk.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import ambient_jupyter.history as history_mod
from ambient_jupyter.events import ActionDecided, ActionProposed, Event, UserMessage, parse_event
from ambient_jupyter.gate import AGENT_MODES as GATE_AGENT_MODES
from ambient_jupyter.history import AGENT_MODES, SCHEMA_VERSION, History, UnreadableEvent

NB = "kernel:index-test"
OTHER = "kernel:other-notebook"

# The v1 schema, verbatim from history.py before schema 2.
V1_SCHEMA = """
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
    PRIMARY KEY (notebook_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_dedup
    ON events (notebook_id, dedup_key) WHERE dedup_key IS NOT NULL;
"""
V1_INSERT = "INSERT INTO events (notebook_id, seq, kind, dedup_key, body) VALUES (?, ?, ?, ?, ?)"


def _v1_dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=repr)


def _cell(i: int) -> dict[str, Any]:
    return {"kind": "cell_executed", "cell_id": f"c{i}", "code": f"x = {i}", "status": "ok"}


def _proposal(action_id: str, code: str = "x = 1") -> dict[str, Any]:
    return {"kind": "action_proposed", "action_id": action_id, "action": "insert_cell", "code": code, "sha256": "h"}


def _decided(action_id: str, decision: str = "approved") -> dict[str, Any]:
    return {"kind": "action_decided", "action_id": action_id, "decision": decision, "by": "user", "sha256": "h"}


def _executed(action_id: str) -> dict[str, Any]:
    return {"kind": "action_executed", "action_id": action_id, "ok": True}


def _mode(agent: object) -> dict[str, Any]:
    return {"kind": "settings_changed", "agent": agent, "by": "sidebar"}


def _scan(history: History, notebook: str, action_id: str) -> tuple[Event | None, list[Event]]:
    """What find_action must return, worked out the slow way (every event read, then typed)."""
    proposal, related = None, []
    for event in history.read(notebook):
        if event.get("action_id") != action_id:
            continue
        if proposal is None and event.get("kind") == "action_proposed":
            proposal = parse_event(event)
        else:
            related.append(parse_event(event))
    return proposal, related


def _make_v1(db: Path, notebooks: dict[str, list[tuple[dict[str, Any], str | None]]]) -> None:
    """A v1 file as the v1 code wrote it: WAL, the v1 schema, its rows, user_version 1."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, V1_SCHEMA.split(";")):
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        for path, items in notebooks.items():
            nb_id = conn.execute(
                "INSERT INTO notebooks (path, last_seq, updated_at) VALUES (?, 0, ?)", (path, "2024-01-01T00:00:00Z")
            ).lastrowid
            rows = []
            for seq, (event, dedup_key) in enumerate(items, start=1):
                record = {**event, "seq": seq, "notebook": path, "at": "2024-01-01T00:00:00.000+00:00"}
                rows.append((nb_id, seq, str(record.get("kind", "")), dedup_key, _v1_dumps(record)))
            conn.executemany(V1_INSERT, rows)
            conn.execute("UPDATE notebooks SET last_seq = ? WHERE id = ?", (len(items), nb_id))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _v1_events() -> list[tuple[dict[str, Any], str | None]]:
    return [
        (_mode("auto"), None),
        (_cell(1), None),
        (_proposal("old-1"), None),
        (_cell(2), None),
        (_decided("old-1"), "decide:old-1"),
        (_proposal("old-2", "y = 2"), None),
        (_mode("ask"), None),
        (_executed("old-1"), "executed:old-1"),
        (_decided("old-2", "rejected"), "decide:old-2"),
        (_mode("bogus"), None),
        (_cell(3), None),
    ]


def _raw(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _version(db: Path) -> int:
    return int(_raw(db, "PRAGMA user_version")[0][0])


# -- find_action -------------------------------------------------------------------


def test_find_action_returns_the_proposal_and_its_events_among_many(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        batch: list[tuple[dict[str, Any], str | None]] = []
        for i in range(3000):
            batch.append((_cell(i), None))
            if i % 100 == 7:
                a = f"a{i}"
                batch += [(_proposal(a), None), (_cell(-i), None), (_decided(a), None)]
                if i % 200 == 7:
                    batch.append((_executed(a), None))
        # The same ids in another notebook must not leak in.
        h.append_many(OTHER, [(_proposal("a7"), None), (_decided("a7", "rejected"), None)])
        h.append_many(NB, batch)
        # A second proposal under an id is an event about it, not the proposal.
        h.append(NB, _proposal("a7", "x = 2"))
        # Only a string action_id counts.
        h.append(NB, {"kind": "note", "action_id": 7})
        h.append(NB, {"kind": "note", "args": {"action_id": "a7"}})

        proposal, related = h.find_action(NB, "a7")
        assert isinstance(proposal, ActionProposed) and proposal.code == "x = 1" and proposal.notebook == NB
        assert [e.kind for e in related] == ["action_decided", "action_executed", "action_proposed"]
        assert [e.seq for e in related] == sorted(e.seq for e in related)
        assert isinstance(related[0], ActionDecided) and related[0].decision == "approved"

        ids = {e["action_id"] for e, _ in batch if "action_id" in e}
        assert len(ids) == 30
        for action_id in ids:
            assert h.find_action(NB, action_id) == _scan(h, NB, action_id)
        assert h.find_action(NB, "nope") == (None, [])
        assert h.find_action("kernel:never-seen", "a7") == (None, [])
        assert h.find_action(OTHER, "a7")[1][0].decision == "rejected"  # type: ignore[union-attr]


def test_an_action_whose_record_cannot_be_read_is_not_decided_on(tmp_path: Path) -> None:
    """A decision that does not fit its model (written by a newer version, or damaged) may
    be the one that forbids a run: the lookup refuses rather than passing it over."""
    with History(tmp_path / "h.sqlite") as h:
        h.append(NB, _proposal("a1"))
        h.append(NB, {**_decided("a1"), "decision": "maybe"})
        with pytest.raises(UnreadableEvent, match="decision"):
            h.find_action(NB, "a1")
        # What waits still names a proposal it cannot read, so switching off can reject it.
        h.append(NB, {**_proposal("a2"), "sha256": None})
        h.append(NB, _proposal("a3"))
        waiting = h.undecided(NB)
        assert [(e.action_id, e.sha256) for e in waiting] == [("a2", None), ("a3", "h")]


def test_text_that_is_not_valid_unicode_is_still_read_back(tmp_path: Path) -> None:
    """A file name that is not UTF-8 reaches an output or a plugin's result as a lone
    surrogate, which the store keeps as an escape: the typed lookups read it back."""
    odd = os.fsdecode(b"caf\xe9.csv")
    with History(tmp_path / "h.sqlite") as h:
        h.append(NB, _proposal("a1"))
        h.append(NB, {"kind": "action_executed", "action_id": "a1", "ok": True, "result": odd})
        h.append(NB, {"kind": "user_message", "text": f"why does {odd} fail?", "source": "sidebar"})
        _proposal_found, (executed,) = h.find_action(NB, "a1")
        assert executed.result == odd  # type: ignore[union-attr]
        assert [e.text for e in h.unanswered(NB)] == [f"why does {odd} fail?"]


def test_decisions_without_a_proposal_are_still_found(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        h.append(NB, _decided("orphan"))
        assert h.find_action(NB, "orphan") == (None, [parse_event(e) for e in h.read(NB)])


# -- agent_mode ----------------------------------------------------------------------


def test_agent_mode_is_the_latest_valid_setting(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        assert h.agent_mode(NB, "ask") == "ask"  # no such notebook yet
        h.append(NB, _cell(0))
        assert h.agent_mode(NB, "off") == "off"  # no setting yet
        h.append(NB, _mode("auto"))
        h.append_many(NB, [(_cell(i), None) for i in range(2000)])
        assert h.agent_mode(NB, "ask") == "auto"
        h.append(NB, _mode("off"))
        h.append(NB, _mode("ask"))
        # Invalid values after the last valid one are skipped, however many there are.
        for bad in ("bogus", None, 3, "ASK", ["auto"]):
            h.append(NB, _mode(bad))
        h.append(NB, {"kind": "settings_changed", "by": "sidebar"})
        assert h.agent_mode(NB, "off") == "ask"
        # An agent on another kind of event is not a setting.
        h.append(NB, {"kind": "user_message", "agent": "auto"})
        assert h.agent_mode(NB, "off") == "ask"
        h.append(OTHER, _mode("auto"))
        assert h.agent_mode(NB, "off") == "ask"
        assert h.agent_mode(OTHER, "off") == "auto"
        assert h.agent_mode("kernel:never-seen", "auto") == "auto"


def test_agent_modes_are_the_gates() -> None:
    assert AGENT_MODES == GATE_AGENT_MODES


# -- the queries use the indexes -------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (history_mod._FIND_ACTION, "events_action"),
        (history_mod._LATEST_OF_KIND, "events_kind"),
        (history_mod._UNDECIDED, "events_kind"),
        (history_mod._UNDECIDED, "events_action"),
        (history_mod._OF_KIND, "events_kind"),
    ],
)
def test_lookups_search_an_index_without_sorting(tmp_path: Path, sql: str, index: str) -> None:
    with History(tmp_path / "h.sqlite") as h:
        h.append_many(NB, [(_cell(i), None) for i in range(50)])
        params = (1,) if sql.count("?") == 1 else (1, "x")
        plan = " | ".join(row[-1] for row in h.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert f"USING INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# -- iter_events ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 9, 10, 11, 25])
def test_iter_events_pages_through_everything_after(tmp_path: Path, count: int) -> None:
    with History(tmp_path / "h.sqlite") as h:
        h.append_many(NB, [(_cell(i), None) for i in range(count)])
        every = h.read(NB)
        assert list(h.iter_events(NB, page=10)) == every
        assert list(h.iter_events(NB, 3, page=10)) == every[3:]
        assert list(h.iter_events(NB, page=1)) == every
        with pytest.raises(ValueError, match="page"):
            list(h.iter_events(NB, page=0))


# -- upgrading a v1 file --------------------------------------------------------------------


@pytest.mark.parametrize("sql_json", [True, False], ids=["sqlite-json", "python-json"])
def test_v1_file_is_upgraded_in_place_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sql_json: bool
) -> None:
    db = tmp_path / "history.sqlite"
    events = _v1_events()
    _make_v1(db, {NB: events, OTHER: [(_proposal("old-1", "z = 0"), None), (_mode("off"), None)]})
    before = _raw(db, "SELECT notebook_id, seq, kind, dedup_key, body FROM events ORDER BY notebook_id, seq")
    if not sql_json:
        # As on an SQLite built without its JSON functions: the bodies are read in Python.
        monkeypatch.setattr(history_mod, "_has_sql_json", lambda _conn: False)

    with History(db) as h:
        assert _version(db) == SCHEMA_VERSION == 2
        old = h.read(NB)
        assert [(e["seq"], e["kind"]) for e in old] == [(n, e["kind"]) for n, (e, _) in enumerate(events, start=1)]
        proposal, related = h.find_action(NB, "old-1")
        assert proposal is not None and proposal.seq == 3 and proposal.code == "x = 1"
        assert [(e.kind, e.seq) for e in related] == [("action_decided", 5), ("action_executed", 8)]
        assert h.find_action(NB, "old-2")[1][0].decision == "rejected"  # type: ignore[union-attr]
        assert h.find_action(OTHER, "old-1")[0].code == "z = 0"  # type: ignore[union-attr]
        assert h.agent_mode(NB, "off") == "ask"  # "bogus" came later and does not count
        assert h.agent_mode(OTHER, "ask") == "off"
        # Dedup keys written by v1 still hold, and seq goes on from where v1 left it.
        assert h.append(NB, _decided("old-1"), dedup_key="decide:old-1")["seq"] == 5
        assert h.append(NB, _executed("old-2"))["seq"] == len(events) + 1
        assert [e.kind for e in h.find_action(NB, "old-2")[1]] == ["action_decided", "action_executed"]

    # Nothing was rewritten but the new column.
    after = _raw(db, "SELECT notebook_id, seq, kind, dedup_key, body FROM events ORDER BY notebook_id, seq")
    assert [row for row in after if row in before] == before
    assert [row[:4] for row in after if row not in before] == [(1, len(events) + 1, "action_executed", None)]
    filled = _raw(db, "SELECT body, action_id FROM events WHERE seq <= ? ORDER BY notebook_id, seq", (len(events),))
    for body, action_id in filled:
        assert action_id == json.loads(body).get("action_id")
    names = {name for (name,) in _raw(db, "SELECT name FROM sqlite_master")}
    assert {"events_action", "events_kind", "events_dedup"} <= names
    # Reopening an upgraded file changes nothing.
    with History(db) as h:
        assert _version(db) == 2
        assert len(h.read(NB)) == len(events) + 1


def test_rows_a_v1_writer_appends_after_the_upgrade_are_found(tmp_path: Path) -> None:
    # A kernel started before the upgrade still runs the v1 code, which inserts without
    # the new column; its decisions and outcomes must not be missed by find_action.
    db = tmp_path / "history.sqlite"
    _make_v1(db, {NB: _v1_events()})
    with History(db) as h:
        assert h.find_action(NB, "old-2")[1] == [parse_event(h.read(NB)[8])]
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            nb_id = conn.execute("SELECT id FROM notebooks WHERE path = ?", (NB,)).fetchone()[0]
            seq = h.last_seq(NB) + 1
            record = {**_executed("old-2"), "seq": seq, "notebook": NB}
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(V1_INSERT, (nb_id, seq, "action_executed", "executed:old-2", _v1_dumps(record)))
            conn.execute("UPDATE notebooks SET last_seq = ? WHERE id = ?", (seq, nb_id))
            conn.execute("COMMIT")
        finally:
            conn.close()
        assert [e.kind for e in h.find_action(NB, "old-2")[1]] == ["action_decided", "action_executed"]


def test_a_file_newer_than_v2_is_still_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    _make_v1(db, {NB: _v1_events()})
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=3")
    conn.commit()
    conn.close()
    with History(db) as h:
        assert h.read(NB) == []
    assert len(list(tmp_path.glob("history.sqlite.bad-*"))) >= 1
    assert _version(db) == 2


def _open_v1_together(db: str, worker: str, barrier: Any, results: Any) -> None:
    """Child process: open the v1 file when every child is ready, look things up, append one event."""
    try:
        barrier.wait(timeout=60)
        with History(db) as h:
            proposal, related = h.find_action(NB, "old-1")
            results.put(
                (
                    worker,
                    proposal.seq if proposal else None,
                    [e.kind for e in related],
                    h.agent_mode(NB, "off"),
                    h.append(NB, {"kind": "w", "worker": worker})["seq"],
                )
            )
    except BaseException as exc:
        results.put((worker, "error", repr(exc), None, None))
        raise


def test_processes_opening_one_v1_file_together_upgrade_it_once(tmp_path: Path) -> None:
    # Enough events that the upgrade takes a while, so the second opener arrives while
    # the first still holds the write lock (it must then find the work done, not redo it).
    db = tmp_path / "history.sqlite"
    filler = [(_cell(i), None) for i in range(20_000)]
    events = [*_v1_events(), *filler]
    _make_v1(db, {NB: events})
    ctx = multiprocessing.get_context("spawn")
    workers = 2
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_open_v1_together, args=(str(db), f"w{n}", barrier, results)) for n in range(workers)]
    for p in procs:
        p.start()
    try:
        got = sorted(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * workers, got
    for _worker, proposal_seq, kinds, mode, _seq in got:
        assert (proposal_seq, kinds, mode) == (3, ["action_decided", "action_executed"], "ask")
    assert sorted(seq for *_, seq in got) == [len(events) + 1, len(events) + 2]

    assert _version(db) == 2
    with History(db) as h:
        stored = h.read(NB)
        assert len(stored) == len(events) + workers
        assert [e["seq"] for e in stored] == list(range(1, len(events) + workers + 1))
        assert [(e["kind"], e.get("cell_id")) for e in stored[: len(events)]] == [
            (e["kind"], e.get("cell_id")) for e, _ in events
        ]
        assert sorted(e["worker"] for e in stored[len(events) :]) == ["w0", "w1"]
    columns = [row[1] for row in _raw(db, "PRAGMA table_info(events)")]
    assert columns.count("action_id") == 1


def test_undecided_lists_only_proposals_with_no_decision(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        assert h.undecided(NB) == []
        h.append(NB, _proposal("a1"))
        h.append(NB, _cell(1))
        h.append(NB, _proposal("a2"))
        h.append(NB, _proposal("a3"))
        h.append(OTHER, _proposal("a4"))
        h.append(NB, _decided("a2"))
        h.append(NB, _executed("a3"))  # an outcome is not a decision
        assert [e.action_id for e in h.undecided(NB)] == ["a1", "a3"]
        h.append(NB, _decided("a1", "rejected"))
        assert [e.action_id for e in h.undecided(NB)] == ["a3"]
        assert [e.action_id for e in h.undecided(OTHER)] == ["a4"]
        assert h.undecided("kernel:never-seen") == []


def test_unanswered_lists_questions_with_no_reply(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        assert h.unanswered(NB) == []
        q1 = h.append(NB, {"kind": "user_message", "text": "one", "source": "sidebar"})
        q2 = h.append(NB, {"kind": "user_message", "text": "two", "source": "sidebar"})
        h.append(NB, _cell(1))
        h.append(NB, {"kind": "assistant_message", "text": "an answer", "reply_to": q1["seq"]})
        h.append(NB, {"kind": "assistant_message", "text": "a reaction", "reply_to": 3})  # to the cell
        h.append(OTHER, {"kind": "user_message", "text": "elsewhere", "source": "sidebar"})
        assert [(type(e), e.text) for e in h.unanswered(NB)] == [(UserMessage, "two")]
        h.append(NB, {"kind": "assistant_message", "text": "late", "reply_to": q2["seq"]})
        assert h.unanswered(NB) == []
        assert [e.text for e in h.unanswered(OTHER)] == ["elsewhere"]
