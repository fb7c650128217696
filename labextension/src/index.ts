/**
 * ambient-jupyter's JupyterLab extension: the "Ambient" sidebar.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { setCodeHighlighter } from './cards';
import { AmbientPanel } from './panel';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <path class="jp-icon3" fill="#616161" d="M4 4h16a2 2 0 0 1 2 2v9a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z"/>
</svg>`;

const ambientIcon = new LabIcon({ name: 'ambient-jupyter:chat', svgstr: ICON_SVG });

const OPEN = 'ambient-jupyter:open';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ambient-jupyter:sidebar',
  description: 'A sidebar with the active notebook’s conversation with its assistant.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  optional: [ILayoutRestorer, ISettingRegistry, IEditorLanguageRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    languages: IEditorLanguageRegistry | null
  ) => {
    if (languages) {
      // Proposed and failed code, coloured with JupyterLab's own editor theme.
      const python = languages.findBest('python');
      setCodeHighlighter((el, code) => languages.highlight(code, python, el));
    }
    const panel = new AmbientPanel({ tracker, rendermime });
    panel.id = 'jp-ambient-sidebar';
    panel.title.icon = ambientIcon;
    panel.title.caption = 'Ambient: the notebook’s assistant';
    app.shell.add(panel, 'right', { rank: 650 });
    restorer?.add(panel, 'ambient-jupyter-sidebar');

    // A visible way in from every notebook: Notebook 7 starts with its right
    // sidebar collapsed and shows no tab for it.
    app.commands.addCommand(OPEN, {
      label: 'Show the Ambient panel',
      caption: 'Ambient: the notebook’s assistant',
      icon: ambientIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (notebook: NotebookPanel) => {
        const open = new ToolbarButton({
          icon: ambientIcon,
          className: 'jp-Ambient-open',
          tooltip: 'Show the Ambient panel: the notebook’s assistant',
          onClick: () => void app.commands.execute(OPEN)
        });
        notebook.toolbar.insertItem(10, 'ambient-jupyter', open);
        return open;
      }
    });

    // "Watch notebooks automatically": on unless the person turned it off.
    let automatic = true;
    const watch = (notebook: NotebookPanel) => panel.watch(notebook, () => automatic);
    // Not before the setting is known: a notebook must not be watched for a moment
    // by a person who turned automatic watching off.
    const startWatching = () => {
      tracker.forEach(watch);
      tracker.widgetAdded.connect((_, notebook) => watch(notebook));
      panel.update();
    };
    if (settingRegistry) {
      settingRegistry
        .load(plugin.id)
        .then(settings => {
          const read = () => {
            automatic = settings.get('watchAutomatically').composite !== false;
          };
          read();
          settings.changed.connect(() => {
            read();
            panel.rewatch();
          });
          startWatching();
        })
        .catch(reason => {
          console.warn('ambient-jupyter: settings could not be loaded; watching automatically', reason);
          startWatching();
        });
    } else {
      startWatching();
    }

    const follow = () => panel.follow(tracker.currentWidget);
    tracker.currentChanged.connect(follow);
    follow();
  }
};

export default plugin;
