/**
 * One DOM node per stored event: chat bubbles and compact cards.
 *
 * Everything here is text (`textContent`); assistant replies are the one
 * exception and go through the sanitized markdown renderer passed in.
 */
import { button, h } from './dom';
import { IAmbientEvent, num, obj, str } from './protocol';

/** Renders untrusted markdown into `host` (sanitized; see sanitize.ts). */
export type MarkdownRenderer = (host: HTMLElement, markdown: string) => void;

const MAX_VALUE_CHARS = 80;

export function formatDuration(ms: number | null): string {
  if (ms === null) {
    return '';
  }
  if (ms < 1) {
    return '<1 ms';
  }
  if (ms < 1000) {
    return `${Math.round(ms)} ms`;
  }
  if (ms < 60_000) {
    return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  }
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function firstLine(code: string): string {
  const line = code.split('\n').find(l => l.trim() !== '') ?? '';
  const more = code.trim().includes('\n') ? ' …' : '';
  return line.length > 120 ? `${line.slice(0, 119)}…` : line + more;
}

function shortValue(value: unknown): string {
  let text: string;
  try {
    text = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

function timeTitle(event: IAmbientEvent): string {
  const when = event.at ? new Date(event.at) : null;
  const stamp = when && !isNaN(when.getTime()) ? when.toLocaleString() : event.at;
  return `#${event.seq} · ${stamp}`;
}

function card(event: IAmbientEvent, modifier: string, children: Array<Node | null>): HTMLElement {
  return h(
    'div',
    {
      className: `jp-Ambient-card ${modifier}`,
      title: timeTitle(event),
      attrs: { 'data-seq': String(event.seq), 'data-kind': event.kind }
    },
    children
  );
}

export function userMessageNode(event: IAmbientEvent): HTMLElement {
  const source = str(event, 'source', 'sidebar');
  return h(
    'div',
    {
      className: 'jp-Ambient-message jp-Ambient-user',
      title: timeTitle(event),
      attrs: { 'data-seq': String(event.seq), 'data-kind': event.kind }
    },
    [
      source !== 'sidebar' ? h('div', { className: 'jp-Ambient-meta', text: `via ${source}` }) : null,
      h('div', { className: 'jp-Ambient-text', text: str(event, 'text') })
    ]
  );
}

/** A chat message the server has not stored yet. */
export function pendingMessageNode(text: string): HTMLElement {
  return h('div', { className: 'jp-Ambient-message jp-Ambient-user jp-mod-pending', title: 'sending…' }, [
    h('div', { className: 'jp-Ambient-text', text })
  ]);
}

export function assistantNode(event: IAmbientEvent, render: MarkdownRenderer): HTMLElement {
  const state = str(event, 'state', 'complete');
  const body = h('div', { className: 'jp-Ambient-markdown' });
  render(body, str(event, 'text'));
  const note = state === 'incomplete' ? 'stopped before the end' : state === 'error' ? 'failed' : '';
  return h(
    'div',
    {
      className: `jp-Ambient-message jp-Ambient-assistant jp-mod-${state}`,
      title: timeTitle(event),
      attrs: { 'data-seq': String(event.seq), 'data-kind': event.kind }
    },
    [
      body,
      h('div', { className: 'jp-Ambient-meta' }, [
        str(event, 'model'),
        note ? h('span', { className: 'jp-Ambient-note', text: ` · ${note}` }) : null
      ])
    ]
  );
}

/** The bubble a streaming reply grows in, until its stored message replaces it. */
export function liveReplyNode(replyId: string): { node: HTMLElement; text: HTMLElement } {
  const text = h('div', { className: 'jp-Ambient-text' });
  const node = h(
    'div',
    { className: 'jp-Ambient-message jp-Ambient-assistant jp-mod-streaming', attrs: { 'data-reply-id': replyId } },
    [text]
  );
  return { node, text };
}

export function cellCard(event: IAmbientEvent): HTMLElement {
  const status = str(event, 'status', 'ok');
  const count = num(event, 'execution_count');
  const error = obj(event, 'error');
  const code = str(event, 'code');
  return card(event, `jp-Ambient-cell jp-mod-${status === 'error' ? 'error' : 'ok'}`, [
    h('div', { className: 'jp-Ambient-cardHead' }, [
      h('span', { className: 'jp-Ambient-count', text: `[${count ?? ' '}]` }),
      h('span', { className: 'jp-Ambient-badge', text: status === 'error' ? '✗ error' : '✓ ok' }),
      h('span', { className: 'jp-Ambient-duration', text: formatDuration(num(event, 'duration_ms')) })
    ]),
    h('code', { className: 'jp-Ambient-code', text: firstLine(code), title: code }),
    error
      ? h('div', {
          className: 'jp-Ambient-errorLine',
          text: `${String(error.ename ?? 'Error')}: ${String(error.evalue ?? '')}`
        })
      : null
  ]);
}

export function widgetCard(event: IAmbientEvent): HTMLElement {
  const description = str(event, 'description');
  const cls = str(event, 'widget_class', 'widget');
  return card(event, 'jp-Ambient-widget', [
    h('div', { className: 'jp-Ambient-cardHead' }, [
      h('span', { className: 'jp-Ambient-badge', text: '⚙ widget' }),
      h('span', { className: 'jp-Ambient-widgetName', text: description ? `${cls} “${description}”` : cls })
    ]),
    h('div', {
      className: 'jp-Ambient-change',
      text: `${str(event, 'trait')}: ${shortValue(event.old)} → ${shortValue(event.new)}`
    })
  ]);
}

export function modelErrorCard(event: IAmbientEvent): HTMLElement {
  return card(event, 'jp-Ambient-modelError', [
    h('div', { className: 'jp-Ambient-cardHead' }, [
      h('span', { className: 'jp-Ambient-badge', text: '⚠ model error' }),
      h('span', { className: 'jp-Ambient-meta', text: str(event, 'model') })
    ]),
    h('div', { className: 'jp-Ambient-text', text: str(event, 'message') })
  ]);
}

export function decidedCard(event: IAmbientEvent): HTMLElement {
  const decision = str(event, 'decision');
  const by = str(event, 'by', 'user');
  return card(event, `jp-Ambient-decided jp-mod-${decision === 'approved' ? 'approved' : 'rejected'}`, [
    h('span', {
      className: 'jp-Ambient-badge',
      text: `${decision === 'approved' ? '✓ approved' : '✗ rejected'} by ${by}`
    }),
    h('span', { className: 'jp-Ambient-meta', text: ` · action ${str(event, 'action_id').slice(0, 8)}` })
  ]);
}

export function executedCard(event: IAmbientEvent): HTMLElement {
  const cellSeq = num(event, 'cell_event_seq');
  return card(event, 'jp-Ambient-executed', [
    h('span', { className: 'jp-Ambient-badge', text: '▶ ran' }),
    h('span', {
      className: 'jp-Ambient-meta',
      text: ` · action ${str(event, 'action_id').slice(0, 8)}${cellSeq !== null ? ` as event #${cellSeq}` : ''}`
    })
  ]);
}

export function unknownCard(event: IAmbientEvent): HTMLElement {
  return card(event, 'jp-Ambient-other', [h('span', { className: 'jp-Ambient-meta', text: event.kind })]);
}

/** What the proposal card asks of its owner. */
export interface IProposalHandlers {
  approve(card: ProposalCard): void;
  reject(card: ProposalCard): void;
}

/**
 * A proposed cell: the exact code as text, its hash, and Approve / Reject.
 *
 * Approve stays disabled until the code's sha256 has been checked here
 * (where WebCrypto exists): the hash sent back is the one of the code shown.
 */
export class ProposalCard {
  readonly node: HTMLElement;
  readonly actionId: string;
  readonly code: string;
  readonly sha256: string;

  constructor(readonly event: IAmbientEvent, handlers: IProposalHandlers, hashCheck: Promise<string | null>) {
    this.actionId = str(event, 'action_id');
    this.code = str(event, 'code');
    this.sha256 = str(event, 'sha256');
    this._approve = button('jp-Ambient-approve jp-mod-accept', 'Approve', () => handlers.approve(this), 'Insert this cell below the active cell and run it');
    this._reject = button('jp-Ambient-reject', 'Reject', () => handlers.reject(this));
    this._approve.disabled = true;
    this._state = h('span', { className: 'jp-Ambient-actionState', text: 'proposed' });
    this.node = card(event, 'jp-Ambient-proposal', [
      h('div', { className: 'jp-Ambient-cardHead' }, [
        h('span', { className: 'jp-Ambient-badge', text: '✎ proposed cell' }),
        this._state
      ]),
      h('pre', { className: 'jp-Ambient-proposedCode', text: this.code }),
      h('div', { className: 'jp-Ambient-hash', text: `sha256 ${this.sha256.slice(0, 16)}…`, title: this.sha256 }),
      h('div', { className: 'jp-Ambient-actions' }, [this._approve, this._reject])
    ]);
    this.node.setAttribute('data-action-id', this.actionId);
    void hashCheck.then(actual => {
      if (actual !== null && actual !== this.sha256) {
        this._hashOk = false;
        this._state.textContent = 'hash mismatch: not approvable';
      }
      this._hashChecked = true;
      this._refresh();
    });
  }

  /** Waiting for the server to record our decision. */
  setWaiting(waiting: boolean): void {
    this._waiting = waiting;
    this._refresh();
  }

  setDecided(decision: string, by: string): void {
    this._decided = true;
    this._state.textContent = `${decision} by ${by}`;
    this.node.classList.add(decision === 'approved' ? 'jp-mod-approved' : 'jp-mod-rejected');
    this._refresh();
  }

  setNote(note: string): void {
    this._state.textContent = note;
  }

  get decided(): boolean {
    return this._decided;
  }

  private _refresh(): void {
    const open = !this._decided && !this._waiting;
    this._approve.disabled = !(open && this._hashChecked && this._hashOk);
    this._reject.disabled = !open;
    this._approve.hidden = this._decided;
    this._reject.hidden = this._decided;
  }

  private readonly _approve: HTMLButtonElement;
  private readonly _reject: HTMLButtonElement;
  private readonly _state: HTMLElement;
  private _decided = false;
  private _waiting = false;
  private _hashChecked = false;
  private _hashOk = true;
}
