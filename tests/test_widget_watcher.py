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


def test_plumbing_is_not_recorded_and_values_carry_no_noise(queued: list) -> None:
    """An Output widget's msg_id routing, a picture inside a Box, colour codes in a value."""
    out = widgets.Output()
    # What `with out:` does in a kernel (outside one it does nothing): plumbing, not a change.
    out.msg_id = "a1b2c3"
    out.msg_id = ""
    out.outputs = ({"output_type": "stream", "name": "stdout", "text": "shown\n"},)
    assert [b()["trait"] for b in queued] == ["outputs"]
    picture = widgets.Image(value=b"\x89PNG" + b"\x00" * 50_000, format="png")
    box = widgets.VBox()
    box.children = [picture]
    (children,) = [b() for b in queued if b()["trait"] == "children"]
    assert children["new"] == [f"<Image {picture.model_id[:8]}>"]
    label = widgets.Label()
    label.value = "\x1b[31mred\x1b[0m alert"
    assert queued[-1]()["new"] == "red alert"


def test_an_output_widgets_value_is_summarised_within_its_budget(queued: list) -> None:
    """An Output widget changes at every flush of a loop printing into it: each change is
    recorded, so each stays small (the newest outputs kept, the rest counted), with no
    picture data and no colour codes."""
    out = widgets.Output()
    png = "iVBORw0KGgo" * 1000
    out.outputs = tuple(
        [{"output_type": "stream", "name": "stdout", "text": f"\x1b[31mline {i}\x1b[0m " + "x" * 100}
         for i in range(200)]
        + [{"output_type": "display_data", "data": {"image/png": png, "text/plain": "<Figure>"}, "metadata": {}}]
    )
    event = queued[-1]()
    new = event["new"]
    assert event["trait"] == "outputs" and event["widget_class"] == "Output"
    # The budget (the output limit), give or take a trim marker and the count of the rest.
    assert 2000 <= sum(len(o.get("text", "")) for o in new) <= 2000 + 2 * 80
    picture = [{"type": "image", "mime": "image/png", "bytes": len(png) * 3 // 4},
               {"type": "display", "text": "<Figure>"}]
    assert new[-2:] == picture
    assert new[-3]["text"] == "line 199 " + "x" * 100
    dropped = int(new[0]["text"].split()[0][1:])
    assert new[0]["text"].endswith("earlier outputs not kept]") and dropped + len(new) - 2 == 201
    assert "\x1b" not in str(new)
