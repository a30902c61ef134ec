// LiveTable: a virtualized view of a plasma_nb live query.
//
// Python owns the rows. This view keeps a spacer as tall as every row would be and
// draws only the window of rows Python sent (`window`, starting at `window_offset`).
// When the visible rows leave that window, it asks for another by setting
// `viewport` = [offset, limit]; Python answers with one state update.
// No imports: the module ships inside the wheel and works offline.

const ROW_HEIGHT = 26;

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(value) {
  if (value === null || value === undefined) return ["NULL", "plasma-null"];
  if (typeof value === "boolean") return [value ? "true" : "false", "plasma-bool"];
  if (typeof value === "number") return [String(value), "plasma-num"];
  if (typeof value === "object") return [JSON.stringify(value), ""];
  return [String(value), ""];
}

function render({ model, el }) {
  el.classList.add("plasma-live");
  const root = h("div", "plasma-live-root");
  const header = h("div", "plasma-live-header");
  const viewport = h("div", "plasma-live-viewport");
  const spacer = h("div", "plasma-live-spacer");
  const body = h("div", "plasma-live-body");
  const footer = h("div", "plasma-live-footer");
  const rejected = h("div", "plasma-live-rejected");
  const error = h("div", "plasma-live-error");
  spacer.append(body);
  viewport.append(spacer);
  root.append(header, viewport, footer, rejected, error);
  el.append(root);

  let frame = 0;

  function template() {
    const n = model.get("columns").length;
    return `1.4em repeat(${Math.max(n, 1)}, minmax(6em, 1fr))`;
  }

  function drawHeader() {
    header.replaceChildren();
    header.style.gridTemplateColumns = template();
    header.append(h("div", "plasma-live-gutter"));
    const [sortColumn, direction] = model.get("sort");
    for (const name of model.get("columns")) {
      const cell = h("div", "plasma-live-th", name);
      cell.title = "sort by " + name;
      if (name === sortColumn) {
        cell.classList.add("plasma-sorted");
        cell.textContent = name + (direction === "desc" ? " ▼" : " ▲");
      }
      cell.addEventListener("click", () => {
        const [current, dir] = model.get("sort");
        let next = [name, "asc"];
        if (current === name && dir === "asc") next = [name, "desc"];
        else if (current === name && dir === "desc") next = [];
        model.set("sort", next);
        model.save_changes();
      });
      header.append(cell);
    }
  }

  function drawBody() {
    const total = model.get("total");
    const offset = model.get("window_offset");
    const rows = model.get("window");
    const pending = new Set(model.get("pending"));
    viewport.style.height = Math.max(1, Math.min(total, model.get("rows_visible"))) * ROW_HEIGHT + 2 + "px";
    spacer.style.height = total * ROW_HEIGHT + "px";
    body.style.transform = `translateY(${offset * ROW_HEIGHT}px)`;
    const columns = template();
    body.replaceChildren(...rows.map((row, i) => {
      const line = h("div", "plasma-live-row");
      line.style.gridTemplateColumns = columns;
      line.style.height = ROW_HEIGHT + "px";
      const mark = h("div", "plasma-live-gutter");
      if (pending.has(i)) {
        line.classList.add("plasma-pending");
        mark.textContent = "●";
        mark.title = "changed here, not yet confirmed by the server";
      }
      line.append(mark);
      for (const value of row) {
        const [text, kind] = show(value);
        const cell = h("div", "plasma-live-td " + kind, text);
        cell.title = text;
        line.append(cell);
      }
      return line;
    }));
  }

  function drawFooter() {
    const total = model.get("total");
    const parts = [`${total.toLocaleString()} row${total === 1 ? "" : "s"}`];
    const pending = model.get("pending_count");
    if (pending) parts.push(`${pending} pending`);
    const [sortColumn, direction] = model.get("sort");
    if (sortColumn) parts.push(`sorted by ${sortColumn} ${direction === "desc" ? "▼" : "▲"}`);
    parts.push(`version ${model.get("version")}`);
    footer.textContent = parts.join(" · ");
  }

  function drawRejected() {
    rejected.replaceChildren();
    for (const item of model.get("rejected")) {
      const line = h("div", "plasma-live-rejection");
      line.append(h("span", "plasma-live-x", "✗"));
      line.append(h("span", "", ` ${item.name} was rejected: ${item.message}`));
      rejected.append(line);
    }
    if (model.get("rejected").length) {
      const dismiss = h("button", "plasma-live-dismiss", "dismiss");
      dismiss.addEventListener("click", () => model.send({ type: "dismiss" }));
      rejected.append(dismiss);
    }
  }

  function drawError() {
    error.textContent = model.get("error");
  }

  // Ask for another window when the visible rows are not all in the current one.
  function check() {
    frame = 0;
    const total = model.get("total");
    const visible = model.get("rows_visible");
    const first = Math.floor(viewport.scrollTop / ROW_HEIGHT);
    const last = Math.min(total, first + visible);
    const offset = model.get("window_offset");
    const have = model.get("window").length;
    if (first >= offset && last <= offset + have) return;
    const page = Math.max(model.get("page_size"), visible);
    const start = Math.max(0, Math.min(first - Math.floor((page - visible) / 2), total - page));
    const [askedOffset, askedLimit] = model.get("viewport");
    if (askedOffset === start && askedLimit === page) return;
    model.set("viewport", [start, page]);
    model.save_changes();
  }

  viewport.addEventListener("scroll", () => {
    if (!frame) frame = requestAnimationFrame(check);
  });

  const redraw = () => { drawBody(); drawFooter(); };
  model.on("change:columns", () => { drawHeader(); drawBody(); });
  model.on("change:sort", () => { drawHeader(); drawFooter(); });
  model.on("change:window", redraw);
  model.on("change:window_offset", redraw);
  model.on("change:pending", drawBody);
  model.on("change:total", () => { redraw(); check(); });
  model.on("change:version", drawFooter);
  model.on("change:pending_count", drawFooter);
  model.on("change:rejected", drawRejected);
  model.on("change:error", drawError);

  drawHeader();
  redraw();
  drawRejected();
  drawError();
  return () => { if (frame) cancelAnimationFrame(frame); };
}

export default { render };
