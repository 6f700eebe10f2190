// The Wharf console: plain JavaScript over the management API (no build step).
"use strict";

const $ = (sel) => document.querySelector(sel);
const tokenInput = $("#token");
tokenInput.value = sessionStorage.getItem("wharf-token") || "";
tokenInput.addEventListener("change", () => { sessionStorage.setItem("wharf-token", tokenInput.value); refresh(); });

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (tokenInput.value) headers.Authorization = "Bearer " + tokenInput.value;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  let value = text;
  try { value = JSON.parse(text); } catch (_) { /* text */ }
  if (!r.ok) throw new Error((value && value.detail) || (r.status + " " + r.statusText));
  return value;
}

// Prometheus/OpenMetrics text: name{labels} value, for the few metrics the console shows.
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    (m[3] || "").replace(/(\w+)="((?:[^"\\]|\\.)*)"/g, (_, k, v) => { labels[k] = v; });
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; };
function statusCell(status) {
  const td = document.createElement("td");
  const pill = document.createElement("span");
  const phase = (status && status.phase) || "Pending";
  pill.className = "pill " + phase;
  pill.textContent = phase;
  td.appendChild(pill);
  if (status && status.message) { const m = document.createElement("span"); m.className = "msg"; m.textContent = status.message; td.appendChild(m); }
  return td;
}
function fill(table, rows) {
  const body = $(table + " tbody");
  body.replaceChildren(...rows);
  if (!rows.length) {
    const tr = document.createElement("tr"); const td = cell("none");
    td.colSpan = document.querySelector(table + " thead tr").children.length;
    td.className = "msg"; tr.appendChild(td); body.appendChild(tr);
  }
}

let lastRecords = new Map(); // "tenant/stream" -> [time, records]
const stats = new Map();     // "tenant/address" -> backlog
let statsDue = 0;

async function refresh() {
  try {
    await api("GET", "/healthz");
    $("#health").textContent = "up"; $("#health").className = "pill up";
  } catch (e) { $("#health").textContent = "down"; $("#health").className = "pill down"; }
  let tenants = [];
  try {
    tenants = (await api("GET", "/api/v1/tenants")).items;
    fill("#tenants", tenants.map((t) => { const tr = document.createElement("tr"); tr.append(cell(t.metadata.name), cell(t.spec.plan || "-"), statusCell(t.status)); return tr; }));
    const users = (await api("GET", "/api/v1/users")).items;
    fill("#users", users.map((u) => {
      const tr = document.createElement("tr");
      const perms = u.spec.permissions ? u.spec.permissions.map((p) => p.actions.join(",") + " on " + p.addresses.join(",")).join("; ") : "send,receive on *";
      tr.append(cell(u.metadata.name), cell(u.spec.tenant || "default"), cell(perms), statusCell(u.status));
      return tr;
    }));
    $("#load-error").textContent = "";
  } catch (e) { $("#load-error").textContent = e.message; }
  const select = $("#tenant");
  const names = ["default", ...tenants.map((t) => t.metadata.name).filter((n) => n !== "default")];
  if (select.options.length !== names.length) {
    const chosen = select.value || "default";
    select.replaceChildren(...names.map((n) => { const o = document.createElement("option"); o.textContent = n; return o; }));
    select.value = names.includes(chosen) ? chosen : "default";
  }
  const tenant = select.value || "default";
  let metrics = [];
  try { metrics = parseMetrics(await (await fetch("/metrics")).text()); } catch (_) { /* none */ }
  const now = Date.now() / 1000;
  const rate = new Map();
  for (const m of metrics.filter((m) => m.name === "wharf_stream_records_total")) {
    const key = m.labels.tenant + "/" + m.labels.stream;
    const before = lastRecords.get(key);
    if (before && now > before[0]) rate.set(key, Math.max(0, (m.value - before[1]) / (now - before[0])));
    lastRecords.set(key, [now, m.value]);
    rate.set(key + "#records", m.value);
  }
  const byConn = new Map();
  for (const m of metrics) {
    const key = m.labels.protocol + "/" + m.labels.tenant;
    const field = { wharf_connections: "open", wharf_messages_received_total: "received", wharf_messages_delivered_total: "delivered" }[m.name];
    if (!field) continue;
    const row = byConn.get(key) || { protocol: m.labels.protocol, tenant: m.labels.tenant, open: 0, received: 0, delivered: 0 };
    row[field] = m.value; byConn.set(key, row);
  }
  fill("#connections", [...byConn.values()].map((c) => { const tr = document.createElement("tr"); tr.append(cell(c.protocol), cell(c.tenant), cell(c.open, "num"), cell(c.received, "num"), cell(c.delivered, "num")); return tr; }));
  let addresses = [];
  try { addresses = (await api("GET", "/api/v1/tenants/" + encodeURIComponent(tenant) + "/addresses")).items; }
  catch (e) { $("#load-error").textContent = e.message; }
  const fetchStats = Date.now() >= statsDue;
  if (fetchStats) statsDue = Date.now() + 5000;
  fill("#addresses", addresses.map((a) => {
    const name = a.metadata.name, key = tenant + "/" + name.replaceAll("/", "~");
    const type = a.spec.type || "queue";
    if (fetchStats && (type === "queue" || type === "anycast" || type === "subscription")) {
      api("GET", "/api/v1/tenants/" + encodeURIComponent(tenant) + "/addresses/" + encodeURIComponent(name) + "/stats")
        .then((s) => stats.set(tenant + "/" + name, s.backlog)).catch(() => {});
    }
    const tr = document.createElement("tr");
    tr.dataset.name = name;
    const backlog = stats.has(tenant + "/" + name) ? String(stats.get(tenant + "/" + name)) : "-";
    const del = document.createElement("button");
    del.className = "delete"; del.textContent = "delete"; del.title = "Delete " + name;
    del.addEventListener("click", async () => {
      if (!confirm("Delete address " + name + "?")) return;
      try { await api("DELETE", "/api/v1/tenants/" + encodeURIComponent(tenant) + "/addresses/" + encodeURIComponent(name)); refresh(); }
      catch (e) { $("#create-error").textContent = e.message; }
    });
    const actions = document.createElement("td"); actions.appendChild(del);
    const r = rate.get(key);
    tr.append(cell(name), cell(type), cell((a.spec.mqtt_topics || []).join(", ") || "-"), statusCell(a.status),
      cell(type === "topic" || type === "multicast" ? "-" : backlog, "num"),
      cell(r === undefined ? "-" : r.toFixed(1), "num"), cell(rate.get(key + "#records") ?? 0, "num"), actions);
    return tr;
  }));
}

$("#create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const tenant = $("#tenant").value || "default";
  const topics = $("#new-topics").value.split(",").map((t) => t.trim()).filter(Boolean);
  const spec = { type: $("#new-type").value };
  if (topics.length) spec.mqtt_topics = topics;
  try {
    await api("POST", "/api/v1/tenants/" + encodeURIComponent(tenant) + "/addresses", { metadata: { name: $("#new-name").value.trim() }, spec });
    $("#new-name").value = ""; $("#new-topics").value = ""; $("#create-error").textContent = "";
    refresh();
  } catch (e) { $("#create-error").textContent = e.message; }
});
$("#tenant").addEventListener("change", refresh);

refresh();
setInterval(refresh, 2000);
