/**
 * The "Ambient" sidebar: the active notebook's conversation, live.
 *
 * It follows the notebook tracker, holds one `Conversation` per notebook in
 * memory, speaks the `ambient/ws` protocol over one `AmbientConnection`,
 * shows and sets the notebook's agent mode, and runs the approved actions the
 * server hands to this tab (`run` frames).
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import {
  IRenderMimeRegistry,
  markdownRendererFactory,
  MimeModel,
  RenderMimeRegistry
} from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { currentSource, notebookPath, runApproved, RunOutcome, undoApplied } from './agent';
import { MarkdownRenderer, ProposalCard } from './cards';
import { AmbientConnection, ConnectionState, NotebookSocket } from './connection';
import { Conversation, IConversationOwner } from './conversation';
import { button, h } from './dom';
import { AGENT_MODES, AgentMode, IRunFrame, ServerFrame } from './protocol';
import { AmbientSanitizer } from './sanitize';
import { Composer, FollowEnd, modelText } from './shell';
import { NotebookWatch, WatchState } from './watch';

const CONNECTION_TEXT: Record<ConnectionState, string> = {
  open: 'connected',
  connecting: 'connecting…',
  closed: 'disconnected'
};

const MODE_TEXT: Record<AgentMode, string> = {
  off: 'off: only talk',
  ask: 'ask: run once approved',
  auto: 'auto: run without asking'
};

const WATCH_TEXT: Record<WatchState, string> = {
  watching: 'Watching',
  off: 'Not watching',
  pending: 'Watching…',
  unsupported: 'Not supported',
  unavailable: 'Not available',
  nokernel: 'No kernel'
};

/** What the watch button can switch from. */
const TOGGLABLE: readonly WatchState[] = ['watching', 'off', 'unavailable'];

const PLACEHOLDER = 'Ask about this notebook… (start with /expert to ask the expert model)';

export namespace AmbientPanel {
  export interface IOptions {
    tracker: INotebookTracker;
    rendermime: IRenderMimeRegistry;
  }
}

export class AmbientPanel extends Widget implements IConversationOwner {
  readonly render: MarkdownRenderer;
  readonly source = 'sidebar';

  constructor(options: AmbientPanel.IOptions) {
    super();
    this.addClass('jp-Ambient');
    this._tracker = options.tracker;
    const render = markdownRenderer(options.rendermime);
    // Replies grow once their markdown is rendered: keep the view pinned to the end.
    this.render = (host, markdown) => void render(host, markdown).then(() => this._follow.soon());

    this._notebookName = h('span', { className: 'jp-Ambient-notebook' });
    this._model = h('span', { className: 'jp-Ambient-model', title: 'The model answering in this notebook' });
    this._connectionNode = button('jp-Ambient-connection', '', () => this._connection.reconnect(), 'Reconnect');
    this._mode = h('select', {
      className: 'jp-Ambient-mode',
      title: 'Agent mode for this notebook: what the assistant may run',
      attrs: { 'aria-label': 'Agent mode', id: 'jp-ambient-mode' }
    }) as HTMLSelectElement;
    for (const mode of AGENT_MODES) {
      this._mode.append(h('option', { text: MODE_TEXT[mode], attrs: { value: mode } }));
    }
    this._mode.addEventListener('change', () => void this._onModeChange());
    this._watchButton = button('jp-Ambient-watch', '', () => void this._toggleWatch());
    this._watchNotice = h('div', { className: 'jp-Ambient-unwatched', attrs: { role: 'status' } }, [
      h('span', { className: 'jp-Ambient-unwatchedText' }),
      button('jp-Ambient-watchNow', 'Watch', () => void this._currentWatch()?.set(true))
    ]);
    this._body = h('div', { className: 'jp-Ambient-body' });
    // Scrolling up to the top reads the page of events before the oldest one shown.
    this._follow = new FollowEnd(this._body, () => void this._current?.showEarlier(true));
    this._empty = h('div', { className: 'jp-Ambient-empty', text: 'Open a notebook to see its conversation.' });
    this._composer = new Composer({
      placeholder: PLACEHOLDER,
      onSend: text => this._sendChat(text),
      onStop: () => void this._current?.transport.stop()
    });

    this.node.append(
      h('div', { className: 'jp-Ambient-header' }, [
        h('div', { className: 'jp-Ambient-headerRow' }, [
          h('span', { className: 'jp-Ambient-title', text: 'Ambient' }),
          h('span', { className: 'jp-Ambient-spacer' }),
          this._connectionNode
        ]),
        h('div', { className: 'jp-Ambient-headerRow jp-Ambient-subtitle' }, [
          this._notebookName,
          h('span', { className: 'jp-Ambient-spacer' }),
          this._model
        ]),
        h('div', { className: 'jp-Ambient-headerRow jp-Ambient-modeRow' }, [
          h('label', { className: 'jp-Ambient-modeLabel', text: 'Agent', attrs: { for: 'jp-ambient-mode' } }),
          this._mode,
          h('span', { className: 'jp-Ambient-spacer' }),
          this._watchButton
        ])
      ]),
      this._watchNotice,
      this._body,
      this._composer.node
    );
    this._body.append(this._empty);

    this._connection = new AmbientConnection(() => this._onOpen());
    this._connection.frameReceived.connect((_, frame) => this._onFrame(frame));
    this._connection.stateChanged.connect(() => this._refresh());
    this._refresh();
    this._connection.connect();
  }

  /**
   * Watch `panel`'s kernel (see watch.ts) for as long as the notebook is open.
   * `automatic`: the "Watch notebooks automatically" setting, read when it is needed.
   */
  watch(panel: NotebookPanel, automatic: () => boolean): void {
    if (this._watches.has(panel)) {
      return;
    }
    const watch = new NotebookWatch(panel, automatic);
    watch.changed.connect(() => this._refresh());
    panel.disposed.connect(() => {
      watch.dispose();
      this._watches.delete(panel);
    });
    this._watches.set(panel, watch);
  }

  /** The global setting changed: every open notebook follows it (a choice made for one stays). */
  rewatch(): void {
    for (const watch of this._watches.values()) {
      void watch.apply();
    }
  }

  protected onUpdateRequest(): void {
    this._refresh();
  }

  private _currentWatch(): NotebookWatch | null {
    return this._followed ? (this._watches.get(this._followed) ?? null) : null;
  }

  private async _toggleWatch(): Promise<void> {
    const watch = this._currentWatch();
    if (watch && TOGGLABLE.includes(watch.state)) {
      await watch.set(watch.state !== 'watching');
    }
  }

  /** Show the conversation of `panel` (or nothing) and follow it on the socket. */
  follow(panel: NotebookPanel | null): void {
    this._followed?.context.pathChanged.disconnect(this._onPathChanged, this);
    this._followed = panel;
    panel?.context.pathChanged.connect(this._onPathChanged, this);
    this._show(panel ? notebookPath(panel) : null);
    this._refresh();
  }

  dispose(): void {
    this._connection.dispose();
    super.dispose();
  }

  // -- IConversationOwner ----------------------------------------------------

  eventAdded(conversation: Conversation): void {
    if (conversation === this._current) {
      this._follow.soon();
    }
  }

  // -- the socket --------------------------------------------------------------

  private _onOpen(): void {
    if (this._current) {
      // Resent once the replay (which acknowledges what did get through) is in.
      this._resendPending = true;
      this._current.hello();
    } else {
      this._resendAll();
    }
  }

  /** Send every chat not yet seen stored, with its original client_id. */
  private _resendAll(): void {
    for (const conv of this._conversations.values()) {
      conv.resend();
    }
  }

  private _onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case 'event':
        this._conversations.get(frame.event.notebook)?.addEvent(frame.event);
        break;
      case 'ready': {
        const conversation = this._conversations.get(frame.notebook);
        if (conversation && frame.reset) {
          // The server's history is not the one we hold (it was replaced):
          // start over from its beginning.
          conversation.clear();
          conversation.hello();
          return;
        }
        conversation?.replayedFrom(frame.replayedFrom);
        if (this._resendPending) {
          // After a reconnect: every chat not yet seen stored goes again, with
          // the same client_id, so the server stores it once. The replay that
          // preceded `ready` has already acknowledged what did get through.
          this._resendPending = false;
          this._resendAll();
        }
        break;
      }
      case 'status':
        this._conversations.get(frame.notebook)?.setStatus(frame.state, frame.model, frame.agent, frame.expert);
        if (frame.notebook === this._current?.notebook && frame.agent === this._pendingMode) {
          this._pendingMode = null;
        }
        break;
      case 'run':
        void this._run(frame);
        break;
      case 'token':
        this._conversations.get(frame.notebook)?.addToken(frame.replyId, frame.text);
        if (this._current?.notebook === frame.notebook) {
          this._follow.soon();
        }
        break;
      case 'error':
        this._current?.showError(frame.message);
        this._pendingMode = null; // a refused mode change shows the mode as it is
        // A refused question or decision: only that one settles (a "busy" question leaves the queue);
        // when the frame does not say what it refuses, every waiting card is usable again.
        for (const conv of this._conversations.values()) {
          conv.refused(frame, frame.message);
        }
        break;
    }
    if (frame.type !== 'event' && frame.type !== 'token') {
      this._refresh(); // the header shows the connection and the status, not the events
    }
  }

  /**
   * Run an approved action the server handed to this tab, once. It must be the
   * action this tab was shown (same code, same hash), and its code must hash
   * to the approved sha256; otherwise nothing runs and the server is told.
   */
  private async _run(frame: IRunFrame): Promise<void> {
    if (this._handled.has(frame.actionId)) {
      return; // an approval is good for one run
    }
    this._handled.add(frame.actionId);
    const conversation = this._conversations.get(frame.notebook);
    const card = conversation?.proposals.get(frame.actionId);
    let outcome: RunOutcome;
    if (!card) {
      outcome = { ran: false, reason: 'this tab was not shown the proposal' };
    } else if (card.code !== frame.code || card.sha256 !== frame.sha256 || card.action !== frame.action) {
      outcome = { ran: false, reason: 'the code to run is not the code that was proposed' };
    } else {
      card.setOutcome('running in this notebook…', 'pending');
      try {
        outcome = await runApproved(this._tracker, frame);
      } catch (reason) {
        console.error('ambient-jupyter: could not run an approved action', reason);
        outcome = { ran: false, reason: `it could not be run here (${String(reason)})` };
      }
    }
    if (outcome.ran) {
      card?.setOutcome(`ran as ${outcome.where}${outcome.ok ? '' : ' and raised an error'}`, outcome.ok ? 'ok' : 'error');
      return;
    }
    card?.setOutcome(`not run: ${outcome.reason}`, 'refused');
    conversation?.showError(`An approved action was not run: ${outcome.reason}.`);
    this._connection.send({
      type: 'run_failed',
      notebook: frame.notebook,
      action_id: frame.actionId,
      error: outcome.reason,
      ...(outcome.changed ? { reason: 'cell_changed' } : {})
    });
  }

  // -- the agent mode ----------------------------------------------------------------

  private async _onModeChange(): Promise<void> {
    const conversation = this._current;
    const agent = this._mode.value as AgentMode;
    if (!conversation || agent === conversation.agent || !AGENT_MODES.includes(agent)) {
      this._refresh();
      return;
    }
    if (agent === 'auto') {
      const result = await showDialog({
        title: 'Let the assistant run code without asking?',
        body: new Widget({ node: autoWarning(conversation.notebook) }),
        buttons: [Dialog.cancelButton({ label: 'Keep asking' }), Dialog.warnButton({ label: 'Run without asking' })]
      });
      if (!result.button.accept || conversation !== this._current) {
        this._refresh();
        return;
      }
    }
    if (this._connection.send({ type: 'mode', notebook: conversation.notebook, agent })) {
      // Shown until the server's status confirms it (or an error refuses it).
      this._pendingMode = agent;
    } else {
      conversation.showError('Not connected: the agent mode was not changed.');
    }
    this._refresh();
  }

  // -- the composer --------------------------------------------------------------

  private _sendChat(text: string): boolean {
    const conversation = this._current;
    if (!conversation) {
      return false;
    }
    // If the socket is down the chat waits, shown as pending, and goes out
    // after the next `ready`.
    conversation.send(text);
    this._follow.soon();
    return true;
  }

  // -- showing ------------------------------------------------------------------

  private _onPathChanged(): void {
    this._show(this._followed ? notebookPath(this._followed) : null);
  }

  private _conversation(notebook: string): Conversation {
    let conversation = this._conversations.get(notebook);
    if (!conversation) {
      conversation = new Conversation(notebook, this, new NotebookSocket(this._connection, notebook));
      this._conversations.set(notebook, conversation);
    }
    return conversation;
  }

  private _show(notebook: string | null): void {
    const next = notebook ? this._conversation(notebook) : null;
    if (next === this._current) {
      return;
    }
    this._current = next;
    this._body.replaceChildren(next ? next.node : this._empty);
    this._follow.reset();
    // One socket follows one notebook: a new hello switches it, resuming
    // after the last event this tab already has for that notebook.
    this._current?.hello();
    this._refresh();
    this._follow.soon(true);
  }

  private _refresh(): void {
    const conversation = this._current;
    const state = this._connection.state;
    this._connectionNode.textContent = `● ${CONNECTION_TEXT[state]}`;
    this._connectionNode.dataset.state = state;
    this._notebookName.textContent = conversation?.notebook ?? '';
    this._notebookName.title = conversation?.notebook ?? '';
    this._model.textContent = modelText(conversation?.model ?? '', conversation?.expert ?? null);
    this._mode.value = this._pendingMode ?? conversation?.agent ?? '';
    this._mode.disabled = !conversation || !conversation.agent;
    this._mode.dataset.agent = conversation?.agent ?? '';
    const watch = this._currentWatch();
    const watchState = watch?.state ?? 'nokernel';
    this._watchButton.textContent = WATCH_TEXT[watchState];
    this._watchButton.dataset.state = watchState;
    this._watchButton.title = watch
      ? `${watch.reason}${watchState === 'watching' ? ' Click to stop watching this notebook.' : ''}`
      : '';
    this._watchButton.hidden = !watch;
    this._watchButton.disabled = !TOGGLABLE.includes(watchState);
    // A notebook whose runs are not recorded says why, and offers to watch it.
    const unwatched = watch !== null && watchState !== 'watching' && watchState !== 'pending';
    this._watchNotice.hidden = !unwatched;
    this._watchNotice.dataset.state = watchState;
    (this._watchNotice.firstChild as HTMLElement).textContent = watch?.reason ?? '';
    (this._watchNotice.lastChild as HTMLButtonElement).hidden = watchState !== 'off';
    this._mode.dataset.pending = this._pendingMode ? 'true' : 'false';
    this._composer.setState(conversation?.state ?? 'idle');
    this._composer.setEnabled(conversation !== null);
  }

  /** Undo in this tab's notebook, then tell the server, which records it for every tab. */
  undo(conversation: Conversation, card: ProposalCard): void {
    const why = undoApplied(this._tracker, conversation.notebook, card.event);
    if (why !== null) {
      card.undoFailed();
      conversation.showError(`Could not undo: ${why}.`);
      return;
    }
    if (!this._connection.send({ type: 'undone', notebook: conversation.notebook, action_id: card.actionId })) {
      card.undoFailed();
      conversation.showError('Undone in this notebook, but not connected: the history does not know it yet.');
    }
  }

  currentSource(conversation: Conversation, count: number): string | null {
    return currentSource(this._tracker, conversation.notebook, count);
  }

  prepend(insert: () => void): void {
    this._follow.keep(insert);
  }

  private readonly _tracker: INotebookTracker;
  private readonly _connection: AmbientConnection;
  private readonly _conversations = new Map<string, Conversation>();
  /** Actions this tab was handed to run (each runs at most once). */
  private readonly _handled = new Set<string>();
  private _pendingMode: AgentMode | null = null;
  private readonly _mode: HTMLSelectElement;
  private _current: Conversation | null = null;
  private _followed: NotebookPanel | null = null;
  private _resendPending = false;
  private readonly _notebookName: HTMLElement;
  private readonly _model: HTMLElement;
  private readonly _connectionNode: HTMLButtonElement;
  private readonly _body: HTMLElement;
  private readonly _follow: FollowEnd;
  private readonly _empty: HTMLElement;
  private readonly _composer: Composer;
  private readonly _watches = new Map<NotebookPanel, NotebookWatch>();
  private readonly _watchButton: HTMLButtonElement;
  private readonly _watchNotice: HTMLElement;
}

/**
 * Markdown through JupyterLab's rendermime, untrusted, with our sanitizer,
 * and with no URL resolver or link handler: nothing in a reply is resolved
 * against the server or turned into a command.
 */
function markdownRenderer(rendermime: IRenderMimeRegistry): (host: HTMLElement, markdown: string) => Promise<void> {
  const registry = new RenderMimeRegistry({
    initialFactories: [markdownRendererFactory],
    sanitizer: new AmbientSanitizer(),
    markdownParser: rendermime.markdownParser ?? undefined
  });
  return async (host, markdown) => {
    const renderer = registry.createRenderer('text/markdown');
    host.append(renderer.node);
    const model = new MimeModel({ data: { 'text/markdown': markdown }, trusted: false });
    try {
      await renderer.renderModel(model);
    } catch (reason) {
      console.error('ambient-jupyter: could not render a reply', reason);
      renderer.node.textContent = markdown;
    }
  };
}

/** What auto mode risks, said before it is switched on. */
function autoWarning(notebook: string): HTMLElement {
  return h('div', { className: 'jp-Ambient-autoWarning' }, [
    h('p', {
      text: `In auto mode, every cell and plugin call the assistant proposes for ${notebook} runs at once, with no approval.`
    }),
    h('p', {
      text:
        'The model reads cell outputs, files, data and widget values. Text planted in any of them can make it ' +
        'propose harmful code, such as code that deletes or sends away your files, and it would run.'
    }),
    h('p', { text: 'Use auto only with notebooks and data you trust. You can switch back to ask at any time.' })
  ]);
}
