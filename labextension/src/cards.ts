/**
 * One DOM node per stored event: chat bubbles and compact cards.
 *
 * Everything here is text (`textContent`); assistant replies are the one
 * exception and go through the sanitized markdown renderer passed in.
 */
import { button, h } from './dom';
import {
  diffLines,
  hints,
  IAmbientEvent,
  IDiffLine,
  ISeen,
  isObject,
  IStateEntry,
  num,
  obj,
  seen,
  stateEntries,
  str
} from './protocol';

/** Renders untrusted markdown into `host` (sanitized; see sanitize.ts). */
export type MarkdownRenderer = (host: HTMLElement, markdown: string) => void;

/** The event with this seq, if the view has loaded it. */
type Lookup = (seq: number) => IAmbientEvent | undefined;

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
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

/** A stored error as one line: "NameError: name 'x' is not defined". */
function errorText(error: Record<string, unknown>): string {
  return `${String(error.ename ?? 'Error')}: ${String(error.evalue ?? '')}`;
}

/** "1 event", "3 events". */
function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function timeTitle(event: IAmbientEvent): string {
  const when = event.at ? new Date(event.at) : null;
  const stamp = when && !isNaN(when.getTime()) ? when.toLocaleString() : event.at;
  return `#${event.seq} · ${stamp}`;
}

/** Colours code as JupyterLab's editor does; set by the sidebar (the chat widget shows plain text). */
export type CodeHighlighter = (el: HTMLElement, code: string) => Promise<void>;
let highlighter: CodeHighlighter | null = null;

export function setCodeHighlighter(highlight: CodeHighlighter | null): void {
  highlighter = highlight;
}

/**
 * Code as text in a `<pre>`, then coloured where a highlighter is set. The
 * highlighter only wraps the same text in spans (text nodes, never markup), and
 * the plain text stays if it fails.
 */
function codeNode(className: string, code: string): HTMLElement {
  const pre = h('pre', { className, text: code });
  if (highlighter) {
    const colour = document.createElement('span');
    void highlighter(colour, code).then(
      () => {
        if (colour.textContent === code) {
          pre.replaceChildren(colour);
          pre.classList.add('cm-s-jupyter');
        }
      },
      () => undefined
    );
  }
  return pre;
}

/** One stored event's node: its seq and kind as data, its time as the tooltip (`base`: a card or a message). */
function card(event: IAmbientEvent, modifier: string, children: Array<Node | null>, base = 'jp-Ambient-card'): HTMLElement {
  const attrs = { 'data-seq': String(event.seq), 'data-kind': event.kind };
  return h('div', { className: `${base} ${modifier}`, title: timeTitle(event), attrs }, children);
}

/** A stored question; `ownSource` is where it is shown (a question from elsewhere says where). */
export function userMessageNode(event: IAmbientEvent, ownSource: string): HTMLElement {
  const source = str(event, 'source', 'sidebar');
  const meta = [source !== ownSource ? `via ${source}` : '', str(event, 'to') === 'expert' ? 'to the expert' : ''];
  const about = meta.filter(Boolean).join(' · ');
  const children = [
    about ? h('div', { className: 'jp-Ambient-meta', text: about }) : null,
    h('div', { className: 'jp-Ambient-text', text: str(event, 'text') })
  ];
  return card(event, 'jp-Ambient-user', children, 'jp-Ambient-message');
}

/** A chat message the server has not stored yet. */
export function pendingMessageNode(text: string): HTMLElement {
  return h('div', { className: 'jp-Ambient-message jp-Ambient-user jp-mod-pending', title: 'sending…' }, [
    h('div', { className: 'jp-Ambient-text', text })
  ]);
}

export function assistantNode(event: IAmbientEvent, render: MarkdownRenderer, lookup: Lookup): HTMLElement {
  const record = seen(event);
  const state = str(event, 'state', 'complete');
  const body = h('div', { className: 'jp-Ambient-markdown' });
  render(body, str(event, 'text'));
  const note = state === 'incomplete' ? 'stopped before the end' : state === 'error' ? 'failed' : '';
  const meta = h('div', { className: 'jp-Ambient-meta' }, [
    roleBadge(str(event, 'role', 'watcher')),
    h('span', { className: 'jp-Ambient-modelName', text: str(event, 'model') }),
    note ? h('span', { className: 'jp-Ambient-note', text: ` · ${note}` }) : null
  ]);
  const children = [body, meta, record ? sawNode(record, lookup) : null];
  return card(event, `jp-Ambient-assistant jp-mod-${state}`, children, 'jp-Ambient-message');
}

/**
 * "What the model saw" under a reply, folded: the events its prompt held (each with
 * the hints and state summaries it carried), the digest of earlier ones, pictures,
 * and the host's own words. Built from the reply's record when first opened, from
 * the events this view has loaded (`lookup`); an event on a page not loaded yet says so.
 */
function sawNode(record: ISeen, lookup: Lookup): HTMLElement {
  const count = record.events.length;
  const body = h('div', { className: 'jp-Ambient-sawBody' });
  const details = h('details', { className: 'jp-Ambient-saw' }, [
    h('summary', { text: `what the model saw (${plural(count, 'event')}${record.summarised ? ' and a digest' : ''})` }),
    body
  ]);
  details.addEventListener('toggle', () => {
    if ((details as HTMLDetailsElement).open) {
      body.replaceChildren(...sawItems(record, lookup));
    }
  });
  return details;
}

function sawItems(record: ISeen, lookup: Lookup): HTMLElement[] {
  const items: HTMLElement[] = [];
  if (record.summarised) {
    const text = `${plural(record.summarised, 'earlier event')}, as a short digest`;
    items.push(h('div', { className: 'jp-Ambient-sawDigest', text }));
  }
  for (const seq of record.events) {
    const event = lookup(seq);
    items.push(
      event
        ? h('div', { className: 'jp-Ambient-sawEvent', attrs: { 'data-seq': String(seq), 'data-kind': event.kind } }, [
            h('div', { className: 'jp-Ambient-sawLabel', text: sawLabel(event) }),
            hintList(event),
            sawState(event)
          ])
        : h('div', {
            className: 'jp-Ambient-sawEvent jp-mod-unloaded',
            text: `event #${seq} (on an earlier page: scroll up to load it)`,
            attrs: { 'data-seq': String(seq) }
          })
    );
  }
  if (record.images) {
    items.push(h('div', { className: 'jp-Ambient-sawImages', text: plural(record.images, 'picture') }));
  }
  if (record.note) {
    items.push(h('pre', { className: 'jp-Ambient-sawNote', text: record.note, title: 'What the host added for this turn' }));
  }
  return items;
}

/** One line per event, as text: what it was, in the words the cards use. */
function sawLabel(event: IAmbientEvent): string {
  switch (event.kind) {
    case 'cell_executed': {
      const count = num(event, 'execution_count');
      const error = obj(event, 'error');
      const failed = error ? ` → ${errorText(error)}` : '';
      return `[${count ?? ' '}] ${firstLine(str(event, 'code'))}${failed}`;
    }
    case 'user_message':
      return `question: ${firstLine(str(event, 'text'))}`;
    case 'assistant_message':
      return `reply: ${firstLine(str(event, 'text'))}`;
    case 'widget_changed':
      return `widget ${str(event, 'description') || str(event, 'widget_class')}: ${str(event, 'trait')} → ${shortValue(event.new)}`;
    case 'kernel_state':
      return 'state of the kernel';
    case 'action_proposed':
      return `proposal: ${str(event, 'action')}`;
    default:
      return event.kind.replace(/_/g, ' ');
  }
}

function sawState(event: IAmbientEvent): HTMLElement | null {
  const entries = stateEntries(event, event.kind === 'kernel_state' ? 'entries' : 'state');
  return entries.length ? stateList(entries) : null;
}

/** Which of the two models spoke: the local watcher, or the expert handed the turn. */
function roleBadge(role: string): HTMLElement {
  const expert = role === 'expert';
  return h('span', {
    className: `jp-Ambient-role jp-mod-${expert ? 'expert' : 'watcher'}`,
    text: expert ? 'expert' : 'watcher',
    title: expert ? 'The frontier model (/expert) wrote this' : 'The local model that watches the notebook wrote this',
    attrs: { 'data-role': expert ? 'expert' : 'watcher' }
  });
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
    error ? h('div', { className: 'jp-Ambient-errorLine', text: errorText(error) }) : null,
    status === 'error' ? hintList(event) : null
  ]);
}

/**
 * What the kernel checked about a failure, under its error line. The text names
 * the person's own columns, keys and files: it goes in as text only.
 */
function hintList(event: IAmbientEvent): HTMLElement | null {
  const found = hints(event);
  if (!found.length) {
    return null;
  }
  return h(
    'div',
    { className: 'jp-Ambient-hints' },
    found.map(hint =>
      h(
        'div',
        {
          className: 'jp-Ambient-hint',
          title: 'Checked in the kernel against the live objects',
          attrs: { 'data-kind': hint.kind }
        },
        [
          h('div', { className: 'jp-Ambient-hintText', text: hint.text }),
          hint.change ? h('div', { className: 'jp-Ambient-hintFix', text: `fix: ${hint.change}` }) : null
        ]
      )
    )
  );
}

/** Live objects, one per line: `name (type): text`, a multi-line text in a <pre>. */
function stateList(entries: IStateEntry[]): HTMLElement {
  return h(
    'div',
    { className: 'jp-Ambient-stateEntries' },
    entries.map(entry => {
      const label = entry.type ? `${entry.name} (${entry.type})` : entry.name;
      const multiline = entry.text.includes('\n');
      return h('div', { className: 'jp-Ambient-stateEntry', attrs: { 'data-name': entry.name } }, [
        h('span', { className: 'jp-Ambient-stateName', text: multiline ? `${label}:` : `${label}: ` }),
        multiline
          ? h('pre', { className: 'jp-Ambient-stateText', text: entry.text })
          : h('span', { className: 'jp-Ambient-stateText', text: entry.text })
      ]);
    })
  );
}

/**
 * What the kernel held when a question was asked: the names at a glance, the
 * summaries folded away; or a note saying why it could not be looked at.
 */
export function kernelStateCard(event: IAmbientEvent): HTMLElement {
  const entries = stateEntries(event, 'entries');
  const note = str(event, 'note');
  const names = entries.map(e => e.name).join(', ');
  return card(event, 'jp-Ambient-kernelState', [
    h('div', { className: 'jp-Ambient-cardHead' }, [
      h('span', { className: 'jp-Ambient-badge', text: '◇ state' }),
      h('span', {
        className: 'jp-Ambient-stateNames',
        text: entries.length ? `state: ${names}` : note ? 'state: not known' : 'state: nothing to show'
      })
    ]),
    entries.length
      ? h('details', { className: 'jp-Ambient-stateDetails' }, [
          h('summary', { text: `what the kernel held (${entries.length})` }),
          stateList(entries)
        ])
      : null,
    note ? h('div', { className: 'jp-Ambient-stateNote', text: note }) : null
  ]);
}

/** A stored line diff: removed and added lines marked, context plain, skipped lines as "…". */
function diffNode(lines: IDiffLine[]): HTMLElement {
  const classes: Record<string, string> = {
    '-': 'jp-Ambient-diffDel',
    '+': 'jp-Ambient-diffAdd',
    ' ': 'jp-Ambient-diffCtx',
    '…': 'jp-Ambient-diffSkip'
  };
  return h(
    'div',
    { className: 'jp-Ambient-diff', attrs: { role: 'figure', 'aria-label': 'changes to the cell' } },
    lines.map(({ op, line }) =>
      op === '…'
        ? h('div', { className: `jp-Ambient-diffLine ${classes[op]}`, text: '…', attrs: { 'data-op': op } })
        : h('div', { className: `jp-Ambient-diffLine ${classes[op]}`, attrs: { 'data-op': op } }, [
            h('span', { className: 'jp-Ambient-diffOp', text: op, attrs: { 'aria-hidden': 'true' } }),
            h('span', { className: 'jp-Ambient-diffText', text: line })
          ])
    )
  );
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

export function kernelDiedCard(event: IAmbientEvent): HTMLElement {
  return card(event, 'jp-Ambient-kernelDied', [
    h('div', { className: 'jp-Ambient-cardHead' }, [
      h('span', { className: 'jp-Ambient-badge', text: '✗ kernel died' }),
      h('span', { className: 'jp-Ambient-meta', text: 'every variable is gone; run the cells again' })
    ]),
    // A kernel killed as its cell began may not have said which cell it was.
    str(event, 'code') ? codeNode('jp-Ambient-code', str(event, 'code')) : null
  ]);
}

/** How a decision reads on a card: "approved by you", "approved by policy: agent mode is auto", "rejected: …". */
export function decisionText(decision: string, by: string, reason: string): string {
  const approved = decision === 'approved';
  if (by === 'policy') {
    return `${approved ? 'approved' : 'rejected'} by policy${reason ? `: ${reason}` : ''}`;
  }
  return approved ? 'approved by you' : 'rejected by you';
}

export function undoneCard(event: IAmbientEvent): HTMLElement {
  return card(event, 'jp-Ambient-undone', [
    h('span', { className: 'jp-Ambient-badge', text: '↶ undone by you' }),
    h('span', { className: 'jp-Ambient-meta', text: ` · action ${str(event, 'action_id').slice(0, 8)}` })
  ]);
}

export function decidedCard(event: IAmbientEvent): HTMLElement {
  const decision = str(event, 'decision');
  const text = decisionText(decision, str(event, 'by', 'user'), str(event, 'reason'));
  return card(event, `jp-Ambient-decided jp-mod-${decision === 'approved' ? 'approved' : 'rejected'}`, [
    h('span', { className: 'jp-Ambient-badge', text: `${decision === 'approved' ? '✓' : '✗'} ${text}` }),
    h('span', { className: 'jp-Ambient-meta', text: ` · action ${str(event, 'action_id').slice(0, 8)}` })
  ]);
}

/** How an execution reads: "ran as event #12", "did not run: …". */
export function executedText(event: IAmbientEvent, count: number | null): string {
  const cellSeq = num(event, 'cell_event_seq');
  const ok = event.ok !== false;
  const error = str(event, 'error');
  if (cellSeq !== null) {
    const where = count !== null ? `[${count}]` : `event #${cellSeq}`;
    return `ran as ${where}${ok ? '' : ` and raised${error ? ` ${error}` : ' an error'}`}`;
  }
  if (!ok) {
    return `did not run: ${error || 'unknown error'}`;
  }
  return event.result !== undefined && event.result !== null ? `done: ${shortValue(event.result)}` : 'done';
}

export function executedCard(event: IAmbientEvent, count: number | null): HTMLElement {
  const ok = event.ok !== false;
  // What approved code printed (the in-kernel hosts keep it, bounded): as text.
  const printed = typeof event.result === 'string' && event.result ? event.result : '';
  return card(event, `jp-Ambient-executed jp-mod-${ok ? 'ok' : 'failed'}`, [
    h('span', { className: 'jp-Ambient-badge', text: ok ? '▶ ran' : '✗ not run' }),
    h('span', {
      className: 'jp-Ambient-meta',
      text: ` · action ${str(event, 'action_id').slice(0, 8)}: ${executedText(event, count)}`
    }),
    printed ? h('pre', { className: 'jp-Ambient-output', text: printed }) : null
  ]);
}

export function settingsCard(event: IAmbientEvent): HTMLElement {
  const where: Record<string, string> = {
    sidebar: 'in the sidebar',
    magic: 'with %ambient',
    widget: 'in the chat widget',
    runner: 'by ambient-jupyter run'
  };
  const by = str(event, 'by', 'sidebar');
  return card(event, 'jp-Ambient-settings', [
    h('span', { className: 'jp-Ambient-badge', text: `⚙ agent mode: ${str(event, 'agent')}` }),
    h('span', { className: 'jp-Ambient-meta', text: ` · set ${where[by] ?? by}` })
  ]);
}

export function pluginCard(event: IAmbientEvent): HTMLElement {
  const actions = Array.isArray(event.actions) ? event.actions : [];
  const names = actions
    .map(a => (isObject(a) ? a.name : null))
    .filter((n): n is string => typeof n === 'string');
  return card(event, 'jp-Ambient-plugin', [
    h('span', { className: 'jp-Ambient-badge', text: `⚙ plugin ${str(event, 'plugin')}` }),
    h('span', { className: 'jp-Ambient-meta', text: names.length ? ` · actions: ${names.join(', ')}` : '' })
  ]);
}

export function unknownCard(event: IAmbientEvent): HTMLElement {
  return card(event, 'jp-Ambient-other', [h('span', { className: 'jp-Ambient-meta', text: event.kind })]);
}

/**
 * The whole code under a diff, folded: a toggle shows it. (The code stays in the
 * card as text, `hidden` while folded, so it is the very node the hash is shown for.)
 */
function fullCode(code: HTMLElement): HTMLElement {
  code.hidden = true;
  const toggle = h('button', {
    className: 'jp-Ambient-fullToggle',
    text: 'full cell',
    title: 'The whole code that runs if approved',
    attrs: { type: 'button', 'aria-expanded': 'false' }
  });
  toggle.addEventListener('click', () => {
    code.hidden = !code.hidden;
    toggle.setAttribute('aria-expanded', String(!code.hidden));
  });
  return h('div', { className: 'jp-Ambient-fullCode' }, [toggle, code]);
}

/** What a proposed action will do, in a few words. */
export function describeAction(event: IAmbientEvent): string {
  const args = obj(event, 'args') ?? {};
  const ref = (key: string) => (typeof args[key] === 'number' ? `[${args[key]}]` : null);
  switch (str(event, 'action')) {
    case 'insert_cell': {
      const after = ref('after');
      return after ? `insert a cell below ${after} and run it` : 'insert a cell below the active cell and run it';
    }
    case 'edit_cell':
      return `edit cell ${ref('cell') ?? '?'} and run it`;
    case 'run_cell':
      return `run cell ${ref('cell') ?? '?'} again`;
    case 'call_plugin':
      return `call ${firstLine(str(event, 'code'))}`;
    case 'propose_next_cell':
      return 'add the next cell and run it';
    default:
      return str(event, 'action', 'act');
  }
}

/** A button hidden until its card offers it; a click disables it until the card says it may be tried again. */
function laterButton(className: string, label: string, onClick: () => void, title: string): HTMLButtonElement {
  const el = button(
    className,
    label,
    () => {
      el.disabled = true;
      onClick();
    },
    title
  );
  el.hidden = true;
  return el;
}

/** What the proposal card asks of its owner. */
export interface IProposalHandlers {
  approve(card: ProposalCard): void;
  reject(card: ProposalCard): void;
  /** What approving does, in a few words (`describeAction`, unless the view runs it otherwise). */
  describe(event: IAmbientEvent): string;
  /** Take back what the action did to the notebook (where this view can). */
  undo(card: ProposalCard): void;
  /** Ask for the proposal again, for the cell as it is now (it was not applied). */
  again(card: ProposalCard): void;
}

export type OutcomeKind = 'ok' | 'error' | 'refused' | 'pending';

/**
 * A proposed action: what it will do, who proposed it, the exact code (as
 * text) that would run, and Approve / Reject; then its decision and outcome.
 *
 * Approve stays disabled until the code's sha256 has been checked here: the
 * hash sent back is the one of the code shown.
 */
export class ProposalCard {
  readonly node: HTMLElement;
  readonly actionId: string;
  readonly action: string;
  readonly code: string;
  readonly sha256: string;
  /** `hint`: the kernel's candidate fix, built from checked facts; `model`: a model's own. */
  readonly origin: 'hint' | 'model';

  constructor(readonly event: IAmbientEvent, handlers: IProposalHandlers, hashCheck: Promise<string | null>) {
    this.actionId = str(event, 'action_id');
    this.action = str(event, 'action');
    this.code = str(event, 'code');
    this.sha256 = str(event, 'sha256');
    const what = handlers.describe(event);
    const plugin = this.action === 'call_plugin';
    this._approve = button('jp-Ambient-approve jp-mod-accept', 'Approve', () => handlers.approve(this), `Approve: ${what}`);
    this._undo = laterButton(
      'jp-Ambient-undo',
      'Undo',
      () => handlers.undo(this),
      this.action === 'edit_cell' ? 'Put the cell back as it was' : 'Remove the inserted cell'
    );
    this._again = laterButton(
      'jp-Ambient-again',
      'Propose again',
      () => handlers.again(this),
      'Ask for this change again, made against the cell as it is now'
    );
    this._reject = button('jp-Ambient-reject', 'Reject', () => handlers.reject(this), 'Reject: nothing runs');
    this._approve.disabled = true;
    this._state = h('div', { className: 'jp-Ambient-actionState', text: 'waiting for you' });
    this._outcome = h('div', { className: 'jp-Ambient-outcome', attrs: { role: 'status' } });
    this._outcome.hidden = true;
    const safe = plugin && event.safe === true;
    const model = str(event, 'model');
    const role = str(event, 'role', 'watcher');
    this.origin = str(event, 'origin') === 'hint' ? 'hint' : 'model';
    const diff = plugin ? [] : diffLines(event);
    const code = codeNode('jp-Ambient-proposedCode', this.code);
    this.node = card(event, 'jp-Ambient-proposal', [
      h('div', { className: 'jp-Ambient-cardHead' }, [
        h('span', { className: 'jp-Ambient-badge', text: plugin ? '⚙ plugin call' : '✎ proposed cell' }),
        safe
          ? h('span', {
              className: 'jp-Ambient-safe',
              text: 'safe',
              title: 'The plugin declares that this action changes nothing outside its widget'
            })
          : null
      ]),
      h('div', { className: 'jp-Ambient-what', text: what }),
      this.origin === 'hint'
        ? h('div', { className: 'jp-Ambient-who' }, [
            h('span', {
              className: 'jp-Ambient-origin',
              text: '✓ checked fix',
              title: "Built by the kernel's analysis from facts it checked against the live objects; no model wrote it",
              attrs: { 'data-origin': 'hint' }
            }),
            " proposed by the kernel's analysis"
          ])
        : h('div', { className: 'jp-Ambient-who' }, [
            'proposed by ',
            h('span', { className: `jp-Ambient-role jp-mod-${role === 'expert' ? 'expert' : 'watcher'}`, text: role }),
            model ? h('span', { className: 'jp-Ambient-modelName', text: model }) : null
          ]),
      // What is approved is the whole code (its sha256 is below): under a diff, it
      // stays one click away.
      diff.length ? h('div', { className: 'jp-Ambient-diffBlock' }, [diffNode(diff), fullCode(code)]) : code,
      h('div', { className: 'jp-Ambient-hash', text: `sha256 ${this.sha256.slice(0, 16)}…`, title: this.sha256 }),
      h('div', { className: 'jp-Ambient-actions' }, [this._approve, this._reject, this._undo, this._again]),
      this._state,
      this._outcome
    ]);
    const { actionId, action, origin } = this;
    Object.assign(this.node.dataset, { actionId, action, origin, state: 'proposed' });
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
    if (!this._decided) {
      this._state.textContent = waiting ? 'sending…' : this._hashOk ? 'waiting for you' : this._state.textContent;
    }
    this._refresh();
  }

  setDecided(decision: string, by: string, reason: string): void {
    this._decided = true;
    this._state.textContent = decisionText(decision, by, reason);
    const approved = decision === 'approved';
    this.node.classList.add(approved ? 'jp-mod-approved' : 'jp-mod-rejected');
    this.node.dataset.state = approved ? 'approved' : 'rejected';
    this._refresh();
  }

  /** What became of it (running here, ran, refused, failed). */
  setOutcome(text: string, kind: OutcomeKind): void {
    this._outcome.hidden = false;
    this._outcome.textContent = text;
    this._outcome.dataset.kind = kind;
  }

  get decided(): boolean {
    return this._decided;
  }

  /** It ran and changed the notebook: offer to take it back. */
  allowUndo(): void {
    if (!this._undone) {
      this._undo.hidden = false;
      this._undo.disabled = false;
    }
  }

  /** It was approved but not applied (its cell had changed): offer to ask for it again. */
  allowAgain(): void {
    this._again.hidden = false;
  }

  /** "Propose again" was sent (`done`), or could not be: the button says so. */
  askedAgain(done: boolean): void {
    this._again.disabled = done;
    this._again.textContent = done ? 'Asked again' : 'Propose again';
  }

  /** The undo was refused or failed here: the button can be tried again. */
  undoFailed(): void {
    this._undo.disabled = false;
  }

  /** Taken back (in this tab or another): the notebook is as it was before. */
  setUndone(): void {
    this._undone = true;
    this._undo.hidden = true;
    this.node.dataset.state = 'undone';
    this.node.classList.add('jp-mod-undone');
    this.setOutcome(this.action === 'edit_cell' ? 'undone: the cell is back as it was' : 'undone: the cell was removed', 'ok');
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
  private readonly _undo: HTMLButtonElement;
  private readonly _again: HTMLButtonElement;
  private _undone = false;
  private readonly _state: HTMLElement;
  private readonly _outcome: HTMLElement;
  private _decided = false;
  private _waiting = false;
  private _hashChecked = false;
  private _hashOk = true;
}
