"""Pictures reach models that can see (bounded in size and count); others read figures as text."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import events_of, make_notebook, run_with_nbclient
from fakes.ollama_server import FakeOllama
from fakes.openai_server import FakeOpenAI

from ambient_jupyter.assistant import Assistant
from ambient_jupyter.backends.ollama import OllamaBackend
from ambient_jupyter.backends.openai import OpenAIBackend
from ambient_jupyter.history import History

PLOT = """
%matplotlib inline
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([1, 3, 2])
ax.set_title('Sales by month')
plt.show()
"""
HUGE = """
from IPython.display import Image, display
import base64, os
display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(400_000), format='png'))
"""


@pytest.fixture
def recorded(tmp_path: Path, history: History) -> tuple[History, str]:
    """A real kernel's record of a small plot, a 400 KB picture, and a second plot."""
    cells = ["%load_ext ambient_jupyter", PLOT, HUGE, PLOT.replace("1, 3", "3, 1")]
    nb = make_notebook(tmp_path / "plots.ipynb", cells)
    run_with_nbclient(nb, env={"AMBIENT_QUIET": "1", "AMBIENT_NOTEBOOK": str(nb)})
    return history, str(nb)


def images_of(history: History, notebook: str) -> list[dict[str, Any]]:
    return [o for c in events_of(history, notebook, "cell_executed") for o in c["outputs"] if o["type"] == "image"]


def test_small_plots_are_kept_and_big_pictures_only_measured(recorded: tuple[History, str]) -> None:
    history, nb = recorded
    small, huge, second = images_of(history, nb)
    assert small["mime"] == "image/png" and 0 < small["bytes"] <= 256 * 1024 and small["data"]
    assert huge["bytes"] > 256 * 1024 and "data" not in huge
    assert second["data"] != small["data"]


def ask(history: History, notebook: str, backend: Any) -> None:
    async def run() -> None:
        assistant = Assistant(history, notebook, backend)
        await assistant.ask("what does my plot show?")

    asyncio.run(run())


def test_a_model_that_sees_gets_the_newest_pictures_on_the_last_message(recorded: tuple[History, str]) -> None:
    history, nb = recorded
    small, _huge, second = images_of(history, nb)
    with FakeOllama() as fake:
        fake.vision = {"tiny:1b"}
        fake.reply = "A line that goes up and down."
        ask(history, nb, OllamaBackend("tiny:1b", host=fake.url))
        [request] = fake.chat_requests()
    messages = request["messages"]
    assert messages[-1]["images"] == [small["data"], second["data"]]  # newest last, at most two
    assert all("images" not in m for m in messages[:-1])  # the cached prefix is untouched
    assert "what does my plot show?" in messages[-1]["content"]


def test_a_model_that_cannot_see_gets_no_pictures(recorded: tuple[History, str]) -> None:
    history, nb = recorded
    with FakeOllama() as fake:
        fake.reply = "I cannot see it."
        ask(history, nb, OllamaBackend("tiny:1b", host=fake.url))
        [request] = fake.chat_requests()
    assert all("images" not in m for m in request["messages"])
    assert "[image image/png" in json.dumps(request["messages"])  # it still learns a picture was shown


def test_an_openai_compatible_model_gets_image_parts_when_told_it_sees(
    recorded: tuple[History, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    history, nb = recorded
    monkeypatch.setenv("AMBIENT_VISION", "1")
    with FakeOpenAI() as fake:
        fake.reply = "It rises, then falls."
        ask(history, nb, OpenAIBackend("fake-gpt", base_url=fake.base_url))
        last = fake.chat_requests()[-1]["messages"][-1]
    kinds = [part["type"] for part in last["content"]]
    assert kinds == ["text", "image_url", "image_url"]
    assert last["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_open_figures_are_described_in_text_for_models_that_cannot_see(tmp_path: Path, history: History) -> None:
    cells = [
        "%load_ext ambient_jupyter",
        # Kept open on purpose (no inline backend closing it after the cell).
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 5], label='units')\nax.set_title('Units by shop')\n"
        "ax.set_ylabel('units')\nax.legend()",
        "total = sum(untis)",
    ]
    nb = make_notebook(tmp_path / "figure.ipynb", cells)
    run_with_nbclient(nb, env={"AMBIENT_QUIET": "1", "AMBIENT_NOTEBOOK": str(nb), "MPLBACKEND": "Agg"})
    failed = next(c for c in events_of(history, nb, "cell_executed") if c["status"] == "error")
    described = {e["name"]: e["text"] for e in failed["state"]}
    figure = described["<figure 1>"]
    assert "title 'Units by shop'" in figure and "y 'units'" in figure, figure
    assert "2 bars" in figure and "legend ['units']" in figure, figure
