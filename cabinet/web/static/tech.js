// Technician UI: log-in, live slot grid and health, audited actions with confirmation.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const $ = (sel) => document.querySelector(sel);
  const STATE = { unknown: "Board not answering", fault: "Fault", quarantined: "Quarantined", checking: "Checking",
    charging: "Charging", ready: "Ready", low: "Low charge", empty: "Empty" };

  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") n.className = v; else n.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) n.append(k);
    return n;
  }

  async function post(url, body) {
    const r = await fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body || {}) });
    if (r.status === 401 && !url.startsWith("/api/tech/login") && !url.startsWith("/api/tech/setup")) {
      location.href = "/tech/login";
    }
    return r;
  }

  function toast(text) {
    const t = $("#toast");
    if (!t) return;
    t.textContent = text;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.textContent = ""; }, 12000);
  }

  function confirmDialog(text) {
    const d = $("#confirm");
    $("#confirm-text").textContent = text;
    return new Promise((resolve) => {
      d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
      d.showModal();
    });
  }

  // ---- log in and first set-up ----
  function formError(text) { const p = $("#form-error"); if (p) p.textContent = text; }
  const login = $("#login-form");
  if (login) login.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await post("/api/tech/login", { user: login.user.value, password: login.password.value });
    const j = await r.json();
    if (r.ok) location.href = "/tech"; else formError(j.error || "Log-in failed");
  });
  const setup = $("#setup-form");
  if (setup) setup.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (setup.password.value !== setup.password2.value) { formError("The two passwords differ."); return; }
    const r = await post("/api/tech/setup", { code: setup.code.value, user: setup.user.value,
      password: setup.password.value });
    const j = await r.json();
    if (r.ok) location.href = "/tech"; else formError(j.error || "Set-up failed");
  });

  // ---- overview: grid and health ----
  function pct(x) { return x === null || x === undefined ? "–" : Math.round(x * 100) + " %"; }
  function renderGrid(slots) {
    const g = $("#grid");
    if (!g) return;
    const cells = slots.map((s) => {
      const state = STATE[s.state] || s.state;
      const risk = s.risk ? "risk " + pct(s.risk.risk) : "no prediction yet";
      // the visible text is the accessible name (a hidden "Slot" word makes it read well)
      return el("a", { class: "slot st-" + s.state, href: "/tech/slot/" + s.slot, "data-slot": s.slot,
        "data-state": s.state },
        el("span", { class: "num" }, el("span", { class: "sr" }, "Slot "), String(s.slot)),
        el("span", { class: "state" }, state),
        el("span", {}, s.sn || "—"),
        s.present ? el("span", {}, s.soc + " % · " + s.temp_c + " °C" + (s.charging && s.state !== "charging" ? " · charging" : "")) : null,
        s.sn ? el("span", {}, risk) : null,
        s.fault ? el("span", {}, "fault: " + s.fault) : null,
        s.quarantined && s.quarantine_reason ? el("span", {}, s.quarantine_reason) : null);
    });
    g.replaceChildren(...cells);
  }
  function ago(wall) { if (!wall) return "never"; const s = Date.now() / 1000 - wall; return s < 90 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago"; }
  function renderHealth(h) {
    const box = $("#health");
    if (!box) return;
    const bus = h.bus || {};
    const rows = [
      ["Renting", h.renting ? "yes" : "NO" + (h.ledger_problem ? ": " + h.ledger_problem : "")],
      ["Bus", (bus.boards_online ?? "?") + "/" + ((bus.boards || []).length) + " boards answer, " +
        (bus.boards_isolated || 0) + " isolated; " + (bus.timeouts || 0) + " timeouts, " + (bus.crc_errors || 0) + " CRC errors"],
      ["Sync", !h.sync.enabled ? "disabled" : (h.sync.connected ? "connected" : "offline") +
        ", backlog " + (h.sync.backlog ?? "?") + " events, last ack " + ago(h.sync.last_ack_at)],
      ["Disk", h.disk.free_bytes !== undefined ? (h.disk.free_bytes / 1e9).toFixed(2) + " GB free of " + (h.disk.total_bytes / 1e9).toFixed(1) + " GB" : h.disk.error],
      ["Uptime", Math.floor(h.uptime_s / 3600) + " h " + Math.floor((h.uptime_s % 3600) / 60) + " min"],
      ["Open rentals", String(h.open_rentals)],
      ["Software", (h.versions.software || "?") + " (protocol " + (h.versions.protocol || "?") + ", Python " + h.versions.python + ")"],
      ["Fault model", h.model_version || "no model loaded"],
    ];
    const dl = el("dl", {});
    for (const [k, v] of rows) {
      dl.append(el("dt", {}, k), el("dd", { class: (k === "Renting" && !h.renting) || (k === "Sync" && h.sync.enabled && !h.sync.connected) ? "bad" : "" }, v));
    }
    const boards = el("table", {}, el("caption", {}, "Slot boards"),
      el("thead", {}, el("tr", {}, ...["Board", "Slots", "State", "Requests", "Timeouts", "CRC", "Last error"].map((t) => el("th", { scope: "col" }, t)))),
      el("tbody", {}, ...(bus.boards || []).map((b) => el("tr", {},
        el("td", {}, String(b.unit_id)), el("td", {}, b.slots[0] + "–" + b.slots[b.slots.length - 1]),
        el("td", { class: b.online && !b.isolated ? "good" : "bad" }, b.isolated ? "isolated" : (b.online ? "online" : "not answering")),
        el("td", {}, String(b.requests)), el("td", {}, String(b.timeouts)), el("td", {}, String(b.crc_errors)),
        el("td", {}, b.last_error || "")))));
    box.replaceChildren(dl, boards);
  }
  if ($("#grid")) {
    fetch("/api/slots", { credentials: "same-origin" }).then((r) => r.json()).then((j) => renderGrid(j.slots));
    fetch("/api/health", { credentials: "same-origin" }).then((r) => r.json()).then(renderHealth);
    const es = new EventSource("/api/events/stream");
    es.addEventListener("slots", (m) => renderGrid(JSON.parse(m.data).slots));
    es.addEventListener("health", (m) => renderHealth(JSON.parse(m.data)));
    for (const kind of ["alert", "slot_fault", "battery_removed_unexpected", "foreign_battery"]) {
      es.addEventListener(kind, (m) => { const d = JSON.parse(m.data); toast(kind.replace(/_/g, " ") + ": slot " + d.slot + (d.sn ? ", battery " + d.sn : "") + (d.problem ? ": " + d.problem : "")); });
    }
  }

  // ---- actions ----
  const WORDS = { unlock: "Unlock", quarantine: "Quarantine", release: "Release", removed: "Mark removed for repair" };
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    const action = b.dataset.action;
    const result = $("#action-result");
    const say = (t) => { if (result) result.textContent = t; toast(t); };
    if (action === "logout") {
      await post("/api/tech/logout"); location.href = "/tech/login"; return;
    }
    if (action === "selftest") {
      say("Self-test running…");
      const r = await post("/api/tech/selftest");
      const j = await r.json();
      say((j.ok ? "Self-test passed" : "Self-test FAILED") + "\n" + (j.checks || []).map((c) => (c.ok ? "✔ " : "✘ ") + c.name + ": " + c.detail).join("\n"));
      return;
    }
    if (action === "diagnostics") {
      say("Preparing the diagnostics bundle…");
      const r = await post("/api/tech/diagnostics");
      if (!r.ok) { say("Diagnostics failed: " + r.status); return; }
      const name = (r.headers.get("Content-Disposition") || "").split('"')[1] || "diagnostics.tar.gz";
      const url = URL.createObjectURL(await r.blob());
      const a = el("a", { href: url, download: name });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      say("Diagnostics downloaded: " + name);
      return;
    }
    const reasonBox = $("#reason");
    const reason = reasonBox ? reasonBox.value.trim() : "";
    if (!reason) { say("Please give a reason first."); if (reasonBox) reasonBox.focus(); return; }
    const what = b.dataset.slot ? "slot " + b.dataset.slot : "battery " + b.dataset.sn;
    if (!(await confirmDialog(WORDS[action] + " " + what + "?\nReason: " + reason))) { say("Cancelled."); return; }
    const url = b.dataset.slot ? "/api/tech/slots/" + b.dataset.slot + "/" + action
      : "/api/tech/batteries/" + encodeURIComponent(b.dataset.sn) + "/removed";
    say(action === "unlock" ? "Opening " + what + "… take the battery out if you need to." : "Working…");
    const r = await post(url, { reason });
    const j = await r.json();
    say(r.ok ? WORDS[action] + " " + what + ": " + j.result : "Refused: " + (j.error || r.status));
  });
})();
