/**
 * One WebSocket to `ambient/ws`, reconnected with exponential backoff.
 *
 * The connection knows nothing about rendering: it sends frames, reports
 * parsed server frames and its own state, and on every (re)connect asks its
 * owner for the `hello` to send, so the owner decides which seq to resume from.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { ClientFrame, IAmbientEvent, parseEvents, parseServerFrame, ServerFrame } from './protocol';
import { IChatTransport } from './transport';

export type ConnectionState = 'connecting' | 'open' | 'closed';

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15_000;

export class AmbientConnection {
  constructor(private readonly _onOpen: () => void) {}

  /** Parsed frames from the server, in arrival order. */
  get frameReceived(): ISignal<this, ServerFrame> {
    return this._frameReceived;
  }

  get stateChanged(): ISignal<this, ConnectionState> {
    return this._stateChanged;
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** The server this connection talks to (for its REST routes). */
  get settings(): ServerConnection.ISettings {
    return this._settings;
  }

  /** The socket URL, with the token as JupyterLab's own services pass it. */
  get url(): string {
    const base = URLExt.join(this._settings.wsUrl, 'ambient', 'ws');
    const token = this._settings.token;
    // Browsers cannot set headers on a WebSocket, so the token rides in the
    // query string; without one the login cookie authenticates the socket.
    return token ? `${base}?token=${encodeURIComponent(token)}` : base;
  }

  /** Open the socket (idempotent); reconnects until `dispose`. */
  connect(): void {
    if (this._disposed || this._socket) {
      return;
    }
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    this._setState('connecting');
    const socket = new this._settings.WebSocket(this.url);
    this._socket = socket;
    // Every handler checks that its socket is still the current one: frames
    // from a socket being replaced must not interleave with the new replay.
    socket.onopen = () => {
      if (socket === this._socket) {
        this._setState('open');
        this._onOpen();
      }
    };
    socket.onmessage = (msg: MessageEvent) => {
      if (socket !== this._socket) {
        return;
      }
      const frame = parseServerFrame(msg.data);
      if (frame) {
        if (frame.type === 'ready') {
          this._attempts = 0;
        }
        this._frameReceived.emit(frame);
      } else {
        console.warn('ambient-jupyter: ignored a malformed frame');
      }
    };
    // A close always follows an error: reconnecting is handled here alone.
    socket.onclose = () => {
      if (socket === this._socket) {
        this._socket = null;
        this._setState('closed');
        this._scheduleReconnect();
      }
    };
  }

  /** Send a frame if the socket is open; false if it could not be sent now. */
  send(frame: ClientFrame): boolean {
    const socket = this._socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      return false;
    }
    socket.send(JSON.stringify(frame));
    return true;
  }

  /** Drop the socket now and reconnect at once (the connection button). */
  reconnect(): void {
    const socket = this._socket;
    this._socket = null;
    this._attempts = 0;
    socket?.close();
    this.connect();
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    const socket = this._socket;
    this._socket = null;
    socket?.close();
    Signal.clearData(this);
  }

  private _scheduleReconnect(): void {
    if (this._disposed || this._timer !== null) {
      return;
    }
    const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this._attempts);
    this._attempts += 1;
    // Jitter spreads the reconnects of many tabs after a server restart.
    const delay = base / 2 + Math.random() * (base / 2);
    this._timer = setTimeout(() => {
      this._timer = null;
      this.connect();
    }, delay);
  }

  private _setState(state: ConnectionState): void {
    if (state !== this._state) {
      this._state = state;
      this._stateChanged.emit(state);
    }
  }

  private readonly _settings = ServerConnection.makeSettings();
  private _socket: WebSocket | null = null;
  private _state: ConnectionState = 'closed';
  private _attempts = 0;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _disposed = false;
  private readonly _frameReceived = new Signal<this, ServerFrame>(this);
  private readonly _stateChanged = new Signal<this, ConnectionState>(this);
}

/** One notebook's conversation over the shared socket: the sidebar's `IChatTransport`. */
export class NotebookSocket implements IChatTransport {
  constructor(private readonly _connection: AmbientConnection, readonly notebook: string) {}

  hello(afterSeq: number, tail?: number): boolean {
    const frame: ClientFrame = { type: 'hello', notebook: this.notebook, after_seq: afterSeq };
    return this._connection.send(tail === undefined ? frame : { ...frame, tail });
  }

  async earlier(afterSeq: number, limit: number): Promise<IAmbientEvent[]> {
    const settings = this._connection.settings;
    const query = URLExt.objectToQueryString({ notebook: this.notebook, after: String(afterSeq), limit: String(limit) });
    const url = URLExt.join(settings.baseUrl, 'ambient', 'api', 'history') + query;
    const response = await ServerConnection.makeRequest(url, {}, settings);
    if (!response.ok) {
      throw new Error(`the server answered ${response.status}`);
    }
    const body = (await response.json()) as { events?: unknown[] };
    return parseEvents(body.events);
  }

  chat(text: string, clientId: string, cells?: Record<string, string>): boolean {
    return this._connection.send({
      type: 'chat',
      notebook: this.notebook,
      text,
      client_id: clientId,
      ...(cells && Object.keys(cells).length ? { cells } : {})
    });
  }

  stop(): boolean {
    return this._connection.send({ type: 'stop', notebook: this.notebook });
  }

  decide(actionId: string, decision: 'approve' | 'reject', sha256: string): boolean {
    return this._connection.send({ type: 'decide', notebook: this.notebook, action_id: actionId, decision, sha256 });
  }
}
