// The dispy status page: polls /api/status every second and renders it with DOM calls only
// (never innerHTML: node names, job names and failure messages come from users and payloads).
"use strict";

// The bearer token, when the page was opened as /?token=...; passed on to the JSON request.
const token = new URLSearchParams(location.search).get("token");
const statusUrl = "api/status" + (token ? "?token=" + encodeURIComponent(token) : "");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return (i ? bytes.toFixed(1) : bytes) + " " + units[i];
}

function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–";
  seconds = Math.round(seconds);
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}

function when(unixMs) {
  return unixMs ? new Date(unixMs).toLocaleString() : "–";
}

function fill(table, rows, empty) {
  const body = document.querySelector("#" + table + " tbody");
  const columns = document.querySelectorAll("#" + table + " thead th").length;
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: columns, class: "empty" }, empty))]));
}

function plural(count, noun) {
  return count + " " + noun + (count === 1 ? "" : "s");
}

function stateWord(state) {
  if (state.includes("not connected")) return "away";
  return state.split(/[^a-z]/)[0];
}

function bar(parts, total) {
  const node = el("div", { class: "bar" });
  for (const [cls, count] of parts) {
    if (total > 0 && count > 0) node.append(el("span", { class: cls, style: "width:" + (100 * count / total) + "%" }));
  }
  return node;
}

function renderNodes(nodes) {
  fill("nodes", nodes.map((n) => el("tr", { "data-node": n.name },
    el("td", {}, n.name, n.hostname ? el("div", { class: "muted" }, n.hostname + " · " + n.address) : ""),
    el("td", { class: "state-" + stateWord(n.state) }, n.state),
    el("td", { class: "num" }, n.busy + " / " + n.slots, bar([["running", n.busy]], n.slots)),
    el("td", { class: "num" }, n.memory_total ? size(n.memory_available) + " of " + size(n.memory_total) : "–"),
    el("td", { class: "num" }, n.load.toFixed(2)),
    el("td", { class: "num" }, n.address === "-" ? "–" : (n.last_heartbeat_ms / 1000).toFixed(1) + " s ago"),
    el("td", {}, n.cert_expires_unix ? new Date(n.cert_expires_unix * 1000).toLocaleDateString() : "–"),
  )), "no nodes connected");
}

function renderJobs(jobs) {
  fill("jobs", jobs.map((j) => {
    const waiting = Math.max(0, j.total - j.done - j.running);
    const rest = j.state === "running" ? [["running", j.running]] : [[j.state, waiting + j.running]];
    return el("tr", { "data-job": j.id },
      el("td", { class: "num" }, j.id),
      el("td", {}, j.name || "–"),
      el("td", {}, j.owner || "–"),
      el("td", { class: "state-" + j.state }, j.state),
      el("td", {}, bar([["done", j.done], ...rest], Math.max(j.total, 1)),
        el("div", { class: "muted" }, j.state === "running"
          ? j.done + " done, " + j.running + " running, " + waiting + " waiting"
          : j.done + " done" + (waiting + j.running ? ", " + (waiting + j.running) + " not run" : ""))),
      el("td", { class: "num" }, j.done + " / " + j.total + (j.input_complete ? "" : "+")),
      el("td", { class: "num" }, j.chunks_per_second ? j.chunks_per_second.toFixed(1) + " /s" : "–"),
      el("td", { class: "num" }, duration(j.eta_seconds)),
      el("td", { class: "num" }, j.retries),
      el("td", {}, j.failure || j.waiting || (j.finished_unix_ms ? "ended " + when(j.finished_unix_ms) : "")),
    );
  }), "no jobs");
}

function renderFailures(failures) {
  fill("failures", failures.map((f) => el("tr", {},
    el("td", {}, when(f.unix_ms)),
    el("td", { class: "num" }, f.job),
    el("td", { class: "num" }, f.chunk),
    el("td", {}, f.node),
    el("td", {}, f.owner),
    el("td", {}, f.message),
    el("td", {}, f.retried ? "yes" : "no"),
  )), "no failed attempts");
}

function renderChart(samples) {
  const svg = document.getElementById("chart");
  const ns = "http://www.w3.org/2000/svg";
  const max = Math.max(1, ...samples);
  const width = 600 / 600;
  const bars = samples.map((count, i) => {
    const rect = document.createElementNS(ns, "rect");
    const height = 118 * count / max;
    rect.setAttribute("x", (600 - samples.length + i) * width);
    rect.setAttribute("y", 120 - height);
    rect.setAttribute("width", width);
    rect.setAttribute("height", height);
    return rect;
  });
  svg.replaceChildren(...bars);
  const recent = samples.slice(-60);
  const perSecond = recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
  document.getElementById("chart-legend").textContent =
    "peak " + max + " /s · last minute " + perSecond.toFixed(1) + " /s";
}

function render(s) {
  const busy = s.nodes.reduce((a, n) => a + n.busy, 0);
  const slots = s.nodes.reduce((a, n) => a + n.slots, 0);
  const running = s.jobs.filter((j) => j.state === "running").length;
  document.getElementById("summary").textContent =
    s.listen + " · " + plural(s.nodes.length, "node") + " · " + busy + "/" + slots + " slots busy · " +
    plural(running, "job") + " running · " + plural(s.completed, "chunk") + " completed";
  document.getElementById("updated").textContent = "updated " + when(s.taken_unix_ms);
  renderChart(s.throughput);
  renderNodes(s.nodes);
  renderJobs(s.jobs);
  renderFailures(s.failures);
}

async function poll() {
  try {
    const response = await fetch(statusUrl, { cache: "no-store" });
    if (response.status === 401) {
      throw new Error(token ? "the token was refused" : "a token is required: open this page as /?token=TOKEN");
    }
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    render(await response.json());
  } catch (e) {
    document.getElementById("summary").textContent = "cannot reach the dispatcher: " + e.message;
  }
  setTimeout(poll, 1000);
}

poll();
