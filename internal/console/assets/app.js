// Chronos web console: a page per view, each drawn from the HTTP/JSON API
// (/v1/...) of the node that serves it. No request leaves this origin.
"use strict";

const view = document.getElementById("view");
const flash = document.getElementById("flash");
let stopTimers = [];

function token() {
  return sessionStorage.getItem("chronos-token") || "";
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("chronos-token", document.getElementById("token").value.trim());
  route();
});

// One API call; throws an Error carrying the server's code and message.
async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* metrics are text */ }
  if (!r.ok) {
    const err = new Error(json && json.message ? `${json.code}: ${json.message}` : `HTTP ${r.status}: ${text}`);
    err.code = json && json.code;
    throw err;
  }
  return json === null ? text : json;
}

function show(message, ok) {
  flash.textContent = message;
  flash.className = ok ? "info" : "";
  flash.hidden = false;
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

const num = (v) => Number(v || 0);
const fmtInt = (v) => num(v).toLocaleString("en-US");

function fmtTime(ms) {
  const n = num(ms);
  return n > 0 ? new Date(n).toISOString().replace(".000Z", "Z") : "—";
}

// The first bytes of a payload, as text when it is text.
function preview(b64) {
  if (!b64) return "";
  let bytes;
  try { bytes = atob(b64); } catch (_) { return "(not base64)"; }
  const printable = /^[\x09\x0a\x0d\x20-\x7e]*$/.test(bytes.slice(0, 200));
  const shown = printable ? bytes.slice(0, 80) : `${bytes.length} bytes`;
  return printable && bytes.length > 80 ? shown + "…" : shown;
}

function table(columns, rows, attrs = "") {
  const head = columns.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.title)}</th>`).join("");
  const body = rows.length
    ? rows.map((r) => `<tr>${columns.map((c) => `<td class="${c.num ? "num" : ""}">${c.html ? c.html(r) : esc(c.value(r))}</td>`).join("")}</tr>`).join("")
    : `<tr><td colspan="${columns.length}" class="muted">none</td></tr>`;
  return `<table ${attrs}><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function card(label, value, id) {
  return `<div class="card"><div class="n" id="${id}">${esc(value)}</div><div class="l">${esc(label)}</div></div>`;
}

function chart(el, title, series, data, opts = {}) {
  return new uPlot({
    title, width: Math.min(el.clientWidth || 900, 1100), height: 220,
    series: [{}, ...series], axes: [{}, { size: 80 }], ...opts,
  }, data, el);
}

// --- Overview: nodes, partitions, and live rates from /metrics -----------

const RATES = [
  ["chronos_publish_events_total", "published/s", "#2563eb"],
  ["chronos_fired_events_total", "fired/s", "#16a34a"],
  ["chronos_deliveries_total", "delivered/s", "#d97706"],
  ["chronos_acks_total", "acked/s", "#7c3aed"],
];

function sumMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const name = line.split(/[{ ]/)[0];
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (!Number.isNaN(value)) sums[name] = (sums[name] || 0) + value;
  }
  return sums;
}

async function overview() {
  const [cluster, topics] = await Promise.all([api("GET", "/v1/cluster"), api("GET", "/v1/topics")]);
  const parts = cluster.partitions;
  const pending = parts.reduce((s, p) => s + num(p.pending), 0);
  const led = parts.filter((p) => p.leader !== null && p.leader !== undefined).length;
  view.innerHTML = `<h1>Overview</h1>
    <div class="cards">${card("nodes", cluster.nodes.length || 1, "stat-nodes")}
      ${card("partitions with a leader", `${led} / ${parts.length}`, "stat-leaders")}
      ${card("topics", topics.topics.length, "stat-topics")}
      ${card("pending events", fmtInt(pending), "stat-pending")}
      ${card("clock within bounds", cluster.clock_within_bounds ? "yes" : "NO", "stat-clock")}</div>
    <h2>Rates (this node, live)</h2><div class="chart" id="rates"></div>
    <h2>Nodes</h2>${table([
      { title: "id", value: (n) => n.id }, { title: "gRPC", value: (n) => n.api_addr },
      { title: "reachable", html: (n) => (n.reachable ? '<span class="ok">yes</span>' : '<span class="bad">no</span>') },
      { title: "clock offset", value: (n) => (n.clock_offset_ms === null || n.clock_offset_ms === undefined ? "—" : `${n.clock_offset_ms} ms`) },
      { title: "state", value: (n) => n.state }], cluster.nodes)}
    <h2>Partitions</h2>${table([
      { title: "partition", value: (p) => p.partition, num: true }, { title: "leader", value: (p) => p.leader ?? "none" },
      { title: "term", value: (p) => p.term, num: true }, { title: "voters", value: (p) => p.voters.join(", ") },
      { title: "pending", value: (p) => fmtInt(p.pending), num: true }, { title: "next due", value: (p) => fmtTime(p.next_due_ts) },
      { title: "applied", value: (p) => p.applied_index, num: true }], parts, 'id="partitions"')}`;
  const el = document.getElementById("rates");
  const data = [[], ...RATES.map(() => [])];
  // The last three minutes, whatever has been sampled so far.
  const window = { x: { time: true, range: (u, min, max) => [max - 180, max] }, y: { range: (u, min, max) => [0, Math.max(10, max * 1.1)] } };
  const plot = chart(el, "events per second", RATES.map(([, label, stroke]) => ({ label, stroke, width: 2 })), data, { scales: window });
  let last = null;
  const poll = async () => {
    try {
      const sums = sumMetrics(await api("GET", "/metrics"));
      const now = Date.now() / 1000;
      if (last) {
        const dt = now - last.t;
        data[0].push(now);
        RATES.forEach(([name], i) => data[i + 1].push(Math.max(0, ((sums[name] || 0) - (last.sums[name] || 0)) / dt)));
        if (data[0].length > 180) data.forEach((s) => s.shift());
        plot.setData(data);
      }
      last = { t: now, sums };
    } catch (e) { show(`metrics: ${e.message}`); }
  };
  await poll();
  const timer = setInterval(poll, 1000);
  stopTimers.push(() => clearInterval(timer));
}

// --- Topics and one topic: what comes due, and the pending events --------

async function topicsPage() {
  const topics = (await api("GET", "/v1/topics")).topics;
  view.innerHTML = `<h1>Topics</h1>${table([
    { title: "topic", html: (t) => `<a href="#/topics/${encodeURIComponent(t.name)}">${esc(t.name)}</a>` },
    { title: "pending", value: (t) => fmtInt(t.pending), num: true }], topics, 'id="topics"')}`;
}

async function topicPage(topic, span) {
  span = span === "day" ? "day" : "hour";
  const now = Math.floor(Date.now() / 1000) * 1000;
  const [range, bucket] = span === "day" ? [86400000, 900000] : [3600000, 60000];
  const base = `/v1/topics/${encodeURIComponent(topic)}`;
  const hist = await api("GET", `${base}/pending/histogram?bucket_ms=${bucket}&due_time.from_ts=${now}&due_time.to_ts=${now + range}`);
  view.innerHTML = `<h1>Topic <code>${esc(topic)}</code></h1>
    <div class="cards">${card(`due in the next ${span}`, fmtInt(hist.total), "stat-due")}
      ${card("overdue (pending, due before now)", fmtInt(hist.before), "stat-overdue")}</div>
    <p><a href="#/topics/${encodeURIComponent(topic)}/hour">next hour</a> · <a href="#/topics/${encodeURIComponent(topic)}/day">next day</a></p>
    <div class="chart" id="due-chart"></div>
    <h2>Pending events, by due time</h2><div id="pending"></div>
    <p><button id="more" hidden>Next page</button></p>`;
  const xs = hist.buckets.map((b) => num(b.from_ts) / 1000);
  const ys = hist.buckets.map((b) => num(b.count));
  chart(document.getElementById("due-chart"), `events coming due per ${bucket / 60000} min`,
    [{ label: "due", stroke: "#2563eb", fill: "rgba(37,99,235,0.25)", paths: uPlot.paths.bars({ size: [0.9, 40] }) }], [xs, ys]);
  let pageToken = "";
  const load = async () => {
    const page = await api("GET", `${base}/pending?page_size=50&page_token=${encodeURIComponent(pageToken)}`);
    const el = document.getElementById("pending");
    el.insertAdjacentHTML("beforeend", table([
      { title: "message id", html: (e) => `<a class="mono" href="${eventHash(topic, e.event.message_id, e.event.key)}">${esc(e.event.message_id)}</a>` },
      { title: "key", value: (e) => e.event.key }, { title: "due", value: (e) => fmtTime(e.due_ts) },
      { title: "partition/offset", value: (e) => `${e.partition}/${e.offset}` },
      { title: "payload", html: (e) => `<span class="mono">${esc(preview(e.event.payload))}</span>` },
      { title: "", html: (e) => `<button class="danger" data-cancel="${esc(e.event.message_id)}" data-key="${esc(e.event.key)}">Cancel</button>
          <button data-reschedule="${esc(e.event.message_id)}">Reschedule</button>` }], page.events, 'class="pending-page"'));
    el.querySelectorAll("button[data-cancel]").forEach((b) => { b.onclick = () => cancelEvent(topic, b.dataset.cancel, b.dataset.key); });
    el.querySelectorAll("button[data-reschedule]").forEach((b) => {
      const ev = page.events.find((e) => e.event.message_id === b.dataset.reschedule);
      if (ev) b.onclick = () => rescheduleEvent(ev.event);
    });
    pageToken = page.next_page_token;
    const more = document.getElementById("more");
    more.hidden = !pageToken;
    more.onclick = load;
  };
  await load();
}

async function cancelEvent(topic, messageId, key) {
  if (!confirm(`Cancel ${messageId} on ${topic}? It will not fire.`)) return;
  try {
    const r = await api("POST", "/v1/events/cancel", { topic, message_id: messageId, key });
    show(`cancelled ${messageId} (partition ${r.partition}, offset ${r.offset})`, true);
    route();
  } catch (e) { show(e.message); }
}

async function rescheduleEvent(event) {
  const when = prompt(`New due time for ${event.message_id} (ISO 8601, e.g. 2030-01-01T00:00:00Z, or +seconds):`, "+3600");
  if (!when) return;
  const due = when.startsWith("+") ? Date.now() + 1000 * Number(when.slice(1)) : Date.parse(when);
  if (!Number.isFinite(due)) { show(`not a time: ${when}`); return; }
  if (!confirm(`Move ${event.message_id} to ${new Date(due).toISOString()}?`)) return;
  try {
    const r = await api("POST", "/v1/events?reschedule=true", { ...event, schedule_ts: String(due) });
    show(`${event.message_id} now due ${fmtTime(r.due_ts)}`, true);
    route();
  } catch (e) { show(e.message); }
}

// --- Events: find stored events by message id or key ---------------------

async function eventsPage(params) {
  const q = new URLSearchParams(params || "");
  view.innerHTML = `<h1>Events</h1>
    <form class="inline" id="find">
      <label>topic <input name="topic" required value="${esc(q.get("topic") || "")}"></label>
      <label>message id (prefix) <input name="message_id_prefix" value="${esc(q.get("message_id_prefix") || "")}"></label>
      <label>key <input name="key" value="${esc(q.get("key") || "")}"></label>
      <button type="submit">Find</button></form><div id="found"></div>`;
  document.getElementById("find").onsubmit = (e) => {
    e.preventDefault();
    const f = new URLSearchParams(new FormData(e.target));
    location.hash = `#/events?${f}`;
  };
  const topic = q.get("topic");
  if (!topic) return;
  const filters = new URLSearchParams({ page_size: "100" });
  for (const k of ["message_id_prefix", "key"]) if (q.get(k)) filters.set(k, q.get(k));
  const found = await api("GET", `/v1/topics/${encodeURIComponent(topic)}/events?${filters}`);
  // Each found event's current state, from its partition's leader.
  const described = await Promise.all(found.events.map((e) =>
    api("GET", eventPath(topic, e.event.message_id, e.event.key)).catch(() => null)));
  const state = (e, i) => {
    const d = described[i];
    if (!d) return "unknown (past the dedup window)";
    if (String(d.offset) !== String(e.offset) || d.partition !== e.partition) return "rescheduled";
    return statusName(d.status, "EVENT_STATUS_");
  };
  const rows = found.events.map((e, i) => ({ ...e, state: state(e, i) }));
  document.getElementById("found").innerHTML = table([
    { title: "message id", html: (e) => `<a class="mono" href="${eventHash(topic, e.event.message_id, e.event.key)}">${esc(e.event.message_id)}</a>` },
    { title: "key", value: (e) => e.event.key }, { title: "published", value: (e) => fmtTime(e.publish_ts) },
    { title: "due", value: (e) => fmtTime(e.due_ts) }, { title: "state", value: (e) => e.state },
    { title: "partition/offset", value: (e) => `${e.partition}/${e.offset}` },
    { title: "headers", value: (e) => Object.entries(e.event.headers || {}).map(([k, v]) => `${k}=${v}`).join(", ") },
    { title: "payload", html: (e) => `<span class="mono">${esc(preview(e.event.payload))}</span>` }], rows, 'id="found-events"');
}

// --- One event: its state, and where each consumer group is with it ---------

const statusName = (s, prefix) => String(s || "").replace(prefix, "").toLowerCase();

function eventPath(topic, messageId, key) {
  const q = key ? `?key=${encodeURIComponent(key)}` : "";
  return `/v1/topics/${encodeURIComponent(topic)}/events/${encodeURIComponent(messageId)}${q}`;
}

function eventHash(topic, messageId, key) {
  const q = key ? `?key=${encodeURIComponent(key)}` : "";
  return `#/event/${encodeURIComponent(topic)}/${encodeURIComponent(messageId)}${q}`;
}

async function eventPage(topic, messageId, params) {
  const key = new URLSearchParams(params || "").get("key") || "";
  const d = await api("GET", eventPath(topic, messageId, key));
  const status = statusName(d.status, "EVENT_STATUS_");
  const e = d.event;
  const groups = d.groups_unknown
    ? `<p class="muted">Where the groups are with it is not known: it fired before this was recorded.</p>`
    : table([
      { title: "group", html: (g) => `<a href="#/groups/${encodeURIComponent(topic)}/${encodeURIComponent(g.group)}">${esc(g.group)}</a>` },
      { title: "state", value: (g) => statusName(g.status, "DELIVERY_STATUS_") },
      { title: "attempts", value: (g) => g.attempts, num: true },
      { title: "at", value: (g) => fmtTime(g.at_ts) }, { title: "reason", value: (g) => g.reason }], d.groups, 'id="event-groups"');
  view.innerHTML = `<h1>Event <code>${esc(messageId)}</code> on <code>${esc(topic)}</code></h1>
    <div class="cards">${card("state", status, "stat-state")}${card("due", fmtTime(d.due_ts), "stat-due-at")}
      ${card("fired", fmtTime(d.fire_ts), "stat-fired-at")}${card("partition/offset", `${d.partition}/${d.offset}`, "stat-place")}</div>
    ${status === "pending" ? `<p><button class="danger" id="cancel-event">Cancel</button></p>` : ""}
    ${e ? `<p>key <code>${esc(e.key)}</code> · headers ${esc(Object.entries(e.headers || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none")}</p>
      <p>payload <span class="mono">${esc(preview(e.payload))}</span></p>` : `<p class="muted">The event is no longer stored.</p>`}
    ${status === "fired" ? `<h2>Consumer groups</h2>${groups}` : ""}`;
  const cancel = document.getElementById("cancel-event");
  if (cancel) cancel.onclick = () => cancelEvent(topic, messageId, key);
}

// --- Groups and their dead letters ---------------------------------------

async function groupsPage() {
  const groups = (await api("GET", "/v1/groups")).groups;
  view.innerHTML = `<h1>Consumer groups</h1>${table([
    { title: "topic", value: (g) => g.topic },
    { title: "group", html: (g) => `<a href="#/groups/${encodeURIComponent(g.topic)}/${encodeURIComponent(g.name)}">${esc(g.name)}</a>` },
    { title: "members", value: (g) => g.members, num: true }, { title: "in flight", value: (g) => fmtInt(g.inflight), num: true },
    { title: "lag", value: (g) => fmtInt(g.lag), num: true }, { title: "next due", value: (g) => fmtTime(g.next_due_ts) },
    { title: "dead letters", value: (g) => fmtInt(g.dead_letters), num: true }], groups, 'id="groups"')}`;
}

async function groupPage(topic, group) {
  const path = `/v1/topics/${encodeURIComponent(topic)}/groups/${encodeURIComponent(group)}`;
  const [info, dead] = await Promise.all([api("GET", path), api("GET", `${path}/dead-letters?limit=1000`)]);
  const g = info.group;
  view.innerHTML = `<h1>Group <code>${esc(group)}</code> on <code>${esc(topic)}</code></h1>
    <div class="cards">${card("members", g.members, "stat-members")}${card("in flight", fmtInt(g.inflight), "stat-inflight")}
      ${card("lag", fmtInt(g.lag), "stat-lag")}${card("dead letters", fmtInt(g.dead_letters), "stat-dead")}</div>
    <p><button id="seek-group">Seek to a time…</button>
      <button class="danger" id="delete-group">Delete group</button></p>
    <h2>Dead letters</h2><p><button class="danger" id="redrive-all">Redrive all</button></p>
    ${table([
      { title: "message id", html: (d) => `<a class="mono" href="${eventHash(topic, d.event.message_id, d.event.key)}">${esc(d.event.message_id)}</a>` },
      { title: "reason", value: (d) => d.reason }, { title: "attempts", value: (d) => d.attempts, num: true },
      { title: "dead since", value: (d) => fmtTime(d.dead_ts) },
      { title: "payload", html: (d) => `<span class="mono">${esc(preview(d.event.payload))}</span>` },
      { title: "", html: (d) => `<button data-redrive="${esc(d.event.message_id)}">Redrive</button>` }], dead.dead_letters, 'id="dead-letters"')}`;
  const redrive = async (ids) => {
    const what = ids.length ? ids.join(", ") : "every dead letter";
    if (!confirm(`Deliver ${what} of ${group} again?`)) return;
    try {
      const r = await api("POST", `${path}/dead-letters/redrive`, { message_ids: ids });
      show(`redriven: ${r.redriven}`, true);
      route();
    } catch (e) { show(e.message); }
  };
  document.getElementById("redrive-all").onclick = () => redrive([]);
  document.getElementById("seek-group").onclick = () => seekGroup(path, group);
  document.getElementById("delete-group").onclick = () => deleteGroup(path, group, g);
  view.querySelectorAll("button[data-redrive]").forEach((b) => { b.onclick = () => redrive([b.dataset.redrive]); });
}

// "+N" / "-N" seconds from now, or an ISO 8601 time: ms since the epoch, or NaN.
function parseWhen(text) {
  const t = text.trim();
  if (/^[+-]\d+(\.\d+)?$/.test(t)) return Date.now() + 1000 * Number(t);
  return Date.parse(t);
}

async function seekGroup(path, group) {
  const when = prompt(`Deliver to ${group} again every retained event due at or after (ISO 8601, or -seconds from now):`, "-3600");
  if (!when) return;
  const ts = parseWhen(when);
  if (!Number.isFinite(ts)) { show(`not a time: ${when}`); return; }
  if (!confirm(`Move ${group} to the events due from ${new Date(ts).toISOString()}? What it holds in flight is handed out again.`)) return;
  try {
    await api("POST", `${path}/seek`, { ts: String(ts) });
    show(`${group} now delivers the events due from ${fmtTime(ts)}`, true);
    route();
  } catch (e) { show(e.message); }
}

async function deleteGroup(path, group, g) {
  const held = `${fmtInt(g.inflight)} in flight and ${fmtInt(g.dead_letters)} dead letters`;
  if (!confirm(`Delete group ${group} with its ${held}? Its position goes; the topic's events stay.`)) return;
  try {
    const r = await api("DELETE", path);
    // To the list without a hashchange, which would hide the message.
    history.pushState(null, "", "#/groups");
    await route();
    show(`deleted ${group} (dropped ${fmtInt(r.in_flight)} in flight, ${fmtInt(r.dead_letters)} dead letters)`, true);
  } catch (e) { show(e.message); }
}

// --- Routing ---------------------------------------------------------------

async function route() {
  stopTimers.forEach((stop) => stop());
  stopTimers = [];
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] === "event" ? "events" : parts[0] || "overview";
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === section));
  try {
    if (parts.length === 0) await overview();
    else if (parts[0] === "topics" && parts.length === 1) await topicsPage();
    else if (parts[0] === "topics") await topicPage(parts[1], parts[2]);
    else if (parts[0] === "events") await eventsPage(query);
    else if (parts[0] === "event") await eventPage(parts[1], parts[2], query);
    else if (parts[0] === "groups" && parts.length === 1) await groupsPage();
    else if (parts[0] === "groups") await groupPage(parts[1], parts[2]);
    else view.innerHTML = `<h1>Not found</h1><p class="muted">No page ${esc(path)}.</p>`;
    document.body.dataset.loaded = location.hash || "#/";
  } catch (e) {
    view.innerHTML = `<h1>Could not load this page</h1><p class="bad" id="error">${esc(e.message)}</p>`;
    if (e.code === "UNAUTHENTICATED") view.insertAdjacentHTML("beforeend", "<p>Enter a token above.</p>");
    document.body.dataset.loaded = location.hash || "#/";
  }
}

window.addEventListener("hashchange", () => { flash.hidden = true; route(); });
route();
