/**
 * The parts around a conversation that the sidebar and the chat widget share:
 * the composer (the box, Send, Stop and what the assistant is doing) and a
 * scroll position that follows the end while the reader is there.
 */
import { button, h } from './dom';
import { AssistantState } from './protocol';

export interface IComposerOptions {
  placeholder: string;
  /** Send `text`; false keeps it in the box (there is nowhere to send it). */
  onSend(text: string): boolean;
  onStop(): void;
  /**
   * Let Ctrl/Cmd/Alt combinations and Escape through to the page's shortcuts
   * (in a cell's output, Ctrl+S must still save the notebook). Plain keys never
   * reach them: Shift+Enter would run the cell, "a"/"b" insert cells.
   */
  passShortcuts?: boolean;
}

export class Composer {
  readonly node: HTMLElement;
  readonly input: HTMLTextAreaElement;

  constructor(private readonly _options: IComposerOptions) {
    this._activity = h('span', { className: 'jp-Ambient-activity' });
    this._stop = button('jp-Ambient-stop', 'Stop', () => _options.onStop(), 'Stop the reply');
    this.input = h('textarea', {
      className: 'jp-Ambient-input',
      attrs: {
        rows: '2',
        placeholder: _options.placeholder,
        title: 'Enter sends; Shift+Enter starts a new line',
        'aria-label': 'Message to the assistant'
      }
    }) as HTMLTextAreaElement;
    this.input.addEventListener('keydown', event => this._onKeyDown(event));
    this.input.addEventListener('keypress', event => {
      if (this._isOurs(event)) {
        event.stopPropagation();
      }
    });
    this._send = button('jp-Ambient-send jp-mod-accept', 'Send', () => this.submit());
    this.node = h('div', { className: 'jp-Ambient-footer' }, [
      h('div', { className: 'jp-Ambient-statusBar' }, [this._activity, this._stop]),
      h('div', { className: 'jp-Ambient-composer' }, [this.input, this._send])
    ]);
    this.setState('idle');
  }

  /** Send what is in the box (if anything), and empty it. */
  submit(): void {
    const text = this.input.value;
    if (text.trim() && this._options.onSend(text)) {
      this.input.value = '';
    }
  }

  /** What the assistant is doing: Stop shows while it thinks or writes. */
  setState(state: AssistantState): void {
    const busy = state !== 'idle';
    this._activity.textContent = busy ? `${state}…` : '';
    this._activity.dataset.state = state;
    this._stop.hidden = !busy;
  }

  setEnabled(enabled: boolean): void {
    this.input.disabled = !enabled;
    this._send.disabled = !enabled;
  }

  private _isOurs(event: KeyboardEvent): boolean {
    return !this._options.passShortcuts || !(event.ctrlKey || event.metaKey || event.altKey || event.key === 'Escape');
  }

  private _onKeyDown(event: KeyboardEvent): void {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.submit();
    }
    // Keep the notebook's shortcuts out of the text box (JupyterLab handles
    // keydown as it bubbles, after this element).
    if (this._isOurs(event)) {
      event.stopPropagation();
    }
  }

  private readonly _activity: HTMLElement;
  private readonly _stop: HTMLButtonElement;
  private readonly _send: HTMLButtonElement;
}

/**
 * Keeps a scrolling element at its end, unless the reader scrolled up; and
 * tells its owner when the reader scrolls up to the top (to load older pages).
 */
export class FollowEnd {
  constructor(
    private readonly _node: HTMLElement,
    private readonly _onTop?: () => void
  ) {
    _node.addEventListener('scroll', () => {
      const top = _node.scrollTop;
      this._stick = _node.scrollHeight - top - _node.clientHeight < 48;
      // Only a move upwards counts: a page that is short, or a view that has just
      // been swapped in, must not load every older page by itself.
      if (top < this._lastTop && top < 64) {
        this._onTop?.();
      }
      this._lastTop = top;
    });
  }

  /** Another view was swapped in: its scroll position is not a move of the reader's. */
  reset(): void {
    this._lastTop = 0;
  }

  /** Insert above what the reader sees without moving it: the view keeps its distance from the end. */
  keep(insert: () => void): void {
    const fromEnd = this._node.scrollHeight - this._node.scrollTop;
    insert();
    this._node.scrollTop = this._node.scrollHeight - fromEnd;
    this._lastTop = this._node.scrollTop;
  }

  /** Scroll to the end after the next layout; `force` also when the reader had scrolled up. */
  soon(force = false): void {
    if (force) {
      this._stick = true;
    }
    if (!this._stick || this._scheduled) {
      return; // the reader scrolled up (leave the view where it is), or a scroll is due anyway
    }
    // One scroll per frame: reading scrollHeight lays the page out, and a replay adds
    // thousands of cards between two frames.
    this._scheduled = true;
    requestAnimationFrame(() => {
      this._scheduled = false;
      this._node.scrollTop = this._node.scrollHeight;
    });
  }

  private _stick = true;
  private _scheduled = false;
  private _lastTop = 0;
}

/** Which models answer: "model: X · expert: Y". */
export function modelText(model: string, expert: string | null): string {
  return [model ? `model: ${model}` : '', expert ? `expert: ${expert}` : ''].filter(Boolean).join(' · ');
}
