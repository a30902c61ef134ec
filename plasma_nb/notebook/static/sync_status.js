// SyncStatus: where a plasma_nb client stands, with buttons to sync and go offline.
// Python polls client.status() and sends only what changed; the buttons send
// {action: "sync" | "offline" | "online"} messages. No imports.

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

function render({ model, el }) {
  el.classList.add("plasma-status");
  const root = h("div", "plasma-status-root");
  const dot = h("span", "plasma-status-dot");
  const state = h("span", "plasma-status-state");
  const details = h("span", "plasma-status-details");
  const syncButton = h("button", "plasma-status-button", "Sync now");
  const modeButton = h("button", "plasma-status-button");
  const error = h("div", "plasma-status-error");
  root.append(dot, state, details, syncButton, modeButton, error);
  el.append(root);

  syncButton.addEventListener("click", () => model.send({ action: "sync" }));
  modeButton.addEventListener("click", () =>
    model.send({ action: model.get("offline") ? "online" : "offline" }));

  function draw() {
    const local = model.get("local_only");
    const offline = model.get("offline");
    const online = model.get("online");
    const closed = model.get("closed");
    let label = "online";
    let kind = "online";
    if (closed) { label = "closed"; kind = "off"; }
    else if (local) { label = "local only"; kind = "off"; }
    else if (offline) { label = "offline"; kind = "off"; }
    else if (!online) { label = "connecting"; kind = "trying"; }
    if (model.get("busy")) label += " · syncing…";
    dot.className = "plasma-status-dot plasma-" + kind;
    state.textContent = label;
    const parts = [];
    if (model.get("url")) parts.push(model.get("url"));
    parts.push(`${model.get("pending")} pending`);
    if (!local) {
      parts.push(`last push ${ago(model.get("last_push"))}`);
      parts.push(`last pull ${ago(model.get("last_pull"))}`);
    }
    if (model.get("rejected")) parts.push(`${model.get("rejected")} rejected`);
    details.textContent = parts.join(" · ");
    syncButton.disabled = local || offline || closed || model.get("busy");
    modeButton.disabled = local || closed;
    modeButton.textContent = offline ? "Go online" : "Go offline";
    const message = model.get("last_error") || model.get("message");
    error.textContent = message;
    error.className = "plasma-status-error" + (model.get("last_error") ? " plasma-bad" : "");
  }

  model.on("change", draw);
  draw();
  const timer = setInterval(draw, 5000); // keeps "n s ago" current
  return () => clearInterval(timer);
}

export default { render };
