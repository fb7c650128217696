/**
 * Running an approved cell: inserted below the active cell of its notebook,
 * tagged with where it came from, and executed through the notebook's own
 * session, exactly as if the user had pressed Shift+Enter on it.
 */
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

export interface IAmbientCellMetadata {
  action_id: string;
  model: string | null;
  reply_to: number | null;
  sha256: string;
  approved_at: string;
  [key: string]: string | number | null;
}

export type InsertOutcome = 'ran' | 'error' | 'failed' | 'not-open' | 'already-inserted';

/** The notebook identifier the server knows: the contents path, without a drive prefix. */
export function notebookPath(panel: NotebookPanel): string {
  return panel.context.localPath;
}

export async function insertAndRun(
  tracker: INotebookTracker,
  notebook: string,
  code: string,
  metadata: IAmbientCellMetadata
): Promise<InsertOutcome> {
  const panel = tracker.find(p => notebookPath(p) === notebook);
  const model = panel?.content.model;
  if (!panel || !model) {
    return 'not-open';
  }
  for (const cell of model.cells) {
    const existing = cell.getMetadata('ambient') as Partial<IAmbientCellMetadata> | undefined;
    if (existing?.action_id === metadata.action_id) {
      return 'already-inserted';
    }
  }
  const content = panel.content;
  const index = content.activeCellIndex >= 0 ? content.activeCellIndex + 1 : model.cells.length;
  model.sharedModel.insertCell(index, {
    cell_type: 'code',
    source: code,
    metadata: { ambient: metadata }
  });
  content.activeCellIndex = index;
  content.deselectAll();
  const cell = content.widgets[index];
  if (!cell || cell.model.sharedModel.getSource() !== code) {
    return 'failed';
  }
  const ok = await NotebookActions.runCells(content, [cell], panel.sessionContext);
  // `runCells` is false when the cell raised: it still ran, through the kernel.
  return ok ? 'ran' : 'error';
}
