"""The server's host: one room per notebook, fed from the history, fanned out to sockets.

Every event a client sees comes from one place, :meth:`Room.pump`, which reads the
history after the last seq it sent and hands each event to every subscriber (other
frames, such as tokens, status and a ``run`` for one tab, are sent as they happen). Kernel
events reach the history from the kernel process; the hub notices them by polling
SQLite's ``data_version`` (a cheap "did another connection commit?" probe). Events the
server stores itself (chat, replies, decisions) pump at once. One path means every tab
sees the same events in the same order, whoever wrote them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..act import ActEngine
from ..assistant import Assistant, Role, Turn
from ..backends import resolve_backend
from ..config import AmbientSettings
from ..events import KernelDied, KernelState
from ..gate import AGENT_MODES
from ..history import History
from ..tail import Tail
from ..warm import Warmer
from .handoff import Frame, FrameError, Handoff, Subscriber
from .paths import NotebookRef

__all__ = ["Hub", "HubSettings", "KernelCallError", "KernelRunner", "Room"]

log = logging.getLogger("ambient_jupyter.server")

REPLAY_PAGE = 1000
_EXPERT = re.compile(r"/expert(?:\s+|$)")
"""``/expert question``: the question goes to the expert model."""


class KernelRunner(Protocol):
    """Run code silently in the kernel of a notebook's session.

    Raises :class:`LookupError` when the notebook has no kernel here, and
    :class:`KernelCallError` when the kernel answered with an error or not within
    ``timeout`` seconds (None: the server's default)."""

    def __call__(self, api_path: str, code: str, timeout: float | None = None) -> Awaitable[None]: ...


class KernelCallError(RuntimeError):
    """The kernel did not run the code (its error, or no answer in time)."""


@dataclass
class HubSettings:
    """The server-only settings, and the assistant's settings (the one :class:`AmbientSettings`)."""

    assistant: AmbientSettings = field(default_factory=AmbientSettings)
    poll_interval: float = 0.05
    client_queue_limit: int = 2000
    state_timeout: float = 2.0
    max_pending_chats: int = 2
    client_frame_rate: float = 100.0
    client_frame_burst: int = 500


class Room:
    """One notebook's conversation in this server: its subscribers and its assistant."""

    def __init__(self, hub: Hub, ref: NotebookRef, start_seq: int, agent: str) -> None:
        self.hub = hub
        self.ref = ref
        self.subscribers: dict[Subscriber, None] = {}
        """In the order they arrived (a dict, as an ordered set)."""
        self.tail = Tail(hub.history, ref.notebook_id, REPLAY_PAGE, start_seq)
        self.live_from = start_seq
        """Only failures after this seq are diagnosed (never a replayed old one)."""
        self.state = "idle"
        self.reply_id: str | None = None
        self.state_note: str | None = None
        """The last note stored for a failed state request (not repeated question after question)."""
        self._pump_lock = asyncio.Lock()
        self._pending: dict[Subscriber, int] = {}
        """Questions of each client that are waiting or being answered (bounded)."""
        self.assistant = Assistant.from_settings(
            hub.history,
            ref.notebook_id,
            hub.settings.assistant,
            agent=agent,
            on_token=self._on_token,
            on_event=self._on_stored,
        )
        self.api_path = ref.api_path
        self.handoff = Handoff(self, ActEngine(self.assistant), lambda a: hub.run_plugin(ref, a), hub.spawn)
        # The model reads each quiet moment's new events, so a failure costs only itself:
        # in the notebook active last only, since the model holds one prompt at a time.
        self.warmer = Warmer(
            self.assistant,
            busy=lambda: hub.kernel_busy(ref),
            wanted=lambda: hub.warm_notebook == ref.notebook_id,
            enabled=hub.settings.assistant.warm,
        )

    def warm(self) -> None:
        """This notebook is the active one now: the model reads it at the next quiet moment."""
        self.hub.warm_notebook = self.ref.notebook_id
        self.warmer.poke()

    # -- fan-out --------------------------------------------------------------

    def _public(self, event: dict[str, Any]) -> dict[str, Any]:
        # Clients know the notebook by its contents path; the server's absolute path
        # stays on the server.
        return {**event, "notebook": self.ref.api_path}

    def broadcast(self, frame: Frame) -> None:
        for sub in list(self.subscribers):
            sub.send(frame)

    async def pump(self) -> None:
        """Send every stored event after the live position, in order, to every subscriber."""
        async with self._pump_lock:
            while True:
                page = await asyncio.to_thread(self.tail.live)
                if page:
                    self.warm()
                for event in page:
                    seq = int(event["seq"])
                    frame = {"type": "event", "event": self._public(event)}
                    for sub in list(self.subscribers):
                        if seq > sub.seen:
                            sub.seen = seq
                            sub.send(frame)
                    await self._observe(event)
                if not self.tail.more(page):
                    return

    async def subscribe(self, sub: Subscriber, after_seq: int, tail: int | None = None) -> None:
        """Replay what ``sub`` missed, then add it to the live stream (no gap, no duplicate).

        The replay is paced by the client (it waits while the client's queue is half
        full), so a long history reaches a slow tab without overflowing the queue that
        protects everyone else from it. It runs outside the pump lock, chasing the live
        position, so the other tabs keep getting live frames meanwhile; only the last
        stretch, what was committed during the replay, is sent under the lock.

        ``tail``: replay only that many of the newest events; ``ready`` then says
        where the replay began (``replayed_from``), and the tab reads older ones on request.
        """
        async with self._pump_lock:
            start, reset = self.tail.start(after_seq)
            after = start if tail is None else max(start, self.tail.sent_seq - tail)
        replayed_from = after if after > start else 0  # > 0: older events were left out
        while page := await asyncio.to_thread(self.tail.backlog, after):
            for event in page:
                if not await sub.room_for_more():
                    return  # the tab left during the replay
                sub.send({"type": "event", "event": self._public(event)})
            after = int(page[-1]["seq"])
        async with self._pump_lock:
            while page := await asyncio.to_thread(self.tail.backlog, after):
                for event in page:
                    sub.send({"type": "event", "event": self._public(event)})
                after = int(page[-1]["seq"])
            sub.seen = after
            self.subscribers[sub] = None
        ready = {"type": "ready", "notebook": self.ref.api_path, "last_seq": sub.seen, "reset": reset}
        sub.send({**ready, "replayed_from": replayed_from})
        sub.send(self._status())
        self.warm()  # someone is looking at this notebook: it is the one to keep warm
        # Whatever was committed while we replayed goes out now.
        await self.pump()

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.pop(sub, None)

    def _status(self) -> Frame:
        return {
            "type": "status",
            "notebook": self.ref.api_path,
            "state": self.state,
            "reply_id": self.reply_id,
            "model": self.assistant.model_spec,
            "expert": self.assistant.expert_spec,
            "agent": self.assistant.agent,
        }

    def _set_state(self, state: str, reply_id: str | None = None) -> None:
        if (state, reply_id) != (self.state, self.reply_id):
            self.state, self.reply_id = state, reply_id
            self.broadcast(self._status())

    async def _on_token(self, reply_id: str, text: str) -> None:
        self._set_state("streaming", reply_id)
        self.broadcast({"type": "token", "notebook": self.ref.api_path, "reply_id": reply_id, "text": text})

    async def _on_stored(self, _event: dict[str, Any]) -> None:
        await self.pump()

    # -- reacting to what happens in the notebook ------------------------------

    async def _observe(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "settings_changed" and event.get("agent") in AGENT_MODES:
            # From the sidebar or a kernel's %ambient: the notebook's mode, for every host.
            if event["agent"] != self.assistant.agent:
                self.assistant.agent = event["agent"]
                self.broadcast(self._status())
            return
        if kind != "cell_executed":
            return
        self.handoff.cell_ran(event)
        fresh = int(event.get("seq", 0)) > self.live_from
        if fresh and self.assistant.should_react(event) and await self.hub.is_open_here(self.ref):
            self.hub.spawn(self._react(event))

    async def _react(self, event: dict[str, Any]) -> None:
        self._set_state("thinking")
        try:
            turn = await self.assistant.react(event)
        finally:
            self._set_state("idle")
        if turn is not None:
            await self._after_turn(turn)

    async def recover(self) -> None:
        """Sidebar questions that no reply answers were left by a server that died mid-turn
        (this room is new, so no turn of this process is under way): each gets an
        ``incomplete`` reply saying so, and the tab shows it instead of waiting forever."""
        questions = await asyncio.to_thread(self.hub.history.unanswered, self.ref.notebook_id)
        for question in questions:
            if question.source == "sidebar":
                log.warning("question %s in %s was never answered: marked interrupted", question.seq, self.ref.api_path)
                await self.assistant.interrupted(question)

    # -- what clients ask for ---------------------------------------------------

    def chat(self, text: str, client_id: str | None, sub: Subscriber, cells: dict[int, str]) -> None:
        role: Role = "watcher"
        expert = _EXPERT.match(text.lstrip())
        if expert:
            if not self.assistant.expert_spec:
                raise FrameError(
                    "No expert model is set for this server: start it with AMBIENT_EXPERT=openai:<name> "
                    "(plus OPENAI_BASE_URL and OPENAI_API_KEY), or set c.AmbientSettings.expert."
                )
            text = text.lstrip()[expert.end() :].strip()
            if not text:
                raise FrameError("write your question after /expert")
            role = "expert"
        limit = self.hub.settings.max_pending_chats
        if self._pending.get(sub, 0) >= limit:
            # A flood (a stuck key, a script) must not queue hours of model turns.
            raise FrameError(
                f"busy: {limit} of your questions are still waiting for an answer; wait for them, "
                "or press Stop (which also drops the ones waiting). Nothing was sent."
            )
        self._pending[sub] = self._pending.get(sub, 0) + 1
        self.hub.spawn(self._chat(text, client_id, role, sub, cells))

    async def _chat(self, text: str, client_id: str | None, role: Role, sub: Subscriber, cells: dict[int, str]) -> None:
        if not self.assistant.streaming:
            self._set_state("thinking")
        try:
            turn = await self.assistant.ask(
                text,
                source="sidebar",
                client_id=client_id,
                role=role,
                cells=cells,
                before_turn=lambda: self.hub.kernel_state(self, text),
            )
        finally:
            left = self._pending.pop(sub, 1) - 1
            if left > 0:
                self._pending[sub] = left
            self._set_state("idle")
        await self._after_turn(turn, sub)

    async def _after_turn(self, turn: Turn, sub: Subscriber | None = None) -> None:
        """Each proposal goes to the gate: the mode may decide it, else a person does.

        The kernel's candidate is stored before the model speaks, so it stands even if
        the model's reply was cut; the model's own proposal only from a complete reply.
        """
        for proposal in turn.proposals:
            if proposal.origin == "hint" or turn.state == "complete":
                await self.handoff.apply_policy(proposal, sub)

    async def set_agent(self, agent: Literal["off", "ask", "auto"]) -> None:
        await self.handoff.acts.set_mode(agent, "sidebar")
        await self.pump()


class Hub:
    """Every room of this server, the history they share, and the background work."""

    def __init__(
        self,
        history: History,
        settings: HubSettings,
        resolve: Callable[[object], NotebookRef],
        open_notebooks: Callable[[], Awaitable[set[str]]],
        kernel_runner: KernelRunner,
        background: Sequence[Callable[[], Awaitable[None]]],
        kernel_busy: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.history = history
        self.settings = settings
        self.resolve = resolve
        self._open_notebooks = open_notebooks
        self._kernel_runner = kernel_runner
        self._background = background
        """More work for the hub's lifetime (the server's kernel-death watch)."""
        self._kernel_busy = kernel_busy
        self.warm_notebook: str | None = None
        """The notebook whose room may warm the model: the one with the latest activity
        (new events, a tab joining). One per process, as the model keeps one prompt cached."""
        self.rooms: dict[str, Room] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._room_lock = asyncio.Lock()

    async def room(self, ref: NotebookRef) -> Room:
        # Also started here: some embedders (pytest-jupyter among them) never call the
        # extension's start hook.
        self.start()
        async with self._room_lock:
            room = self.rooms.get(ref.notebook_id)
            if room is None:
                start, agent = await asyncio.to_thread(self._room_state, ref.notebook_id)
                room = self.rooms[ref.notebook_id] = Room(self, ref, start, agent)
                await room.recover()
                if self.warm_notebook is None:
                    room.warm()  # read the notebook so far before anything is asked

            return room

    def _room_state(self, notebook: str) -> tuple[int, str]:
        """The last seq of a notebook, and its agent mode (the latest one set, else the default)."""
        return self.history.last_seq(notebook), self.history.agent_mode(notebook, self.settings.assistant.agent)

    async def run_plugin(self, ref: NotebookRef, action_id: str) -> str | None:
        """Ask the notebook's kernel to run an approved plugin action (it re-checks the
        approval); why it could not, or None."""
        code = f"__import__('ambient_jupyter.plugins', fromlist=['dispatch']).dispatch({action_id!r})"
        try:
            await self._kernel_runner(ref.api_path, code)
        except (LookupError, KernelCallError) as exc:
            return str(exc)
        return None

    async def kernel_state(self, room: Room, question: str) -> None:
        """Ask the notebook's kernel to record what the question concerns, before the turn.

        Bounded by ``state_timeout``: a busy or dead kernel gets a ``kernel_state`` note
        instead, so the model knows its picture of the objects may be out of date.
        """
        # An expression, so nothing lands in the person's namespace; and only if the
        # kernel is recording (the package is imported there already).
        code = (
            f"(lambda m: m.record_state({question!r}) if m else None)"
            "(__import__('sys').modules.get('ambient_jupyter.kernel'))"
        )
        try:
            await self._kernel_runner(room.ref.api_path, code, self.settings.state_timeout)
            room.state_note = None
            return
        except LookupError:
            note = "no kernel is running for this notebook, so its objects could not be looked at"
        except KernelCallError as exc:
            note = f"the kernel could not be asked what it holds ({exc}); the last state above is the latest known"
        if note == room.state_note:
            return  # already said, and nothing came in between to change it
        room.state_note = note
        await asyncio.to_thread(self.history.append, room.ref.notebook_id, KernelState(note=note))
        await room.pump()

    async def kernel_died(self, ref: NotebookRef, code: str, key: str | None = None) -> None:
        """Record that the notebook's kernel died (running ``code``, or idle if empty), once per ``key``.

        Only for a notebook whose history exists: a kernel that never recorded
        anything is not watched, and its notebook gets no history from us.
        """
        if not await asyncio.to_thread(self.history.last_seq, ref.notebook_id):
            return
        await asyncio.to_thread(self.history.append, ref.notebook_id, KernelDied(code=code, by="server"), dedup_key=key)
        log.warning("the kernel of %s died%s", ref.api_path, " while a cell ran" if code else "")
        room = await self.room(ref)
        await room.pump()

    async def is_open_here(self, ref: NotebookRef) -> bool:
        """True if the notebook has a kernel session in this server (so we host it)."""
        try:
            return ref.api_path in await self._open_notebooks()
        except Exception:  # a session manager hiccup must not kill the watcher
            log.exception("could not list the server's sessions")
            return False

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ambient-jupyter background task failed", exc_info=task.exception())

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
            self.spawn(self._discover())
            for work in self._background:
                self.spawn(work())
            self.spawn(self._load_model())

    async def _load_model(self) -> None:
        """Load the default model now, in the background, rather than at the first question
        (an in-process model takes seconds to load; the loaded weights are shared)."""
        spec = self.settings.assistant.model
        try:
            backend = await resolve_backend(spec)
            started = asyncio.get_running_loop().time()
            try:
                await backend.load()
            finally:
                await backend.aclose()  # the weights stay loaded (shared); its connections go
            log.info("ambient-jupyter: model %s ready in %.1f s", backend.spec,
                     asyncio.get_running_loop().time() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (said again, to the person, at the first turn)
            log.warning("ambient-jupyter could not load the model %s ahead of use: %s", spec, exc)

    async def kernel_busy(self, ref: NotebookRef) -> bool:
        """True while the notebook's kernel runs code (the model then waits to read)."""
        try:
            return await self._kernel_busy(ref.api_path)
        except Exception:  # noqa: BLE001 (not knowing is not busy)
            return False

    async def _discover(self) -> None:
        """Give every notebook with a kernel here a room, so its failures get diagnosed
        even before a sidebar looks at it. A room counts failures only from its
        creation on, so this runs on a timer, ahead of the user's first cell."""
        while True:
            try:
                for path in await self._open_notebooks():
                    try:
                        ref = self.resolve(path)
                    except ValueError:
                        continue  # not a notebook under the root (e.g. a console)
                    if ref.notebook_id not in self.rooms:
                        await self.room(ref)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ambient-jupyter could not list the open notebooks")
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        # Replies being written are cut and stored as incomplete before anything else is
        # cancelled and the history closed (else the question is left with no answer
        # at all); bounded, so that a shutdown never hangs on it.
        try:
            await asyncio.wait_for(asyncio.gather(*(r.assistant.stopped() for r in self.rooms.values())), 5.0)
        except asyncio.TimeoutError:
            log.warning("ambient-jupyter: a reply could not be stored before shutdown")
        await asyncio.gather(*(r.warmer.close() for r in self.rooms.values()))
        tasks = [t for t in (self._watcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watcher = None
        await asyncio.to_thread(self.history.close)

    async def _watch(self) -> None:
        """Notice commits by other processes (kernels, runners) and pump the rooms."""
        seen = -1
        while True:
            try:
                version = await asyncio.to_thread(self.history.data_version)
                if version != seen:
                    seen = version
                    for room in list(self.rooms.values()):
                        await room.pump()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching; the next poll may succeed
                log.exception("ambient-jupyter could not read the history")
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.settings.poll_interval)
