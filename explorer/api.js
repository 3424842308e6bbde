// The explorer's only way to the server: fetch() with the user's credentials on every
// request, problem+json errors turned into sentences, and the SSE filter stream read from
// a fetch body (EventSource cannot send an Authorization header).
//
// Credentials live in this module's memory. They are also kept in sessionStorage (gone
// when the tab closes) so a reload does not ask again, and in localStorage only when the
// user ticks "remember". Signing out removes both.

import { toBase64 } from './util.js';

const KEY = 'ponte.explorer.credentials';

/** The credentials in force: null (anonymous) or {kind: 'basic'|'bearer', user, header}. */
let credentials = null;

/** Who is signed in, for the header: a user name, "token", or null. */
export function who() {
  if (!credentials) return null;
  return credentials.kind === 'basic' ? credentials.user : 'bearer token';
}

/** The kind of credentials in force and the user name: {kind, user}, or null. */
export function identity() {
  return credentials ? { kind: credentials.kind, user: credentials.user } : null;
}

/** Credentials as Basic (user and password, UTF-8, RFC 7617) or a bearer token. */
export function makeCredentials({ user, password, token }) {
  if (token) return { kind: 'bearer', user: null, header: `Bearer ${token.trim()}` };
  return { kind: 'basic', user, header: `Basic ${toBase64(`${user}:${password}`)}` };
}

/** Use `c` from now on; keep it for the tab's session, and beyond only if `remember`. */
export function signIn(c, remember) {
  credentials = c;
  const text = JSON.stringify(c);
  try {
    sessionStorage.setItem(KEY, text);
    if (remember) localStorage.setItem(KEY, text);
    else localStorage.removeItem(KEY);
  } catch {
    // Storage refused (private mode, quota): the credentials stay in memory only.
  }
}

/** Forget the credentials everywhere. */
export function signOut() {
  credentials = null;
  try {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  } catch {
    // Nothing stored.
  }
}

/** Credentials kept by an earlier page of this session (or remembered); true if found. */
export function restore() {
  for (const store of [sessionStorage, localStorage]) {
    try {
      const c = JSON.parse(store.getItem(KEY) || 'null');
      if (c && typeof c.header === 'string' && (c.kind === 'basic' || c.kind === 'bearer')) {
        credentials = c;
        return true;
      }
    } catch {
      // Unreadable: ignore it.
    }
  }
  return false;
}

/** Whether credentials were remembered beyond the session. */
export function remembered() {
  try {
    return localStorage.getItem(KEY) !== null;
  } catch {
    return false;
  }
}

/** fetch(path) with the credentials, never from the HTTP cache. */
export function request(path, { method = 'GET', headers = {}, body, signal } = {}) {
  const h = new Headers(headers);
  if (credentials) h.set('Authorization', credentials.header);
  return fetch(path, { method, headers: h, body, signal, cache: 'no-store', credentials: 'omit' });
}

/** An HTTP error response as one sentence: "412 Precondition Failed: <detail>". */
export async function failure(response) {
  let detail = '';
  try {
    const text = await response.text();
    const type = response.headers.get('content-type') || '';
    if (type.includes('json')) detail = JSON.parse(text).detail || '';
    else detail = text.trim().slice(0, 300);
  } catch {
    // No readable body: the status says it all.
  }
  const head = `${response.status} ${response.statusText || ''}`.trim();
  return detail ? `${head}: ${detail}` : head;
}

/** The listing of every thing matching `filter`, all pages: {items: [{thing,
 * content_type, size, etag, modified}], serverNow: the server's clock (its Date header,
 * ms)}. Throws the failure sentence on an error. */
export async function listAll(filter, signal) {
  const items = [];
  let after = null;
  let serverNow = null;
  for (;;) {
    let path = `/resources?filter=${encodeURIComponent(filter)}&limit=1000`;
    if (after !== null) path += `&after=${encodeURIComponent(after)}`;
    const r = await request(path, { signal });
    if (!r.ok) throw new Error(await failure(r));
    serverNow ??= Date.parse(r.headers.get('date') || '') || null;
    const page = await r.json();
    items.push(...page.items);
    if (!page.next) return { items, serverNow };
    after = page.next;
  }
}

/** The events of the SSE filter stream for `filter`: yields {event, id, data} with `data`
 * parsed as JSON. Throws `{status, message}` when the server refuses the stream; returns
 * when the stream ends (server gone or `signal` aborted). `onOpen` runs once the server
 * has accepted the stream, before its first event. */
export async function* events(filter, signal, onOpen) {
  const r = await request(`/resources?filter=${encodeURIComponent(filter)}`, {
    headers: { Accept: 'text/event-stream' },
    signal,
  });
  if (!r.ok) {
    const e = new Error(await failure(r));
    e.status = r.status;
    throw e;
  }
  onOpen?.();
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let ev = { event: 'message', id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // Walk the lines by position and cut the buffer once per chunk: a chunk can hold
    // thousands of events (the current values), and cutting per line would copy the
    // rest of the chunk each time.
    let start = 0;
    let nl;
    while ((nl = buffer.indexOf('\n', start)) >= 0) {
      let line = buffer.slice(start, nl);
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (ev.data.length) {
          let data = null;
          try {
            data = JSON.parse(ev.data.join('\n'));
          } catch {
            data = null;
          }
          if (data) yield { event: ev.event, id: ev.id, data };
        }
        ev = { event: 'message', id: null, data: [] };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') ev.event = val;
      else if (field === 'id') ev.id = val;
      else if (field === 'data') ev.data.push(val);
    }
    buffer = buffer.slice(start);
  }
}
