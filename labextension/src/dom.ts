/**
 * A tiny element builder. Text always goes in through `textContent`: the only
 * HTML this extension ever writes comes from the sanitized markdown renderer.
 */
export interface IProps {
  className?: string;
  text?: string;
  title?: string;
  attrs?: Record<string, string>;
}

export function h(
  tag: string,
  props: IProps = {},
  children: Array<Node | string | null | undefined> = []
): HTMLElement {
  const el = document.createElement(tag);
  if (props.className) {
    el.className = props.className;
  }
  if (props.text !== undefined) {
    el.textContent = props.text;
  }
  if (props.title) {
    el.title = props.title;
  }
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    el.setAttribute(name, value);
  }
  // `append` takes a string as a text node, never as markup.
  el.append(...children.filter((child): child is Node | string => child !== null && child !== undefined));
  return el;
}

/** A button whose handler is attached as a function, never as markup. */
export function button(className: string, label: string, onClick: () => void, title = ''): HTMLButtonElement {
  const el = h('button', {
    className: `jp-Ambient-button ${className}`,
    text: label,
    title,
    attrs: { type: 'button' }
  }) as HTMLButtonElement;
  el.addEventListener('click', () => onClick());
  return el;
}
