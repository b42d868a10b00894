// The MSA500 front panel: polls the API's views, follows /api/events/stream, and sends the
// command-language lines the CLI sends (POST /api/command). The token is in an HttpOnly cookie.
"use strict";
(() => {
  const POLL_MS = 500;
  const BLINK_MS = 220;
  const LANE_WINDOW_S = 600;  // the swim lanes show at most the last 10 minutes
  const LANE_MIN_S = 30;
  const MAX_EVENTS = 300;
  // SHOW DISKS states (firmware_model.enclosure.DriveState values, and "empty") -> data-state
  const BAY_STATES = {
    "ok": "ok", "failed": "failed", "missing": "missing", "rebuilding": "rebuilding",
    "spare": "spare", "predictive failure": "predictive", "empty": "empty",
  };
  // the RSO story: event code -> [lane, label]; lanes 0 primary, 1 array, 2 recovery
  const LANES = ["primary (port 1)", "array", "recovery (port 2)"];
  const STORY = {
    RSO_CONFIGURED: [1, "configured"], RSO_SECONDARY_JOINED: [2, "joined"],
    RSO_PRIMARY_STARTED: [0, "first heartbeat"], RSO_HEARTBEAT_RESUMED: [0, "heartbeat resumed"],
    RSO_TIMEOUT: [1, "deadline missed"], RSO_FAILOVER: [1, "failover"], RSO_SERVICE_LOST: [1, "service lost"],
    RSO_ACK_LOST: [0, "ack lost"], RSO_ACK_RESTORED: [0, "ack back"], RSO_RESTORED: [1, "restore"],
    RSO_LINK: [1, "link"], HOST_FENCED: [0, "fenced"], HOST_FAILOVER: [2, "recovery boots"],
    HOST_ACK_LOST: [0, "ack lost"], HOST_ACK_RESTORED: [0, "ack back"],
    SHELF_POWER_OFF: [1, "power off"], SHELF_POWER_ON: [1, "power on"],
  };
  const MiB = 1024 ** 2;
  const UNITS = [[2 ** 40, "TiB"], [2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]];

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  // as the CLI writes sizes (msa500_emu.management.render.size): binary, the unit written
  const size = (n) => {
    for (const [unit, name] of UNITS) if (n >= unit) return `${+(n / unit).toFixed(2)} ${name}`;
    return `${n} B`;
  };
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

  const state = {
    io: {}, rso: null, rsoAt: 0, hbTicks: [], ackTicks: [], lastHb: null, lastAck: null,
    story: [], lastEvent: 0, busy: false, again: false, powered: true,
  };

  // ------------------------------------------------------------------ talking to the API
  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401 || r.status === 403) { location.href = "/"; throw new Error("token refused"); }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  async function command(line) {
    say(`${line} ...`);
    try {
      const r = await fetch("/api/command", {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ command: line }),
      });
      const body = await r.json();
      if (!body.ok) say(`${line}: ${body.error}`, true);
      else say(`${line}: ${(body.text || "done").split("\n")[0]}`);
    } catch (err) {
      say(`${line}: ${err.message}`, true);
    }
    refresh();
  }

  function say(text, bad = false) {
    const s = $("#status");
    s.textContent = text;
    s.className = bad ? "bad" : "";
  }

  // ------------------------------------------------------------------ the shelf
  function buildBays() {
    const bays = $("#bays");
    for (let n = 1; n <= 14; n++) {
      const btns = el("div", { class: "btns" });
      for (const [action, label] of [["fail", "Fail"], ["pull", "Pull"], ["insert", "Insert"]]) {
        btns.append(el("button", { "data-action": action, "data-command": `FAULT DISK${n} ${action.toUpperCase()}`,
                                   title: `FAULT DISK${n} ${action.toUpperCase()}`, text: label }));
      }
      bays.append(el("div", { class: "bay", "data-bay": String(n), "data-state": "empty" },
        el("div", { class: "num", text: String(n) }),
        el("div", { class: "leds" }, el("span", { class: "led act", title: "activity" }),
                                     el("span", { class: "led status", title: "status" })),
        el("div", { class: "carrier" }, el("div", { class: "state", text: "-" }), el("div", { class: "size dim" }),
           el("div", { class: "role dim" }), el("div", { class: "serial dim" }), el("div", { class: "faults" }),
           el("div", { class: "bar", hidden: "" }, el("div"))),
        btns));
    }
  }

  function showDisks(disks) {
    for (const d of disks) {
      const bay = $(`.bay[data-bay="${d.bay}"]`);
      if (!bay) continue;
      const st = BAY_STATES[d.state] || d.state;
      bay.dataset.state = st;
      $(".state", bay).textContent = d.state;
      $(".size", bay).textContent = d.size_bytes ? size(d.size_bytes) : "";
      $(".role", bay).textContent = d.role === "member" && d.array ? `array ${d.array}`
        : d.role ? (d.array ? `${d.role} ${d.array}` : d.role) : "";
      $(".serial", bay).textContent = d.serial ? `…${d.serial.slice(-6)}` : "";
      const faults = [];
      if (d.media_errors && d.media_errors.length) faults.push(`${d.media_errors.length} media errors`);
      if (d.latency_ms) faults.push(`+${d.latency_ms} ms`);
      $(".faults", bay).textContent = faults.join(", ");
      if (d.serial) $(".serial", bay).title = d.serial;
      const bar = $(".bar", bay);
      bar.hidden = d.rebuild_percent == null;
      if (d.rebuild_percent != null) { bar.firstChild.style.width = `${d.rebuild_percent}%`; bar.title = `rebuild ${d.rebuild_percent} %`; }
      $('[data-action="fail"]', bay).disabled = st === "empty" || st === "missing" || st === "failed";
      $('[data-action="pull"]', bay).disabled = st === "empty" || st === "missing";
      $('[data-action="insert"]', bay).disabled = !(st === "empty" || st === "missing" || st === "failed");
      const io = (d.io_reads || 0) + (d.io_writes || 0);
      if (state.io[d.bay] !== undefined && io !== state.io[d.bay]) blink($(".led.act", bay));
      state.io[d.bay] = io;
      bay.title = d.io_reads != null ? `bay ${d.bay}: ${d.io_reads} reads, ${d.io_writes} writes, ${size(d.io_bytes)}` : `bay ${d.bay}`;
    }
  }

  function blink(led) {
    led.classList.add("on");
    setTimeout(() => led.classList.remove("on"), BLINK_MS);
  }

  function comp(what, value, st) {
    return el("div", { class: "comp", "data-comp": what.toLowerCase().replace(/\s+/g, "-"), "data-state": st },
      el("div", { class: "what", text: what }), el("div", { class: "val", text: value }));
  }

  function showChassis(g) {
    const c = g.cache || {}, b = g.battery || {};
    const kids = [];
    (g.power_supplies || []).forEach((s, i) => kids.push(comp(`Power supply ${i + 1}`, s, s)));
    (g.fans || []).forEach((s, i) => kids.push(comp(`Fan ${i + 1}`, s, s)));
    kids.push(comp("Temperature", `${g.temperature_c} °C`, "ok"));
    const charge = b.charge_percent != null ? ` ${Math.round(b.charge_percent)} %` : "";
    kids.push(comp("Battery", `${b.state}${charge}`, b.state === "ok" ? "ok" : b.state === "failed" || b.state === "removed" ? "bad" : "warn"));
    const cache = c.enabled === false ? "disabled" : `${c.state}, ${((c.dirty_bytes || 0) / MiB).toFixed(1)} MiB dirty`;
    const cacheEl = comp("Cache", cache, c.state === "write-back" ? "ok" : "warn");
    cacheEl.append(el("div", { class: "what", text: c.destage_blocked ? `${c.reason}; destage: ${c.destage_blocked}` : c.reason || "" }));
    kids.push(cacheEl);
    $("#chassis").replaceChildren(...kids);
  }

  function portRole(rso, port) {
    if (!rso || !rso.enabled) return "open";
    if (rso.fenced_port === port) return "fenced";
    if (rso.active_port === port) return "active";
    return "listening";
  }

  function showPorts(g) {
    const rso = g.rso || {};
    const kids = [];
    for (const p of g.portals || []) {
      const role = portRole(rso, p.port);
      const sessions = (g.sessions || []).filter((s) => s.port === p.port);
      const list = el("ul");
      for (const s of sessions) list.append(el("li", { text: s.type === "Normal" ? s.initiator : `${s.initiator} (discovery)` }));
      if (!sessions.length) list.append(el("li", { class: "dim", text: "no sessions" }));
      const link = rso.links ? rso.links[String(p.port)] : null;
      kids.push(el("div", { class: "port", "data-port": String(p.port), "data-role": role },
        el("div", {}, el("b", { text: `Port ${p.port}` }), ` ${p.port === 1 ? "primary" : "recovery"} · `,
           el("span", { class: "role", text: role === "open" ? "no RSO: reaches the units" : role })),
        el("div", { class: "dim", text: `${p.address} · TPGT ${p.tpgt}${link ? ` · heartbeat link ${link}` : ""}` }),
        list));
    }
    $("#ports").replaceChildren(...kids);
  }

  function showRso(g) {
    const r = g.rso || {};
    state.rso = r;
    state.rsoAt = performance.now();
    const now = Date.now() / 1000;
    if (r.heartbeats !== undefined && state.lastHb !== null && r.heartbeats > state.lastHb) state.hbTicks.push(now);
    if (r.acks !== undefined && state.lastAck !== null && r.acks > state.lastAck) state.ackTicks.push(now);
    state.lastHb = r.heartbeats; state.lastAck = r.acks;
    const cut = now - LANE_WINDOW_S;
    state.hbTicks = state.hbTicks.filter((t) => t >= cut);
    state.ackTicks = state.ackTicks.filter((t) => t >= cut);
    const box = $("#rso");
    box.dataset.state = r.state || "-";
    const dl = el("dl", { class: "kv" });
    const row = (k, v, cls) => { dl.append(el("dt", { text: k }), el("dd", cls ? { class: cls, text: v } : { text: v })); };
    row("state", r.state || "-");
    row("timeout", r.enabled ? `${r.timeout_s} s${r.act_alone ? ", acts alone" : ""}` : "-");
    row("heartbeat age", "-", "hb-age");
    row("ack age", r.ack_age_s == null ? "-" : `${r.ack_age_s.toFixed(1)} s`);
    row("active / fenced", `port ${r.active_port ?? "-"} / ${r.fenced_port ? `port ${r.fenced_port}` : "none"}`);
    row("counts", `${r.heartbeats || 0} heartbeats, ${r.acks || 0} acks, ${r.failovers || 0} failovers`);
    if (r.detection_ms != null) row("detected in", `${r.detection_ms} ms`);
    box.replaceChildren(dl, el("div", { class: "deadline", title: "heartbeat age against the timeout" }, el("div")));
    tickRso();
  }

  function tickRso() {
    const r = state.rso;
    const age = $("#rso .hb-age");
    if (!r || !age) return;
    const bar = $("#rso .deadline");
    if (r.heartbeat_age_s == null || !state.powered) { age.textContent = "-"; bar.hidden = true; return; }
    const a = r.heartbeat_age_s + (performance.now() - state.rsoAt) / 1000;
    age.textContent = `${a.toFixed(1)} s`;
    bar.hidden = !r.enabled;
    const frac = r.timeout_s ? Math.min(1, a / r.timeout_s) : 0;
    bar.firstChild.style.width = `${(frac * 100).toFixed(1)}%`;
    bar.classList.toggle("late", frac >= 1);
  }

  function showUnits(units) {
    const rows = units.map((u) => {
      const pct = u.rebuild_percent ?? u.expand_percent;
      const what = u.rebuild_percent != null ? "rebuild" : u.expand_percent != null ? "expand" : "";
      const prog = el("td");
      if (pct != null) prog.append(el("div", { class: "bar", title: `${what} ${pct} %` }, el("div", { style: `width:${pct}%` })),
                                   el("span", { class: "dim", text: `${what} ${pct} %` }));
      const bays = (u.bays || []).map((b) => (b == null ? "-" : b)).join(" ");
      return el("tr", { "data-lun": String(u.lun), "data-state": u.state },
        el("td", { text: String(u.lun) }), el("td", { text: u.name || "" }), el("td", { text: u.raid }),
        el("td", { class: "num", text: size(u.size_bytes) }),
        el("td", { class: "st", text: u.powered === false ? `${u.state} (powered off)` : u.state }),
        prog, el("td", { text: bays }), el("td", { text: (u.spares || []).map((b) => (b == null ? "-" : b)).join(" ") }));
    });
    $("#units tbody").replaceChildren(...rows);
  }

  function showHeader(g) {
    $("#serial").textContent = g.serial;
    $("#identity").textContent = `firmware ${g.firmware} · ${g.target_name}`;
    state.powered = g.powered !== false;
    $("#shelf").dataset.powered = String(state.powered);
    const badge = $("#power-badge");
    badge.textContent = state.powered ? "powered on" : "POWERED OFF";
    badge.className = `badge ${state.powered ? "ok" : "bad"}`;
  }

  async function refresh() {
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    try {
      const [g, disks, units] = await Promise.all([api("/api/globals"), api("/api/disks"), api("/api/units")]);
      showHeader(g); showChassis(g); showPorts(g); showRso(g); showDisks(disks); showUnits(units); drawLanes();
    } catch (err) {
      say(`the array does not answer: ${err.message}`, true);
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; setTimeout(refresh, 0); }
    }
  }

  // ------------------------------------------------------------------ events and the swim lanes
  function addEvent(e) {
    if (e.id <= state.lastEvent) return;
    state.lastEvent = e.id;
    const list = $("#events");
    list.prepend(el("li", { value: String(e.id), "data-id": String(e.id), "data-code": e.code, "data-severity": e.severity },
      `${clock(e.time)} `, el("span", { class: "code", text: e.code }), ` ${e.message}`));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
    if (STORY[e.code]) {
      state.story.push(e);
      if (e.code === "RSO_FAILOVER") state.story.push({ ...e, code: "FENCE" });
      if (state.story.length > 500) state.story.splice(0, state.story.length - 500);
    }
  }

  function drawLanes() {
    const svg = $("#lanes");
    const ns = "http://www.w3.org/2000/svg";
    const mk = (tag, attrs, text) => {
      const e = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text) e.textContent = text;
      return e;
    };
    // the window: from the story's first mark (at most LANE_WINDOW_S ago, at least LANE_MIN_S) to now
    const now = Date.now() / 1000;
    const first = Math.min(now, ...state.story.map((e) => e.time), ...state.hbTicks, ...state.ackTicks);
    const span = Math.min(LANE_WINDOW_S, Math.max(LANE_MIN_S, (now - first) * 1.1));
    const width = Math.max(400, Math.round(svg.clientWidth || 1000));
    svg.setAttribute("viewBox", `0 0 ${width} 150`);  // one user unit per pixel: text is not stretched
    const t0 = now - span, x0 = 130, w = width - x0 - 110;
    const x = (t) => x0 + Math.max(0, (t - t0) / span) * w;
    const y = (lane) => 28 + lane * 48;
    const kids = [];
    kids.push(mk("text", { x: x0, y: 146 }, `${clock(t0)}`), mk("text", { x: x0 + w - 40, y: 146 }, "now"));
    LANES.forEach((name, i) => {
      kids.push(mk("line", { x1: x0, x2: x0 + w, y1: y(i), y2: y(i), stroke: "#3a3f47" }));
      kids.push(mk("text", { x: 4, y: y(i) + 4 }, name));
    });
    for (const t of state.hbTicks) kids.push(mk("line", { x1: x(t), x2: x(t), y1: y(0) - 5, y2: y(0) + 5, stroke: "#3ccf4e" }));
    for (const t of state.ackTicks) kids.push(mk("line", { x1: x(t), x2: x(t), y1: y(2) - 5, y2: y(2) + 5, stroke: "#4aa3ff" }));
    const r = state.rso;
    if (r && r.enabled && r.heartbeat_age_s != null && state.powered) {  // the heartbeat deadline
      const due = now - r.heartbeat_age_s + r.timeout_s;
      if (due <= now + 1) kids.push(mk("line", { x1: x(due), x2: x(due), y1: 6, y2: 144, stroke: "#e5484d", "stroke-dasharray": "4 3" }));
    }
    const rows = LANES.map(() => [-1e9, -1e9, -1e9]);  // per lane, where each label row is free again
    const place = (lane, at, label) => {
      const row = rows[lane].findIndex((end) => end < at);
      if (row < 0) return null;  // no room: the mark keeps its label as a tooltip
      rows[lane][row] = at + 7 * label.length + 8;
      return [-7, -17, 17][row];
    };
    let off = null;
    state.story.forEach((e) => {
      if (e.code === "SHELF_POWER_OFF") off = e.time;
      if (e.code === "SHELF_POWER_ON" && off !== null) {
        kids.push(mk("rect", { x: x(off), y: y(1) - 8, width: Math.max(1, x(e.time) - x(off)), height: 16, fill: "#7a2226", opacity: 0.6 }));
        off = null;
      }
      if (e.time < t0) return;
      const [lane, label] = e.code === "FENCE" ? [0, "fenced"] : STORY[e.code];
      const bad = e.severity === "critical" || e.code === "FENCE";
      const dot = mk("circle", { cx: x(e.time), cy: y(lane), r: 5, fill: bad ? "#e5484d" : "#f0a020",
                                 "data-code": e.code });
      dot.append(mk("title", {}, `${clock(e.time)} ${e.code}: ${e.message}`));
      kids.push(dot);
      const dy = place(lane, x(e.time) - 4, label);
      if (dy !== null) kids.push(mk("text", { x: x(e.time) - 4, y: y(lane) + dy }, label));
    });
    if (off !== null) kids.push(mk("rect", { x: x(off), y: y(1) - 8, width: Math.max(1, x(now) - x(off)), height: 16, fill: "#7a2226", opacity: 0.6 }));
    if (!state.story.length && !state.hbTicks.length && !(r && r.enabled)) {
      kids.push(mk("text", { x: x0 + w / 2 - 120, y: y(1) - 12 }, "RSO is not enabled: no heartbeats to draw"));
    }
    svg.replaceChildren(...kids);
  }

  function follow() {
    const badge = $("#link-badge");
    const source = new EventSource("/api/events/stream?tail=200");
    let pending = null;
    source.onopen = () => { badge.textContent = "events: live"; badge.className = "badge ok"; };
    source.onerror = () => { badge.textContent = "events: reconnecting"; badge.className = "badge warn"; };
    source.onmessage = (m) => {
      try { addEvent(JSON.parse(m.data)); } catch (err) { return; }
      if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 60);
    };
  }

  // ------------------------------------------------------------------ start
  buildBays();
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-command]");
    if (b && !b.disabled) command(b.dataset.command);
  });
  refresh();
  follow();
  setInterval(refresh, POLL_MS);
  setInterval(tickRso, 100);
})();
