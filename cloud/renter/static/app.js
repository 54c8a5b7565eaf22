// The renter's app: one shell, a router over history.pushState, one function per screen.
// Everything it shows comes from the public JSON API (api.js); text from i18n.js; money,
// durations and times from format.js; the map from map.js (Leaflet, loaded when shown).

import { api, ApiError, setToken, token } from './api.js';
import { distance, duration, minorDigits, money, when } from './format.js';
import { has, lang, pickLanguage, setLang, t } from './i18n.js';
import { createMap } from './map.js';

const config = JSON.parse(document.documentElement.dataset.config || '{}');
const BASE = `/app/s/${config.build}/`;
const main = document.getElementById('main');
const PASS_KEY = 'renter.pass';
const OPEN = ['pending', 'active'];

let timers = [];
let generation = 0; // bumped by every navigation: a screen's late answers are dropped

// --- small DOM helpers ------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function heading(text, id = 'title') {
  return el('h1', { id, tabindex: '-1', text });
}

function link(href, text, props = {}) {
  return el('a', { href, ...props }, text);
}

function button(text, onclick, props = {}) {
  return el('button', { type: 'button', onclick, ...props }, text);
}

function row(term, value, id) {
  return [el('dt', { text: term }), el('dd', { id, text: value })];
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  timers.push(() => clearInterval(id));
}

function onLeave(fn) {
  timers.push(fn);
}

function later(ms, fn) {
  const id = setTimeout(fn, ms);
  timers.push(() => clearTimeout(id));
}

function errorText(e) {
  if (!(e instanceof ApiError)) return t('err_generic', { msg: String(e && e.message ? e.message : e) });
  if (e.status === 0) return t('err_network');
  if (e.status === 429) return t('err_throttled');
  if (has(`err_${e.code}`)) return t(`err_${e.code}`);
  return t('err_generic', { msg: e.message || e.code });
}

function errorBox(e, ...more) {
  return el('div', { class: 'error', role: 'alert' }, el('p', { text: errorText(e) }), ...more);
}

function here() {
  return location.pathname + location.search;
}

function signinFirst() {
  go(`/app/signin?next=${encodeURIComponent(here())}`, true);
}

// --- router -------------------------------------------------------------------------------

const ROUTES = [
  [/^\/app\/?$/, home],
  [/^\/app\/c\/([A-Za-z0-9][A-Za-z0-9_-]{0,63})$/, cabinetScreen],
  [/^\/app\/signin$/, signinScreen],
  [/^\/app\/pay$/, payScreen],
  [/^\/app\/nearby$/, nearbyScreen],
  [/^\/app\/r\/([A-Za-z0-9_-]{1,64})$/, rentalScreen],
  [/^\/app\/r\/([A-Za-z0-9_-]{1,64})\/dispute$/, disputeScreen],
  [/^\/app\/account$/, accountScreen],
  [/^\/app\/pass\/([A-Za-z0-9_-]{1,64})$/, passScreen],
];

export function go(url, replace = false) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render(true);
}

async function render(moved = false) {
  for (const stop of timers) stop();
  timers = [];
  generation += 1;
  const mine = generation;
  document.getElementById('brand-name').textContent = t('brand');
  const account = document.getElementById('nav-account');
  account.textContent = t('account');
  const switcher = document.getElementById('lang');
  switcher.textContent = t('other_lang');
  switcher.setAttribute('aria-label', t('lang_label', { lang: t('other_lang') }));
  document.getElementById('offline').textContent = t('offline');
  const screen = el('div', { class: 'screen' });
  main.replaceChildren(screen);
  const path = location.pathname;
  for (const [pattern, fn] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    try {
      await fn(screen, () => mine === generation, ...m.slice(1).map(decodeURIComponent));
    } catch (e) {
      if (mine !== generation) return;
      if (e instanceof ApiError && e.status === 401) {
        signinFirst();
        return;
      }
      screen.append(errorBox(e, button(t('try_again'), () => render())));
    }
    if (moved && mine === generation) {
      const h1 = screen.querySelector('h1');
      if (h1) h1.focus({ preventScroll: true });
      document.title = `${h1 ? `${h1.textContent} · ` : ''}${t('brand')}`;
    }
    return;
  }
  screen.append(heading(t('not_found')), link('/app/', t('home_title'), { class: 'button' }));
}

document.addEventListener('click', (event) => {
  const a = event.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download') || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/app/')) return;
  event.preventDefault();
  go(url.pathname + url.search + url.hash);
});
window.addEventListener('popstate', () => render(true));

// --- home and nearby ----------------------------------------------------------------------

async function openRental() {
  if (!token()) return null;
  try {
    const rentals = await api('GET', '/api/me/rentals');
    return rentals.find((r) => OPEN.includes(r.status) && r.source === 'app') || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

async function home(screen, live) {
  screen.append(heading(t('home_title')));
  const open = await openRental();
  if (!live()) return;
  if (open) {
    screen.append(
      el('section', { class: 'card' }, el('h2', { text: t('your_rental') }), link(`/app/r/${open.id}`, t('see_rental'), { class: 'button', id: 'to-rental' })),
    );
  }
  screen.append(
    el('p', { class: 'lead', text: t('home_scan') }),
    link('/app/nearby', t('find_nearby'), { class: 'button', id: 'to-nearby' }),
  );
}

async function nearbyScreen(screen, live) {
  screen.append(heading(t('nearby_title')));
  const block = el('section', { class: 'nearby' });
  screen.append(block);
  await nearbyBlock(block, live, { purpose: 'rent' });
}

function position(timeoutMs = 6000) {
  return new Promise((resolve) => {
    if (!navigator.geolocation) {
      resolve(null);
      return;
    }
    navigator.geolocation.getCurrentPosition(
      (p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude }),
      () => resolve(null),
      { timeout: timeoutMs, maximumAge: 60000 },
    );
  });
}

function markerLabel(c) {
  const name = (c.venue && c.venue.name) || c.id;
  const state = c.online ? '' : ` (${t('cab_offline')})`;
  return t('marker', {
    name: `${name}${state}`,
    ready: t('ready_short', { n: c.packs_ready }),
    free: t('free_short', { n: c.free_slots ?? '?' }),
  });
}

// the list (always) and the map (when Leaflet is there) of cabinets near the renter, or near
// `fallback` (the rental's cabinet) when the phone does not say where it is
async function nearbyBlock(block, live, { purpose, fallback, refreshMs }) {
  block.replaceChildren(el('h2', { text: purpose === 'return' ? t('nearby_for_return') : t('other_cabinets') }));
  const status = el('p', { class: 'muted', role: 'status', text: t('locating') });
  block.append(status);
  let at = await position();
  if (!live()) return;
  status.textContent = '';
  if (!at && fallback) {
    at = fallback;
    status.textContent = t('location_off');
  }
  if (!at) {
    status.textContent = t('location_needed');
    return;
  }
  const list = el('ul', { class: 'cabinets', id: 'nearby-list' });
  const mapBox = el('div', { id: 'map', class: 'map', role: 'region', 'aria-label': t('map_label') });
  block.append(list, mapBox);
  let map = null;
  let mapFailed = false;
  const load = async () => {
    let found;
    try {
      found = await api('GET', `/api/cabinets/nearby?lat=${at.lat}&lon=${at.lon}&limit=10`);
    } catch (e) {
      if (live()) list.replaceChildren(el('li', {}, errorBox(e)));
      return;
    }
    if (!live()) return;
    const cabinets = found.cabinets || [];
    list.replaceChildren(...cabinets.map((c) => cabinetItem(c, purpose)));
    if (!cabinets.length) list.append(el('li', { class: 'muted', text: t('no_nearby') }));
    if (mapFailed) return;
    try {
      if (!map) {
        const made = await createMap(mapBox, {
          base: BASE,
          tiles: config.tiles,
          attribution: config.attribution,
          here: at === fallback ? null : at,
          label: markerLabel,
          hereLabel: t('you_are_here'),
          onPick: (c) => go(`/app/c/${encodeURIComponent(c.id)}`),
        });
        if (!live()) {
          made.remove();
          return;
        }
        map = made;
        onLeave(() => made.remove());
      }
      map.update(cabinets);
    } catch (e) {
      mapFailed = true; // no Leaflet: the list has every cabinet
      mapBox.replaceWith(el('p', { class: 'muted', id: 'map-missing', text: t('map_missing') }));
    }
  };
  await load();
  if (refreshMs) every(refreshMs, load);
}

function cabinetItem(c, purpose) {
  const v = c.venue || {};
  const facts = [
    el('span', { class: `chip ${c.online ? 'ok' : 'warn'}`, text: c.online ? t('cab_online') : t('cab_offline') }),
    el('span', { class: 'chip', text: t('ready_short', { n: c.packs_ready }) }),
    el('span', { class: `chip${purpose === 'return' && c.free_slots === 0 ? ' warn' : ''}`, text: t('free_short', { n: c.free_slots ?? '?' }) }),
  ];
  if (v.open_now === true || v.open_now === false) {
    facts.push(el('span', { class: `chip ${v.open_now ? 'ok' : 'warn'}`, text: v.open_now ? t('open_now') : t('closed_now') }));
  }
  return el(
    'li',
    { dataset: { cabinet: c.id, online: String(Boolean(c.online)) } },
    link(`/app/c/${encodeURIComponent(c.id)}`, v.name || c.id, { class: 'name' }),
    el('span', { class: 'muted', text: ` · ${t('away', { d: distance(c.distance_m, lang()) })}` }),
    el('div', { class: 'facts' }, facts),
    c.tariff_text ? el('p', { class: 'muted small', text: c.tariff_text[lang()] || c.tariff_text.en }) : null,
  );
}

// --- the cabinet page (what the kiosk's QR code opens) ------------------------------------

async function cabinetScreen(screen, live, id) {
  let c;
  try {
    c = await api('GET', `/api/cabinets/${encodeURIComponent(id)}/public`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      screen.append(heading(t('no_cabinet', { id })), link('/app/nearby', t('find_nearby'), { class: 'button' }));
      return;
    }
    throw e;
  }
  if (!live()) return;
  const v = c.venue || {};
  screen.append(
    heading(v.name || t('cabinet', { id })),
    el('p', { class: 'muted' }, t('cabinet', { id }), v.address ? ` · ${v.address}` : ''),
  );
  const chips = [
    el('span', { class: `chip ${c.online ? 'ok' : 'warn'}`, id: 'online', text: c.online ? t('cab_online') : t('cab_offline') }),
  ];
  if (v.open_now === true || v.open_now === false) {
    chips.push(el('span', { class: `chip ${v.open_now ? 'ok' : 'warn'}`, text: v.open_now ? t('open_now') : t('closed_now') }));
  }
  screen.append(el('div', { class: 'facts' }, chips));
  if (v.opening_hours) screen.append(el('p', { class: 'muted', text: t('hours', { h: v.opening_hours }) }));
  const ready = c.packs_ready || 0;
  screen.append(
    el('p', { class: `big-number${ready ? '' : ' none'}`, id: 'packs', text: ready === 0 ? t('ready_0') : ready === 1 ? t('ready_1') : t('ready_n', { n: ready }) }),
  );
  if (c.free_slots !== null && c.free_slots !== undefined) {
    screen.append(el('p', { class: 'muted', text: t('free_n', { n: c.free_slots }) }));
  }
  if (c.tariff_text) {
    screen.append(el('section', { class: 'card' }, el('h2', { text: t('price') }), el('p', { id: 'tariff', text: c.tariff_text[lang()] || c.tariff_text.en })));
  }
  if (typeof c.hold_amount === 'number') {
    screen.append(
      el(
        'section',
        { class: 'card' },
        el('h2', { text: t('hold') }),
        el('p', { id: 'hold', text: t('hold_why', { m: money(c.hold_amount, c.currency) }) }),
        el('p', { class: 'muted small', text: t('hold_more') }),
      ),
    );
  }
  if (!c.online) {
    screen.append(el('p', { class: 'notice', id: 'offline-note', text: t('cabinet_offline') }), link('/app/account#pass', t('get_pass'), { class: 'button secondary' }));
  }
  const feedback = el('div', { id: 'rent-feedback', 'aria-live': 'assertive' });
  const rent = button(t('rent'), () => startRental(c, rent, feedback), { id: 'rent', class: 'primary', disabled: !c.rentable });
  screen.append(rent, feedback);
  if (!ready && v.lat !== null && v.lat !== undefined) {
    const block = el('section', { class: 'nearby' });
    screen.append(block);
    await nearbyBlock(block, live, { purpose: 'rent', fallback: { lat: v.lat, lon: v.lon } });
  }
}

async function startRental(c, rentButton, feedback) {
  if (!token()) {
    signinFirst();
    return;
  }
  rentButton.disabled = true;
  feedback.replaceChildren();
  try {
    const me = await api('GET', '/api/me');
    if (!me.has_card) {
      const methods = await api('GET', '/api/me/payment-methods');
      if (!methods.length) {
        go(`/app/pay?next=${encodeURIComponent(here())}&c=${encodeURIComponent(c.id)}`);
        return;
      }
    }
    const started = await api('POST', '/api/rentals', { cabinet_id: c.id });
    if (started.status === 'awaiting_confirmation') {
      sessionStorage.setItem(`renter.confirm.${started.rental_id}`, JSON.stringify(started));
    }
    go(`/app/r/${encodeURIComponent(started.rental_id)}`);
  } catch (e) {
    rentButton.disabled = false;
    if (e instanceof ApiError && e.status === 401) {
      signinFirst();
      return;
    }
    if (e instanceof ApiError && e.code === 'no_card') {
      go(`/app/pay?next=${encodeURIComponent(here())}&c=${encodeURIComponent(c.id)}`);
      return;
    }
    feedback.replaceChildren(await refusal(e, c));
  }
}

async function refusal(e, c) {
  const payLink = link(`/app/pay?next=${encodeURIComponent(here())}&c=${encodeURIComponent(c.id)}`, t('change_card'), { class: 'button secondary', id: 'change-card' });
  if (!(e instanceof ApiError)) return errorBox(e);
  if (e.code === 'debt') {
    let due = '';
    try {
      const debts = await api('GET', '/api/me/debts');
      due = debts.map((d) => money(d.due, d.currency)).join(', ');
    } catch (err) {
      due = '';
    }
    return el('div', { class: 'error', role: 'alert' }, el('p', { text: t('err_debt', { m: due || '—' }) }), payLink);
  }
  if (e.code === 'open_rental') {
    const open = await openRental().catch(() => null);
    return errorBox(e, open ? link(`/app/r/${open.id}`, t('see_rental'), { class: 'button' }) : null);
  }
  if (e.status === 402) {
    const text = has(`err_${e.code}`) ? t(`err_${e.code}`) : t('err_card_declined');
    return el('div', { class: 'error', role: 'alert', id: 'declined' }, el('p', { text }), payLink);
  }
  return errorBox(e);
}

// --- sign in / sign up --------------------------------------------------------------------

function nextUrl() {
  const next = new URLSearchParams(location.search).get('next') || '/app/';
  return next.startsWith('/app/') ? next : '/app/';
}

async function signinScreen(screen) {
  screen.append(heading(t('signin_title')), el('p', { class: 'muted', text: t('signin_why') }));
  const feedback = el('div', { id: 'signin-feedback', 'aria-live': 'assertive' });
  const phonePane = el('section', { id: 'pane-phone', class: 'pane' });
  const emailPane = el('section', { id: 'pane-email', class: 'pane', hidden: true });
  const tabs = el('div', { class: 'tabs', role: 'group' });
  const show = (which) => {
    phonePane.hidden = which !== 'phone';
    emailPane.hidden = which !== 'email';
    for (const b of tabs.children) b.setAttribute('aria-pressed', String(b.dataset.pane === which));
    feedback.replaceChildren();
  };
  tabs.append(
    button(t('tab_phone'), () => show('phone'), { id: 'tab-phone', 'aria-pressed': 'true', dataset: { pane: 'phone' } }),
    button(t('tab_email'), () => show('email'), { id: 'tab-email', 'aria-pressed': 'false', dataset: { pane: 'email' } }),
  );
  const done = (answer) => {
    setToken(answer.token);
    go(nextUrl(), true);
  };
  const fail = (e) => feedback.replaceChildren(errorBox(e.status === 401 && e.code !== 'login_failed' ? new ApiError(401, 'code') : e));

  // phone and a one-time code
  const phone = el('input', { id: 'phone', type: 'tel', autocomplete: 'tel', inputmode: 'tel', required: true, maxlength: '16', 'aria-describedby': 'phone-hint' });
  const code = el('input', { id: 'code', type: 'text', autocomplete: 'one-time-code', inputmode: 'numeric', pattern: '[0-9]{6}', maxlength: '6', required: true });
  const codeForm = el(
    'form',
    { id: 'code-form', hidden: true, onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        done(await api('POST', '/api/auth/sms/verify', { phone: phone.value.trim(), code: code.value.trim() }));
      } catch (e) {
        fail(e);
      }
    } },
    el('p', { id: 'code-sent', role: 'status' }),
    el('label', { for: 'code', text: t('code_label') }),
    code,
    el('button', { type: 'submit', class: 'primary', id: 'verify' }, t('verify')),
  );
  const phoneForm = el(
    'form',
    { id: 'phone-form', onsubmit: async (ev) => {
      ev.preventDefault();
      const number = phone.value.replace(/[\s()-]/g, '');
      phone.value = number;
      try {
        await api('POST', '/api/auth/sms/start', { phone: number });
        codeForm.hidden = false;
        codeForm.querySelector('#code-sent').textContent = t('code_sent', { p: number });
        feedback.replaceChildren();
        code.focus();
      } catch (e) {
        fail(e);
      }
    } },
    el('label', { for: 'phone', text: t('phone_label') }),
    phone,
    el('p', { class: 'muted small', id: 'phone-hint', text: t('phone_hint') }),
    el('button', { type: 'submit', class: 'primary', id: 'send-code' }, t('send_code')),
  );
  phonePane.append(phoneForm, codeForm);

  // email and password
  const email = el('input', { id: 'email', type: 'email', autocomplete: 'email', required: true, maxlength: '320' });
  const password = el('input', { id: 'password', type: 'password', autocomplete: 'current-password', required: true, maxlength: '1024' });
  const credentials = () => ({ email: email.value.trim(), password: password.value });
  const emailForm = el(
    'form',
    { id: 'email-form', onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        done(await api('POST', '/api/login', credentials()));
      } catch (e) {
        fail(e);
      }
    } },
    el('label', { for: 'email', text: t('email_label') }),
    email,
    el('label', { for: 'password', text: t('password_label') }),
    password,
    el('button', { type: 'submit', class: 'primary', id: 'signin' }, t('signin')),
    button(t('signup'), async () => {
      if (!emailForm.reportValidity()) return;
      try {
        await api('POST', '/api/users', credentials());
        done(await api('POST', '/api/login', credentials()));
      } catch (e) {
        fail(e);
      }
    }, { id: 'signup', class: 'secondary' }),
  );
  emailPane.append(emailForm);
  screen.append(tabs, phonePane, emailPane, feedback);
}

// --- payment method -----------------------------------------------------------------------

const TEST_CARDS = ['tok_ok', 'tok_decline', 'tok_insufficient', 'tok_expired'];

async function payScreen(screen, live) {
  if (!token()) {
    signinFirst();
    return;
  }
  const params = new URLSearchParams(location.search);
  const cabinetId = params.get('c');
  screen.append(heading(t('pay_title')));
  const [me, methods, cab] = await Promise.all([
    api('GET', '/api/me'),
    api('GET', '/api/me/payment-methods'),
    cabinetId ? api('GET', `/api/cabinets/${encodeURIComponent(cabinetId)}/public`).catch(() => null) : null,
  ]);
  if (!live()) return;
  if (cab && typeof cab.hold_amount === 'number') {
    screen.append(
      el('section', { class: 'card' }, el('h2', { text: t('hold') }), el('p', { id: 'hold', text: t('hold_why', { m: money(cab.hold_amount, cab.currency) }) }), el('p', { class: 'muted small', text: t('hold_more') })),
    );
  }
  const onFile = el('p', { id: 'card-status', role: 'status', text: me.has_card ? t('has_card') : t('no_card_yet') });
  const choices = el(
    'fieldset',
    { class: 'choices' },
    el('legend', { text: t('card_label') }),
    TEST_CARDS.map((tok, i) =>
      el('label', { class: 'choice', for: `card-${tok}` }, el('input', { type: 'radio', name: 'card', id: `card-${tok}`, value: tok, checked: i === 0 }), ` ${t(`card_${tok}`)}`),
    ),
  );
  const feedback = el('div', { id: 'pay-feedback', 'aria-live': 'assertive' });
  const form = el(
    'form',
    { id: 'card-form', onsubmit: async (ev) => {
      ev.preventDefault();
      const chosen = form.querySelector('input[name=card]:checked');
      try {
        await api('PUT', '/api/me/card', { card_token: chosen.value });
        onFile.textContent = t('card_saved');
        const next = params.get('next');
        if (next && next.startsWith('/app/')) go(next, true);
      } catch (e) {
        feedback.replaceChildren(errorBox(e));
      }
    } },
    choices,
    el('button', { type: 'submit', class: 'primary', id: 'save-card' }, t('save_card')),
  );
  const list = el('ul', { class: 'methods', id: 'methods' });
  const fill = (items) => {
    list.replaceChildren(...items.map((m) => {
      const name = m.label || m.provider;
      return el('li', { dataset: { method: String(m.id) } }, el('span', { text: `${name} (${m.provider})` }), button(t('remove'), async () => {
        try {
          await api('DELETE', `/api/me/payment-methods/${m.id}`);
          fill(await api('GET', '/api/me/payment-methods'));
        } catch (e) {
          feedback.replaceChildren(errorBox(e));
        }
      }, { class: 'secondary', 'aria-label': t('remove_named', { name }) }));
    }));
    if (!items.length) list.append(el('li', { class: 'muted', text: t('no_methods') }));
  };
  fill(methods);
  screen.append(onFile, form, feedback, el('h2', { text: t('saved_methods') }), list);
}

// --- one rental: the eject, the running rental, the receipt -------------------------------

async function rentalScreen(screen, live, id) {
  if (!token()) {
    signinFirst();
    return;
  }
  const body = el('div', { 'aria-live': 'polite', id: 'rental' });
  screen.append(body);
  let shown = null; // the phase drawn; same phase: only the numbers change
  let fields = {};
  let cabinet = null;
  let receipt = null;
  let returnedTo = null;
  let fetchedAt = 0;
  let view = null;

  const cabinetInfo = async (cabId) => {
    try {
      return await api('GET', `/api/cabinets/${encodeURIComponent(cabId)}/public`);
    } catch (e) {
      return null;
    }
  };

  const poll = async () => {
    try {
      view = await api('GET', `/api/me/rentals/${encodeURIComponent(id)}`);
    } catch (e) {
      if (!live()) return;
      if (e instanceof ApiError && e.status === 401) {
        signinFirst();
        return;
      }
      if (e instanceof ApiError && e.status === 404) {
        body.replaceChildren(heading(t('not_found')), link('/app/', t('home_title'), { class: 'button' }));
        return;
      }
      later(3000, poll); // no network for a moment: the banner says so; try again
      return;
    }
    if (!live()) return;
    fetchedAt = Date.now();
    if (!cabinet) cabinet = await cabinetInfo(view.cabinet_id);
    if (!live()) return;
    const phase = view.phase;
    if (phase !== shown) {
      shown = phase;
      fields = {};
      body.replaceChildren();
      if (['closed', 'purchased'].includes(phase)) {
        receipt = await api('GET', `/api/me/rentals/${encodeURIComponent(id)}/receipt`).catch(() => null);
        if (view.end_cabinet_id) returnedTo = await cabinetInfo(view.end_cabinet_id);
      }
      if (!live()) return;
      draw[phase in draw ? phase : 'sending'](body, view);
    }
    update(view);
    const wait = { active: 5000, closed: 2000, purchased: 2000, aborted: 2000 }[phase] || 1000;
    const settled = ['closed', 'purchased', 'aborted'].includes(phase) && view.hold.status !== 'held';
    if (!settled) later(wait, poll);
  };

  const venueName = (cab) => (cab && ((cab.venue && cab.venue.name) || cab.id)) || (view && view.cabinet_id) || '';

  const ejectHelp = () => {
    fields.deadline = el('p', { id: 'nothing-out' });
    return el('section', { class: 'card help' }, el('h2', { text: t('nothing_out') }), fields.deadline);
  };

  const draw = {
    sending(box, v) {
      box.append(heading(t('phase_sending'), 'phase'), el('p', { class: 'lead', text: t('phase_sending_text') }), el('div', { class: 'spinner', 'aria-hidden': 'true' }), ejectHelp());
    },
    presenting(box, v) {
      box.append(heading(t('phase_presenting'), 'phase'), el('p', { class: 'lead', text: t('phase_presenting_text') }), el('div', { class: 'pulse', 'aria-hidden': 'true' }), ejectHelp());
    },
    confirming(box, v) {
      let action = null;
      try {
        action = JSON.parse(sessionStorage.getItem(`renter.confirm.${id}`) || 'null');
      } catch (e) {
        action = null;
      }
      const within = action && action.confirm_within_s ? duration(action.confirm_within_s, lang()) : '';
      box.append(heading(t('phase_confirming'), 'phase'), el('p', { class: 'lead', id: 'confirm-text', text: t('phase_confirming_text', { m: money(v.hold.amount, v.currency), t: within }) }));
    },
    refused(box, v) {
      box.append(heading(t('phase_refused'), 'phase'), el('p', { class: 'lead', text: t('phase_refused_text') }), link(`/app/c/${encodeURIComponent(v.cabinet_id)}`, t('back'), { class: 'button secondary' }));
    },
    active(box, v) {
      box.append(heading(t('active_title'), 'phase'));
      if (v.slot) box.append(el('p', { class: 'lead', id: 'taken', text: t('taken', { slot: v.slot }) }));
      fields.elapsed = el('dd', { id: 'elapsed' });
      fields.fee = el('dd', { id: 'fee' });
      fields.next = el('dd', { id: 'fee-next' });
      box.append(
        el(
          'dl',
          { class: 'facts-list big' },
          el('dt', { text: t('time') }), fields.elapsed,
          el('dt', { text: t('fee_so_far') }), fields.fee,
          el('dt', { text: t('next_fee') }), fields.next,
          row(t('pack'), v.battery_sn || '—', 'battery'),
          row(t('rented_at'), venueName(cabinet), 'rented-at'),
          row(t('hold'), money(v.hold.amount, v.currency), 'hold'),
        ),
        el('p', { class: 'muted small', text: t('hold_why', { m: money(v.hold.amount, v.currency) }) }),
        el('section', { class: 'card' }, el('h2', { text: t('return_title') }), el('p', { text: t('return_text') }), el('p', { class: 'muted small', text: t('return_offline') })),
      );
      const block = el('section', { class: 'nearby' });
      box.append(block);
      const v0 = cabinet && cabinet.venue;
      const fallback = v0 && typeof v0.lat === 'number' ? { lat: v0.lat, lon: v0.lon } : null;
      nearbyBlock(block, live, { purpose: 'return', fallback, refreshMs: 10000 });
      every(1000, () => tick());
    },
    closed(box, v) {
      box.append(heading(v.phase === 'purchased' ? t('receipt_title') : t('thanks'), 'phase'));
      if (v.phase === 'purchased') box.append(el('p', { class: 'lead', text: t('purchased') }));
      const r = receipt || {};
      fields.released = el('dd', { id: 'released' });
      fields.payment = el('p', { id: 'payment-status', class: 'muted' });
      box.append(
        el('h2', { text: t('receipt_title') }),
        el(
          'dl',
          { class: 'facts-list', id: 'receipt' },
          row(t('rented_at'), venueName(cabinet), 'receipt-from'),
          row(t('returned_to'), returnedTo ? venueName(returnedTo) : r.returned_to || '—', 'receipt-to'),
          row(t('duration'), typeof r.duration_s === 'number' ? duration(r.duration_s, lang()) : '—', 'receipt-duration'),
          row(t('fee'), money(r.fee ?? v.fee, v.currency), 'receipt-fee'),
          row(t('captured'), money(r.captured ?? v.captured, v.currency), 'receipt-captured'),
          (r.refunded ?? v.refunded) ? row(t('refunded'), money(r.refunded ?? v.refunded, v.currency), 'receipt-refunded') : null,
          row(t('paid'), money(r.paid ?? (v.captured - v.refunded), v.currency), 'receipt-paid'),
          row(t('hold'), money(v.hold.amount, v.currency), 'receipt-hold'),
          el('dt', { text: t('hold_released') }), fields.released,
        ),
        fields.payment,
        link(`/app/r/${encodeURIComponent(id)}/dispute`, t('report_problem'), { class: 'button secondary', id: 'report' }),
        link('/app/', t('home_title'), { class: 'button' }),
      );
    },
    aborted(box, v) {
      const reason = (v.abort && v.abort.reason) || 'other';
      const key = has(`aborted_${reason}`) ? `aborted_${reason}` : 'aborted_other';
      box.append(heading(t(key), 'phase'), el('p', { class: 'lead', id: 'abort-text', dataset: { reason }, text: t(`${key}_text`, { slot: v.slot ?? '?' }) }));
      fields.releasedLine = el('p', { id: 'released', class: 'muted' });
      box.append(fields.releasedLine, link(`/app/c/${encodeURIComponent(v.cabinet_id)}`, t('try_again'), { class: 'button', id: 'retry' }));
      const v0 = cabinet && cabinet.venue;
      if (v0 && typeof v0.lat === 'number') {
        const block = el('section', { class: 'nearby' });
        box.append(block);
        nearbyBlock(block, live, { purpose: 'rent', fallback: { lat: v0.lat, lon: v0.lon } });
      }
    },
  };
  draw.purchased = draw.closed;

  const tick = () => {
    if (!view || view.phase !== 'active') return;
    const since = (Date.now() - fetchedAt) / 1000;
    const elapsed = (view.elapsed_s || 0) + since;
    if (fields.elapsed) fields.elapsed.textContent = duration(elapsed, lang());
    let fee = view.fee_so_far;
    let nextIn = view.fee_next_in_s;
    if (typeof nextIn === 'number' && since >= nextIn) {
      fee = view.fee_next; // the fee went up since the last answer: shown now, confirmed by the next poll
      nextIn = null;
    }
    if (fields.fee) fields.fee.textContent = money(fee, view.currency);
    if (fields.next) {
      fields.next.textContent = typeof nextIn === 'number' && view.fee_next !== view.fee_so_far
        ? t('fee_next', { m: money(view.fee_next, view.currency), d: duration(nextIn - since, lang()) })
        : '—';
    }
  };

  const update = (v) => {
    if (fields.deadline && v.eject) {
      const left = Math.max(0, v.eject.deadline - v.now);
      fields.deadline.textContent = t('nothing_out_text', { t: duration(left, lang()) });
    }
    if (v.phase === 'active') tick();
    if (fields.released) fields.released.textContent = v.hold.status === 'held' ? t('releasing', { m: money(v.hold.amount, v.currency) }) : money(v.hold.released, v.currency);
    if (fields.releasedLine) fields.releasedLine.textContent = v.hold.status === 'held' ? t('releasing', { m: money(v.hold.amount, v.currency) }) : v.hold.amount ? t('released', { m: money(v.hold.released, v.currency) }) : '';
    if (fields.payment) fields.payment.textContent = v.payment_status === 'due' ? t('payment_due') : '';
  };

  await poll();
}

// --- account, disputes, the offline pass --------------------------------------------------

async function accountScreen(screen, live) {
  if (!token()) {
    signinFirst();
    return;
  }
  const [me, rentals, disputes] = await Promise.all([api('GET', '/api/me'), api('GET', '/api/me/rentals'), api('GET', '/api/me/disputes')]);
  if (!live()) return;
  screen.append(heading(t('account_title')), el('p', { class: 'muted', id: 'who', text: t('signed_in_as', { who: me.phone || me.email }) }));
  const feedback = el('div', { id: 'account-feedback', 'aria-live': 'assertive' });

  const list = el('ul', { class: 'rentals', id: 'rentals' });
  for (const r of rentals) {
    const fee = typeof r.fee === 'number' ? money(r.fee, r.currency) : '';
    list.append(
      el(
        'li',
        { dataset: { rental: r.id, status: r.status } },
        el('span', { class: 'name', text: `${t(`st_${r.status}`)} · ${when(r.start_wall || r.created_at, lang())}` }),
        fee ? el('span', { class: 'muted', text: ` · ${fee}` }) : null,
        el('div', { class: 'actions' }, link(`/app/r/${encodeURIComponent(r.id)}`, t('details'), { class: 'button small', 'aria-label': `${t('details')}: ${when(r.start_wall || r.created_at, lang())}` }),
          ['closed', 'purchased'].includes(r.status) ? link(`/app/r/${encodeURIComponent(r.id)}/dispute`, t('report_problem'), { class: 'button small secondary' }) : null),
      ),
    );
  }
  if (!rentals.length) list.append(el('li', { class: 'muted', text: t('no_rentals') }));
  screen.append(el('h2', { text: t('rentals') }), list);

  if (disputes.length) {
    screen.append(
      el('h2', { text: t('disputes') }),
      el('ul', { class: 'plain', id: 'disputes' }, disputes.map((d) => el('li', { text: t('dispute_status', { status: t(`ds_${d.status}`), when: when(d.opened_at, lang()) }) }))),
    );
  }

  const passId = localStorage.getItem(PASS_KEY);
  screen.append(
    el('h2', { id: 'pass', text: t('pass_title') }),
    el('p', { class: 'muted small', text: t('pass_about') }),
    passId ? link(`/app/pass/${encodeURIComponent(passId)}`, t('show_pass'), { class: 'button secondary', id: 'show-pass' }) : '',
    button(t('get_pass'), async () => {
      try {
        const p = await api('POST', '/api/me/passes', {});
        localStorage.setItem(PASS_KEY, p.pass_id);
        go(`/app/pass/${encodeURIComponent(p.pass_id)}`);
      } catch (e) {
        feedback.replaceChildren(errorBox(e));
      }
    }, { id: 'get-pass' }),
    el('h2', { text: t('methods') }),
    link('/app/pay', t('methods'), { class: 'button secondary', id: 'to-pay' }),
    feedback,
    el('div', { class: 'danger' },
      button(t('signout'), async () => {
        await api('POST', '/api/logout').catch(() => null);
        setToken(null);
        go('/app/', true);
      }, { id: 'signout', class: 'secondary' }),
      button(t('delete_account'), (ev) => {
        ev.currentTarget.hidden = true;
        confirmBox.hidden = false;
        confirmBox.querySelector('button').focus();
      }, { id: 'delete', class: 'secondary' })),
  );
  const confirmBox = el('div', { class: 'card warn', id: 'delete-confirm', hidden: true, role: 'alertdialog', 'aria-labelledby': 'delete-text' },
    el('p', { id: 'delete-text', text: t('delete_confirm') }),
    button(t('delete_account'), async () => {
      try {
        await api('DELETE', '/api/me');
        setToken(null);
        localStorage.removeItem(PASS_KEY);
        screen.replaceChildren(heading(t('deleted')), link('/app/', t('home_title'), { class: 'button' }));
      } catch (e) {
        feedback.replaceChildren(errorBox(e));
      }
    }, { id: 'delete-yes', class: 'danger-button' }),
    button(t('back'), () => render(), { class: 'secondary' }));
  screen.append(confirmBox);
  if (location.hash === '#pass') document.getElementById('pass').scrollIntoView();
}

function toMinor(text, currency) {
  const digits = minorDigits(currency);
  const m = String(text).trim().match(digits ? new RegExp(`^(\\d{1,12})(?:[.,](\\d{1,${digits}}))?$`) : /^(\d{1,12})$/);
  if (!m) return null;
  const frac = (m[2] || '').padEnd(digits, '0');
  return Number(BigInt(m[1]) * 10n ** BigInt(digits) + BigInt(frac || '0'));
}

async function disputeScreen(screen, live, id) {
  if (!token()) {
    signinFirst();
    return;
  }
  const view = await api('GET', `/api/me/rentals/${encodeURIComponent(id)}`);
  if (!live()) return;
  screen.append(heading(t('dispute_title')), el('p', { class: 'muted', text: `${when(view.started_at || view.created_at, lang())} · ${t('paid')}: ${money(view.captured - view.refunded, view.currency)}` }));
  const feedback = el('div', { id: 'dispute-feedback', 'aria-live': 'assertive' });
  const reason = el('textarea', { id: 'reason', required: true, maxlength: '2000', rows: '4' });
  const amount = el('input', { id: 'amount', type: 'text', inputmode: 'decimal', autocomplete: 'off', maxlength: '16' });
  const form = el('form', { id: 'dispute-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { reason: reason.value.trim() };
    if (amount.value.trim()) {
      const minor = toMinor(amount.value, view.currency);
      if (!minor) {
        amount.setCustomValidity(t('amount_label', { cur: view.currency }));
        amount.reportValidity();
        amount.setCustomValidity('');
        return;
      }
      body.amount_claimed = minor;
    }
    try {
      await api('POST', `/api/me/rentals/${encodeURIComponent(id)}/disputes`, body);
      form.replaceWith(el('p', { class: 'notice', id: 'dispute-sent', role: 'status', text: t('dispute_sent') }), link('/app/account', t('account_title'), { class: 'button' }));
    } catch (e) {
      feedback.replaceChildren(errorBox(e));
    }
  } },
  el('label', { for: 'reason', text: t('reason_label') }), reason,
  el('label', { for: 'amount', text: t('amount_label', { cur: view.currency }) }), amount,
  el('button', { type: 'submit', class: 'primary', id: 'send-dispute' }, t('send')));
  screen.append(form, feedback);
}

async function passScreen(screen, live, passId) {
  if (!token()) {
    signinFirst();
    return;
  }
  const [p, svg] = await Promise.all([
    api('GET', `/api/me/passes/${encodeURIComponent(passId)}`),
    api('GET', `/api/me/passes/${encodeURIComponent(passId)}/qr.svg`, undefined, { raw: true }),
  ]);
  if (!live()) return;
  const src = `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(svg)))}`;
  screen.append(
    heading(t('pass_title')),
    el('figure', { class: 'qr' }, el('img', { id: 'pass-qr', src, alt: t('pass_alt'), width: '280', height: '280' })),
    el('p', { id: 'pass-text', text: t('pass_text', { when: when(p.expires_at, lang()), n: p.max_rentals }) }),
    link('/app/account', t('account_title'), { class: 'button secondary' }),
  );
}

// --- start --------------------------------------------------------------------------------

function showOnline() {
  document.getElementById('offline').hidden = navigator.onLine;
}

setLang(pickLanguage(document.documentElement.lang), false);
document.getElementById('lang').addEventListener('click', () => {
  setLang(lang() === 'zh' ? 'en' : 'zh', true);
  render();
});
window.addEventListener('online', showOnline);
window.addEventListener('offline', showOnline);
showOnline();
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/app/sw.js', { scope: '/app/' }).catch(() => null);
}
render(false);
