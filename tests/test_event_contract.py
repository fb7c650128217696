"""The event vocabulary is one contract: ``events.py`` for Python, and the sidebar's renderer.

The renderer (``labextension/src/conversation.ts``, also bundled as the chat widget's
view) has one card per kind; a kind the Python side can store but the renderer does not
know falls to a generic card, which is how a forgotten kind would slip by unseen.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from ambient_jupyter.events import Event, SettingsChanged, parse_event
from ambient_jupyter.kernel.writer import typed

SRC = Path(__file__).resolve().parent.parent / "labextension" / "src"


def _python_kinds() -> set[str]:
    union = typing.get_args(Event)[0]
    return {typing.get_args(model.model_fields["kind"].annotation)[0] for model in typing.get_args(union)}


def _rendered_kinds() -> set[str]:
    source = (SRC / "conversation.ts").read_text()
    switch = source[source.index("_nodeFor(") :]
    return set(re.findall(r"case '([a-z_]+)':", switch))


def test_the_renderer_has_a_card_for_every_kind_python_stores() -> None:
    python, rendered = _python_kinds(), _rendered_kinds()
    assert len(python) == 13
    assert python == rendered, {"not rendered": python - rendered, "not stored": rendered - python}


def test_the_renderer_names_every_host_that_can_set_the_mode() -> None:
    hosts = set(typing.get_args(SettingsChanged.model_fields["by"].annotation))
    cards = (SRC / "cards.ts").read_text()
    table = cards[cards.index("function settingsCard(") :]
    table = table[: table.index("};")]
    named = set(re.findall(r"(\w+): '", table))
    assert hosts == named


def test_the_writer_stores_what_the_model_checked() -> None:
    built = {"kind": "cell_executed", "cell_id": "c1", "code": "x = 1", "status": "ok", "execution_count": 3}
    stored = typed(built)
    assert stored == built  # only the fields the builder set: no defaults added
    assert parse_event({**stored, "seq": 1, "at": "2026-01-01T00:00:00+00:00"}).kind == "cell_executed"


@pytest.mark.parametrize(
    ("built", "field"),
    [
        ({"kind": "cell_executed", "code": "x", "status": "maybe"}, "status"),
        ({"kind": "widget_changed", "trait": "value"}, "widget_class"),
    ],
)
def test_an_event_that_misfits_is_kept_with_a_note_not_dropped(built: dict[str, object], field: str) -> None:
    stored = typed(built)
    assert {k: v for k, v in stored.items() if k != "invalid"} == built
    assert field in stored["invalid"]
