// callbox dashboard: plain JavaScript, no build step, no third-party code. Every value from
// the call log is written with textContent (caller IDs come from the phone network).
"use strict";

const state = {
  calls: new Map(), live: new Map(), callbacks: [], texts: new Map(), lines: new Set(), csrf: null, selected: null,
  offlineSince: null, nextBefore: null, liveFrom: null,
};

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const r = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  return r;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// A North American number as people write it; others as Twilio gives them.
function fmtNumber(n) {
  const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(n || "");
  return m ? `(${m[1]}) ${m[2]}-${m[3]}` : (n || "");
}

function callerName(c) {
  return c.caller_name || fmtNumber(c.from) || "unknown caller";
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
                 : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " +
                   d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// With seconds, for the timeline: steps of one call are seconds apart.
function fmtClock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
}

// One step of a call in the owner's words.
function stepLabel(e, c) {
  const d = e.details || {};
  if (e.source === "incoming-call") return d.Route === "front-desk" ? "Call came in: rang the front desk" : "Call came in";
  if (e.source === "dial-result") return ["completed", "answered"].includes(d.DialCallStatus) ? "Front desk picked up" : "Front desk did not pick up";
  if (e.source === "media-stream") {
    switch (d.MediaEvent) {
      case "started": return "Greeting played";
      case "answered": return d.Flow === "relay" ? "Agent took the call" : "Caller spoke";
      case "failover": return "Agent unreachable: voicemail instead";
      case "stopped": {
        const rec = c.stream && c.stream.recording;
        const keys = c.stream && c.stream.dtmf ? `pressed ${c.stream.dtmf}, ` : "";
        const what = d.Outcome === "message" && c.outcome === "voicemail" ? `message saved ${clock(rec && rec.duration_ms)}`
          : d.Outcome === "front-desk" ? "sent to the front desk"
          : d.Outcome === "relayed" ? "agent finished" : "hung up";
        return `${keys}${what}`.replace(/^./, ch => ch.toUpperCase());
      }
      default: return d.MediaEvent || "stream";
    }
  }
  if (e.source === "stream-status") return null;
  if (e.source === "owner") {
    switch (d.Action) {
      case "heard": return c.outcome === "voicemail" ? "Owner listened" : "Owner saw it";
      case "called-back": return "Called back";
      case "done": return "Marked done";
      case "reopen": return "Back on the call-back list";
      case "note": return d.Note ? `Note: ${d.Note}` : "Note cleared";
      default: return null;
    }
  }
  const words = { queued: "Queued", initiated: "Twilio took the call", ringing: "Ringing", "in-progress": "Answered",
    completed: "Call ended", busy: "Busy", "no-answer": "Nobody answered", failed: "Call failed", canceled: "Caller hung up" };
  return words[e.status] || e.status || e.source;
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  const m = Math.floor(s / 60), r = s % 60;
  return m ? `${m}m ${r}s` : `${r}s`;
}

function media(call) {
  const stopped = [...(call.events || [])].reverse().find(e => e.details && e.details.MediaEvent === "stopped");
  const started = (call.events || []).find(e => e.details && e.details.Flow);
  return {
    outcome: stopped ? stopped.details.Outcome || "" : "",
    recording: stopped ? stopped.details.Recording || "" : "",
    flow: started ? started.details.Flow : "",
  };
}

const FINAL = new Set(["completed", "busy", "failed", "no-answer", "canceled"]);

function isLive(c) { return c.outcome ? c.outcome === "live" : !FINAL.has(c.status); }

function clock(ms) {
  const s = Math.floor((ms || 0) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// The call's outcome in the owner's words (the API's `outcome`).
function outcomeLabel(c) {
  const rec = c.stream && c.stream.recording;
  switch (c.outcome) {
    case "voicemail": return ["voicemail", "Voicemail " + clock(rec && rec.duration_ms)];
    case "missed": return ["missed", "Missed"];
    case "hung-up": return ["hungup", "Hung up"];
    case "front-desk": return ["desk", "Sent to front desk"];
    case "relayed": return ["agent", "Answered by the agent"];
    case "live": {
      // Recording began (the beep): the caller is leaving a message; the clock runs.
      const rec = (c.events || []).find(e => e.details && e.details.MediaEvent === "answered" && e.details.Flow !== "relay");
      if (rec) return ["live", "On the line — leaving a message " + clock(Date.now() - new Date(rec.received_at))];
      return ["live", "On the line"];
    }
    default: return [String(c.status || "").replace(/[^a-z-]/g, ""), c.status];
  }
}

// A row of a call list: a button that opens the call's detail (inside a plain list item, so
// the list stays a list for a screen reader).
function callItem(c) {
  const li = el("li", "call");
  const open = el("button", "open");
  open.type = "button";
  open.dataset.sid = c.call_sid;
  if (c.call_sid === state.selected) open.setAttribute("aria-current", "true");
  const who = el("span", "who");
  who.append(el("span", "from", callerName(c)));
  if (c.caller_name && c.from) who.append(el("span", "sub", fmtNumber(c.from)));
  const meta = el("span", "meta");
  meta.append(el("span", "time", fmtTime(c.first_seen)));
  if (c.to && state.lines.size > 1) meta.append(el("span", "line", "line " + fmtNumber(c.to)));
  const f = c.follow_up || {};
  if (f.note) meta.append(el("span", "note", f.note));
  const right = el("span", "right");
  const [cls, label] = outcomeLabel(c);
  right.append(el("span", "badge " + cls, label));
  if (c.outcome === "voicemail" && !f.heard_at) right.append(el("span", "tag unheard", "not heard"));
  if (f.called_back_at) right.append(el("span", "tag", "called back"));
  else if (f.done_at) right.append(el("span", "tag", "done"));
  if (c.duration_secs !== null && c.duration_secs !== undefined) right.append(el("span", "dur", fmtDuration(c.duration_secs)));
  open.append(who, meta, right);
  open.addEventListener("click", () => showDetail(c.call_sid));
  li.append(open);
  return li;
}

// A call on the call-back list: who, when, and tap-to-call.
function callbackItem(c) {
  const li = callItem(c);
  if (/^\+[1-9][0-9]{7,14}$/.test(c.from || "")) {
    const a = el("a", "button call-now", "Call");
    a.href = "tel:" + c.from;
    a.setAttribute("aria-label", `Call ${callerName(c)}`);
    li.append(a);
  }
  return li;
}

// Replaces a list's rows, keeping the keyboard on the row it was on.
function fillList(id, rows) {
  const list = document.getElementById(id);
  const focused = list.contains(document.activeElement) && document.activeElement.dataset.sid;
  list.replaceChildren(...rows);
  if (focused) {
    const again = list.querySelector(`[data-sid="${focused}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

function renderLive() {
  const live = [...state.live.values()].filter(isLive).sort((a, b) => (a.first_seen < b.first_seen ? 1 : -1));
  fillList("live", live.map(callItem));
  document.getElementById("live-count").textContent = live.length;
  document.getElementById("live-empty").hidden = live.length > 0;
}

function render() {
  renderLive();
  fillList("callbacks", state.callbacks.map(callbackItem));
  document.getElementById("callback-count").textContent = state.callbacks.length;
  document.getElementById("callbacks-empty").hidden = state.callbacks.length > 0;

  const select = document.getElementById("line");
  const current = select.value;
  const lines = [...state.lines].sort();
  select.replaceChildren(el("option", null, "All lines"), ...lines.map(l => { const o = el("option", null, fmtNumber(l)); o.value = l; return o; }));
  select.firstChild.value = "";
  select.value = lines.includes(current) ? current : "";
  select.hidden = lines.length < 2 && !current;

  const shown = [...state.calls.values()].sort((a, b) => (a.first_seen < b.first_seen ? 1 : -1));
  fillList("calls", shown.map(callItem));
  document.getElementById("calls-empty").hidden = shown.length > 0;
  document.getElementById("older").hidden = !state.nextBefore;
  document.getElementById("calls-summary").textContent =
    `${shown.length} call${shown.length === 1 ? "" : "s"} shown${state.nextBefore ? ", older ones below" : ""}.`;
  document.getElementById("export").href = "/api/v1/calls.csv?" + exportQuery();
  if (state.selected) {
    const c = state.calls.get(state.selected) || state.live.get(state.selected) || state.callbacks.find(x => x.call_sid === state.selected);
    if (c) fillDetail(c);
  }
}

// The search form as the API's query (q, outcome, line, from, to).
function searchQuery() {
  const p = new URLSearchParams();
  for (const id of ["q", "outcome", "line", "from", "to"]) {
    const v = document.getElementById(id).value.trim();
    if (v) p.set(id, v);
  }
  return p;
}

// The export covers what the search shows; without dates, from the oldest call loaded to today.
function exportQuery() {
  const p = searchQuery();
  const day = d => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  if (!p.has("from")) {
    const all = [...state.calls.values()].map(c => c.first_seen).sort();
    p.set("from", day(all.length ? new Date(all[0]) : new Date()));
  }
  if (!p.has("to")) p.set("to", day(new Date()));
  return p.toString();
}

function matchesSearch(c) {
  const p = searchQuery();
  if (p.has("q") || p.has("from") || p.has("to")) return state.calls.has(c.call_sid);
  if (p.has("outcome") && c.outcome !== p.get("outcome")) return false;
  if (p.has("line") && c.to !== p.get("line")) return false;
  return true;
}

function findCall(sid) {
  return state.calls.get(sid) || state.live.get(sid) || state.callbacks.find(x => x.call_sid === sid);
}

function showDetail(sid) {
  const c = findCall(sid);
  if (!c) return;
  state.selected = sid;
  document.getElementById("note").value = (c.follow_up && c.follow_up.note) || "";
  document.getElementById("follow-status").textContent = "";
  fillDetail(c, true);
  loadThread(c);
  loadCallTexts(sid);
  const d = document.getElementById("detail");
  d.hidden = false;
  document.body.classList.add("detail-open");
  render();
  d.scrollIntoView({ behavior: "smooth", block: "start" });
  document.getElementById("detail-title").focus({ preventScroll: true });
}

function fillDetail(c, fresh) {
  document.getElementById("detail-title").textContent = c.caller_name || fmtNumber(c.from) || c.call_sid;
  const f = c.follow_up || {};
  const owes = c.outcome === "missed" || c.outcome === "voicemail";
  const dealt = !!(f.called_back_at || f.done_at);
  const callLink = document.getElementById("call-caller");
  const dialable = /^\+[1-9][0-9]{7,14}$/.test(c.from || "");
  callLink.hidden = !dialable;
  if (dialable) { callLink.href = "tel:" + c.from; callLink.textContent = "Call " + fmtNumber(c.from); }
  document.getElementById("mark-called").hidden = !owes || dealt;
  document.getElementById("mark-done").hidden = !owes || dealt;
  document.getElementById("mark-reopen").hidden = !dealt;
  const facts = document.getElementById("detail-facts");
  const m = media(c);
  const rows = [
    ["Caller", fmtNumber(c.from)], ["Line", fmtNumber(c.to)], ["Arrived", fmtTime(c.first_seen)],
    ["Answered", fmtTime(c.answered_at)], ["Ended", fmtTime(c.ended_at)], ["Duration", fmtDuration(c.duration_secs)],
    ["Outcome", outcomeLabel(c)[1]], ["Heard", fmtTime(f.heard_at)], ["Called back", fmtTime(f.called_back_at)],
    ["Done", fmtTime(f.done_at)], ["Call SID", c.call_sid],
  ].filter(([, v]) => v);
  facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", null, k), el("dd", null, v)]));
  const player = document.getElementById("player");
  const audio = document.getElementById("audio");
  if (m.recording) {
    const src = `/api/v1/calls/${encodeURIComponent(c.call_sid)}/recording`;
    if (fresh || audio.dataset.src !== src) { audio.dataset.src = src; audio.src = src; }
    player.hidden = false;
  } else {
    player.hidden = true;
    audio.removeAttribute("src");
  }
  const tl = document.getElementById("timeline");
  const steps = (c.events || []).map(e => [e.received_at, stepLabel(e, c)]).filter(([, what]) => what);
  for (const t of state.texts.get(c.call_sid) || []) {
    const who = t.kind === "text-back" ? "Texted back" : t.kind === "owner-alert" ? `Owner alerted (${t.to})` : "Texted";
    steps.push([t.created_at, t.state === "skipped" ? `Not texted back: ${t.skipped}` : `${who}: ${t.state}`]);
  }
  steps.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  tl.replaceChildren(...steps.map(([at, what]) => {
    const li = el("li");
    li.append(el("span", "time", fmtClock(at)), el("span", "what", what));
    return li;
  }));
}

// The texts with the caller, both ways, and a form to answer (saved texts to pick from).
async function loadThread(c) {
  const box = document.getElementById("thread");
  const number = c.from || "";
  if (!/^\+[1-9][0-9]{7,14}$/.test(number)) { box.hidden = true; return; }
  box.hidden = false;
  box.dataset.number = number;
  const r = await api(`/api/v1/threads/${encodeURIComponent(number)}`);
  if (!r.ok || box.dataset.number !== number) return;
  const t = await r.json();
  document.getElementById("thread-list").replaceChildren(...t.entries.map(e => {
    const li = el("li", e.incoming ? "in" : "out");
    li.append(el("span", "time", fmtTime(e.at)), el("span", "what", e.body));
    if (!e.incoming) li.append(el("span", "sub", [e.kind, e.state, e.error].filter(Boolean).join(" · ")));
    return li;
  }));
  document.getElementById("thread-empty").hidden = t.entries.length > 0;
  document.getElementById("thread-stop").hidden = !t.opted_out;
}

async function sendText(ev) {
  ev.preventDefault();
  const box = document.getElementById("thread");
  const body = document.getElementById("reply-body");
  const status = document.getElementById("reply-status");
  status.textContent = "Sending…";
  const r = await api("/api/v1/texts", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ to: box.dataset.number, body: body.value }),
  });
  if (r.ok) { body.value = ""; status.textContent = "Queued."; }
  else { status.textContent = ((await r.json().catch(() => ({}))).error) || `Not sent (HTTP ${r.status}).`; }
  const c = findCall(state.selected);
  if (c) loadThread(c);
}

async function loadTemplates() {
  const r = await api("/api/v1/texts/templates");
  if (!r.ok) return;
  const { templates } = await r.json();
  const select = document.getElementById("reply-template");
  select.replaceChildren(el("option", null, "Saved texts…"), ...templates.map(t => { const o = el("option", null, t); o.value = t; return o; }));
  select.firstChild.value = "";
  select.hidden = templates.length === 0;
  select.addEventListener("change", () => { if (select.value) document.getElementById("reply-body").value = select.value; });
}

// The texts about one call, for its timeline.
async function loadCallTexts(sid) {
  const r = await api(`/api/v1/calls/${encodeURIComponent(sid)}`);
  if (!r.ok) return;
  const full = await r.json();
  state.texts.set(sid, full.texts || []);
  if (state.selected === sid && findCall(sid)) fillDetail(findCall(sid));
}

// The box stopped answering: say so, instead of showing stale state as if it were live.
function setOffline(off) {
  if (off && !state.offlineSince) state.offlineSince = new Date();
  if (!off) state.offlineSince = null;
  const b = document.getElementById("offline-banner");
  b.hidden = !off;
  if (off) {
    document.getElementById("offline-text").textContent =
      `The box is not answering since ${fmtClock(state.offlineSince.toISOString())}. This page shows what it knew then.`;
    const chip = document.getElementById("health");
    chip.textContent = "not answering";
    chip.className = "chip bad";
  }
}

function remember(c) {
  if (c.to) state.lines.add(c.to);
}

async function loadCalls(more) {
  const p = searchQuery();
  p.set("limit", "50");
  if (more && state.nextBefore) p.set("before", state.nextBefore);
  const r = await api("/api/v1/calls?" + p);
  const status = document.getElementById("calls-summary");
  if (!r.ok) { status.textContent = (await r.text()).trim() || `Search failed (HTTP ${r.status}).`; return; }
  const page = await r.json();
  if (!more) { state.calls = new Map(); state.liveFrom = page.live_from; }
  for (const c of page.calls) { state.calls.set(c.call_sid, c); remember(c); }
  state.nextBefore = page.next_before;
  render();
}

// What is live and what waits for a call back, whatever the search shows.
async function loadBoards() {
  // A call on the line began within hours (the box drops one without a final callback after 4 h).
  const since = new Date(Date.now() - 6 * 3600 * 1000).toISOString();
  const [live, callbacks] = await Promise.all([
    api(`/api/v1/calls?outcome=live&limit=50&from=${encodeURIComponent(since)}`), api("/api/v1/call-backs"),
  ]);
  if (live.ok) state.live = new Map((await live.json()).calls.map(c => [c.call_sid, c]));
  if (callbacks.ok) state.callbacks = (await callbacks.json()).calls;
  state.callbacks.forEach(remember);
  render();
}

// Calls per day and the share nobody answered, as bars (SVG, no library).
async function loadChart() {
  const r = await api("/api/v1/stats/daily?days=30");
  if (!r.ok) return;
  const { days } = await r.json();
  const total = days.reduce((n, d) => n + d.calls, 0);
  const missed = days.reduce((n, d) => n + d.missed, 0);
  const rate = total ? Math.round((100 * missed) / total) : 0;
  document.getElementById("chart-summary").textContent =
    `${total} call${total === 1 ? "" : "s"}, ${missed} missed (${rate} %).`;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const w = 300, h = 80, max = Math.max(1, ...days.map(d => d.calls)), bw = w / days.length;
  svg.setAttribute("viewBox", `0 0 ${w} ${h + 12}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Calls per day for the last 30 days: ${total} calls, ${missed} missed, a missed rate of ${rate} percent.`);
  days.forEach((d, i) => {
    const bar = (value, cls) => {
      const r = document.createElementNS(ns, "rect");
      const bh = (value / max) * h;
      r.setAttribute("x", (i * bw + 1).toFixed(1));
      r.setAttribute("y", (h - bh).toFixed(1));
      r.setAttribute("width", Math.max(1, bw - 2).toFixed(1));
      r.setAttribute("height", bh.toFixed(1));
      r.setAttribute("class", cls);
      const t = document.createElementNS(ns, "title");
      t.textContent = `${d.date}: ${d.calls} calls, ${d.missed} missed`;
      r.append(t);
      svg.append(r);
    };
    bar(d.calls, "bar-calls");
    if (d.missed) bar(d.missed, "bar-missed");
  });
  for (const [i, anchor] of [[0, "start"], [days.length - 1, "end"]]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", anchor === "start" ? 0 : w);
    t.setAttribute("y", h + 11);
    t.setAttribute("text-anchor", anchor);
    t.setAttribute("class", "axis");
    t.textContent = days[i] ? new Date(days[i].date + "T12:00:00").toLocaleDateString([], { month: "short", day: "numeric" }) : "";
    svg.append(t);
  }
  document.getElementById("chart").replaceChildren(svg);
}

// The devices signed in to this dashboard, each with a way to sign it out.
async function loadDevices() {
  const r = await api("/api/v1/sessions");
  if (!r.ok) return;
  const { sessions } = await r.json();
  document.getElementById("devices").replaceChildren(...sessions.map(s => {
    const li = el("li");
    const what = el("div");
    what.append(el("span", "from", s.device), el("span", "sub",
      `signed in ${fmtTime(s.created_at)}${s.remember ? ", remembered until " + new Date(s.expires_at).toLocaleDateString() : ""}`));
    li.append(what);
    if (s.current) li.append(el("span", "tag", "this device"));
    else {
      const b = el("button", "quiet", "Sign out");
      b.type = "button";
      b.setAttribute("aria-label", `Sign out ${s.device}`);
      b.addEventListener("click", async () => {
        const d = await api(`/api/v1/sessions/${encodeURIComponent(s.id)}`, { method: "DELETE" });
        if (d.ok || d.status === 404) loadDevices();
      });
      li.append(b);
    }
    return li;
  }));
}

// The owner's step on the open call: heard, called-back, done, reopen, or the note.
async function followUp(action, note) {
  const sid = state.selected;
  if (!sid) return;
  const status = document.getElementById("follow-status");
  const body = note === undefined ? { action } : { action, note };
  const r = await api(`/api/v1/calls/${encodeURIComponent(sid)}/follow-up`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) { status.textContent = ((await r.json().catch(() => ({}))).error) || `Not saved (HTTP ${r.status}).`; return; }
  const c = await r.json();
  status.textContent = { heard: "", "called-back": "Marked as called back.", done: "Marked done.", reopen: "Back on the list.", note: "Note saved." }[action];
  take(c);
  loadBoards();
  loadStatus();
}

// A changed call, from the live feed or an answer: into every list it belongs to.
function take(c) {
  remember(c);
  // Said once per new call, for a screen reader (the lists re-render too often to be live).
  if (isLive(c) && !state.live.has(c.call_sid)) document.getElementById("announce").textContent = `Call from ${callerName(c)}`;
  if (state.calls.has(c.call_sid) || matchesSearch(c)) state.calls.set(c.call_sid, c);
  if (isLive(c)) state.live.set(c.call_sid, c); else state.live.delete(c.call_sid);
  const i = state.callbacks.findIndex(x => x.call_sid === c.call_sid);
  if (i >= 0) state.callbacks[i] = c;
  render();
}

async function loadStatus() {
  try {
    const r = await api("/api/v1/health");
    setOffline(!r.ok);
    if (!r.ok) return;
    const h = await r.json();
    const chip = document.getElementById("health");
    let text = h.status === "ok" ? "healthy" : h.status;
    const cert = h.tls && h.tls.certificate;
    if (cert && cert.not_after) text += " · certificate until " + new Date(cert.not_after).toLocaleDateString();
    if (h.tls_fault) text += " · certificate problem";
    if (h.texts && h.texts.failed) text += ` · ${h.texts.failed} text(s) failed`;
    chip.title = (h.texts && h.texts.last_failure) || "Box health";
    chip.textContent = text;
    chip.className = "chip " + (h.status === "ok" && !h.tls_fault && !(h.texts && h.texts.failed) ? "ok" : "bad");
    document.getElementById("footer").textContent = `callbox ${h.version} · ${h.calls} calls in the log · ${h.public_url}`;
  } catch (e) { setOffline(true); return; }
  try {
    const r = await api("/api/v1/indicators");
    if (r.ok) {
      const ind = await r.json();
      const chip = document.getElementById("indicator");
      chip.textContent = ind.state ? String(ind.state).replace(/_/g, "-") : "lights";
      chip.className = "chip";
      // The count, whatever the lights show right now (a live call outranks the message LED).
      const out = ind.output || ind;
      const waiting = Number(out.messages_waiting || 0);
      document.getElementById("message-text").textContent =
        waiting === 1 ? "1 message or missed call waiting." : `${waiting} messages or missed calls waiting.`;
      document.getElementById("message-banner").hidden = waiting === 0;
    } else {
      document.getElementById("indicator").hidden = true;
    }
  } catch (e) { /* ignore */ }
}

function connectLive() {
  // From where the list was read; after a drop the browser sends Last-Event-ID itself, and
  // the box replays what the page missed (or says `resync` when it restarted meanwhile).
  const es = new EventSource("/api/v1/events" + (state.liveFrom ? "?after=" + encodeURIComponent(state.liveFrom) : ""));
  let boards = null;
  es.addEventListener("call", ev => {
    take(JSON.parse(ev.data));
    // The call-back list and the counts follow a burst once, not once per event.
    clearTimeout(boards);
    boards = setTimeout(() => { loadBoards(); loadStatus(); loadChart(); }, 300);
  });
  es.addEventListener("resync", () => { loadCalls(); loadBoards(); loadStatus(); });
  es.onerror = () => { if (es.readyState !== EventSource.OPEN) loadStatus(); };
  es.onopen = () => { if (state.offlineSince) { setOffline(false); loadStatus(); } };
}

async function main() {
  const s = await (await api("/api/v1/session")).json();
  state.csrf = s.csrf_token;
  document.getElementById("search").addEventListener("submit", e => { e.preventDefault(); loadCalls(); });
  for (const id of ["outcome", "line", "from", "to"]) document.getElementById(id).addEventListener("change", () => loadCalls());
  document.getElementById("older").addEventListener("click", () => loadCalls(true));
  document.getElementById("detail-close").addEventListener("click", () => {
    const back = state.selected;
    state.selected = null;
    document.getElementById("detail").hidden = true;
    document.body.classList.remove("detail-open");
    render();
    const row = document.querySelector(`.calls [data-sid="${back}"]`);
    if (row) row.focus();
  });
  document.getElementById("mark-called").addEventListener("click", () => followUp("called-back"));
  document.getElementById("mark-done").addEventListener("click", () => followUp("done"));
  document.getElementById("mark-reopen").addEventListener("click", () => followUp("reopen"));
  document.getElementById("note-form").addEventListener("submit", e => { e.preventDefault(); followUp("note", document.getElementById("note").value); });
  // Playing a voicemail is hearing it: its light goes out (it stays on the call-back list).
  document.getElementById("audio").addEventListener("play", () => {
    const c = findCall(state.selected);
    if (c && !(c.follow_up && c.follow_up.heard_at)) followUp("heard");
  });
  document.getElementById("ack").addEventListener("click", async () => {
    const r = await api("/api/v1/indicators/ack", { method: "POST" });
    if (r.ok) document.getElementById("message-banner").hidden = true;
    loadBoards();
    loadStatus();
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/logout", { method: "POST" });
    location.href = "/login";
  });
  document.getElementById("reply").addEventListener("submit", sendText);
  await loadCalls();
  await loadBoards();
  loadTemplates();
  loadChart();
  loadDevices();
  setInterval(() => { const c = findCall(state.selected); if (c && !document.getElementById("detail").hidden) loadThread(c); }, 10000);
  // The "leaving a message 0:12" clock.
  setInterval(() => { if (state.live.size) renderLive(); }, 1000);
  connectLive();
  loadStatus();
  setInterval(loadStatus, 30000);
  setInterval(loadChart, 300000);
}

main();
