/**
 * The frames of `ambient/ws` (docs/protocol.md), parsed at the boundary.
 *
 * Nothing from the socket is trusted: every server frame goes through
 * `parseServerFrame`, which returns `null` for anything malformed, so the
 * rest of the extension only sees well-typed values.
 */

/** A stored event; kind-specific fields are read through the helpers below. */
export interface IAmbientEvent {
  seq: number;
  notebook: string;
  kind: string;
  at: string;
  [key: string]: unknown;
}

export type AssistantState = 'idle' | 'thinking' | 'streaming';
export const ASSISTANT_STATES: readonly AssistantState[] = ['idle', 'thinking', 'streaming'];

export type AgentMode = 'off' | 'ask' | 'auto';
export const AGENT_MODES: readonly AgentMode[] = ['off', 'ask', 'auto'];

/** The actions that run a notebook cell once approved. */
export type CellAction = 'insert_cell' | 'edit_cell' | 'run_cell' | 'propose_next_cell';
const CELL_ACTIONS: readonly string[] = ['insert_cell', 'edit_cell', 'run_cell', 'propose_next_cell'];

/** An approved cell action this tab is asked to run (the server hands each to one tab). */
export interface IRunFrame {
  type: 'run';
  notebook: string;
  actionId: string;
  action: CellAction;
  code: string;
  sha256: string;
  args: Record<string, unknown>;
  model: string | null;
  role: 'watcher' | 'expert';
  replyTo: number | null;
  decidedBy: 'user' | 'policy';
  approvedAt: string;
  /** For an edit: the source the proposal replaces (the cell must still hold it). */
  oldCode: string | null;
}

export type ServerFrame =
  | { type: 'event'; event: IAmbientEvent }
  | { type: 'ready'; notebook: string; reset: boolean; replayedFrom: number }
  | { type: 'status'; notebook: string; state: AssistantState; model: string; expert: string | null; agent: AgentMode | null }
  | { type: 'token'; notebook: string; replyId: string; text: string }
  | IRunFrame
  | IErrorFrame;

export type ClientFrame =
  | { type: 'hello'; notebook: string; after_seq: number; tail?: number }
  | { type: 'chat'; notebook: string; text: string; client_id: string }
  | {
      type: 'decide';
      notebook: string;
      action_id: string;
      decision: 'approve' | 'reject';
      sha256: string;
    }
  | { type: 'stop'; notebook: string }
  | { type: 'mode'; notebook: string; agent: AgentMode }
  | { type: 'run_failed'; notebook: string; action_id: string; error: string }
  | { type: 'undone'; notebook: string; action_id: string };

/** Actions that change the notebook's cells: a person can take them back (Undo). */
export const UNDOABLE = new Set(['edit_cell', 'insert_cell', 'propose_next_cell']);

type Json = Record<string, unknown>;

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isSeq(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0;
}

/** Parse one text frame from the server; `null` if it is not a frame we know. */
export function parseServerFrame(data: unknown): ServerFrame | null {
  if (typeof data !== 'string') {
    return null;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return null;
  }
  if (!isObject(raw)) {
    return null;
  }
  switch (raw.type) {
    case 'event': {
      const event = parseEvent(raw.event);
      return event && { type: 'event', event };
    }
    case 'ready':
      if (typeof raw.notebook !== 'string' || !isSeq(raw.last_seq)) {
        return null;
      }
      return {
        type: 'ready',
        notebook: raw.notebook,
        reset: raw.reset === true,
        replayedFrom: isSeq(raw.replayed_from) ? raw.replayed_from : 0
      };
    case 'status': {
      const state = raw.state as AssistantState;
      if (typeof raw.notebook !== 'string' || !ASSISTANT_STATES.includes(state)) {
        return null;
      }
      return {
        type: 'status',
        notebook: raw.notebook,
        state,
        model: typeof raw.model === 'string' ? raw.model : '',
        expert: typeof raw.expert === 'string' && raw.expert ? raw.expert : null,
        agent: AGENT_MODES.includes(raw.agent as AgentMode) ? (raw.agent as AgentMode) : null
      };
    }
    case 'run':
      return parseRun(raw);
    case 'token':
      if (
        typeof raw.notebook !== 'string' ||
        typeof raw.reply_id !== 'string' ||
        typeof raw.text !== 'string'
      ) {
        return null;
      }
      return {
        type: 'token',
        notebook: raw.notebook,
        replyId: raw.reply_id,
        text: raw.text
      };
    case 'error':
      return parseErrorFrame(raw);
    default:
      return null;
  }
}

/** A refusal, from the server or the kernel: what was refused, if the frame says. */
export interface IErrorFrame {
  type: 'error';
  message: string;
  actionId?: string;
  clientId?: string;
}

export function parseErrorFrame(raw: Record<string, unknown>): IErrorFrame {
  return {
    type: 'error',
    message: typeof raw.message === 'string' ? raw.message : 'error',
    actionId: typeof raw.action_id === 'string' ? raw.action_id : undefined,
    clientId: typeof raw.client_id === 'string' ? raw.client_id : undefined
  };
}

/** The events of a list (a frame's, a page's) that parse; the rest are dropped. */
export function parseEvents(list: unknown, notebook?: string): IAmbientEvent[] {
  return (Array.isArray(list) ? list : []).map(e => parseEvent(e, notebook)).filter((e): e is IAmbientEvent => e !== null);
}

/**
 * A stored event as a view gets it; `null` if malformed. `notebook` is the
 * notebook it belongs to when the event does not say (the chat widget's feed
 * leaves it out: a widget shows one notebook).
 */
function parseEvent(value: unknown, notebook?: string): IAmbientEvent | null {
  if (!isObject(value) || !isSeq(value.seq) || typeof value.kind !== 'string') {
    return null;
  }
  const nb = typeof value.notebook === 'string' ? value.notebook : notebook;
  if (nb === undefined) {
    return null;
  }
  const at = typeof value.at === 'string' ? value.at : '';
  return { ...value, notebook: nb, at } as IAmbientEvent;
}

function parseRun(raw: Json): IRunFrame | null {
  const { notebook, action_id, action, code, sha256, args } = raw;
  if (
    typeof notebook !== 'string' ||
    typeof action_id !== 'string' ||
    !action_id ||
    typeof action !== 'string' ||
    !CELL_ACTIONS.includes(action) ||
    typeof code !== 'string' ||
    typeof sha256 !== 'string' ||
    !/^[0-9a-f]{64}$/.test(sha256) ||
    (args !== undefined && args !== null && !isObject(args))
  ) {
    return null;
  }
  return {
    type: 'run',
    notebook,
    actionId: action_id,
    action: action as CellAction,
    code,
    sha256,
    args: isObject(args) ? args : {},
    model: typeof raw.model === 'string' ? raw.model : null,
    role: raw.role === 'expert' ? 'expert' : 'watcher',
    replyTo: int(raw, 'reply_to'),
    decidedBy: raw.decided_by === 'policy' ? 'policy' : 'user',
    approvedAt: typeof raw.approved_at === 'string' ? raw.approved_at : new Date().toISOString(),
    oldCode: typeof raw.old_code === 'string' ? raw.old_code : null
  };
}

/** An integer field of an object, or `null`. */
export function int(record: Record<string, unknown>, key: string): number | null {
  const value = record[key];
  return typeof value === 'number' && Number.isInteger(value) ? value : null;
}

/** A string field of an event, or `fallback`. */
export function str(event: IAmbientEvent, key: string, fallback = ''): string {
  const value = event[key];
  return typeof value === 'string' ? value : fallback;
}

/** A numeric field of an event, or `null`. */
export function num(event: IAmbientEvent, key: string): number | null {
  const value = event[key];
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** An object field of an event, or `null`. */
export function obj(event: IAmbientEvent, key: string): Json | null {
  const value = event[key];
  return isObject(value) ? value : null;
}

/** A fact the kernel checked about a failed cell (`cell_executed.hints`). */
export interface IHint {
  kind: string;
  text: string;
  change: string | null;
}

/** One line of a proposal's stored diff: removed, added, context, or lines skipped. */
export type DiffOp = '-' | '+' | ' ' | '…';
export interface IDiffLine {
  op: DiffOp;
  line: string;
}

/** One live object, as the kernel summarised it. */
export interface IStateEntry {
  name: string;
  type: string;
  text: string;
}

const DIFF_OPS: readonly string[] = ['-', '+', ' ', '…'];

function list(event: IAmbientEvent, key: string): unknown[] {
  const value = event[key];
  return Array.isArray(value) ? value : [];
}

/** The hints of a failed cell; malformed entries are skipped. */
export function hints(event: IAmbientEvent): IHint[] {
  return list(event, 'hints')
    .filter(isObject)
    .filter(h => typeof h.text === 'string' && h.text !== '')
    .map(h => ({
      kind: typeof h.kind === 'string' ? h.kind : 'hint',
      text: h.text as string,
      change: typeof h.change === 'string' && h.change ? h.change : null
    }));
}

/** The diff stored with a proposal (`[op, line]` pairs); empty if there is none or it is malformed. */
export function diffLines(event: IAmbientEvent): IDiffLine[] {
  const out: IDiffLine[] = [];
  for (const pair of list(event, 'diff')) {
    if (!Array.isArray(pair) || !DIFF_OPS.includes(pair[0]) || typeof pair[1] !== 'string') {
      return []; // a partial diff would misstate the change: show the plain code instead
    }
    out.push({ op: pair[0] as DiffOp, line: pair[1] });
  }
  return out;
}

/** The summaries of live objects in an event (`entries` of kernel_state, `state` of a failed cell). */
export function stateEntries(event: IAmbientEvent, key: string): IStateEntry[] {
  return list(event, key)
    .filter(isObject)
    .filter(e => typeof e.name === 'string')
    .map(e => ({
      name: e.name as string,
      type: typeof e.type === 'string' ? e.type : '',
      text: typeof e.text === 'string' ? e.text : ''
    }));
}

/** What a model call was given (`assistant_message.seen`): the record behind "what the model saw". */
export interface ISeen {
  events: number[];
  summarised: number;
  images: number;
  note: string | null;
}

/** A reply's record of what its model was given; `null` when it has none (or it is malformed). */
export function seen(event: IAmbientEvent): ISeen | null {
  const value = obj(event, 'seen');
  if (!value || !Array.isArray(value.events)) {
    return null;
  }
  const count = (v: unknown): number => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : 0);
  return {
    events: value.events.filter((s): s is number => typeof s === 'number' && Number.isInteger(s)),
    summarised: count(value.summarised),
    images: count(value.images),
    note: typeof value.note === 'string' && value.note ? value.note : null
  };
}

/**
 * A fresh client id for a chat message.
 *
 * `crypto.randomUUID` exists only in secure contexts (https or localhost); a
 * server reached over plain http elsewhere still gets a random v4 UUID.
 */
export function newClientId(): string {
  if (typeof crypto.randomUUID === 'function') {
    return crypto.randomUUID();
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
