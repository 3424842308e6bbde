// The explorer's entry point: asks the server what it is, signs in when needed, follows
// the things with the SSE filter stream, and wires the tree, value view, write form,
// commands and status strip together.

import * as api from './api.js';
import { Tree, bytesOf } from './tree.js';
import { renderValue } from './value.js';
import { Writer } from './write.js';
import { renderCommands } from './commands.js';
import { Status } from './status.js';
import { topicPath, asText } from './util.js';

const $ = (id) => document.getElementById(id);

/** What /explorer/server.json says. */
let server = null;
let tree = null;
let writer = null;
let status = null;

/** The stream in force: its abort controller and a number that grows with each one. */
let stream = null;
let streamNumber = 0;
/** The MQTT filter the server streams (a substring filter stays in the page). */
let serverFilter = '#';
/** Consecutive failed stream attempts, for the back-off. */
let failures = 0;

/** The selected thing and its value as last read with GET. */
let selected = null;
let current = null;
let reading = null;

/** Server time minus page time, in ms (the listing's times are the server's). */
let skew = 0;

function setLive(text, state) {
  const live = $('live');
  live.textContent = text;
  live.dataset.state = state;
}

// ----- the things ----------------------------------------------------------------------

/** (Re)open the SSE filter stream; on a (re)connect the listing says which things exist
 * and when they changed. */
async function follow() {
  stream?.abort();
  const controller = new AbortController();
  stream = controller;
  const number = ++streamNumber;
  const seen = new Set();
  let replaying = true;
  setLive('connecting…', 'connecting');
  const listed = () => {
    api.listAll(serverFilter, controller.signal).then(({ items, serverNow }) => {
      if (number !== streamNumber) return;
      if (serverNow) {
        const d = serverNow - Date.now();
        skew = Math.abs(d) > 2000 ? d : 0;
      }
      tree.retainOnly(new Set([...items.map((i) => i.thing), ...seen]));
      for (const item of items) tree.meta({ ...item, modified: new Date(Date.parse(item.modified) - skew).toISOString() });
      replaying = false;
    }).catch((e) => {
      if (!controller.signal.aborted) notice(false, `Listing the things failed: ${e.message}`);
      replaying = false;
    });
  };
  try {
    for await (const ev of api.events(serverFilter, controller.signal, () => {
      failures = 0;
      setLive('live', 'live');
      listed();
    })) {
      if (number !== streamNumber) return;
      const thing = ev.data.thing;
      if (typeof thing !== 'string') continue;
      seen.add(thing);
      if (ev.event === 'delete') {
        tree.remove(thing);
        if (thing === selected) showSelected();
      } else {
        tree.put(thing, ev.data, !replaying);
        if (thing === selected) refreshSelected();
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
    if (e.status === 401 || e.status === 403) {
      setLive('signed out', 'off');
      askLogin(e.message);
      return;
    }
    if (e.status === 400) {
      showFilterError(e.message);
      setLive('stopped', 'off');
      return;
    }
  }
  if (controller.signal.aborted || number !== streamNumber) return;
  failures += 1;
  const wait = Math.min(10_000, 500 * 2 ** Math.min(failures, 5));
  setLive(`reconnecting in ${Math.round(wait / 1000)} s…`, 'connecting');
  setTimeout(() => {
    if (number === streamNumber) follow();
  }, wait);
}

function showCount(shown, total) {
  $('count').textContent = shown === total ? `${total} ${total === 1 ? 'thing' : 'things'}` : `${shown} of ${total} things`;
  $('empty').hidden = total > 0;
}

// ----- the filter box ------------------------------------------------------------------

/** Why `f` is not an MQTT topic filter (MQTT-4.7.1), or null when it is one. */
function filterProblem(f) {
  const levels = f.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return `"#" must be a whole level and the last one (as in kitchen/#), not ${JSON.stringify(level)}`;
    }
    if (level.includes('+') && level !== '+') {
      return `"+" must be a whole level (as in +/temperature), not ${JSON.stringify(level)}`;
    }
  }
  return null;
}

function showFilterError(message) {
  const p = $('filter-error');
  p.textContent = message;
  p.hidden = !message;
}

let filterTimer = null;

function applyFilter() {
  const text = $('filter').value.trim();
  const isMqtt = /[+#]/.test(text);
  if (isMqtt) {
    const problem = filterProblem(text);
    showFilterError(problem ? `Not an MQTT filter: ${problem}.` : '');
    if (problem) return;
  } else {
    showFilterError('');
  }
  const wanted = isMqtt ? text : '#';
  tree.setSubstring(isMqtt ? '' : text);
  if (wanted !== serverFilter) {
    serverFilter = wanted;
    tree.clear();
    follow();
  }
}

// ----- the selected thing --------------------------------------------------------------

/** Open `thing`: read its value (exact bytes, ETag) and show everything about it. */
function select(thing) {
  selected = thing;
  current = null;
  history.replaceState(null, '', `#${encodeURIComponent(thing)}`);
  refreshSelected(true);
}

/** Open `thing` as soon as the stream has told us about it (a few seconds at most): a
 * thing just written, or named in the address. */
function selectWhenKnown(thing) {
  const started = Date.now();
  const wait = setInterval(() => {
    if (tree.get(thing)) {
      clearInterval(wait);
      tree.select(thing);
    } else if (Date.now() - started > 5000) {
      clearInterval(wait);
    }
  }, 50);
}

/** Read the selected thing again (after a change); one read at a time. */
async function refreshSelected(fresh = false) {
  if (reading) {
    reading.again = true;
    return;
  }
  const thing = selected;
  reading = { again: false };
  try {
    const r = await api.request(`/resources/${topicPath(thing)}`);
    if (thing !== selected) return;
    if (r.status === 404) {
      current = null;
    } else if (!r.ok) {
      notice(false, await api.failure(r));
      return;
    } else {
      const bytes = new Uint8Array(await r.arrayBuffer());
      const t = tree.get(thing);
      const lastModified = Date.parse(r.headers.get('last-modified') || '');
      current = {
        ct: r.headers.get('content-type') || 'application/octet-stream',
        bytes,
        size: bytes.length,
        etag: r.headers.get('etag'),
        modified: t?.modified ?? (Number.isNaN(lastModified) ? null : lastModified - skew),
      };
      if (t) t.etag = current.etag;
    }
    showSelected();
    writer.load(thing, current, { force: fresh });
  } catch (e) {
    notice(false, `Reading ${thing} failed: ${e.message}`);
  } finally {
    const again = reading?.again;
    reading = null;
    if (again && selected) refreshSelected();
  }
}

function showSelected() {
  const t = tree.get(selected);
  if (!t) current = null;
  const prev = t?.prev ? { ...t.prev, bytes: bytesOf(t.prev) } : null;
  renderValue($('value'), {
    thing: selected,
    current,
    previous: prev,
    numbers: t?.numbers ?? [],
  });
  const text = current?.bytes ? asText(current.bytes) : null;
  const sample = text !== null && text.length <= 200 && !text.includes('\n') ? text : '42';
  renderCommands($('commands'), server, selected, {
    ct: current?.ct || 'text/plain',
    sample,
    who: api.identity(),
  });
}

// ----- messages ------------------------------------------------------------------------

function notice(ok, message) {
  const out = $('w-result');
  out.textContent = message;
  out.className = ok ? 'ok' : 'error';
}

// ----- signing in ----------------------------------------------------------------------

function showWho() {
  const name = api.who();
  $('who').textContent = name ? `signed in as ${name}` : (server.auth.anonymous ? 'anonymous' : '');
  $('signout').hidden = !name;
  $('signin').hidden = Boolean(name) || !(server.auth.passwords || server.auth.bearer || !server.auth.anonymous);
}

function askLogin(why = '') {
  const dialog = $('login');
  $('login-why').textContent = why || (server.auth.anonymous
    ? 'Sign in to see and write the things your account may.'
    : 'This server does not serve anonymous clients.');
  $('login-error').textContent = '';
  $('login-cancel').hidden = !server.auth.anonymous;
  $('login-remember').checked = api.remembered();
  if (!server.auth.passwords && server.auth.bearer) dialog.querySelector('input[value=token]').checked = true;
  howChanged();
  if (!dialog.open) dialog.showModal();
}

function howChanged() {
  const token = $('login').querySelector('input[name=how]:checked').value === 'token';
  $('login-password').hidden = token;
  $('login-token').hidden = !token;
  (token ? $('login-jwt') : $('login-user')).focus();
}

async function login(e) {
  e.preventDefault();
  const token = $('login').querySelector('input[name=how]:checked').value === 'token';
  const c = token
    ? api.makeCredentials({ token: $('login-jwt').value })
    : api.makeCredentials({ user: $('login-user').value, password: $('login-pass').value });
  if (token ? !$('login-jwt').value.trim() : !$('login-user').value) {
    $('login-error').textContent = token ? 'Paste a token.' : 'Enter a user name.';
    return;
  }
  api.signIn(c, $('login-remember').checked);
  $('login-submit').disabled = true;
  try {
    // Any read proves the credentials: 401 means they are wrong, anything else is fine.
    const r = await api.request('/resources?limit=1');
    if (r.status === 401 || r.status === 400) {
      api.signOut();
      $('login-error').textContent = await api.failure(r);
      return;
    }
  } catch (err) {
    api.signOut();
    $('login-error').textContent = `The server did not answer: ${err.message}`;
    return;
  } finally {
    $('login-submit').disabled = false;
  }
  $('login-pass').value = '';
  $('login-jwt').value = '';
  $('login').close();
  signedIn();
}

/** Credentials changed: start over with what this user may see. */
function signedIn() {
  showWho();
  tree.clear();
  selected = null;
  current = null;
  $('value').replaceChildren();
  $('commands').replaceChildren();
  follow();
  status.start();
}

function signOut() {
  api.signOut();
  stream?.abort();
  streamNumber += 1;
  tree.clear();
  selected = null;
  $('value').replaceChildren();
  $('commands').replaceChildren();
  showWho();
  if (server.auth.anonymous) follow();
  else askLogin();
}

// ----- start ---------------------------------------------------------------------------

async function boot() {
  const r = await fetch('/explorer/server.json', { cache: 'no-store' });
  server = await r.json();
  document.title = `ponte ${server.version} · explorer`;
  tree = new Tree($('tree'), { onSelect: select, onCount: showCount });
  writer = new Writer({
    form: $('write'),
    dialog: $('confirm'),
    onSaved: (thing) => {
      if (thing !== selected) selectWhenKnown(thing);
    },
  });
  // /metrics is read only by someone who may use the page, with credentials when needed.
  status = new Status($('status'), () => (server.auth.anonymous || api.who() !== null) && (!server.metrics_auth || api.who() !== null));

  $('filter').addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, 200);
  });
  $('filter').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      $('filter').value = '';
      applyFilter();
    } else if (e.key === 'Enter') {
      clearTimeout(filterTimer);
      applyFilter();
    } else if (e.key === 'ArrowDown') {
      e.preventDefault();
      $('tree').querySelector('.row')?.focus();
    }
  });
  document.addEventListener('keydown', (e) => {
    const typing = e.target.closest('input, textarea, select, dialog');
    if (e.key === '/' && !typing) {
      e.preventDefault();
      $('filter').focus();
    }
  });
  $('signin').addEventListener('click', () => askLogin());
  $('signout').addEventListener('click', signOut);
  $('login-form').addEventListener('submit', login);
  $('login-cancel').addEventListener('click', () => $('login').close());
  $('login').addEventListener('cancel', (e) => {
    if (!server.auth.anonymous && !api.who()) e.preventDefault();
  });
  for (const radio of $('login').querySelectorAll('input[name=how]')) radio.addEventListener('change', howChanged);

  // A thing named in the address (#kitchen%2Ftemperature) is opened once it is known.
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted) selectWhenKnown(wanted);

  api.restore();
  showWho();
  if (!server.auth.anonymous && !api.who()) {
    setLive('signed out', 'off');
    askLogin();
    return;
  }
  follow();
  status.start();
}

boot().catch((e) => {
  setLive('failed', 'off');
  notice(false, `The explorer could not start: ${e.message}`);
});

