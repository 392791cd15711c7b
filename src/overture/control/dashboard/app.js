// The dashboard: the dependency graph coloured by live state, a service's
// recent output on click, and start/stop/restart through the API.
//
// Plain browser JavaScript, no build step. The event stream is read with
// fetch() rather than EventSource so that it can carry the bearer token on
// a listener that needs one for reads too (a non-loopback address).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STATES = [
  "stopped", "waiting", "starting", "ready", "degraded",
  "stopping", "failed", "blocked", "completed",
];
const NODE = { width: 150, height: 46, gapX: 40, gapY: 70 };
const LOG_LINES = 50;

const view = { token: null, nodes: new Map(), selected: null };

// The token comes in the address (#token=...) once, then lives in the tab.
function takeToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("overture-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("overture-token");
}

function headers() {
  return view.token ? { Authorization: `Bearer ${view.token}` } : {};
}

async function api(method, path) {
  const response = await fetch(path, { method, headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || `${response.status} ${response.statusText}`);
  }
  return body;
}

function element(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    node.setAttribute(key, value);
  }
  if (parent) parent.appendChild(node);
  return node;
}

// Layout: dependencies above their dependents, one row per depth; within a
// row, each service under the middle of what it depends on.
function layout(graph) {
  const deps = new Map(graph.nodes.map((n) => [n.name, []]));
  for (const edge of graph.edges) deps.get(edge.from).push(edge.to);
  const depth = new Map();
  const rows = [];
  for (const node of graph.nodes) { // start order: dependencies come first
    const below = deps.get(node.name).map((d) => depth.get(d));
    const row = below.length ? Math.max(...below) + 1 : 0;
    depth.set(node.name, row);
    (rows[row] ??= []).push(node.name);
  }
  const slot = new Map();
  const centre = (name) => {
    const places = deps.get(name).map((d) => slot.get(d));
    return places.reduce((a, b) => a + b, 0) / Math.max(places.length, 1);
  };
  const widest = Math.max(1, ...rows.map((r) => r.length));
  const place = new Map();
  rows.forEach((row, y) => {
    if (y > 0) row.sort((a, b) => centre(a) - centre(b));
    const offset = (widest - row.length) / 2;
    row.forEach((name, x) => {
      slot.set(name, offset + x);
      place.set(name, {
        x: NODE.gapX / 2 + (offset + x) * (NODE.width + NODE.gapX),
        y: NODE.gapY / 2 + y * (NODE.height + NODE.gapY),
      });
    });
  });
  return {
    place,
    width: widest * (NODE.width + NODE.gapX),
    height: rows.length * (NODE.height + NODE.gapY),
  };
}

function draw(graph) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const { place, width, height } = layout(graph);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);

  const defs = element("defs", {}, svg);
  const marker = element("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse",
  }, defs);
  element("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#757575" }, marker);

  for (const edge of graph.edges) {
    const from = place.get(edge.from);
    const to = place.get(edge.to);
    const x1 = from.x + NODE.width / 2;
    const x2 = to.x + NODE.width / 2;
    const y2 = to.y + NODE.height;
    const bend = (from.y - y2) / 2;
    const path = element("path", {
      class: edge.required ? "edge" : "edge optional",
      d: `M ${x1} ${from.y} C ${x1} ${from.y - bend}, ${x2} ${y2 + bend}, ${x2} ${y2}`,
    }, svg);
    element("title", {}, path).textContent = `${edge.from} needs ${edge.to} ${edge.condition}`;
  }

  view.nodes.clear();
  for (const node of graph.nodes) {
    const { x, y } = place.get(node.name);
    const group = element("g", {
      class: "node", "data-name": node.name, transform: `translate(${x} ${y})`,
      tabindex: 0, role: "button",
    }, svg);
    element("rect", { width: NODE.width, height: NODE.height }, group);
    element("text", { x: NODE.width / 2, y: 19 }, group).textContent = node.name;
    const label = element("text", { class: "state-label", x: NODE.width / 2, y: 36 }, group);
    const title = element("title", {}, group);
    group.addEventListener("click", () => select(node.name));
    view.nodes.set(node.name, { group, label, title });
    show(node.name, node.state, "");
  }
  if (view.selected && view.nodes.has(view.selected)) select(view.selected);
}

function show(name, state, reason) {
  const node = view.nodes.get(name);
  if (!node) return;
  node.group.dataset.state = state;
  node.label.textContent = state;
  node.title.textContent = reason ? `${name}: ${state}, ${reason}` : `${name}: ${state}`;
  if (view.selected === name) {
    const badge = document.getElementById("detail-state");
    badge.dataset.state = state;
    badge.textContent = state;
    document.getElementById("detail-reason").textContent = reason;
  }
}

function legend() {
  const list = document.getElementById("legend");
  list.replaceChildren(...STATES.map((state) => {
    const item = document.createElement("li");
    item.style.setProperty("--swatch", `var(--${state})`);
    item.textContent = state;
    return item;
  }));
}

async function select(name) {
  view.selected = name;
  for (const [other, node] of view.nodes) {
    node.group.classList.toggle("selected", other === name);
  }
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-name").textContent = name;
  document.getElementById("detail-result").textContent = "";
  const service = await api("GET", `/services/${encodeURIComponent(name)}`);
  show(name, service.state, service.reason || "");
  await refreshLogs();
}

async function refreshLogs() {
  const name = view.selected;
  if (!name) return;
  const logs = await api("GET", `/services/${encodeURIComponent(name)}/logs?n=${LOG_LINES}`);
  if (view.selected !== name) return;
  const pre = document.getElementById("detail-logs");
  pre.textContent = logs.lines.map((l) => l.line).join("\n");
  pre.scrollTop = pre.scrollHeight;
}

async function act(action) {
  const name = view.selected;
  const result = document.getElementById("detail-result");
  const buttons = document.querySelectorAll("#actions button");
  buttons.forEach((b) => { b.disabled = true; });
  result.textContent = `${action} ${name}…`;
  try {
    const outcome = await api("POST", `/services/${encodeURIComponent(name)}/${action}`);
    result.textContent = outcome.ok
      ? `${action} ${name}: done`
      : outcome.failed.map((f) => `${f.name} ${f.state}: ${f.reason}`).join("; ");
  } catch (error) {
    result.textContent = `${action} ${name}: ${error.message}`;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  await refreshLogs();
}

function connected(yes, text) {
  const status = document.getElementById("connection");
  status.dataset.connected = String(yes);
  status.textContent = text;
}

// Server-sent events from a fetch body: blocks of "field: value" lines.
async function follow(since, onEvent) {
  const response = await fetch(`/events?since=${since}`, { headers: headers() });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

async function main() {
  view.token = takeToken();
  legend();
  for (;;) {
    try {
      const graph = await api("GET", "/graph");
      draw(graph);
      connected(true, `live: ${graph.nodes.length} services`);
      await follow(graph.seq, (event) => {
        show(event.service, event.to, event.reason);
        if (event.service === view.selected) refreshLogs();
      });
      connected(false, "the daemon stopped; waiting for it to come back");
    } catch (error) {
      connected(false, `not connected (${error.message}); retrying`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

document.querySelectorAll("#actions button").forEach((button) => {
  button.addEventListener("click", () => act(button.dataset.action));
});
main();
