// Money, durations, distances and times as people read them: the app's one formatter.
//
// Money is integer minor units on the wire (house rule); shown, it is major units with the
// currency: "35.00 EUR", "¥35.00". The digits never go through floats: the major and minor
// parts come from BigInt division, and Intl.NumberFormat (told the currency's minor digits,
// which it knows from ISO 4217) formats that exact decimal string.

const digitsCache = new Map();

export function minorDigits(currency) {
  if (!digitsCache.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions()
        .maximumFractionDigits;
    } catch (e) {
      digits = 2; // not an ISO 4217 code Intl knows: two digits, as the cloud assumes
    }
    digitsCache.set(currency, digits);
  }
  return digitsCache.get(currency);
}

// currencies shown with their sign in front ("¥35.00"); every other one as "35.00 EUR"
const SIGNS = { CNY: '¥', JPY: '¥' };

export function money(minor, currency) {
  if (typeof minor !== 'number' || !Number.isSafeInteger(minor) || !currency) return '—';
  const digits = minorDigits(currency);
  const base = 10n ** BigInt(digits);
  const value = BigInt(Math.abs(minor));
  const major = value / base;
  const rest = value % base;
  const exact = digits ? `${major}.${rest.toString().padStart(digits, '0')}` : `${major}`;
  const text = new Intl.NumberFormat('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
    useGrouping: false,
  }).format(exact);
  const sign = minor < 0 ? '-' : '';
  return SIGNS[currency] ? `${sign}${SIGNS[currency]}${text}` : `${sign}${text} ${currency}`;
}

const UNITS = {
  en: { d: ' d', h: ' h', min: ' min', s: ' s' },
  zh: { d: ' 天', h: ' 小时', min: ' 分', s: ' 秒' },
};

// "42 s", "5 min 07 s", "1 h 05 min", "2 d 3 h 05 min" (zh: 秒, 分, 小时, 天)
export function duration(seconds, lang) {
  const u = UNITS[lang] || UNITS.en;
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const two = (n) => String(n).padStart(2, '0');
  if (s < 60) return `${s}${u.s}`;
  if (s < 3600) return `${Math.floor(s / 60)}${u.min} ${two(s % 60)}${u.s}`;
  let minutes = Math.floor(s / 60);
  const days = Math.floor(minutes / 1440);
  minutes -= days * 1440;
  const hours = Math.floor(minutes / 60);
  minutes -= hours * 60;
  const hm = `${hours}${u.h} ${two(minutes)}${u.min}`;
  return days ? `${days}${u.d} ${hm}` : hm;
}

export function distance(meters, lang) {
  const m = Math.max(0, Math.round(Number(meters) || 0));
  if (m < 1000) return lang === 'zh' ? `${m} 米` : `${m} m`;
  const km = (m / 1000).toFixed(m < 10000 ? 1 : 0);
  return lang === 'zh' ? `${km} 公里` : `${km} km`;
}

export function when(unixSeconds, lang) {
  if (typeof unixSeconds !== 'number') return '—';
  return new Intl.DateTimeFormat(lang === 'zh' ? 'zh-CN' : 'en-GB', {
    dateStyle: 'medium',
    timeStyle: 'short',
  }).format(new Date(unixSeconds * 1000));
}
