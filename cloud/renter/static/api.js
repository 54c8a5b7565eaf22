// The cloud's public JSON API (the OpenAPI document at /api/openapi.json), and the session token.
//
// The token is kept in localStorage (docs/renter-app.md says why): a rental lasts hours, and the
// renter must find it again after closing the browser or the installed app. It is sent only in
// the Authorization header of same-origin requests; the CSP allows no other script or origin.

const TOKEN_KEY = 'renter.token';

export class ApiError extends Error {
  constructor(status, code, message, data) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.data = data || {};
  }
}

export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch (e) {
    return null;
  }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (e) {
    /* storage refused (private mode): the session lasts as long as the page */
  }
}

// api('GET', '/api/me') -> the JSON answer; throws ApiError (status 0: no network)
export async function api(method, path, body, { raw = false } = {}) {
  const headers = { Accept: raw ? '*/*' : 'application/json' };
  const tok = token();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, 'network', String(e));
  }
  if (raw && response.ok) return response.text();
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401 && tok) setToken(null); // expired or revoked: sign in again
    const code = (data && data.error) || `http_${response.status}`;
    throw new ApiError(response.status, code, data && data.message, data);
  }
  return data;
}
