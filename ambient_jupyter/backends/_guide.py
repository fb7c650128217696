"""JSON-schema decoding for llama.cpp through llguidance: token masks in microseconds.

Why not llama.cpp's own grammar sampler: it checks the grammar against every token
of the vocabulary at every step, which on the embedded model takes decoding from
about 115 to about 72 tokens/s (benchmark P12). llguidance walks the vocabulary as a
trie against a lexer and a parser it keeps between steps, so one mask costs a few
hundred microseconds and constrained decoding runs at the speed of free decoding.

The mask is applied as a llama-cpp-python logits processor, the first stage of its
sampler chain, where the logits are still in token-id order. The processor feeds
the matcher the tokens sampled since its last call (llama-cpp-python has evaluated
them by then), so it needs no hook after sampling.

When llguidance is not installed, or cannot compile a schema, the caller falls back
to llama.cpp's grammar: slower, same guarantee.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["SchemaGuide", "guide_for", "prepare_guidance"]

log = logging.getLogger("ambient_jupyter.backends")

_tokenizers: dict[int, Any] = {}
_tokenizers_lock = threading.Lock()


def _tokenizer(llm: Any) -> tuple[Any, list[int]]:
    """llguidance's view of the model's vocabulary, and the tokens that are a lone backslash.

    Built once per loaded model (~0.3 s). A lone backslash inside a JSON string is half
    an escape, a token that adds no character (this vocabulary has no ``\\n`` token:
    every newline in code costs two). The schema's string limits count one character
    per token at least (``actions.Limits``), so the backend gives each such token back
    to the budget (:attr:`SchemaGuide.halves`); ``\\u`` escapes (six tokens for one
    character) are not allowed at all.
    """
    import llama_cpp
    import llguidance.llamacpp

    key = id(llm)
    with _tokenizers_lock:
        found = _tokenizers.get(key)
        if found is None or found[0] is not llm:
            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            with warnings.catch_warnings():
                # llguidance calls llama_token_get_attr, deprecated in llama-cpp-python: once per token.
                warnings.simplefilter("ignore", DeprecationWarning)
                tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(vocab)
            halves = [t for t in range(int(llm.n_vocab())) if llm.detokenize([t]) == b"\\"]
            found = (llm, tokenizer, halves)
            _tokenizers[key] = found
        return found[1], found[2]


def prepare_guidance(llm: Any) -> None:
    """Build the vocabulary tables now (a host loading the model ahead of use); no-op without llguidance."""
    with contextlib.suppress(ImportError):
        _tokenizer(llm)


@functools.lru_cache(maxsize=64)
def _compiled(schema_json: str) -> str:
    """The llguidance grammar for a schema (cached: a notebook's schemas repeat)."""
    import llguidance

    # Compact, deterministic separators and no free whitespace: a small model offered
    # any amount of whitespace between tokens can spend its whole budget on newlines.
    return llguidance.LLMatcher.grammar_from_json_schema(
        schema_json,
        overrides={
            "whitespace_flexible": False,
            "item_separator": ", ",
            "key_separator": ": ",
            "json_allowed_escapes": '"\\bfnrt',  # no u escapes (and "/" needs none)
        },
    )


class SchemaGuide:
    """A logits processor that allows only tokens that keep the output valid for one schema.

    One per generation: it holds the matcher's state. At its first call ``input_ids``
    is the evaluated prompt; every id after that is one the model wrote.
    """

    def __init__(self, tokenizer: Any, grammar: str, n_vocab: int, halves: Sequence[int] = ()) -> None:
        import llguidance
        import numpy as np  # here, not at import: the server imports this module without the [embedded] extra

        self._np = np
        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self._matcher.is_error():
            msg = f"llguidance could not compile the schema: {self._matcher.get_error()}"
            raise ValueError(msg)
        self._consumed: int | None = None
        self._n_vocab = n_vocab
        self._mask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self._halves = frozenset(halves)
        self.halves = 0
        """Tokens written so far that added no character (a lone backslash)."""
        self.failed: str | None = None
        """Why the matcher gave up (a token it refused, an error of its own): the backend stops there."""

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        if self.failed is not None:
            return logits
        # llama-cpp-python calls this through its sampler, where an exception would end
        # the whole generation with a bare traceback: any failure here is recorded in
        # ``failed`` instead, and the backend stops the output at once.
        try:
            return self._constrain(input_ids, logits)
        except Exception as exc:  # noqa: BLE001 (reported through ``failed``)
            self._fail(f"llguidance failed: {exc}")
            return logits

    def _fail(self, why: str) -> None:
        self.failed = why
        log.warning("constrained decoding stopped constraining: %s", why)

    def _constrain(self, input_ids: Any, logits: Any) -> Any:
        if self._consumed is None:
            self._consumed = len(input_ids)
        new = input_ids[self._consumed :]
        if len(new):
            self._consumed += len(new)
            self.halves += sum(1 for t in new if int(t) in self._halves)
            if not self._matcher.consume_tokens([int(t) for t in new]):
                self._fail(self._matcher.get_error() or "a token outside the schema was sampled")
                return logits
        self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        if self._matcher.is_error():  # an empty mask would let nothing through: say so instead
            self._fail(self._matcher.get_error() or "llguidance could not compute the next mask")
            return logits
        np = self._np
        allowed = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[: self._n_vocab]
        logits[allowed[: len(logits)] == 0] = -np.inf
        return logits


def guide_for(llm: Any, schema: dict[str, Any]) -> SchemaGuide | None:
    """A :class:`SchemaGuide` for this generation, or None if llguidance cannot serve it."""
    try:
        grammar = _compiled(json.dumps(schema))
        tokenizer, halves = _tokenizer(llm)
        return SchemaGuide(tokenizer, grammar, int(llm.n_vocab()), halves)
    except ImportError:
        return None
    except (ValueError, RuntimeError) as exc:
        log.warning("llguidance cannot serve this schema (%s); using llama.cpp's grammar", exc)
        return None
