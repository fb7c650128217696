// The view of ambient_jupyter.chat(): the notebook's conversation, inside a cell output.
//
// Everything shown comes from the model or the notebook and is untrusted: it is
// written with textContent only (fenced code blocks go into <pre>), never as HTML,
// so nothing in it can run, load an image or follow a link.
//
// Each view keeps its own last seq. On render it asks the kernel for a replay after
// it (hello); until that replay is done it ignores live events, which the replay
// covers, so a re-rendered view shows each event exactly once.

const STATUS_TEXT = { thinking: "thinking…", streaming: "streaming…" };
const MAX_VALUE_CHARS = 80;

function h(tag, className, text, attrs) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined && text !== null) el.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
  return el;
}

function button(className, label, onClick, title) {
  const el = h("button", `ambient-chat-button ${className}`, label, { type: "button" });
  if (title) el.title = title;
  el.addEventListener("click", onClick);
  return el;
}

function randomId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function str(value, fallback = "") {
  return typeof value === "string" ? value : fallback;
}

/** Text with ``` fences: prose as text, code blocks as <pre>; no markup is interpreted. */
function renderText(host, text) {
  let prose = [];
  let code = null;
  const flushProse = () => {
    const joined = prose.join("\n").replace(/^\n+|\n+$/g, "");
    if (joined) host.append(h("div", "ambient-chat-prose", joined));
    prose = [];
  };
  for (const line of String(text).split("\n")) {
    if (line.trimStart().startsWith("```")) {
      if (code === null) {
        flushProse();
        code = [];
      } else {
        host.append(h("pre", "ambient-chat-pre", code.join("\n")));
        code = null;
      }
    } else if (code !== null) {
      code.push(line);
    } else {
      prose.push(line);
    }
  }
  if (code !== null) host.append(h("pre", "ambient-chat-pre", code.join("\n")));
  flushProse();
}

function firstLine(code) {
  const line = String(code).split("\n").find((l) => l.trim() !== "") || "";
  const more = String(code).trim().includes("\n") ? " …" : "";
  return line.length > 120 ? `${line.slice(0, 119)}…` : line + more;
}

function shortValue(value) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  text = text === undefined ? String(value) : text;
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

function duration(ms) {
  if (typeof ms !== "number") return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

async function sha256Hex(text) {
  if (!(globalThis.crypto && crypto.subtle)) return null; // not a secure context: the kernel checks
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What the kernel checked about a failure: each hint's text, and the fix it found, as text. */
function hintList(hints) {
  const found = (Array.isArray(hints) ? hints : []).filter((x) => x && typeof x === "object" && str(x.text));
  if (!found.length) return null;
  const list = h("div", "ambient-chat-hints");
  for (const hint of found) {
    const item = h("div", "ambient-chat-hint", null, { "data-kind": str(hint.kind, "hint") });
    item.append(h("div", "ambient-chat-hint-text", hint.text));
    if (str(hint.change)) item.append(h("div", "ambient-chat-hint-fix", `fix: ${hint.change}`));
    list.append(item);
  }
  return list;
}

const DIFF_CLASS = { "-": "is-del", "+": "is-add", " ": "is-ctx", "…": "is-skip" };

/** A proposal's stored diff ([op, line] pairs), or null if it has none (or a malformed one). */
function diffBlock(diff) {
  if (!Array.isArray(diff) || !diff.length) return null;
  if (!diff.every((p) => Array.isArray(p) && p[0] in DIFF_CLASS && typeof p[1] === "string")) return null;
  const block = h("div", "ambient-chat-diff", null, { "aria-label": "changes to the cell" });
  for (const [op, line] of diff) {
    const row = h("div", `ambient-chat-diff-line ${DIFF_CLASS[op]}`, null, { "data-op": op });
    if (op === "…") {
      row.textContent = "…";
    } else {
      row.append(h("span", "ambient-chat-diff-op", op, { "aria-hidden": "true" }), h("span", "ambient-chat-diff-text", line));
    }
    block.append(row);
  }
  return block;
}

/** Live objects: `name (type): text`, a multi-line text in a <pre>. */
function stateList(entries) {
  const list = h("div", "ambient-chat-state-entries");
  for (const entry of entries) {
    const label = str(entry.type) ? `${str(entry.name)} (${entry.type})` : str(entry.name);
    const text = str(entry.text);
    const row = h("div", "ambient-chat-state-entry", null, { "data-name": str(entry.name) });
    if (text.includes("\n")) {
      row.append(h("span", "ambient-chat-meta", `${label}:`), h("pre", "ambient-chat-pre", text));
    } else {
      row.append(h("span", "ambient-chat-meta", `${label}: `), h("span", "ambient-chat-line-inline", text));
    }
    list.append(row);
  }
  return list;
}

function stored(event, className) {
  const el = h("div", className, null, { "data-seq": String(event.seq), "data-kind": str(event.kind) });
  el.title = `#${event.seq} · ${str(event.at)}`;
  return el;
}

function card(event, modifier, badge) {
  const el = stored(event, `ambient-chat-card ${modifier}`);
  const head = h("div", "ambient-chat-card-head");
  head.append(h("span", "ambient-chat-badge", badge));
  el.append(head);
  return { el, head };
}

/** A proposed action: the exact code, its hash, Approve / Reject, and what became of it. */
class Proposal {
  constructor(event, send) {
    this.actionId = str(event.action_id);
    this.sha256 = str(event.sha256);
    const code = str(event.code);
    const label = str(event.action).replace(/_/g, " ");
    const origin = event.origin === "hint" ? "hint" : "model";
    const { el, head } = card(event, "ambient-chat-proposal", `✎ proposed: ${label}`);
    this.el = el;
    el.setAttribute("data-action-id", this.actionId);
    el.setAttribute("data-origin", origin);
    if (origin === "hint") {
      // Built by the kernel's analysis from facts it checked; no model wrote it.
      head.append(h("span", "ambient-chat-origin", "✓ checked fix", {
        title: "Built by the kernel's analysis from facts it checked against the live objects; no model wrote it",
      }));
    }
    this.state = h("span", "ambient-chat-action-state", "waiting for you");
    head.append(this.state);
    if (str(event.text)) el.append(h("div", "ambient-chat-prose", event.text));
    const pre = h("pre", "ambient-chat-pre ambient-chat-code", code);
    const diff = str(event.action) === "call_plugin" ? null : diffBlock(event.diff);
    if (diff) {
      // What is approved is the whole code (its hash is below): it stays one click away.
      const full = h("details", "ambient-chat-full");
      full.append(h("summary", null, "full cell"), pre);
      el.append(diff, full);
    } else {
      el.append(pre);
    }
    el.append(h("div", "ambient-chat-hash", `sha256 ${this.sha256.slice(0, 16)}…`, { title: this.sha256 }));
    this.approveButton = button("ambient-chat-approve is-accept", "Approve", () => {
      this.setWaiting("approving…");
      send({ type: "decide", action_id: this.actionId, decision: "approve", sha256: this.sha256 });
    }, "Run exactly this code in the kernel");
    this.rejectButton = button("ambient-chat-reject", "Reject", () => {
      this.setWaiting("rejecting…");
      send({ type: "decide", action_id: this.actionId, decision: "reject", sha256: this.sha256 });
    });
    this.approveButton.disabled = true;
    const actions = h("div", "ambient-chat-actions");
    actions.append(this.approveButton, this.rejectButton);
    el.append(actions);
    this.decided = false;
    this.waiting = false;
    this.hashOk = null;
    sha256Hex(code).then(
      (actual) => this.hashChecked(actual === null || actual === this.sha256),
      () => this.hashChecked(true),
    );
  }

  hashChecked(ok) {
    this.hashOk = ok;
    if (!ok) this.state.textContent = "hash mismatch: cannot be approved";
    this.refresh();
  }

  setWaiting(note) {
    this.waiting = true;
    this.state.textContent = note;
    this.refresh();
  }

  refused(message) {
    this.waiting = false;
    this.state.textContent = message;
    this.el.classList.add("is-refused");
    this.refresh();
  }

  setDecided(decision, by) {
    this.decided = true;
    this.waiting = false;
    this.el.classList.remove("is-refused");
    this.el.classList.add(decision === "approved" ? "is-approved" : "is-rejected");
    this.state.textContent = `${decision} by ${by}${decision === "approved" ? " · running…" : ""}`;
    this.refresh();
  }

  setExecuted(event) {
    const ok = event.ok !== false;
    this.el.classList.add(ok ? "is-ran" : "is-failed");
    const value = event.result !== undefined && event.result !== null && typeof event.result !== "string";
    const result = value ? ` → ${shortValue(event.result)}` : "";
    this.state.textContent = ok ? `✓ ran${result}` : `✗ failed: ${str(event.error, "error")}`;
  }

  refresh() {
    const open = !this.decided && !this.waiting;
    this.approveButton.disabled = !(open && this.hashOk === true);
    this.rejectButton.disabled = !open;
    this.approveButton.hidden = this.decided;
    this.rejectButton.hidden = this.decided;
  }
}

function render({ model, el }) {
  const view = randomId();
  let lastSeq = 0;
  let ready = false;
  const proposals = new Map();
  const liveReplies = new Map();
  const pending = new Map();
  const send = (message) => model.send(message);

  const root = h("div", "ambient-chat");
  const header = h("div", "ambient-chat-header");
  const title = h("span", "ambient-chat-title", "Ambient");
  const notebook = h("span", "ambient-chat-notebook");
  const models = h("span", "ambient-chat-model");
  const mode = h("span", "ambient-chat-mode");
  header.append(title, notebook, h("span", "ambient-chat-spacer"), models, mode);
  const body = h("div", "ambient-chat-body");
  const log = h("div", "ambient-chat-log", null, { role: "log", "aria-live": "polite" });
  const live = h("div", "ambient-chat-live");
  const empty = h("div", "ambient-chat-empty", "Ask about this notebook. /expert sends a question to the expert model.");
  body.append(empty, log, live);
  const error = h("div", "ambient-chat-error", null, { role: "alert" });
  error.hidden = true;
  const footer = h("div", "ambient-chat-footer");
  const input = h("textarea", "ambient-chat-input", null, {
    rows: "2",
    placeholder: "Ask the assistant (Enter sends, Shift+Enter for a new line)",
    "aria-label": "Message to the assistant",
  });
  const activity = h("span", "ambient-chat-activity");
  const stop = button("ambient-chat-stop", "Stop", () => send({ type: "stop" }), "Stop the reply being written");
  const sendButton = button("ambient-chat-send is-accept", "Send", () => submit());
  footer.append(input, h("div", "ambient-chat-controls"));
  footer.lastChild.append(activity, stop, sendButton);
  root.append(header, body, error, footer);
  el.append(root);

  const nearBottom = () => body.scrollHeight - body.scrollTop - body.clientHeight < 40;
  const scroll = (stick) => {
    if (stick) body.scrollTop = body.scrollHeight;
  };

  function showHeader() {
    const path = str(model.get("notebook"));
    notebook.textContent = path.split("/").pop() || path;
    notebook.title = path;
    const expert = str(model.get("expert_spec"));
    models.textContent = str(model.get("model_spec")) + (expert ? ` · expert ${expert}` : "");
    mode.textContent = `agent: ${str(model.get("mode"), "ask")}`;
    mode.setAttribute("data-mode", str(model.get("mode"), "ask"));
  }

  function showStatus() {
    const status = str(model.get("status"), "idle");
    root.setAttribute("data-status", status);
    activity.textContent = STATUS_TEXT[status] || "";
    stop.hidden = status === "idle";
  }

  function showError(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  function submit() {
    const text = input.value;
    if (!text.trim()) return;
    const clientId = randomId();
    const bubble = h("div", "ambient-chat-msg ambient-chat-user is-pending");
    bubble.append(h("div", "ambient-chat-prose", text));
    pending.set(clientId, bubble);
    live.prepend(bubble);
    input.value = "";
    showError("");
    send({ type: "chat", text, client_id: clientId });
    scroll(true);
  }

  // Keys typed here are for the chat, not for the notebook's shortcuts (Shift+Enter
  // would run the cell, "a"/"b" insert cells). JupyterLab handles keydown as it
  // bubbles, after this element; Ctrl/Cmd/Alt combinations (save, ...) and Escape
  // still reach it.
  const isOurs = (e) => !(e.ctrlKey || e.metaKey || e.altKey) && e.key !== "Escape";
  input.addEventListener("keydown", (e) => {
    if (isOurs(e)) e.stopPropagation();
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  input.addEventListener("keypress", (e) => {
    if (isOurs(e)) e.stopPropagation();
  });

  function eventNode(event) {
    const kind = str(event.kind);
    if (kind === "user_message") {
      const el = stored(event, "ambient-chat-msg ambient-chat-user");
      const meta = [];
      if (str(event.source) && event.source !== "widget") meta.push(`via ${event.source}`);
      if (event.to === "expert") meta.push("to the expert");
      if (meta.length) el.append(h("div", "ambient-chat-meta", meta.join(" · ")));
      el.append(h("div", "ambient-chat-prose", str(event.text)));
      return el;
    }
    if (kind === "assistant_message") {
      const state = str(event.state, "complete");
      const el = stored(event, `ambient-chat-msg ambient-chat-assistant is-${state}`);
      const content = h("div", "ambient-chat-content");
      renderText(content, str(event.text));
      el.append(content);
      const note = state === "incomplete" ? " · stopped before the end" : state === "error" ? " · failed" : "";
      el.append(h("div", "ambient-chat-meta", `${str(event.model)} · ${str(event.role, "watcher")}${note}`));
      return el;
    }
    if (kind === "cell_executed") {
      const failed = event.status === "error";
      const { el, head } = card(event, `ambient-chat-cell ${failed ? "is-error" : "is-ok"}`, failed ? "✗ error" : "✓ ok");
      head.prepend(h("span", "ambient-chat-count", `[${event.execution_count ?? " "}]`));
      head.append(h("span", "ambient-chat-meta", duration(event.duration_ms)));
      el.append(h("code", "ambient-chat-line", firstLine(str(event.code)), { title: str(event.code) }));
      if (event.error && typeof event.error === "object") {
        el.append(h("div", "ambient-chat-error-line", `${str(event.error.ename, "Error")}: ${str(event.error.evalue)}`));
      }
      const hints = failed ? hintList(event.hints) : null;
      if (hints) el.append(hints);
      return el;
    }
    if (kind === "widget_changed") {
      const name = str(event.description) ? `${str(event.widget_class)} “${event.description}”` : str(event.widget_class);
      const { el, head } = card(event, "ambient-chat-widget", "⚙ widget");
      head.append(h("span", "ambient-chat-meta", name));
      el.append(h("div", "ambient-chat-line", `${str(event.trait)}: ${shortValue(event.old)} → ${shortValue(event.new)}`));
      return el;
    }
    if (kind === "model_error") {
      const { el, head } = card(event, "ambient-chat-model-error", "⚠ model error");
      head.append(h("span", "ambient-chat-meta", str(event.model)));
      el.append(h("div", "ambient-chat-prose", str(event.message)));
      return el;
    }
    if (kind === "action_proposed") {
      const proposal = new Proposal(event, send);
      proposals.set(proposal.actionId, proposal);
      return proposal.el;
    }
    if (kind === "action_decided") {
      const approved = event.decision === "approved";
      proposals.get(str(event.action_id))?.setDecided(str(event.decision), str(event.by, "user"));
      const { el } = card(event, `ambient-chat-decided ${approved ? "is-approved" : "is-rejected"}`,
        `${approved ? "✓ approved" : "✗ rejected"} by ${str(event.by, "user")}`);
      if (str(event.reason)) el.append(h("div", "ambient-chat-meta", event.reason));
      return el;
    }
    if (kind === "action_executed") {
      proposals.get(str(event.action_id))?.setExecuted(event);
      const ok = event.ok !== false;
      const { el } = card(event, `ambient-chat-executed ${ok ? "is-ok" : "is-error"}`, ok ? "▶ ran" : "✗ run failed");
      if (typeof event.result === "string") {
        el.append(h("pre", "ambient-chat-pre ambient-chat-output", event.result));
      } else if (event.result !== undefined && event.result !== null) {
        el.append(h("div", "ambient-chat-line", `→ ${shortValue(event.result)}`));
      }
      if (str(event.error)) el.append(h("div", "ambient-chat-error-line", event.error));
      return el;
    }
    if (kind === "settings_changed") {
      return card(event, "ambient-chat-settings", `agent mode: ${str(event.agent)}`).el;
    }
    if (kind === "kernel_state") {
      const entries = (Array.isArray(event.entries) ? event.entries : []).filter((e) => e && typeof e === "object" && str(e.name));
      const names = entries.map((e) => e.name).join(", ");
      const { el, head } = card(event, "ambient-chat-state", "◇ state");
      head.append(h("span", "ambient-chat-meta ambient-chat-state-names",
        entries.length ? `state: ${names}` : str(event.note) ? "state: not known" : "state: nothing to show"));
      if (entries.length) {
        const details = h("details", "ambient-chat-state-details");
        details.append(h("summary", null, `what the kernel held (${entries.length})`), stateList(entries));
        el.append(details);
      }
      if (str(event.note)) el.append(h("div", "ambient-chat-state-note", event.note));
      return el;
    }
    if (kind === "plugin_registered") {
      const { el } = card(event, "ambient-chat-plugin", `🧩 plugin ${str(event.plugin)}`);
      const names = Array.isArray(event.actions) ? event.actions.map((a) => str(a && a.name)).join(", ") : "";
      if (names) el.append(h("div", "ambient-chat-meta", `actions: ${names}`));
      return el;
    }
    return card(event, "ambient-chat-other", kind).el;
  }

  function addEvents(events) {
    const stick = nearBottom();
    for (const event of events) {
      const seq = Number(event.seq);
      if (!(seq > lastSeq)) continue;
      lastSeq = seq;
      if (event.kind === "user_message" && pending.has(event.client_id)) {
        pending.get(event.client_id).remove();
        pending.delete(event.client_id);
      }
      if (event.kind === "assistant_message" && liveReplies.has(event.reply_id)) {
        liveReplies.get(event.reply_id).remove();
        liveReplies.delete(event.reply_id);
      }
      log.append(eventNode(event));
    }
    empty.hidden = log.childElementCount > 0 || live.childElementCount > 0;
    scroll(stick);
  }

  function addToken(replyId, text) {
    let bubble = liveReplies.get(replyId);
    if (!bubble) {
      bubble = h("div", "ambient-chat-msg ambient-chat-assistant is-streaming", null, { "data-reply-id": replyId });
      bubble.append(h("div", "ambient-chat-prose"));
      liveReplies.set(replyId, bubble);
      live.append(bubble);
      empty.hidden = true;
    }
    const stick = nearBottom();
    bubble.firstChild.append(document.createTextNode(text));
    scroll(stick);
  }

  function onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "replay":
        if (msg.view !== view) return;
        if (msg.reset) {
          log.replaceChildren();
          proposals.clear();
          lastSeq = 0;
        }
        addEvents(msg.events || []);
        if (msg.done) ready = true;
        return;
      case "events":
        if (ready) addEvents(msg.events || []);
        return;
      case "token":
        addToken(str(msg.reply_id), str(msg.text));
        return;
      case "run":
        // An action the mode approved: hand it back to the kernel's main thread.
        send({ type: "run", action_id: msg.action_id });
        return;
      case "error": {
        if (msg.client_id && pending.has(msg.client_id)) {
          pending.get(msg.client_id).remove();
          pending.delete(msg.client_id);
        }
        const proposal = msg.action_id ? proposals.get(msg.action_id) : undefined;
        if (proposal) proposal.refused(str(msg.message));
        showError(str(msg.message));
        return;
      }
      default:
        return;
    }
  }

  const onHeader = () => showHeader();
  const onStatus = () => showStatus();
  model.on("msg:custom", onMessage);
  for (const name of ["notebook", "model_spec", "expert_spec", "mode"]) model.on(`change:${name}`, onHeader);
  model.on("change:status", onStatus);
  showHeader();
  showStatus();
  send({ type: "hello", view, after_seq: lastSeq });

  return () => {
    model.off("msg:custom", onMessage);
    for (const name of ["notebook", "model_spec", "expert_spec", "mode"]) model.off(`change:${name}`, onHeader);
    model.off("change:status", onStatus);
  };
}

export default { render };
