/**
 * Running an approved action in its notebook: a cell inserted, edited or run
 * again, tagged with where it came from, and executed through the notebook's
 * own session, exactly as if the user had pressed Shift+Enter on it. The
 * kernel records it as an ordinary `cell_executed`, which the server links
 * back to the action.
 *
 * Nothing runs unless the code hashes to the sha256 the approval was given
 * for (the server checked that too; this is the tab's own check).
 */
import type { Cell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

import { IAmbientEvent, int, IRunFrame, str } from './protocol';
import { sha256Hex } from './sha256';

/** Provenance, in the cell's metadata under `ambient`. Never read back as an approval. */
export interface IAmbientCellMetadata {
  action_id: string;
  action: string;
  model: string | null;
  role: string;
  reply_to: number | null;
  sha256: string;
  approved_at: string;
  decided_by: string;
  [key: string]: string | number | null;
}

export type RunOutcome =
  | { ran: true; ok: boolean; where: string }
  /**
   * Nothing ran; `reason` says why, for people and for the server's record;
   * `changed`: because the person changed the cell since the proposal.
   */
  | { ran: false; reason: string; changed?: boolean };

/** The notebook identifier the server knows: the contents path, without a drive prefix. */
export function notebookPath(panel: NotebookPanel): string {
  return panel.context.localPath;
}

function refuse(reason: string, changed = false): RunOutcome {
  return { ran: false, reason, changed };
}

function executionCount(cell: Cell): number | null {
  // Only a code cell's model has one.
  const count = (cell.model as unknown as { executionCount?: unknown }).executionCount;
  return typeof count === 'number' ? count : null;
}

/** Indices of the code cells that show `[count]`. */
function cellsShowing(panel: NotebookPanel, count: number): number[] {
  const found: number[] = [];
  panel.content.widgets.forEach((cell, index) => {
    if (executionCount(cell) === count) {
      found.push(index);
    }
  });
  return found;
}

/** The open notebook at `notebook` (a server path) in this tab, if any. */
function panelFor(tracker: INotebookTracker, notebook: string): NotebookPanel | undefined {
  return tracker.find(p => notebookPath(p) === notebook);
}

/**
 * The source the one cell showing `[count]` holds now in this tab: what a proposal
 * asked for again is made against. Null when no cell, or several, show it.
 */
export function currentSource(tracker: INotebookTracker, notebook: string, count: number): string | null {
  const panel = panelFor(tracker, notebook);
  if (!panel?.content.model) {
    return null;
  }
  const showing = cellsShowing(panel, count);
  return showing.length === 1 ? panel.content.widgets[showing[0]].model.sharedModel.getSource() : null;
}

/** The same code, but for trailing whitespace on a line and trailing newlines (what editors and the history trim). */
export function sameSource(a: string, b: string): boolean {
  const normal = (code: string) =>
    code
      .split('\n')
      .map(line => line.replace(/\s+$/, ''))
      .join('\n')
      .replace(/\n+$/, '');
  return normal(a) === normal(b);
}

export function provenance(frame: IRunFrame): IAmbientCellMetadata {
  return {
    action_id: frame.actionId,
    action: frame.action,
    model: frame.model,
    role: frame.role,
    reply_to: frame.replyTo,
    sha256: frame.sha256,
    approved_at: frame.approvedAt,
    decided_by: frame.decidedBy
  };
}

/**
 * Take back what an action did to this tab's notebook: an edited cell gets the exact
 * source the proposal was made against again; an inserted cell is removed. Only while
 * the cell still holds what the action wrote: a later change is the person's own.
 * Nothing runs. Returns null when done, or why it could not be done.
 */
export function undoApplied(tracker: INotebookTracker, notebook: string, proposal: IAmbientEvent): string | null {
  const panel = panelFor(tracker, notebook);
  const model = panel?.content.model;
  if (!panel || !model) {
    return 'its notebook is not open in this tab';
  }
  const actionId = str(proposal, 'action_id');
  const cells = Array.from({ length: model.cells.length }, (_, i) => model.cells.get(i));
  const index = cells.findIndex(cell => (cell.getMetadata('ambient') as { action_id?: unknown } | undefined)?.action_id === actionId);
  if (index < 0) {
    return 'no cell in this tab holds the change (made in another tab? reload the notebook first)';
  }
  const cell = cells[index];
  if (!sameSource(cell.sharedModel.getSource(), str(proposal, 'code'))) {
    return 'the cell was changed since; use Ctrl+Z in the cell instead';
  }
  if (str(proposal, 'action') === 'edit_cell') {
    if (typeof proposal.old_code !== 'string') {
      return 'the proposal did not keep the source it replaced';
    }
    cell.sharedModel.setSource(proposal.old_code);
    cell.deleteMetadata('ambient');
  } else {
    model.sharedModel.deleteCell(index);
  }
  return null;
}

/**
 * Do what an approved `run` frame asks, in the tab's open copy of its notebook.
 *
 * - insert_cell: a new cell below the cell showing `[after]` (else below the active cell);
 * - edit_cell: the source of the cell showing `[cell]` is replaced, only if it still
 *   holds the source the proposal was made against (`oldCode`);
 * - run_cell: the cell showing `[cell]` runs again, only if its source is still the approved code;
 * - propose_next_cell: a new cell at the end of the notebook.
 */
export async function runApproved(tracker: INotebookTracker, frame: IRunFrame): Promise<RunOutcome> {
  const panel = panelFor(tracker, frame.notebook);
  if (!panel) {
    return refuse('its notebook is not open in this tab');
  }
  await panel.context.ready;
  const model = panel.content.model;
  if (!model) {
    return refuse('its notebook is not loaded in this tab');
  }
  if ((await sha256Hex(frame.code)) !== frame.sha256) {
    return refuse('the code does not match the sha256 it was approved for');
  }
  const content = panel.content;
  let index: number;
  if (frame.action === 'insert_cell' || frame.action === 'propose_next_cell') {
    if (frame.action === 'propose_next_cell') {
      index = model.cells.length;
    } else {
      const after = int(frame.args, 'after');
      const below = after !== null ? cellsShowing(panel, after) : [];
      const anchor = below.length ? below[below.length - 1] : content.activeCellIndex;
      index = anchor >= 0 ? anchor + 1 : model.cells.length;
    }
    model.sharedModel.insertCell(index, {
      cell_type: 'code',
      source: frame.code,
      metadata: { ambient: provenance(frame) }
    });
  } else {
    const target = int(frame.args, 'cell');
    if (target === null) {
      return refuse('the action names no cell');
    }
    const showing = cellsShowing(panel, target);
    if (frame.action === 'edit_cell') {
      if (showing.length !== 1) {
        return refuse(showing.length ? `several cells show [${target}]` : `no cell shows [${target}] any more`);
      }
      index = showing[0];
      const cell = content.widgets[index];
      // The proposal was made against the source the cell had then; a newer
      // edit by the person is theirs, and is not overwritten.
      if (frame.oldCode !== null && !sameSource(cell.model.sharedModel.getSource(), frame.oldCode)) {
        return refuse(`cell [${target}] changed since the proposal; nothing was edited`, true);
      }
      cell.model.sharedModel.setSource(frame.code);
      cell.model.setMetadata('ambient', provenance(frame));
    } else {
      // run_cell: the approval is for the code the cell had when it was proposed.
      const hashes = await Promise.all(showing.map(i => sha256Hex(content.widgets[i].model.sharedModel.getSource())));
      const same = showing.filter((_, k) => hashes[k] === frame.sha256);
      if (!same.length) {
        return showing.length
          ? refuse(`cell [${target}] changed since the proposal, so it was not run`, true)
          : refuse(`no cell shows [${target}] any more`);
      }
      index = same[0];
    }
  }
  const cell = content.widgets[index];
  // The last check, on what is about to run: exactly the approved code.
  if (!cell || (await sha256Hex(cell.model.sharedModel.getSource())) !== frame.sha256) {
    return refuse('the cell does not hold the approved code');
  }
  content.activeCellIndex = index;
  content.deselectAll();
  const ok = await NotebookActions.runCells(content, [cell], panel.sessionContext);
  const count = executionCount(cell);
  // `runCells` is false when the cell raised: it still ran, through the kernel.
  return { ran: true, ok, where: count !== null ? `[${count}]` : `cell ${index + 1}` };
}
