// Kiosk: rent with a pass, take the battery, return it; zh/en; live over server-sent events.
"use strict";
(function () {
  const T = {
    en: {
      title: "Power bank rental", qr: "Scan with your phone to rent in the app", prices: "Prices",
      have_pass: "I have a pass", return: "Return a battery", pass_title: "Hold your pass to the reader, or paste it here",
      pass_label: "Pass code", rent: "Rent a battery", back: "Back", checking: "Checking your pass…",
      take_from: "Take your battery from slot", seconds_left: "seconds left", done: "Done",
      push_in: "Push the battery into any empty slot", thanks: "Thank you! Battery returned",
      ready: (n) => n === 1 ? "1 battery ready" : n + " batteries ready",
      empty: (n) => n === 1 ? "1 empty slot" : n + " empty slots",
      no_prices: "Prices are shown in the app.",
      taken: "Enjoy your battery!", taken_text: "Return it to any cabinet when you are done.",
      refused: "Sorry, no battery", aborted: "Nothing was rented",
      returned_in: (n) => "Received in slot " + n + ".",
      receipt_online: "You will get a receipt in the app.",
      receipt_offline: "You will get a receipt in the app once this cabinet is back online.",
      online: "Online", offline: "Offline · passes and returns still work", down: "This cabinet cannot rent right now (technical fault).",
      reconnecting: "Connecting to the cabinet…", lang: "中文",
      reasons: {
        pass_forged: "This code is not a valid pass.",
        pass_unknown_key: "This pass was not issued for this network of cabinets.",
        pass_expired: "This pass has expired. Open the app to get a new one.",
        pass_revoked: "This pass has been cancelled. Open the app for help.",
        pass_in_use: "This pass already has a battery out. Return it first.",
        pass_unreadable: "This code could not be read. Try again, or rent in the app.",
        no_rentable_battery: "No battery is ready right now. Please try another cabinet.",
        lock_jammed: "The slot did not open. Please try again.",
        not_taken: "The battery was not taken, so nothing was rented.",
        ledger_unusable: "This cabinet cannot rent right now (technical fault).",
        storage_unwritable: "This cabinet cannot rent right now (its storage is full). Please try another cabinet.",
        error: "Something went wrong. Please try again or rent in the app.",
      },
    },
    zh: {
      title: "共享充电宝", qr: "用手机扫码，在应用中租借", prices: "价格",
      have_pass: "我有租借码", return: "归还充电宝", pass_title: "请将租借码对准扫码器，或粘贴到这里",
      pass_label: "租借码", rent: "租借充电宝", back: "返回", checking: "正在验证租借码…",
      take_from: "请从以下仓位取出充电宝", seconds_left: "秒内取出", done: "完成",
      push_in: "请将充电宝推入任意空仓位", thanks: "谢谢！充电宝已归还",
      ready: (n) => "可租借：" + n + " 个", empty: (n) => "空仓位：" + n + " 个",
      no_prices: "价格请见应用。",
      taken: "请取走充电宝，祝您使用愉快！", taken_text: "用完后可归还到任意机柜。",
      refused: "抱歉，无法租借", aborted: "本次未租借",
      returned_in: (n) => "已收到，仓位 " + n + "。",
      receipt_online: "账单将发送到应用。",
      receipt_offline: "机柜恢复联网后，账单将发送到应用。",
      online: "在线", offline: "离线 · 租借码和归还仍可使用", down: "本机柜暂时无法租借（技术故障）。",
      reconnecting: "正在连接机柜…", lang: "English",
      reasons: {
        pass_forged: "这不是有效的租借码。",
        pass_unknown_key: "此租借码不适用于本机柜网络。",
        pass_expired: "租借码已过期，请在应用中重新获取。",
        pass_revoked: "租借码已被取消，请在应用中查看。",
        pass_in_use: "此租借码已借出一个充电宝，请先归还。",
        pass_unreadable: "无法识别此码，请重试或在应用中租借。",
        no_rentable_battery: "暂无可租借的充电宝，请换一台机柜。",
        lock_jammed: "仓位未能打开，请重试。",
        not_taken: "充电宝未被取走，本次未租借。",
        ledger_unusable: "本机柜暂时无法租借（技术故障）。",
        storage_unwritable: "本机柜暂时无法租借（存储已满），请换一台机柜。",
        error: "出现问题，请重试或在应用中租借。",
      },
    },
  };
  const $ = (s) => document.querySelector(s);
  let lang = document.documentElement.dataset.lang === "en" ? "en" : "zh";
  let info = { idle_s: 45, tariff: { en: [], zh: [] }, ready: 0, empty: 0, online: false, renting: true, eject_timeout_s: 30 };
  let screen = "start";
  let idleTimer = null, countdownTimer = null, resultTimer = null;
  let pending = null;      // a scan awaiting its outcome
  let eject = null;        // {rental_id, slot, deadline}
  let lastResult = null;   // for re-rendering in the other language
  let streamUp = false;
  const t = (k, ...a) => { const v = T[lang][k]; return typeof v === "function" ? v(...a) : v; };

  function show(name) {
    screen = name;
    for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== "s-" + name;
    if (name === "pass") setTimeout(() => $("#pass-input").focus(), 0);
    if (name !== "eject") clearInterval(countdownTimer);
    clearTimeout(resultTimer);
    if (name === "result" || name === "returned") resultTimer = setTimeout(home, Math.max(8, info.idle_s / 3) * 1000);
    touch();
  }
  function home() { pending = null; eject = null; lastResult = null; $("#pass-input").value = ""; show("start"); }
  function touch() {
    clearTimeout(idleTimer);
    if (screen === "start" || screen === "wait" || screen === "eject") return;  // those end by themselves
    idleTimer = setTimeout(home, info.idle_s * 1000);
  }

  function render() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    for (const n of document.querySelectorAll("[data-i18n]")) n.textContent = t(n.dataset.i18n);
    const btn = $("#lang-toggle");
    btn.textContent = t("lang");
    const lines = info.tariff[lang] || [];
    $("#tariff").replaceChildren(...(lines.length ? lines : [t("no_prices")]).map((l) => { const li = document.createElement("li"); li.textContent = l; return li; }));
    $("#ready-count").textContent = t("ready", info.ready);
    $("#empty-count").textContent = t("empty", info.empty);
    renderNet();
    if (lastResult) renderResult(lastResult);
  }
  function renderNet() {
    const n = $("#net");
    n.className = "net";
    if (!streamUp) { n.textContent = t("reconnecting"); n.classList.add("down"); }
    else if (!info.renting) { n.textContent = t("down"); n.classList.add("down"); }
    else if (!info.online) { n.textContent = t("offline"); n.classList.add("offline"); }
    else n.textContent = t("online");
    document.body.dataset.online = info.online ? "yes" : "no";
  }

  function reasonText(reason, fallback) { return T[lang].reasons[reason] || fallback || T[lang].reasons.error; }
  function renderResult(r) {
    const box = $("#s-result");
    box.classList.toggle("good", r.kind === "taken");
    box.classList.toggle("bad", r.kind !== "taken");
    box.dataset.outcome = r.kind;
    if (r.kind === "returned") {
      $("#returned-text").textContent = t("returned_in", r.slot);
      $("#receipt-text").textContent = t(info.online ? "receipt_online" : "receipt_offline");
      return;
    }
    if (r.kind === "taken") { $("#result-title").textContent = t("taken"); $("#result-text").textContent = t("taken_text"); }
    else { $("#result-title").textContent = t(r.kind === "refused" ? "refused" : "aborted"); $("#result-text").textContent = reasonText(r.reason, r.message); }
  }
  function result(r) {
    lastResult = r;
    eject = null;
    renderResult(r);
    show(r.kind === "returned" ? "returned" : "result");
  }

  function startEject(d) {
    eject = { rental_id: d.rental_id, slot: d.slot, deadline: Date.now() + (d.timeout_s || info.eject_timeout_s) * 1000 };
    $("#slot-number").textContent = String(d.slot);
    const tick = () => { $("#countdown").textContent = String(Math.max(0, Math.ceil((eject ? eject.deadline - Date.now() : 0) / 1000))); };
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 250);
    show("eject");
  }

  async function submit(code) {
    code = (code || "").trim();
    if (!code || pending) return;
    show("wait");
    pending = code;
    try {
      const r = await fetch("/api/scan", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }) });
      const j = await r.json();
      if (!r.ok) { result({ kind: "refused", reason: "pass_unreadable", message: j.error }); return; }
      if (j.status === "started" || j.status === "duplicate") { if (!lastResult || lastResult.kind !== "taken") result({ kind: "taken", slot: j.slot }); }
      else result({ kind: j.status === "refused" ? "refused" : "aborted", reason: j.reason, message: j.message });
    } catch (e) {
      result({ kind: "refused", reason: "error" });
    } finally {
      pending = null;
      $("#pass-input").value = "";
    }
  }

  async function refresh() {
    try {
      const r = await fetch("/api/kiosk");
      if (r.ok) { info = Object.assign(info, await r.json()); render(); }
    } catch (e) { /* the stream's state shows the problem */ }
  }

  function listen() {
    const es = new EventSource("/api/events/stream");
    es.onopen = () => { streamUp = true; renderNet(); refresh(); };
    es.onerror = () => { streamUp = false; renderNet(); };
    es.addEventListener("health", (m) => {
      const h = JSON.parse(m.data);
      info.online = !!(h.sync && h.sync.connected);
      info.renting = !!h.renting;
      renderNet();
    });
    es.addEventListener("slots", (m) => {
      const s = JSON.parse(m.data).slots;
      info.ready = s.filter((x) => x.rentable).length;
      info.empty = s.filter((x) => x.state === "empty").length;
      $("#ready-count").textContent = t("ready", info.ready);
      $("#empty-count").textContent = t("empty", info.empty);
    });
    es.addEventListener("eject", (m) => startEject(JSON.parse(m.data)));
    // a pass scanned on the serial code reader and refused (no eject follows)
    es.addEventListener("scan_refused", (m) => { const d = JSON.parse(m.data); result({ kind: "refused", reason: d.reason }); });
    es.addEventListener("rental_started", (m) => {
      const d = JSON.parse(m.data);
      if (eject && eject.rental_id === d.rental_id) result({ kind: "taken", slot: d.slot });
    });
    es.addEventListener("rental_aborted", (m) => {
      const d = JSON.parse(m.data);
      if (eject && eject.rental_id === d.rental_id) result({ kind: "aborted", reason: d.reason });
    });
    es.addEventListener("battery_returned", (m) => {
      const d = JSON.parse(m.data);
      if (screen === "start" || screen === "return" || screen === "returned" || screen === "result") result({ kind: "returned", slot: d.slot });
    });
  }

  // A code reader that types like a keyboard: fast keys ending with Enter, on any screen but the pass box.
  let buf = "", bufAt = 0;
  document.addEventListener("keydown", (ev) => {
    touch();
    if (ev.target === $("#pass-input")) { if (ev.key === "Enter") submit($("#pass-input").value); return; }
    if (screen !== "start" && screen !== "pass") return;
    const now = Date.now();
    if (now - bufAt > 300) buf = "";
    bufAt = now;
    if (ev.key === "Enter") { if (buf.length >= 16) submit(buf); buf = ""; }
    else if (ev.key.length === 1) buf += ev.key;
  });
  document.addEventListener("pointerdown", touch);
  $("#lang-toggle").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; render(); });
  $("#btn-pass").addEventListener("click", () => show("pass"));
  $("#btn-return").addEventListener("click", () => show("return"));
  $("#btn-rent").addEventListener("click", () => submit($("#pass-input").value));
  $("#pass-input").addEventListener("paste", () => setTimeout(touch, 0));
  for (const b of document.querySelectorAll("[data-back]")) b.addEventListener("click", home);
  render();
  show("start");
  listen();
  refresh();
  setInterval(refresh, 60000);
})();
