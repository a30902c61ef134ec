// Renders the widgets' ESM against a minimal fake DOM and model, drives them as a user
// would (scroll, click), and prints what they asked of the model as JSON.
// Usage: node render.mjs <live_table.js> <sync_status.js>

class Element {
  constructor(tag) {
    this.tag = tag;
    this.children = [];
    this.className = "";
    this.style = {};
    this.listeners = {};
    this.textContent = "";
    this.title = "";
    this.scrollTop = 0;
    this.disabled = false;
    this.classList = { add: (name) => { this.className = `${this.className} ${name}`.trim(); } };
  }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  fire(type) { for (const fn of this.listeners[type] || []) fn({}); }
  find(cls) {
    if (this.className.split(" ").includes(cls)) return this;
    for (const child of this.children) {
      const found = child.find(cls);
      if (found) return found;
    }
    return null;
  }
  all(cls, out = []) {
    if (this.className.split(" ").includes(cls)) out.push(this);
    for (const child of this.children) child.all(cls, out);
    return out;
  }
}

globalThis.document = { createElement: (tag) => new Element(tag) };
const frames = [];
globalThis.requestAnimationFrame = (fn) => frames.push(fn);
globalThis.cancelAnimationFrame = () => {};
const flush = () => { while (frames.length) frames.shift()(); };

function model(state) {
  const handlers = {};
  const log = { set: [], saved: 0, sent: [] };
  return {
    log,
    get: (key) => state[key],
    set: (key, value) => { state[key] = value; log.set.push([key, value]); },
    save_changes: () => { log.saved += 1; },
    send: (content) => { log.sent.push(content); },
    on: (event, fn) => { (handlers[event] ||= []).push(fn); },
    change: (key, value) => {
      state[key] = value;
      for (const fn of handlers[`change:${key}`] || []) fn();
      for (const fn of handlers.change || []) fn();
    },
  };
}

const [liveTablePath, syncStatusPath] = process.argv.slice(2);
const out = {};

{
  const { default: widget } = await import(liveTablePath);
  const rows = Array.from({ length: 50 }, (_, i) => [`k${i}`, `title ${i}`, i]);
  const m = model({
    columns: ["id", "title", "n"], total: 1000, version: 3, window_offset: 0, window: rows,
    pending: [1], pending_count: 1, rejected: [], error: "", viewport: [0, 50], sort: [],
    rows_visible: 12, page_size: 50,
  });
  const el = new Element("div");
  const cleanup = widget.render({ model: m, el });
  const header = el.find("plasma-live-header");
  out.header = header.children.map((c) => c.textContent);
  out.rows = el.all("plasma-live-row").length;
  out.pendingRows = el.all("plasma-pending").map((r) => r.children[1].textContent);
  out.footer = el.find("plasma-live-footer").textContent;
  const viewport = el.find("plasma-live-viewport");
  viewport.scrollTop = 10 * 26;  // still inside the window: nothing asked
  viewport.fire("scroll");
  flush();
  out.askedInside = m.log.set.length;
  viewport.scrollTop = 500 * 26;
  viewport.fire("scroll");
  viewport.fire("scroll");  // several events in one frame: one request
  flush();
  out.askedViewport = m.log.set.at(-1);
  out.saved = m.log.saved;
  header.children[2].fire("click");
  out.sortAfterOneClick = m.get("sort");
  m.change("sort", m.get("sort"));
  header.children[2].fire("click");
  out.sortAfterTwoClicks = m.get("sort");
  m.change("rejected", [{ seq: 4, name: "rename", message: "no todo with id 't1'" }]);
  out.rejected = el.find("plasma-live-rejected").children.map((c) =>
    c.children.length ? c.children.map((x) => x.textContent).join("") : c.textContent);
  el.find("plasma-live-dismiss").fire("click");
  out.sent = m.log.sent;
  m.change("window", [[null, true, 1.5]]);
  out.cells = el.find("plasma-live-row").children.slice(1).map((c) => [c.textContent, c.className]);
  if (typeof cleanup === "function") cleanup();
}

{
  const { default: widget } = await import(syncStatusPath);
  globalThis.setInterval = () => 1;
  globalThis.clearInterval = () => {};
  const m = model({
    url: "http://x", local_only: false, online: true, offline: false, pending: 2, rejected: 0,
    last_push: "", last_pull: new Date().toISOString(), last_error: "", busy: false,
    message: "", closed: false,
  });
  const el = new Element("div");
  widget.render({ model: m, el });
  out.status = el.find("plasma-status-state").textContent;
  out.details = el.find("plasma-status-details").textContent;
  const [sync, mode] = el.all("plasma-status-button");
  sync.fire("click");
  mode.fire("click");
  m.change("offline", true);
  out.statusOffline = el.find("plasma-status-state").textContent;
  out.modeLabel = mode.textContent;
  out.syncDisabled = sync.disabled;
  out.statusSent = m.log.sent;
}

console.log(JSON.stringify(out));
