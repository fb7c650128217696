/**
 * ambient-jupyter's JupyterLab extension: the "Ambient" sidebar.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';

import { AmbientPanel } from './panel';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <path class="jp-icon3" fill="#616161" d="M4 4h16a2 2 0 0 1 2 2v9a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z"/>
</svg>`;

const ambientIcon = new LabIcon({ name: 'ambient-jupyter:chat', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ambient-jupyter:sidebar',
  description: 'A sidebar with the active notebook’s conversation with its assistant.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  optional: [ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new AmbientPanel({ tracker, rendermime });
    panel.id = 'jp-ambient-sidebar';
    panel.title.icon = ambientIcon;
    panel.title.caption = 'Ambient: the notebook’s assistant';
    app.shell.add(panel, 'right', { rank: 650 });
    restorer?.add(panel, 'ambient-jupyter-sidebar');

    const follow = () => panel.follow(tracker.currentWidget);
    tracker.currentChanged.connect(follow);
    follow();
  }
};

export default plugin;
