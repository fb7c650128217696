"""The transcript is append-only, bounded, and cuts rarely at stable points."""

from __future__ import annotations

from typing import Any

from ambient_jupyter.context import Transcript, render_event


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def cell(seq: int, code: str, *, error: bool = False, out: str = "") -> dict[str, Any]:
    event: dict[str, Any] = {
        "seq": seq, "kind": "cell_executed", "code": code, "execution_count": seq,
        "status": "error" if error else "ok", "duration_ms": 1.0,
        "outputs": [{"type": "stream", "name": "stdout", "text": out}] if out else [],
    }
    if error:
        event["error"] = {"ename": "KeyError", "evalue": "'x'", "traceback": ["KeyError: 'x'"]}
    return event


def is_prefix(short: list[dict[str, str]], long: list[dict[str, str]]) -> bool:
    return long[: len(short)] == short


def test_new_events_are_appended_never_spliced() -> None:
    t = Transcript(budget=100_000, count_tokens=approx_tokens)
    previous = t.messages()
    for seq in range(1, 60):
        t.extend([cell(seq, f"x{seq} = {seq}", out=str(seq))])
        current = t.messages()
        assert is_prefix(previous, current)
        assert len(current) == len(previous) + 1
        previous = current
    assert t.cuts == 0


def test_budget_is_kept_and_cuts_are_rare_and_stable() -> None:
    budget = 2000
    t = Transcript(budget=budget, count_tokens=approx_tokens)
    previous = t.messages()
    prefix_breaks = 0
    for seq in range(1, 1001):
        t.extend([cell(seq, f"value_{seq} = compute({seq})", out="ok " * 10, error=seq % 97 == 0)])
        current = t.messages()
        assert sum(approx_tokens(m["content"]) + 4 for m in current) <= budget
        if not is_prefix(previous, current):
            prefix_breaks += 1
        previous = current
    # Each cut drops half the window at once: a few dozen cuts for 1,000 events,
    # and the prompt prefix is stable between them.
    assert t.cuts == prefix_breaks
    assert 1 <= t.cuts <= 60
    summary = t.messages()[1]["content"]
    assert "Earlier in this notebook" in summary and "KeyError" in summary


def test_one_huge_event_cannot_take_over_the_context() -> None:
    t = Transcript(budget=4000, count_tokens=approx_tokens)
    t.extend([cell(1, "print(big)", out="y" * 1_000_000)])
    message = t.messages()[-1]["content"]
    assert len(message) < 4000 and "original size" in message


def test_rendering_is_deterministic_and_skips_errors_of_the_model() -> None:
    event = cell(3, "df.x", error=True)
    assert render_event(event) == render_event(dict(event))
    assert "KeyError" in render_event(event)["content"]  # type: ignore[index]
    assert render_event({"seq": 4, "kind": "model_error", "message": "down", "model": "m"}) is None
    failed = {"seq": 5, "kind": "assistant_message", "text": "", "model": "m", "state": "error"}
    assert render_event(failed) is None
    widget = {"seq": 6, "kind": "widget_changed", "widget": "abc", "widget_class": "IntSlider",
              "description": "speed", "trait": "value", "old": 1, "new": 2}
    assert render_event(widget) == {"role": "user", "content": "[widget IntSlider 'speed' value: 1 -> 2]"}


def test_outputs_read_in_order_and_an_update_says_what_it_changed() -> None:
    event = {
        "kind": "cell_executed", "code": "h.update('after')", "execution_count": 4, "status": "ok",
        "outputs": [
            {"type": "stream", "name": "stdout", "text": "a\n", "chars": 2},
            {"type": "display", "text": "'d'", "display_id": "abc"},
            {"type": "stream", "name": "stdout", "text": "e\n", "chars": 2},
            {"type": "update", "text": "'after'", "display_id": "5300ccd732bb"},
        ],
    }
    content = str(render_event(event)["content"])  # type: ignore[index]
    assert content.index("a\n") < content.index("'d'") < content.index("e\n")
    assert "[updated display 5300ccd7 shown earlier to:] 'after'" in content


def test_a_kernel_death_with_no_cell_is_said_plainly() -> None:
    named = render_event({"kind": "kernel_died", "code": "big = load()", "by": "server"})
    unnamed = render_event({"kind": "kernel_died", "code": "", "by": "server"})
    assert named is not None and "big = load()" in str(named["content"])
    assert unnamed is not None and unnamed["content"] == (
        "[the kernel died; every variable is gone until the cells run again]"
    )
