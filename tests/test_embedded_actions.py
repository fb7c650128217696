"""Constrained decoding on the real embedded model (SmolLM2-135M): every output is a valid action.

The benchmark ``benchmarks/p8_constrained_actions.py`` measures this over 100 requests;
this test keeps the two properties it rests on: the constraint emits JSON any parser
accepts (no raw control characters inside strings, which llama-cpp-python's own
converter allows), and a rambling model is always closed within its token budget.
Both engines are held to them: llguidance's masks (what the backend uses) and
llama.cpp's grammar (its fallback when llguidance cannot serve a schema).
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import numpy as np
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
        assert backend.constrained_by == "llguidance"
        # Tokens that were half a character (a lone backslash) do not count.
        return out, backend.usage.completion_tokens - backend.given_back

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


def _constraint(engine: str, llm: object, schema: dict[str, object], bias: dict[int, float]) -> dict[str, object]:
    """What ``create_completion`` is given to hold its output to ``schema``, pushed by ``bias``.

    The bias is a logits processor of our own, after the constraint: llama-cpp-python's
    ``logit_bias`` argument silently drops every other logits processor
    (``logits_processor = logits_processor.extend(...)``, which is None).
    """
    from llama_cpp import LogitsProcessorList

    def push(_ids: object, logits: np.ndarray) -> np.ndarray:
        for token, value in bias.items():
            logits[token] += value
        return logits

    if engine == "gbnf":
        from ambient_jupyter.backends.llamacpp import _grammar

        # llama.cpp's grammar stage comes after the custom stage in the sampler chain.
        return {"grammar": _grammar(json.dumps(schema)), "logits_processor": LogitsProcessorList([push])}
    from ambient_jupyter.backends._guide import guide_for

    guide = guide_for(llm, schema)
    assert guide is not None, "llguidance could not serve the schema"
    return {"logits_processor": LogitsProcessorList([guide, push])}


ENGINES = pytest.mark.parametrize("engine", ["llguidance", "gbnf"])


@ENGINES
def test_the_grammar_never_lets_a_raw_newline_into_a_string(engine: str) -> None:
    llm = _llama()
    schema = action_schema(("explain",), max_tokens=64)
    prompt = llm.tokenize(b"Write two lines of text.", add_bos=False)  # type: ignore[attr-defined]
    # Every token holding a raw newline is pushed up hard: a grammar that allows
    # control characters inside strings lets them through.
    bias = dict.fromkeys(_tokens_with(llm, "\n"), 15.0)
    out = llm.create_completion(  # type: ignore[attr-defined]
        prompt, max_tokens=64, temperature=0.0, **_constraint(engine, llm, schema, bias)
    )
    raw = out["choices"][0]["text"]
    value = json.loads(raw)
    jsonschema.validate(value, schema)


@ENGINES
def test_a_string_that_will_not_end_is_closed_within_the_budget(engine: str) -> None:
    llm = _llama()
    max_tokens = 96
    schema = action_schema(("explain",), max_tokens=max_tokens)
    prompt = llm.tokenize(b"Say something.", add_bos=False)  # type: ignore[attr-defined]
    # Every token that could end the string is pushed down: only the length limit
    # in the schema can close it before the budget runs out.
    bias = dict.fromkeys(_tokens_with(llm, '"'), -15.0)
    constraint = _constraint(engine, llm, schema, bias)
    # llguidance: the backend gives back each half-character token (a lone backslash:
    # this vocabulary writes an escaped newline as two tokens), so it may write up to
    # twice the budget, and stops at the budget plus those tokens.
    ceiling = max_tokens if engine == "gbnf" else 2 * max_tokens
    out = llm.create_completion(  # type: ignore[attr-defined]
        prompt, max_tokens=ceiling, temperature=0.0, **constraint
    )
    raw = out["choices"][0]["text"]
    assert out["choices"][0]["finish_reason"] == "stop", raw
    if engine == "llguidance":
        guide = constraint["logits_processor"][0]  # type: ignore[index]
        assert out["usage"]["completion_tokens"] <= max_tokens + guide.halves + 1, (out["usage"], guide.halves)
    value = json.loads(raw)
    jsonschema.validate(value, schema)


def test_llguidance_counts_half_characters_and_allows_no_unicode_escapes() -> None:
    """A lone backslash (half an escape) is counted, to be given back to the budget; a
    \\u escape (six tokens for one character) is never allowed; a whole escape is."""
    from ambient_jupyter.backends._guide import guide_for

    llm = _llama()
    schema = action_schema(("explain",), max_tokens=96)
    guide = guide_for(llm, schema)
    assert guide is not None
    n_vocab = llm.n_vocab()  # type: ignore[attr-defined]
    prompt = llm.tokenize(b"Say something.", add_bos=False)  # type: ignore[attr-defined]
    guide(np.array(prompt), np.zeros(n_vocab, dtype=np.float32))  # the prompt: llama-cpp-python's first call
    written = prompt + llm.tokenize(b'{"action": "explain", "text": "a\\nb\\n', add_bos=False)  # type: ignore[attr-defined]
    logits = guide(np.array(written), np.zeros(n_vocab, dtype=np.float32))
    assert guide.failed is None
    assert guide.halves == 2  # each escaped newline: a backslash token, then "n..."
    allowed = {t for t in range(n_vocab) if logits[t] > -np.inf}
    backslash = llm.tokenize(b"\\", add_bos=False)  # type: ignore[attr-defined]
    assert backslash[0] in allowed, "an escape must stay possible"
    # After a backslash, "u" never follows: only the short escapes do.
    escaping = guide(np.array([*written, backslash[0]]), np.zeros(n_vocab, dtype=np.float32))
    after = {llm.detokenize([t])[:1] for t in range(n_vocab) if escaping[t] > -np.inf}  # type: ignore[attr-defined]
    assert b"u" not in after and b"n" in after and b'"' in after, after


def test_a_guide_that_fails_says_so_and_leaves_the_logits_alone() -> None:
    """llama-cpp-python calls the guide through ctypes-backed sampling, where an exception
    would escape as a bare traceback: a token outside the schema, or an error of the
    guide's own, is recorded in ``failed`` (the backend then stops the output)."""
    from ambient_jupyter.backends._guide import guide_for

    llm = _llama()
    schema = action_schema(("explain",), max_tokens=96)
    n_vocab = llm.n_vocab()  # type: ignore[attr-defined]
    prompt = llm.tokenize(b"Say something.", add_bos=False)  # type: ignore[attr-defined]

    outside = guide_for(llm, schema)
    assert outside is not None
    outside(np.array(prompt), np.zeros(n_vocab, dtype=np.float32))
    wrong = prompt + llm.tokenize(b"Hello", add_bos=False)  # type: ignore[attr-defined]
    logits = outside(np.array(wrong), np.zeros(n_vocab, dtype=np.float32))
    assert outside.failed and (logits == 0).all()

    broken = guide_for(llm, schema)
    assert broken is not None
    logits = broken(np.array(prompt), None)  # what no sampler should pass: the guide fails, not the call
    assert broken.failed and broken.failed.startswith("llguidance failed") and logits is None


def test_without_llguidance_the_backend_falls_back_to_llamas_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance -> ImportError
    schema = action_schema(("explain",), max_tokens=96)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Say hello."}]

    async def go() -> tuple[str, str | None]:
        backend = LlamaCppBackend()
        out = await backend.complete(messages, json_schema=schema, max_tokens=96)
        return out, backend.constrained_by

    raw, engine = asyncio.run(go())
    assert engine == "gbnf"
    jsonschema.validate(json.loads(raw), schema)
