/**
 * Model output as text: the chat widget's `MarkdownRenderer`.
 *
 * The widget runs in frontends without JupyterLab's rendermime and sanitizer
 * (VS Code, Colab), so a reply is never parsed as HTML there: prose goes in
 * through `textContent`, and each ``` fenced block becomes a <pre>. Nothing
 * in a reply can run, load an image or follow a link. (The sidebar renders
 * the same replies as markdown, sanitized: panel.ts and sanitize.ts.)
 */
import { h } from './dom';

export function renderPlainText(host: HTMLElement, text: string): void {
  let prose: string[] = [];
  let code: string[] | null = null;
  const flushProse = () => {
    const joined = prose.join('\n').replace(/^\n+|\n+$/g, '');
    if (joined) {
      host.append(h('div', { className: 'jp-Ambient-text', text: joined }));
    }
    prose = [];
  };
  const flushCode = (lines: string[]) => {
    host.append(h('pre', { className: 'jp-Ambient-codeBlock' }, [h('code', { text: lines.join('\n') })]));
  };
  for (const line of text.split('\n')) {
    if (line.trimStart().startsWith('```')) {
      if (code === null) {
        flushProse();
        code = [];
      } else {
        flushCode(code);
        code = null;
      }
    } else if (code !== null) {
      code.push(line);
    } else {
      prose.push(line);
    }
  }
  if (code !== null) {
    flushCode(code);
  }
  flushProse();
}
