/**
 * Watching without typing: the kernel extension is loaded, silently, into the
 * kernel of each open notebook (when it starts, restarts or is switched), unless
 * the person turned watching off, here or for this notebook.
 *
 * A silent execute is the protocol's way for a frontend to run its own code: no
 * execute_input, no output in the notebook, no execution count, and the recorder
 * ignores it. Each request also asks the kernel, as a user expression, whether the
 * extension is loaded: the state shown is the kernel's answer, so a `%load_ext`
 * typed by hand shows too, and loading twice records nothing twice.
 */
import { Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

export type WatchState = 'watching' | 'off' | 'pending' | 'unsupported' | 'unavailable' | 'nokernel';

/** Where the person's choice for one notebook is kept: the notebook's own metadata. */
export const METADATA_KEY = 'ambient_jupyter';

const LOAD = '%load_ext ambient_jupyter';
const UNLOAD = '%unload_ext ambient_jupyter';
const LOADED = "'ambient_jupyter' in get_ipython().extension_manager.loaded";

/** Kernel statuses after which the kernel is a new process, with nothing loaded. */
const FRESH = new Set<string>(['starting', 'restarting', 'autorestarting', 'dead', 'unknown']);

export class NotebookWatch {
  constructor(
    readonly panel: NotebookPanel,
    private readonly _automatic: () => boolean
  ) {
    const session = panel.sessionContext;
    session.kernelChanged.connect(this._onKernelChanged, this);
    session.statusChanged.connect(this._onStatus, this);
    // A `%load_ext` or `%unload_ext` typed in a cell changes the answer: ask again
    // after each cell while the notebook is not watched.
    NotebookActions.executed.connect(this._onExecuted, this);
    void session.ready.then(() => this.apply());
  }

  get state(): WatchState {
    return this._state;
  }

  /** Why the notebook is in this state, in words for the panel. */
  get reason(): string {
    return this._reason;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The person's choice for this notebook, if they made one (else the global setting decides). */
  get choice(): boolean | null {
    const stored = this.panel.model?.getMetadata(METADATA_KEY) as { watch?: unknown } | undefined;
    return typeof stored?.watch === 'boolean' ? stored.watch : null;
  }

  /** Turn watching on or off for this notebook, and remember it in the notebook. */
  async set(on: boolean): Promise<void> {
    const model = this.panel.model;
    if (model) {
      const stored = (model.getMetadata(METADATA_KEY) as Record<string, unknown> | undefined) ?? {};
      model.setMetadata(METADATA_KEY, { ...stored, watch: on });
    }
    await this.apply(on ? LOAD : UNLOAD);
  }

  /**
   * Bring the kernel in line: load the extension if this notebook is watched, or
   * only ask whether it is loaded. Requests go one at a time, in order.
   */
  apply(code?: string): Promise<void> {
    this._queue = this._queue.then(() => this._apply(code)).catch(reason => {
      console.warn('ambient-jupyter: could not update watching', reason);
    });
    return this._queue;
  }

  dispose(): void {
    NotebookActions.executed.disconnect(this._onExecuted, this);
    Signal.clearData(this);
  }

  private async _apply(code?: string): Promise<void> {
    const kernel = this.panel.sessionContext.session?.kernel;
    if (!kernel) {
      this._set('nokernel', 'This notebook has no kernel.');
      return;
    }
    const spec = await kernel.spec;
    const language = (spec?.language ?? '').toLowerCase();
    if (language && language !== 'python') {
      this._set(
        'unsupported',
        `Ambient watches Python kernels; this notebook's kernel (${spec?.display_name || spec?.name}) is ${spec?.language}.`
      );
      return;
    }
    const wanted = this.choice ?? this._automatic();
    const run = code ?? (wanted ? LOAD : '');
    if (run === LOAD) {
      this._set('pending', 'Starting to watch…');
    }
    const reply = await execute(kernel, run);
    if (kernel !== this.panel.sessionContext.session?.kernel) {
      return; // switched meanwhile: the new kernel gets its own request
    }
    if (reply.status !== 'ok') {
      const why = reply.status === 'error' ? `${reply.ename}: ${reply.evalue}` : 'the request was aborted';
      this._set(
        'unavailable',
        `Ambient could not be loaded in this kernel (${why}). Install ambient-jupyter in the kernel's environment.`
      );
      return;
    }
    const loaded = reply.user_expressions['loaded'] as { status?: string; data?: Record<string, unknown> } | undefined;
    if (loaded?.status === 'ok' && loaded.data?.['text/plain'] === 'True') {
      this._set('watching', 'Runs in this notebook are recorded for the assistant.');
    } else if (this.choice === false) {
      this._set('off', 'You turned watching off for this notebook: its runs are not recorded.');
    } else {
      this._set(
        'off',
        'Automatic watching is off (Settings → Ambient). Press Watch, or run %load_ext ambient_jupyter.'
      );
    }
  }

  private _onExecuted(_: unknown, args: { notebook: Notebook }): void {
    if (args.notebook === this.panel.content && this._state === 'off') {
      void this.apply('');
    }
  }

  private _onKernelChanged(): void {
    this._fresh = true;
    void this.apply();
  }

  private _onStatus(_: unknown, status: Kernel.Status): void {
    if (FRESH.has(status)) {
      this._fresh = true;
      if (this._state === 'watching') {
        this._set('pending', 'The kernel is restarting…');
      }
    } else if (status === 'idle' && this._fresh) {
      this._fresh = false;
      void this.apply();
    }
  }

  private _set(state: WatchState, reason: string): void {
    if (state !== this._state || reason !== this._reason) {
      this._state = state;
      this._reason = reason;
      this._changed.emit();
    }
  }

  private _state: WatchState = 'nokernel';
  private _reason = '';
  private _fresh = false;
  private _queue: Promise<void> = Promise.resolve();
  private readonly _changed = new Signal<this, void>(this);
}

/** Run `code` silently and return the reply (it also says whether the extension is loaded). */
async function execute(kernel: Kernel.IKernelConnection, code: string): Promise<KernelMessage.IExecuteReplyMsg['content']> {
  const future = kernel.requestExecute({
    code,
    silent: true,
    store_history: false,
    allow_stdin: false,
    stop_on_error: false,
    user_expressions: { loaded: LOADED }
  });
  return (await future.done).content;
}
