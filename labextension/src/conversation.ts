/**
 * One notebook's conversation as this tab has it: the events it has seen
 * (by seq, each once), replies streaming now, and chats not yet stored.
 *
 * It owns its DOM, so switching notebooks swaps a node instead of
 * re-rendering, and a reload rebuilds it from a replay (`hello` after 0).
 */
import {
  assistantNode,
  cellCard,
  decidedCard,
  describeAction,
  executedCard,
  executedText,
  IProposalHandlers,
  kernelDiedCard,
  kernelStateCard,
  liveReplyNode,
  MarkdownRenderer,
  modelErrorCard,
  pendingMessageNode,
  pluginCard,
  ProposalCard,
  settingsCard,
  undoneCard,
  unknownCard,
  userMessageNode,
  widgetCard
} from './cards';
import { button, h } from './dom';
import { AgentMode, AssistantState, IAmbientEvent, int, newClientId, num, obj, str, UNDOABLE } from './protocol';
import { sha256Hex } from './sha256';
import { IChatTransport } from './transport';

/** How many of the newest events a fresh view asks for; older ones come a page at a time. */
export const TAIL = 500;

/** Approved actions that name a cell and can be asked for again when that cell had changed. */
const AGAIN = new Set(['edit_cell', 'run_cell']);
/** Starts the client id of "Propose again" for one proposal (the server stores a client id once). */
const AGAIN_PREFIX = 'again-';

type CardUpdate = (card: ProposalCard) => void;

export interface IPendingChat {
  clientId: string;
  text: string;
  node: HTMLElement;
  cells?: Record<string, string>;
}

/** Where a conversation is shown: the sidebar or a chat widget. */
export interface IConversationOwner {
  /** How assistant replies (untrusted markdown) are rendered: sanitized, or as text. */
  readonly render: MarkdownRenderer;
  /** The `source` of questions asked here (`sidebar`, `widget`): others are labelled "via ...". */
  readonly source: string;
  /** A stored event was added (after it is in the DOM). */
  eventAdded(conversation: Conversation, event: IAmbientEvent): void;
  /** What approving a proposal does here, where that is not what `describeAction` says. */
  describeAction?(event: IAmbientEvent): string;
  /** Insert an older page above what the reader sees, keeping the view where it is. */
  prepend?(insert: () => void): void;
  /** Take back what an approved action did to the notebook, and say so (a view that can edit it). */
  undo?(conversation: Conversation, card: ProposalCard): void;
  /** The source the cell shown as `[count]` holds now (null: not one such cell here; absent: no notebook). */
  currentSource?(conversation: Conversation, count: number): string | null;
}

export class Conversation implements IProposalHandlers {
  readonly node: HTMLElement;
  readonly pending = new Map<string, IPendingChat>();
  readonly proposals = new Map<string, ProposalCard>();
  state: AssistantState = 'idle';
  model = '';
  /** The notebook's agent mode, as the server last said (null until it has). */
  agent: AgentMode | null = null;
  /** The expert model a `/expert` question goes to, if the server has one. */
  expert: string | null = null;

  constructor(
    readonly notebook: string,
    private readonly _owner: IConversationOwner,
    readonly transport: IChatTransport
  ) {
    this._log = h('div', { className: 'jp-Ambient-log', attrs: { role: 'log' } });
    this._pendingArea = h('div', { className: 'jp-Ambient-pending' });
    this._live = h('div', { className: 'jp-Ambient-live' }, [this._pendingArea]);
    this.node = h('div', { className: 'jp-Ambient-conversation' }, [this._log, this._live]);
    this.node.setAttribute('data-notebook', notebook);
  }

  get eventCount(): number {
    return this._count;
  }

  // -- what a person does here, sent through the transport ------------------------

  /** Ask for what this conversation has not seen yet (a fresh view: the newest events first). */
  hello(): boolean {
    const fresh = this._lastSeq === 0 && this._hiddenUpTo === 0 && this.transport.earlier !== undefined;
    return this.transport.hello(this._lastSeq, fresh ? TAIL : undefined);
  }

  /** The replay began after `seq` (0: nothing left out): older events wait behind a button. */
  replayedFrom(seq: number): void {
    if (seq > 0 && this.transport.earlier) {
      this._hiddenUpTo = seq;
      this._earlierButton.hidden = false;
      this._log.prepend(this._earlierButton);
      this._labelEarlier();
    }
  }

  /**
   * Show the page of events just before the oldest one shown. `scrolled`: asked by
   * scrolling up, which does not retry a page that failed (the button does).
   */
  async showEarlier(scrolled = false): Promise<void> {
    const earlier = this.transport.earlier;
    if (!earlier || this._hiddenUpTo === 0 || this._earlierButton.disabled || (scrolled && this._earlierFailed)) {
      return;
    }
    this._earlierButton.disabled = true;
    const upTo = this._hiddenUpTo;
    const from = Math.max(0, upTo - TAIL);
    try {
      const events = await earlier.call(this.transport, from, upTo - from);
      if (this._hiddenUpTo !== upTo) {
        return; // cleared meanwhile
      }
      const nodes = events.filter(e => e.seq > from && e.seq <= upTo).map(e => this._nodeFor(e));
      const insert = (): void => this._earlierButton.after(...nodes);
      if (this._owner.prepend && this.node.isConnected) {
        this._owner.prepend(insert);
      } else {
        insert();
      }
      this._count += nodes.length;
      this._hiddenUpTo = from;
      this._earlierFailed = false;
    } catch (err) {
      this._earlierFailed = true;
      this.showError(`Earlier events could not be loaded: ${String(err)}`);
    } finally {
      this._earlierButton.disabled = false;
      this._labelEarlier();
    }
  }

  private _labelEarlier(): void {
    if (this._hiddenUpTo === 0) {
      this._earlierButton.remove();
      return;
    }
    this._earlierButton.textContent = `Show earlier events (${this._hiddenUpTo.toLocaleString()} more)`;
  }

  /** Ask a question: shown as pending until its stored message arrives. */
  send(text: string, cells?: Record<string, string>, clientId = newClientId()): void {
    const chat = { clientId, text, node: pendingMessageNode(text), cells };
    this.pending.set(clientId, chat);
    this._pendingArea.append(chat.node);
    // If it cannot go now it waits, shown as pending, and `resend` sends it later.
    this.transport.chat(text, clientId, cells);
  }

  /** Send every question not yet seen stored again, with its original client_id (stored once). */
  resend(): void {
    for (const chat of this.pending.values()) {
      this.transport.chat(chat.text, chat.clientId, chat.cells);
    }
  }

  approve(card: ProposalCard): void {
    this._decide(card, 'approve');
  }

  reject(card: ProposalCard): void {
    this._decide(card, 'reject');
  }

  undo(card: ProposalCard): void {
    this._owner.undo?.(this, card);
  }

  /** What approving does, as the proposal card says it. */
  describe(event: IAmbientEvent): string {
    return this._owner.describeAction?.(event) ?? describeAction(event);
  }

  /**
   * A request was refused. A refused decision leaves its card usable again (all
   * undecided cards, when the refusal does not say which); a refused question
   * is no longer pending. (An approval stays remembered: if it was recorded
   * after all, the action still runs and its card says so.)
   */
  refused(about: { actionId?: string; clientId?: string } = {}, message = ''): void {
    for (const card of this.proposals.values()) {
      if (!card.decided && (!about.actionId || card.actionId === about.actionId)) {
        card.setWaiting(false);
      }
    }
    if (about.actionId && message) {
      this.proposals.get(about.actionId)?.setOutcome(message, 'refused');
    }
    this._dropPending(about.clientId);
    const again = about.clientId?.startsWith(AGAIN_PREFIX) ? about.clientId.slice(AGAIN_PREFIX.length) : null;
    if (again) {
      this.proposals.get(again)?.askedAgain(false); // nothing was asked: the button works again
    }
  }

  private _decide(card: ProposalCard, decision: 'approve' | 'reject'): void {
    if (this.transport.decide(card.actionId, decision, card.sha256)) {
      // The decision is recorded where the approval is checked; an approved
      // action then runs there (or is handed to a tab that runs it).
      card.setWaiting(true);
    } else {
      this.showError(`Not connected: the ${decision === 'approve' ? 'approval' : 'decision'} was not sent.`);
    }
  }

  // -- what the other side says --------------------------------------------------

  /** Add a stored event; false (and nothing changes) if it is not new. */
  addEvent(event: IAmbientEvent): boolean {
    // The server sends each notebook's events in seq order, so anything at or
    // below the last one is a replayed duplicate.
    if (event.seq <= this._lastSeq) {
      return false;
    }
    this._lastSeq = event.seq;
    this._count += 1;
    this._log.append(this._nodeFor(event));
    this._owner.eventAdded(this, event);
    return true;
  }

  /** A piece of a streaming reply. */
  addToken(replyId: string, text: string): void {
    if (this._finished.has(replyId)) {
      return; // its stored message is already shown
    }
    let live = this._replies.get(replyId);
    if (!live) {
      live = liveReplyNode(replyId);
      this._replies.set(replyId, live);
      this._live.append(live.node);
    }
    live.text.textContent += text;
  }

  setStatus(state: AssistantState, model: string, agent: AgentMode | null, expert: string | null): void {
    this.state = state;
    if (model) {
      this.model = model;
    }
    if (agent) {
      this.agent = agent;
    }
    this.expert = expert;
    this._thinking.remove();
    if (state === 'thinking') {
      this._live.append(this._thinking);
    }
    if (state === 'idle') {
      // A stream that ended without its stored message (e.g. the server went
      // away) is marked; the stored message replaces it after the next replay.
      for (const live of this._replies.values()) {
        live.node.classList.add('jp-mod-ended');
      }
    }
  }

  /** A transient notice from the server (a refused frame). */
  showError(message: string): void {
    const node = h('div', { className: 'jp-Ambient-error', text: message, attrs: { role: 'alert' } });
    this._live.append(node);
    setTimeout(() => node.remove(), 10_000);
  }

  /** Forget everything (the server's history was replaced). */
  clear(): void {
    this._log.replaceChildren();
    for (const live of this._replies.values()) {
      live.node.remove();
    }
    this._replies.clear();
    this._finished.clear();
    this.proposals.clear();
    this._cardUpdates.clear();
    this._counts.clear();
    this._questions.clear();
    this._events.clear();
    this._unanswered.length = 0;
    this._earlierButton.remove();
    this._hiddenUpTo = 0;
    this._lastSeq = 0;
    this._count = 0;
  }

  private _nodeFor(event: IAmbientEvent): HTMLElement {
    this._events.set(event.seq, event); // what a reply's "what the model saw" looks up
    switch (event.kind) {
      case 'user_message': {
        const clientId = str(event, 'client_id');
        this._dropPending(clientId);
        if (clientId.startsWith(AGAIN_PREFIX)) {
          // Asked again (here, in another tab, or before a reload): once is enough.
          this._onCard(event, card => card.askedAgain(true), clientId.slice(AGAIN_PREFIX.length));
        }
        const question = { text: str(event, 'text'), to: str(event, 'to', 'watcher') };
        this._questions.set(event.seq, question);
        this._askedAgain(event.seq, question.text);
        return userMessageNode(event, this._owner.source);
      }
      case 'assistant_message': {
        const replyId = str(event, 'reply_id');
        if (replyId) {
          this._finished.add(replyId);
          this._replies.get(replyId)?.node.remove();
          this._replies.delete(replyId);
        }
        const node = assistantNode(event, this._owner.render, seq => this._events.get(seq));
        const question = num(event, 'reply_to');
        // Only a reply to a question (not a reaction to a failed cell): one shown here, or
        // one on a page not loaded yet (checked when the button is pressed).
        const isQuestion = question !== null && (this._questions.has(question) || question <= this._hiddenUpTo);
        if (str(event, 'state') === 'incomplete' && isQuestion) {
          node.querySelector('.jp-Ambient-meta')?.append(this._askAgainButton(event.seq, question));
        }
        return node;
      }
      case 'cell_executed': {
        const count = num(event, 'execution_count');
        if (count !== null) {
          this._counts.set(event.seq, count);
        }
        return cellCard(event);
      }
      case 'widget_changed':
        return widgetCard(event);
      case 'model_error':
        return modelErrorCard(event);
      case 'kernel_died':
        return kernelDiedCard(event);
      case 'action_proposed': {
        const proposal = new ProposalCard(event, this, sha256Hex(str(event, 'code')));
        this.proposals.set(proposal.actionId, proposal);
        // Shown after its decision or outcome (an older page loaded later): it must not look undecided.
        const updates = this._cardUpdates.get(proposal.actionId) ?? [];
        for (const { update } of updates.sort((a, b) => a.seq - b.seq)) {
          update(proposal);
        }
        return proposal.node;
      }
      case 'action_decided': {
        const decision = str(event, 'decision');
        const by = str(event, 'by', 'user');
        this._onCard(event, card => card.setDecided(decision, by, str(event, 'reason')));
        return decidedCard(event);
      }
      case 'action_executed': {
        const count = this._counts.get(num(event, 'cell_event_seq') ?? -1) ?? null;
        const text = executedText(event, count);
        this._onCard(event, card => {
          card.setOutcome(text, event.ok === false ? 'error' : 'ok');
          // (A cell that ran and raised still changed the notebook: it can be taken back too.)
          this._offerUndo(card, event.ok !== false || num(event, 'cell_event_seq') !== null);
        });
        if (event.ok === false && str(event, 'reason') === 'cell_changed') {
          // Approved, but not applied: the person had changed the cell since.
          this._onCard(event, card => this._offerAgain(card));
        }
        return executedCard(event, count);
      }
      case 'action_undone':
        this._onCard(event, card => card.setUndone());
        return undoneCard(event);
      case 'settings_changed':
        return settingsCard(event);
      case 'plugin_registered':
        return pluginCard(event);
      case 'kernel_state':
        return kernelStateCard(event);
      default:
        return unknownCard(event);
    }
  }

  /**
   * A reply that never came (stopped, interrupted, a dead server): one click asks
   * the same question again, as a new question from here.
   */
  private _askAgainButton(replySeq: number, questionSeq: number): HTMLButtonElement {
    const ask = (): void => {
      again.disabled = true;
      void this._question(questionSeq).then(
        question => {
          if (question) {
            // The same question to the same model: an expert question goes to the expert again.
            this.send(question.to === 'expert' ? `/expert ${question.text}` : question.text);
            again.textContent = 'Asked again';
          } else {
            again.remove();
            this.showError('This reply answered no question, so there is nothing to ask again.');
          }
        },
        err => {
          again.disabled = false;
          this.showError(`The question could not be loaded: ${String(err)}`);
        }
      );
    };
    const again = button('jp-Ambient-askAgain', 'Ask again', ask, 'Ask the same question again');
    this._unanswered.push({ replySeq, questionSeq, button: again });
    return again;
  }

  /** A question: shown here already, or read from the page it is on (null: not a question). */
  private async _question(seq: number): Promise<{ text: string; to: string } | null> {
    const known = this._questions.get(seq);
    if (known !== undefined || !this.transport.earlier) {
      return known ?? null;
    }
    const [event] = await this.transport.earlier(seq - 1, 1);
    return event?.seq === seq && event.kind === 'user_message'
      ? { text: str(event, 'text'), to: str(event, 'to', 'watcher') }
      : null;
  }

  /** A question asked after an unanswered one, with its text: that one was asked again. */
  private _askedAgain(seq: number, text: string): void {
    for (const entry of this._unanswered) {
      if (entry.replySeq < seq && this._questions.get(entry.questionSeq)?.text === text) {
        entry.button.disabled = true;
        entry.button.textContent = 'Asked again';
      }
    }
  }

  private _offerAgain(card: ProposalCard): void {
    if (this._owner.currentSource && AGAIN.has(card.action) && int(obj(card.event, 'args') ?? {}, 'cell') !== null) {
      card.allowAgain();
    }
  }

  /**
   * "Propose again": the same model is asked for the change again, with the cell's
   * current source attached, so the new proposal is made against what the person has.
   */
  again(card: ProposalCard): void {
    const count = int(obj(card.event, 'args') ?? {}, 'cell');
    const source = count !== null ? this._owner.currentSource?.(this, count) : null;
    if (count === null || source === null || source === undefined) {
      card.askedAgain(false);
      this.showError(`No cell shows [${count ?? '?'}] here any more, so there is nothing to propose again for.`);
      return;
    }
    const expert = card.origin === 'model' && str(card.event, 'role') === 'expert';
    const what = card.action === 'run_cell' ? 'what to run' : 'the change';
    const text = `Cell [${count}] was changed after your proposal, so it was not applied. Propose ${what} again for the cell as it is now.`;
    // One id per proposal: the server stores and answers it once, however many tabs or reloads ask.
    this.send(expert ? `/expert ${text}` : text, { [String(count)]: source }, `${AGAIN_PREFIX}${card.actionId}`);
    card.askedAgain(true);
  }

  /**
   * Apply what `event` says of an action to its card now if it is shown, and to one made
   * later from an older page (in seq order then, whatever order the pages came in).
   */
  private _onCard(event: IAmbientEvent, update: CardUpdate, actionId = str(event, 'action_id')): void {
    const updates = this._cardUpdates.get(actionId) ?? [];
    updates.push({ seq: event.seq, update });
    this._cardUpdates.set(actionId, updates);
    const card = this.proposals.get(actionId);
    if (card) {
      update(card);
    }
  }

  /** A question is no longer pending: stored, or refused. */
  private _dropPending(clientId = ''): void {
    this.pending.get(clientId)?.node.remove();
    this.pending.delete(clientId);
  }

  private _offerUndo(card: ProposalCard, changed: boolean): void {
    if (changed && this._owner.undo && UNDOABLE.has(card.action)) {
      card.allowUndo();
    }
  }

  private readonly _log: HTMLElement;
  private readonly _live: HTMLElement;
  private readonly _pendingArea: HTMLElement;
  private readonly _thinking = h('div', { className: 'jp-Ambient-thinking', text: 'thinking…' });
  private readonly _replies = new Map<string, { node: HTMLElement; text: HTMLElement }>();
  private readonly _finished = new Set<string>();
  /** seq of a cell_executed event -> its execution count, to say where an action ran. */
  private readonly _counts = new Map<number, number>();
  /** What happened to each action, by action id: a proposal card made later (an older page) shows it too. */
  private readonly _cardUpdates = new Map<string, { seq: number; update: CardUpdate }[]>();
  /** Each question shown, by seq: what "Ask again" sends. */
  private readonly _questions = new Map<number, { text: string; to: string }>();
  /** Replies that never came, with their "Ask again" buttons. */
  private readonly _unanswered: { replySeq: number; questionSeq: number; button: HTMLButtonElement }[] = [];
  private _earlierFailed = false;
  private readonly _events = new Map<number, IAmbientEvent>();
  /** Events 1..this exist but are not shown (0: none). */
  private _hiddenUpTo = 0;
  private readonly _earlierButton = button('jp-Ambient-earlier', '', () => void this.showEarlier());
  private _lastSeq = 0;
  private _count = 0;
}
