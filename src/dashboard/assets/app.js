// callbox dashboard: plain JavaScript, no build step, no third-party code. Every value from
// the call log is written with textContent (caller IDs come from the phone network).
"use strict";

const state = { calls: new Map(), texts: new Map(), filter: "all", line: "", csrf: null, selected: null, offlineSince: null };

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
const MISSED = new Set(["busy", "failed", "no-answer", "canceled"]);

function isLive(c) { return c.outcome ? c.outcome === "live" : !FINAL.has(c.status); }
function isMissed(c) { return c.outcome ? c.outcome === "missed" : MISSED.has(c.status); }
function hasVoicemail(c) { return c.outcome ? c.outcome === "voicemail" : media(c).outcome === "message"; }

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
    case "live": return ["live", "On the line"];
    default: return [String(c.status || "").replace(/[^a-z-]/g, ""), c.status];
  }
}

function callItem(c) {
  const li = el("li", "call");
  li.tabIndex = 0;
  li.setAttribute("role", "button");
  li.dataset.sid = c.call_sid;
  if (c.call_sid === state.selected) li.setAttribute("aria-current", "true");
  const who = el("div", "who");
  who.append(el("span", "from", c.caller_name || c.from || "unknown caller"));
  if (c.caller_name && c.from) who.append(el("span", "sub", c.from));
  const meta = el("div", "meta");
  meta.append(el("span", "time", fmtTime(c.first_seen)));
  if (c.to) meta.append(el("span", "line", c.to));
  const right = el("div", "right");
  const [cls, label] = outcomeLabel(c);
  right.append(el("span", "badge " + cls, label));
  if (c.duration_secs !== null && c.duration_secs !== undefined) right.append(el("span", "dur", fmtDuration(c.duration_secs)));
  li.append(who, meta, right);
  li.addEventListener("click", () => showDetail(c.call_sid));
  li.addEventListener("keydown", e => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showDetail(c.call_sid); }
  });
  return li;
}

function render() {
  const all = [...state.calls.values()].sort((a, b) => (a.first_seen < b.first_seen ? 1 : -1));
  const live = all.filter(isLive);
  const liveList = document.getElementById("live");
  liveList.replaceChildren(...live.map(callItem));
  document.getElementById("live-count").textContent = live.length;
  document.getElementById("live-empty").hidden = live.length > 0;

  const lines = [...new Set(all.map(c => c.to).filter(Boolean))].sort();
  const select = document.getElementById("line");
  const current = select.value;
  select.replaceChildren(el("option", null, "All lines"), ...lines.map(l => { const o = el("option", null, l); o.value = l; return o; }));
  select.firstChild.value = "";
  select.value = lines.includes(current) ? current : "";

  const shown = all.filter(c => {
    if (state.line && c.to !== state.line) return false;
    if (state.filter === "missed") return isMissed(c);
    if (state.filter === "voicemail") return hasVoicemail(c);
    return true;
  });
  document.getElementById("calls").replaceChildren(...shown.map(callItem));
  // Export what the list covers: from the oldest call loaded to today, in local dates.
  const day = d => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  const oldest = all.length ? new Date(all[all.length - 1].first_seen) : new Date();
  document.getElementById("export").href = `/api/v1/calls.csv?from=${day(oldest)}&to=${day(new Date())}`;
  document.getElementById("calls-empty").hidden = shown.length > 0;
  if (state.selected && state.calls.has(state.selected)) fillDetail(state.calls.get(state.selected));
}

function showDetail(sid) {
  state.selected = sid;
  const c = state.calls.get(sid);
  if (!c) return;
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
  document.getElementById("detail-title").textContent = c.caller_name || c.from || c.call_sid;
  const facts = document.getElementById("detail-facts");
  const m = media(c);
  const rows = [
    ["Caller", c.from], ["Line", c.to], ["Status", c.status], ["Arrived", fmtTime(c.first_seen)],
    ["Answered", fmtTime(c.answered_at)], ["Ended", fmtTime(c.ended_at)], ["Duration", fmtDuration(c.duration_secs)],
    ["Flow", m.flow], ["Outcome", outcomeLabel(c)[1]], ["Call SID", c.call_sid],
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
  const c = state.calls.get(state.selected);
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
  if (state.selected === sid && state.calls.has(sid)) fillDetail(state.calls.get(sid));
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

async function loadCalls() {
  const r = await api("/api/v1/calls?limit=200");
  const page = await r.json();
  state.calls = new Map(page.calls.map(c => [c.call_sid, c]));
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
  const es = new EventSource("/api/v1/events");
  es.addEventListener("call", ev => {
    const c = JSON.parse(ev.data);
    state.calls.set(c.call_sid, c);
    render();
    loadStatus();
  });
  es.addEventListener("resync", () => loadCalls());
  // EventSource reconnects by itself (retry: 3000); meanwhile the page says the box is away.
  es.onerror = () => { if (es.readyState !== EventSource.OPEN) loadStatus(); };
  es.onopen = () => { if (state.offlineSince) { setOffline(false); loadCalls(); loadStatus(); } };
}

async function main() {
  const s = await (await api("/api/v1/session")).json();
  state.csrf = s.csrf_token;
  document.querySelectorAll("[data-filter]").forEach(b => b.addEventListener("click", () => {
    state.filter = b.dataset.filter;
    document.querySelectorAll("[data-filter]").forEach(x => x.classList.toggle("on", x === b));
    render();
  }));
  document.getElementById("line").addEventListener("change", e => { state.line = e.target.value; render(); });
  document.getElementById("detail-close").addEventListener("click", () => {
    const back = state.selected;
    state.selected = null;
    document.getElementById("detail").hidden = true;
    document.body.classList.remove("detail-open");
    render();
    const row = document.querySelector(`#calls [data-sid="${back}"]`);
    if (row) row.focus();
  });
  document.getElementById("ack").addEventListener("click", async () => {
    const r = await api("/api/v1/indicators/ack", { method: "POST" });
    if (r.ok) document.getElementById("message-banner").hidden = true;
    loadStatus();
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/logout", { method: "POST" });
    location.href = "/login";
  });
  document.getElementById("reply").addEventListener("submit", sendText);
  await loadCalls();
  loadTemplates();
  setInterval(() => { const c = state.calls.get(state.selected); if (c && !document.getElementById("detail").hidden) loadThread(c); }, 10000);
  connectLive();
  loadStatus();
  setInterval(loadStatus, 30000);
}

main();
