/**
 * The "Ambient" sidebar: the active notebook's conversation, live.
 *
 * It follows the notebook tracker, holds one `Conversation` per notebook in
 * memory, speaks the `ambient/ws` protocol over one `AmbientConnection`, and
 * runs the cells this tab approved.
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import {
  IRenderMimeRegistry,
  markdownRendererFactory,
  MimeModel,
  RenderMimeRegistry
} from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { insertAndRun, InsertOutcome, notebookPath } from './agent';
import { MarkdownRenderer, ProposalCard } from './cards';
import { AmbientConnection, ConnectionState } from './connection';
import { Conversation, IConversationOwner } from './conversation';
import { button, h } from './dom';
import { IAmbientEvent, newClientId, num, ServerFrame, str } from './protocol';
import { AmbientSanitizer } from './sanitize';

interface IApproval {
  notebook: string;
  card: ProposalCard;
}

const CONNECTION_TEXT: Record<ConnectionState, string> = {
  open: 'connected',
  connecting: 'connecting…',
  closed: 'disconnected'
};

const OUTCOME_TEXT: Record<InsertOutcome, string> = {
  ran: 'inserted and run',
  error: 'inserted and run (it raised an error)',
  failed: 'could not be inserted',
  'not-open': 'approved, but its notebook is not open here',
  'already-inserted': 'already inserted'
};

export namespace AmbientPanel {
  export interface IOptions {
    tracker: INotebookTracker;
    rendermime: IRenderMimeRegistry;
  }
}

export class AmbientPanel extends Widget implements IConversationOwner {
  readonly render: MarkdownRenderer;

  constructor(options: AmbientPanel.IOptions) {
    super();
    this.addClass('jp-Ambient');
    this._tracker = options.tracker;
    const render = markdownRenderer(options.rendermime);
    // Replies grow once their markdown is rendered: keep the view pinned to the end.
    this.render = (host, markdown) => void render(host, markdown).then(() => this._scrollSoon());

    this._notebookName = h('span', { className: 'jp-Ambient-notebook' });
    this._model = h('span', { className: 'jp-Ambient-model', title: 'The model answering in this notebook' });
    this._connectionNode = button('jp-Ambient-connection', '', () => this._connection.reconnect(), 'Reconnect');
    this._body = h('div', { className: 'jp-Ambient-body' });
    this._body.addEventListener('scroll', () => {
      const body = this._body;
      this._stick = body.scrollHeight - body.scrollTop - body.clientHeight < 48;
    });
    this._empty = h('div', { className: 'jp-Ambient-empty', text: 'Open a notebook to see its conversation.' });
    this._activity = h('span', { className: 'jp-Ambient-activity' });
    this._stop = button('jp-Ambient-stop', 'Stop', () => this._sendStop(), 'Stop the reply');
    this._input = h('textarea', {
      className: 'jp-Ambient-input',
      attrs: { rows: '2', placeholder: 'Ask about this notebook…', title: 'Enter sends; Shift+Enter starts a new line' }
    }) as HTMLTextAreaElement;
    this._input.addEventListener('keydown', event => this._onKeyDown(event));
    this._send = button('jp-Ambient-send jp-mod-accept', 'Send', () => this._sendChat());

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
        ])
      ]),
      this._body,
      h('div', { className: 'jp-Ambient-footer' }, [
        h('div', { className: 'jp-Ambient-statusBar' }, [this._activity, this._stop]),
        h('div', { className: 'jp-Ambient-composer' }, [this._input, this._send])
      ])
    );
    this._body.append(this._empty);

    this._connection = new AmbientConnection(() => this._onOpen());
    this._connection.frameReceived.connect((_, frame) => this._onFrame(frame));
    this._connection.stateChanged.connect(() => this._refresh());
    this._refresh();
    this._connection.connect();
  }

  /** Show the conversation of `panel` (or nothing) and follow it on the socket. */
  follow(panel: NotebookPanel | null): void {
    this._followed?.context.pathChanged.disconnect(this._onPathChanged, this);
    this._followed = panel;
    panel?.context.pathChanged.connect(this._onPathChanged, this);
    this._show(panel ? notebookPath(panel) : null);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._connection.dispose();
    super.dispose();
  }

  // -- IConversationOwner ----------------------------------------------------

  eventAdded(conversation: Conversation, event: IAmbientEvent): void {
    if (event.kind === 'action_decided') {
      this._maybeRunApproved(conversation, event);
    }
    if (conversation === this._current) {
      this._scrollSoon();
    }
  }

  approve(card: ProposalCard): void {
    const notebook = card.event.notebook;
    const sent = this._connection.send({
      type: 'decide',
      notebook,
      action_id: card.actionId,
      decision: 'approve',
      sha256: card.sha256
    });
    if (!sent) {
      this._conversation(notebook).showError('Not connected: the approval was not sent.');
      return;
    }
    // Only the tab that approved inserts the cell, once, when the server has
    // recorded the decision (a reload forgets this, so it never re-runs).
    this._approvals.set(card.actionId, { notebook, card });
    card.setWaiting(true);
  }

  reject(card: ProposalCard): void {
    const sent = this._connection.send({
      type: 'decide',
      notebook: card.event.notebook,
      action_id: card.actionId,
      decision: 'reject',
      sha256: card.sha256
    });
    if (sent) {
      card.setWaiting(true);
    } else {
      this._conversation(card.event.notebook).showError('Not connected: the decision was not sent.');
    }
  }

  // -- the socket --------------------------------------------------------------

  private _onOpen(): void {
    if (this._current) {
      // Resent once the replay (which acknowledges what did get through) is in.
      this._resendPending = true;
      this._hello();
    } else {
      this._resendAll();
    }
  }

  /** Send every chat not yet seen stored, with its original client_id. */
  private _resendAll(): void {
    for (const conv of this._conversations.values()) {
      for (const chat of conv.pending.values()) {
        this._connection.send({ type: 'chat', notebook: conv.notebook, text: chat.text, client_id: chat.clientId });
      }
    }
  }

  private _hello(): void {
    const conversation = this._current;
    if (conversation) {
      this._connection.send({ type: 'hello', notebook: conversation.notebook, after_seq: conversation.lastSeq });
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
          this._connection.send({ type: 'hello', notebook: frame.notebook, after_seq: 0 });
          return;
        }
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
        this._conversations.get(frame.notebook)?.setStatus(frame.state, frame.replyId, frame.model);
        break;
      case 'token':
        this._conversations.get(frame.notebook)?.addToken(frame.replyId, frame.text);
        if (this._current?.notebook === frame.notebook) {
          this._scrollSoon();
        }
        break;
      case 'error':
        this._current?.showError(frame.message);
        // A refused decision leaves its card usable again. (An approval stays
        // remembered: if the server did record it, the cell is still run.)
        for (const conv of this._conversations.values()) {
          for (const card of conv.proposals.values()) {
            if (!card.decided) {
              card.setWaiting(false);
            }
          }
        }
        break;
    }
    this._refresh();
  }

  private _maybeRunApproved(conversation: Conversation, event: IAmbientEvent): void {
    const actionId = str(event, 'action_id');
    const approval = this._approvals.get(actionId);
    if (!approval || str(event, 'decision') !== 'approved' || this._inserted.has(actionId)) {
      return;
    }
    this._inserted.add(actionId);
    this._approvals.delete(actionId);
    const { card } = approval;
    const proposal = card.event;
    const metadata = {
      action_id: actionId,
      model: str(proposal, 'model') || conversation.model || null,
      reply_to: num(proposal, 'reply_to'),
      sha256: card.sha256,
      approved_at: event.at || new Date().toISOString()
    };
    card.setNote('approved: inserting…');
    insertAndRun(this._tracker, approval.notebook, card.code, metadata)
      .then(outcome => card.setNote(OUTCOME_TEXT[outcome]))
      .catch(reason => {
        console.error('ambient-jupyter: could not run the approved cell', reason);
        card.setNote(OUTCOME_TEXT.failed);
      });
  }

  // -- the composer --------------------------------------------------------------

  private _onKeyDown(event: KeyboardEvent): void {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this._sendChat();
    }
    // Keep JupyterLab's notebook shortcuts out of the text box.
    event.stopPropagation();
  }

  private _sendChat(): void {
    const conversation = this._current;
    const text = this._input.value;
    if (!conversation || !text.trim()) {
      return;
    }
    const clientId = newClientId();
    conversation.addPending(clientId, text);
    this._input.value = '';
    // If the socket is down the chat waits, shown as pending, and goes out
    // after the next `ready`.
    this._connection.send({ type: 'chat', notebook: conversation.notebook, text, client_id: clientId });
    this._scrollSoon();
  }

  private _sendStop(): void {
    const conversation = this._current;
    if (conversation) {
      this._connection.send({ type: 'stop', notebook: conversation.notebook });
    }
  }

  // -- showing ------------------------------------------------------------------

  private _onPathChanged(): void {
    this._show(this._followed ? notebookPath(this._followed) : null);
  }

  private _conversation(notebook: string): Conversation {
    let conversation = this._conversations.get(notebook);
    if (!conversation) {
      conversation = new Conversation(notebook, this);
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
    // One socket follows one notebook: a new hello switches it, resuming
    // after the last event this tab already has for that notebook.
    this._hello();
    this._refresh();
    this._scrollSoon(true);
  }

  private _refresh(): void {
    const conversation = this._current;
    const state = this._connection.state;
    this._connectionNode.textContent = `● ${CONNECTION_TEXT[state]}`;
    this._connectionNode.dataset.state = state;
    this._notebookName.textContent = conversation?.notebook ?? '';
    this._notebookName.title = conversation?.notebook ?? '';
    this._model.textContent = conversation?.model ? `model: ${conversation.model}` : '';
    const busy = conversation ? conversation.state !== 'idle' : false;
    this._activity.textContent = busy ? `${conversation?.state}…` : '';
    this._activity.dataset.state = conversation?.state ?? 'idle';
    this._stop.hidden = !busy;
    this._input.disabled = !conversation;
    this._send.disabled = !conversation;
  }

  private _scrollSoon(force = false): void {
    if (force) {
      this._stick = true;
    }
    if (!this._stick) {
      return; // the reader scrolled up: leave the view where it is
    }
    requestAnimationFrame(() => {
      this._body.scrollTop = this._body.scrollHeight;
    });
  }

  private readonly _tracker: INotebookTracker;
  private readonly _connection: AmbientConnection;
  private readonly _conversations = new Map<string, Conversation>();
  private readonly _approvals = new Map<string, IApproval>();
  private readonly _inserted = new Set<string>();
  private _current: Conversation | null = null;
  private _followed: NotebookPanel | null = null;
  private _resendPending = false;
  private _stick = true;
  private readonly _notebookName: HTMLElement;
  private readonly _model: HTMLElement;
  private readonly _connectionNode: HTMLButtonElement;
  private readonly _body: HTMLElement;
  private readonly _empty: HTMLElement;
  private readonly _activity: HTMLElement;
  private readonly _stop: HTMLButtonElement;
  private readonly _input: HTMLTextAreaElement;
  private readonly _send: HTMLButtonElement;
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
