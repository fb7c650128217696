/**
 * The view of `ambient_jupyter.chat()`: the notebook's conversation in a cell's
 * output, for frontends without the sidebar (Notebook 7, VS Code, Colab).
 *
 * It is the sidebar's own renderer (cards.ts, conversation.ts, the proposal
 * card and its sha256 check, the composer), bundled on its own by esbuild
 * (scripts/build-widget.js) into `ambient_jupyter/static/widget.js`, the
 * anywidget's `_esm`. Nothing here may import JupyterLab: the bundle must load
 * where there is none. Replies are shown as text (plaintext.ts), not as HTML.
 *
 * The transport is anywidget's custom messages (widget.py's docstring):
 * view → kernel `hello{view, after_seq}`, `chat`, `stop`, `decide`, `run`;
 * kernel → view `replay{view, events, done, reset}`, `events{events}`,
 * `token{reply_id, text}`, `error{message, action_id?, client_id?}`, `run{action_id}`.
 * The status, the agent mode and the models are the widget's traits.
 *
 * Each view keeps its own last seq. On render it asks the kernel for a replay
 * after it (hello); until that replay is done it ignores live events, which the
 * replay covers, so a re-rendered view shows each event exactly once.
 */
import { describeAction } from './cards';
import { Conversation, IConversationOwner } from './conversation';
import { h } from './dom';
import { renderPlainText } from './plaintext';
import {
  AGENT_MODES,
  AgentMode,
  ASSISTANT_STATES,
  AssistantState,
  IAmbientEvent,
  IErrorFrame,
  isObject,
  newClientId,
  parseErrorFrame,
  parseEvents
} from './protocol';
import { Composer, FollowEnd, modelText } from './shell';
import { IChatTransport } from './transport';

/** What this view uses of anywidget's model (the `AnyModel` of `@anywidget/types`). */
export interface IWidgetModel {
  get(name: string): unknown;
  send(content: unknown): void;
  on(name: string, callback: (...args: unknown[]) => void): void;
  off(name: string, callback: (...args: unknown[]) => void): void;
}

const PLACEHOLDER = 'Ask the assistant (Enter sends, Shift+Enter for a new line; /expert asks the expert model)';
const HEADER_TRAITS = ['notebook', 'model_spec', 'expert_spec', 'mode', 'status'];

/** A message from the kernel, checked; `null` if malformed. */
export type KernelMessage =
  | { type: 'replay'; view: string; events: IAmbientEvent[]; done: boolean; reset: boolean }
  | { type: 'events'; events: IAmbientEvent[] }
  | { type: 'token'; replyId: string; text: string }
  | { type: 'run'; actionId: string }
  | IErrorFrame;

export function parseKernelMessage(raw: unknown, notebook: string): KernelMessage | null {
  if (!isObject(raw)) {
    return null;
  }
  const events = () => parseEvents(raw.events, notebook);
  switch (raw.type) {
    case 'replay':
      return typeof raw.view === 'string'
        ? { type: 'replay', view: raw.view, events: events(), done: raw.done === true, reset: raw.reset === true }
        : null;
    case 'events':
      return { type: 'events', events: events() };
    case 'token':
      return typeof raw.reply_id === 'string' && typeof raw.text === 'string'
        ? { type: 'token', replyId: raw.reply_id, text: raw.text }
        : null;
    case 'run':
      return typeof raw.action_id === 'string' && raw.action_id ? { type: 'run', actionId: raw.action_id } : null;
    case 'error':
      return parseErrorFrame(raw);
    default:
      return null;
  }
}

/** The chat widget's `IChatTransport`: anywidget custom messages to the kernel. */
export class WidgetTransport implements IChatTransport {
  constructor(private readonly _model: IWidgetModel, readonly view: string) {}

  hello(afterSeq: number): boolean {
    return this._send({ type: 'hello', view: this.view, after_seq: afterSeq });
  }

  chat(text: string, clientId: string): boolean {
    return this._send({ type: 'chat', text, client_id: clientId });
  }

  stop(): boolean {
    return this._send({ type: 'stop' });
  }

  decide(actionId: string, decision: 'approve' | 'reject', sha256: string): boolean {
    return this._send({ type: 'decide', action_id: actionId, decision, sha256 });
  }

  /** Hand an action the mode approved back to the kernel's main thread (only a comm message reaches it). */
  run(actionId: string): boolean {
    return this._send({ type: 'run', action_id: actionId });
  }

  private _send(content: Record<string, unknown>): boolean {
    this._model.send(content);
    return true; // the widget manager queues what the kernel cannot take yet
  }
}

function text(model: IWidgetModel, name: string, fallback = ''): string {
  const value = model.get(name);
  return typeof value === 'string' ? value : fallback;
}

/** One rendered view of the widget. */
class ChatView implements IConversationOwner {
  readonly render = renderPlainText;
  readonly source = 'widget';
  readonly node: HTMLElement;

  constructor(private readonly _model: IWidgetModel) {
    this._transport = new WidgetTransport(_model, newClientId());
    this._conversation = new Conversation(text(_model, 'notebook'), this, this._transport);
    this._notebook = h('span', { className: 'jp-Ambient-notebook' });
    this._models = h('span', { className: 'jp-Ambient-model', title: 'The model answering in this notebook' });
    this._mode = h('span', {
      className: 'jp-Ambient-modeBadge',
      title: 'Agent mode for this notebook: what the assistant may run (%ambient or the sidebar sets it)'
    });
    this._empty = h('div', {
      className: 'jp-Ambient-empty',
      text: 'Ask about this notebook. /expert sends a question to the expert model.'
    });
    const body = h('div', { className: 'jp-Ambient-body' }, [this._empty, this._conversation.node]);
    this._follow = new FollowEnd(body);
    this._composer = new Composer({
      placeholder: PLACEHOLDER,
      passShortcuts: true,
      onSend: message => {
        this._conversation.send(message);
        this._content();
        this._follow.soon(true);
        return true;
      },
      onStop: () => void this._transport.stop()
    });
    this.node = h('div', { className: 'jp-Ambient jp-Ambient-chat' }, [
      h('div', { className: 'jp-Ambient-header' }, [
        h('div', { className: 'jp-Ambient-headerRow' }, [
          h('span', { className: 'jp-Ambient-title', text: 'Ambient' }),
          this._notebook,
          h('span', { className: 'jp-Ambient-spacer' }),
          this._models,
          this._mode
        ])
      ]),
      body,
      this._composer.node
    ]);
    this._model.on('msg:custom', this._onMessage);
    for (const name of HEADER_TRAITS) {
      this._model.on(`change:${name}`, this._onTraits);
    }
    this._onTraits();
    this._conversation.hello();
  }

  dispose(): void {
    this._model.off('msg:custom', this._onMessage);
    for (const name of HEADER_TRAITS) {
      this._model.off(`change:${name}`, this._onTraits);
    }
  }

  // -- IConversationOwner ----------------------------------------------------

  eventAdded(): void {
    this._content();
    this._follow.soon();
  }

  /** Here an approved cell action runs in the kernel as a cell of its own: no notebook cell is edited. */
  describeAction(event: IAmbientEvent): string {
    return event.action === 'call_plugin' ? describeAction(event) : 'run this code in the kernel';
  }

  // -- the kernel ------------------------------------------------------------

  private readonly _onMessage = (raw: unknown): void => {
    const message = parseKernelMessage(raw, this._conversation.notebook);
    if (!message) {
      return;
    }
    const conversation = this._conversation;
    switch (message.type) {
      case 'replay':
        if (message.view !== this._transport.view) {
          return; // another view's
        }
        message.events.forEach(e => conversation.addEvent(e));
        if (message.done && message.reset) {
          // The kernel's history is not the one this view saw: start over.
          conversation.clear();
          this._ready = false;
          this._content();
          conversation.hello();
        } else if (message.done) {
          this._ready = true;
        }
        break;
      case 'events':
        if (this._ready) {
          message.events.forEach(e => conversation.addEvent(e));
        }
        break;
      case 'token':
        conversation.addToken(message.replyId, message.text);
        this._content();
        this._follow.soon();
        break;
      case 'run':
        this._transport.run(message.actionId);
        break;
      case 'error':
        if (message.actionId || message.clientId) {
          conversation.refused(message, message.message);
        }
        conversation.showError(message.message);
        this._follow.soon();
        break;
    }
  };

  private readonly _onTraits = (): void => {
    const model = this._model;
    const path = text(model, 'notebook');
    this._notebook.textContent = path.split('/').pop() || path;
    this._notebook.title = path;
    const modelSpec = text(model, 'model_spec');
    const expert = text(model, 'expert_spec');
    this._models.textContent = modelText(modelSpec, expert);
    const mode = text(model, 'mode', 'ask');
    const agent = AGENT_MODES.includes(mode as AgentMode) ? (mode as AgentMode) : null;
    this._mode.textContent = `agent: ${mode}`;
    this._mode.dataset.agent = mode;
    const status = text(model, 'status', 'idle');
    const state = ASSISTANT_STATES.includes(status as AssistantState) ? (status as AssistantState) : 'idle';
    this.node.dataset.status = state;
    this._conversation.setStatus(state, modelSpec, agent, expert || null);
    this._composer.setState(state);
  };

  /** The hint shows until there is something to show. */
  private _content(): void {
    const conversation = this._conversation;
    this._empty.hidden = conversation.eventCount > 0 || conversation.node.querySelector('.jp-Ambient-message') !== null;
  }

  private readonly _transport: WidgetTransport;
  private readonly _conversation: Conversation;
  private readonly _notebook: HTMLElement;
  private readonly _models: HTMLElement;
  private readonly _mode: HTMLElement;
  private readonly _empty: HTMLElement;
  private readonly _follow: FollowEnd;
  private readonly _composer: Composer;
  private _ready = false;
}

/** anywidget's entry point. */
function render({ model, el }: { model: IWidgetModel; el: HTMLElement }): () => void {
  const view = new ChatView(model);
  el.append(view.node);
  return () => view.dispose();
}

export default { render };
