"""Constrained decoding on the real embedded model (SmolLM2-135M): every output is a valid action.

The benchmark ``benchmarks/p8_constrained_actions.py`` measures this over 100 requests;
this test keeps the two properties it rests on: the grammar emits JSON any parser
accepts (no raw control characters inside strings, which llama-cpp-python's own
converter allows), and a rambling model is always closed within its token budget.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from ambient_jupyter.actions import action_schema
from ambient_jupyter.backends.llamacpp import LlamaCppBackend
from ambient_jupyter.context import SYSTEM_PROMPT

pytestmark = pytest.mark.model

FAILED_CELL = (
    "[cell 1 ran: error, 3 ms]\n```python\nvalues = [1, 2, 3]\nprint(values[5])\n```\n"
    "Error: IndexError: list index out of range"
)


@pytest.mark.parametrize(
    ("allowed", "request_text", "max_tokens"),
    [
        # Code with several lines: newlines must come out escaped.
        (("insert_cell",), "Write a fixed version that loops over values and prints each one on its own line.", 256),
        # A long answer in a small budget: the string limit closes it in time.
        (("explain",), "Write a very long, detailed tutorial on pandas with many numbered steps.", 96),
        (("explain", "insert_cell", "edit_cell", "run_cell", "propose_next_cell"), "Fix it.", 160),
    ],
)
def test_constrained_outputs_parse_strictly_and_fit_their_budget(
    allowed: tuple[str, ...], request_text: str, max_tokens: int
) -> None:
    schema = action_schema(allowed, cells=[1], max_tokens=max_tokens)
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": FAILED_CELL},
        {"role": "user", "content": request_text},
    ]

    async def go() -> tuple[str, int]:
        backend = LlamaCppBackend()
        out = await backend.complete(messages, json_schema=schema, max_tokens=max_tokens)
        return out, backend.usage.completion_tokens

    raw, tokens = asyncio.run(go())
    value = json.loads(raw)  # strict: a raw control character inside a string fails here
    jsonschema.validate(value, schema)
    assert value["action"] in allowed and value["text"]
    assert tokens <= max_tokens


# -- the two properties, forced: the model is pushed towards the failure by logit bias --


def _llama() -> object:
    backend = LlamaCppBackend()
    return backend._model()


def _tokens_with(llm: object, needle: str) -> list[int]:
    found = []
    for token in range(llm.n_vocab()):  # type: ignore[attr-defined]
        piece = llm.detokenize([token]).decode("utf-8", "replace")  # type: ignore[attr-defined]
        if needle in piece:
            found.append(token)
    return found


def test_the_grammar_never_lets_a_raw_newline_into_a_string() -> None:
    from ambient_jupyter.backends.llamacpp import _grammar

    llm = _llama()
    schema = action_schema(("explain",), max_tokens=64)
    prompt = llm.tokenize(b"Write two lines of text.", add_bos=False)  # type: ignore[attr-defined]
    # Every token holding a raw newline is pushed up hard: a grammar that allows
    # control characters inside strings lets them through.
    bias = dict.fromkeys(_tokens_with(llm, "\n"), 15.0)
    out = llm.create_completion(  # type: ignore[attr-defined]
        prompt, grammar=_grammar(json.dumps(schema)), logit_bias=bias, max_tokens=64, temperature=0.0
    )
    raw = out["choices"][0]["text"]
    value = json.loads(raw)
    jsonschema.validate(value, schema)


def test_a_string_that_will_not_end_is_closed_within_the_budget() -> None:
    from ambient_jupyter.backends.llamacpp import _grammar

    llm = _llama()
    max_tokens = 96
    schema = action_schema(("explain",), max_tokens=max_tokens)
    prompt = llm.tokenize(b"Say something.", add_bos=False)  # type: ignore[attr-defined]
    # Every token that could end the string is pushed down: only the length limit
    # in the schema can close it before the budget runs out.
    bias = dict.fromkeys(_tokens_with(llm, '"'), -15.0)
    out = llm.create_completion(  # type: ignore[attr-defined]
        prompt, grammar=_grammar(json.dumps(schema)), logit_bias=bias, max_tokens=max_tokens, temperature=0.0
    )
    raw = out["choices"][0]["text"]
    assert out["choices"][0]["finish_reason"] == "stop", raw
    value = json.loads(raw)
    jsonschema.validate(value, schema)
