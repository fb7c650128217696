/**
 * Model output is untrusted HTML: this sanitizer makes it inert.
 *
 * It runs JupyterLab's own sanitizer first (configured strictly: no command
 * linker attributes, no named properties), then a second pass over an inert
 * `DOMParser` document, before any markup reaches the live page:
 *
 * - remote and relative resources (`img`, media, `srcset`, ...) are replaced by
 *   a placeholder, so model output can never make the browser send a request
 *   (a tracking pixel, or a GET against the Jupyter server with the cookie);
 * - only a short allowlist of attributes survives: no `on*` handlers, no
 *   `style` (no overlays), no `id`/`name` (no DOM clobbering), no `data-*`
 *   (no `data-commandlinker-*`, which JupyterLab would run on click), no
 *   `jp-`/`lm-` classes (no forged sidebar buttons);
 * - links keep only `http:`, `https:` and `mailto:` targets;
 * - forms, buttons and other interactive or scriptable elements are removed
 *   or unwrapped to their text.
 *
 * A `DOMParser` document has no browsing context: nothing in it is fetched or
 * run while we inspect it.
 */
import { Sanitizer } from '@jupyterlab/apputils';
import { IRenderMime } from '@jupyterlab/rendermime';

/** Elements dropped with their content. */
const DROP = new Set([
  'script',
  'style',
  'template',
  'noscript',
  'iframe',
  'frame',
  'frameset',
  'object',
  'embed',
  'applet',
  'link',
  'meta',
  'base',
  'svg',
  'math',
  'audio',
  'video',
  'source',
  'track',
  'canvas',
  'map',
  'area',
  'textarea',
  'select',
  'option',
  'xmp',
  'noembed',
  'noframes',
  'plaintext'
]);

/** Elements replaced by their children (their text stays readable). */
const UNWRAP = new Set(['form', 'button', 'label', 'fieldset', 'picture', 'output', 'dialog']);

const ATTRIBUTES = new Set([
  'title',
  'lang',
  'dir',
  'class',
  'align',
  'colspan',
  'rowspan',
  'start',
  'alt',
  'width',
  'height',
  'open',
  'href',
  'src',
  'type',
  'checked',
  'disabled'
]);

const LINK_SCHEMES = new Set(['http:', 'https:', 'mailto:']);
const DATA_IMAGE = /^data:image\/(png|jpe?g|gif|webp|bmp|svg\+xml)[;,]/i;
const RESERVED_CLASS = /^(jp|lm|p)-/;

/** JupyterLab's sanitizer, configured for untrusted model output. */
function strictLabSanitizer(): Sanitizer {
  const sanitizer = new Sanitizer();
  // Older JupyterLab (< 4.6) has no such switch; `scrub` drops data-* anyway.
  if (typeof sanitizer.setAllowCommandLinker === 'function') {
    sanitizer.setAllowCommandLinker(false);
  }
  sanitizer.setAllowNamedProperties(false);
  sanitizer.setAllowedSchemes(['http', 'https', 'mailto']);
  return sanitizer;
}

export class AmbientSanitizer implements IRenderMime.ISanitizer {
  readonly allowNamedProperties = false;
  readonly allowCommandLinker = false;

  getAutolink(): boolean {
    return true;
  }

  sanitize(dirty: string, options?: IRenderMime.ISanitizerOptions): string {
    return scrub(this._lab.sanitize(dirty, options));
  }

  private readonly _lab = strictLabSanitizer();
}

/** The second pass: see the module docstring. */
export function scrub(html: string): string {
  const doc = new DOMParser().parseFromString(
    `<!doctype html><body>${html}</body>`,
    'text/html'
  );
  // Snapshot first: the loop removes and replaces elements as it goes.
  const elements = Array.from(doc.body.querySelectorAll('*'));
  for (const el of elements) {
    if (!el.isConnected) {
      continue; // inside something already dropped
    }
    const tag = el.localName;
    if (DROP.has(tag)) {
      el.remove();
      continue;
    }
    if (UNWRAP.has(tag)) {
      el.replaceWith(...Array.from(el.childNodes));
      continue;
    }
    if (tag === 'input') {
      scrubInput(el);
      continue;
    }
    scrubAttributes(el);
    if (tag === 'a') {
      scrubLink(el as HTMLAnchorElement);
    } else if (tag === 'img') {
      scrubImage(el as HTMLImageElement, doc);
    }
  }
  return doc.body.innerHTML;
}

function scrubAttributes(el: Element): void {
  for (const attr of Array.from(el.attributes)) {
    const name = attr.name.toLowerCase();
    const misplaced = (name === 'src' && el.localName !== 'img') || (name === 'href' && el.localName !== 'a');
    if (!ATTRIBUTES.has(name) || misplaced) {
      el.removeAttribute(attr.name);
    }
  }
  if (el.hasAttribute('class')) {
    const kept = Array.from(el.classList).filter(c => !RESERVED_CLASS.test(c));
    if (kept.length) {
      el.setAttribute('class', kept.join(' '));
    } else {
      el.removeAttribute('class');
    }
  }
}

/** Keep GitHub-style task-list checkboxes (read-only); drop every other input. */
function scrubInput(el: Element): void {
  if ((el.getAttribute('type') ?? '').toLowerCase() !== 'checkbox') {
    el.remove();
    return;
  }
  const checked = el.hasAttribute('checked');
  for (const attr of Array.from(el.attributes)) {
    el.removeAttribute(attr.name);
  }
  el.setAttribute('type', 'checkbox');
  el.setAttribute('disabled', '');
  if (checked) {
    el.setAttribute('checked', '');
  }
}

/** `text` as an absolute URL; null for anything else (a relative URL would resolve against JupyterLab itself). */
function absoluteUrl(text: string): URL | null {
  try {
    return new URL(text);
  } catch {
    return null;
  }
}

function scrubLink(a: HTMLAnchorElement): void {
  const url = absoluteUrl((a.getAttribute('href') ?? '').trim());
  if (url && LINK_SCHEMES.has(url.protocol)) {
    a.setAttribute('target', '_blank');
    a.setAttribute('rel', 'noopener noreferrer nofollow');
  } else {
    a.removeAttribute('href');
  }
}

function scrubImage(img: HTMLImageElement, doc: Document): void {
  const src = (img.getAttribute('src') ?? '').trim();
  if (DATA_IMAGE.test(src)) {
    return;
  }
  const where = absoluteUrl(src)?.host ?? '';
  const placeholder = doc.createElement('span');
  placeholder.className = 'jp-Ambient-blockedImage';
  placeholder.setAttribute('title', 'A remote image in the reply was not loaded.');
  const label = img.getAttribute('alt') || 'image';
  placeholder.textContent = where ? `[${label}: not loaded from ${where}]` : `[${label}: not loaded]`;
  img.replaceWith(placeholder);
}
