"""The widget watcher's hot path: what a queued event keeps alive until the writer runs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets
import pytest

from ambient_jupyter.kernel.widgets import WidgetWatcher


@pytest.fixture
def queued() -> Iterator[list[Callable[[], dict[str, Any]]]]:
    """Builders as the writer's queue holds them: not yet run."""
    builders: list[Callable[[], dict[str, Any]]] = []
    watcher = WidgetWatcher(builders.append)
    assert watcher.start()
    yield builders
    watcher.stop()


def test_a_queued_change_does_not_keep_a_binary_buffer_alive(queued: list) -> None:
    image = widgets.Image(format="png")
    buffers = [bytes([i]) * 2_000_000 for i in range(5)]
    alone = [sys.getrefcount(b) for b in buffers]
    for buffer in buffers:
        image.value = buffer
    del buffer  # the loop's own reference to the last one
    image.value = b""
    # Six changes wait in the queue, with an old and a new value each, yet no buffer is
    # referenced by them: dragging an image through many values piles nothing up.
    assert len(queued) == 6
    assert [sys.getrefcount(b) for b in buffers] == alone
    events = [build() for build in queued]
    assert [e["new"] for e in events] == [{"binary_bytes": 2_000_000}] * 5 + [{"binary_bytes": 0}]
    assert events[1]["old"] == {"binary_bytes": 2_000_000}


def test_a_huge_string_is_trimmed_before_it_is_queued(queued: list) -> None:
    area = widgets.Textarea()
    text = "z" * 3_000_000
    alone = sys.getrefcount(text)
    area.value = text
    area.value = ""
    assert sys.getrefcount(text) == alone
    new = queued[0]()["new"]
    assert "original size 3,000,000 chars" in new and len(new) < 3000
    # Small values keep their type and are shaped on the writer thread.
    slider = widgets.IntSlider(value=3)
    slider.value = 7
    assert (queued[-1]()["old"], queued[-1]()["new"]) == (3, 7)
