// The value view of the selected thing: facts, a sparkline of the numbers seen, the
// current value shown by kind (text, JSON as a collapsible tree or pretty text, hex dump,
// image) and the previous value beside it with a line diff for text and JSON.

import { el, svg, ago, size, asText, isJsonType, isImageType } from './util.js';

/** Bytes shown in a hex dump before "… N more bytes". */
const HEX_MAX = 64 * 1024;

/** Nesting shown as a tree before the rest is shown as text (keeps the page responsive). */
const JSON_DEPTH = 64;

/** Cells of the diff table (lines × lines) above which no diff is computed. */
const DIFF_MAX = 1_000_000;

/** The view chosen per kind, kept while the user moves between things. */
const modes = { json: 'tree', text: 'text', binary: 'hex', image: 'image' };
let previousMode = 'diff';

/** Blob URLs of shown images, revoked when the view is redrawn. */
let blobs = [];

/** What a value is, for showing it: {kind, text, json}. */
export function classify(ct, bytes) {
  if (bytes === null) return { kind: 'missing' };
  if (isImageType(ct)) return { kind: 'image' };
  const text = asText(bytes);
  if (text === null) return { kind: 'binary' };
  const trimmed = text.trim();
  if (isJsonType(ct) || /^[[{]/.test(trimmed)) {
    try {
      return { kind: 'json', text, json: JSON.parse(text) };
    } catch {
      // Not JSON after all: plain text.
    }
  }
  return { kind: 'text', text };
}

/** Draw the view of `thing` into `root`. `current` and `previous` are
 * {ct, bytes, size, modified, etag}; `bytes` null means "not kept". */
export function renderValue(root, { thing, current, previous, numbers }) {
  for (const url of blobs) URL.revokeObjectURL(url);
  blobs = [];
  root.replaceChildren();
  if (!current) {
    root.append(
      el('h2', { class: 'value-title', text: thing }),
      el('p', { class: 'hint', text: 'This thing has no value now (it was deleted).' }),
    );
    return;
  }
  const redraw = () => renderValue(root, { thing, current, previous, numbers });
  root.append(el('h2', { class: 'value-title', text: thing }), facts(current));
  if (numbers.length) root.append(sparkline(numbers));
  const cur = classify(current.ct, current.bytes);
  const compare = el('div', { class: 'compare' });
  compare.append(
    el('section', { class: 'current', 'aria-label': 'Current value' },
      el('h3', { text: 'Current' }),
      modeButtons(cur.kind, redraw),
      body(cur, current)),
  );
  const prevSection = el('section', { class: 'previous', 'aria-label': 'Previous value' });
  if (!previous) {
    prevSection.append(el('h3', { text: 'Previous' }), el('p', { class: 'hint', text: 'No earlier value seen since the page opened.' }));
  } else {
    const prev = classify(previous.ct, previous.bytes);
    const canDiff = ['text', 'json'].includes(cur.kind) && ['text', 'json'].includes(prev.kind);
    const mode = canDiff ? previousMode : 'value';
    const head = el('h3', {}, 'Previous', previous.modified ? el('span', { class: 'when', text: ` · written ${ago(previous.modified)}` }) : null);
    prevSection.append(head);
    if (canDiff) {
      prevSection.append(buttons([['diff', 'Diff'], ['value', 'Value']], mode, (m) => {
        previousMode = m;
        redraw();
      }));
    }
    prevSection.append(mode === 'diff' ? diff(textOf(prev), textOf(cur)) : body(prev, previous, true));
  }
  compare.append(prevSection);
  root.append(compare);
}

/** JSON as indented text, other text as it is. */
function textOf(c) {
  return c.kind === 'json' ? JSON.stringify(c.json, null, 2) : c.text;
}

/** Type, size, ETag and modification time. */
function facts(v) {
  const dl = el('dl', { class: 'facts' });
  const add = (k, val) => dl.append(el('div', {}, el('dt', { text: k }), el('dd', { text: val })));
  add('type', v.ct);
  add('size', `${size(v.size)}${v.size >= 1000 ? ` (${v.size.toLocaleString('en')} bytes)` : ''}`);
  if (v.etag) add('ETag', v.etag);
  if (v.modified) add('modified', `${ago(v.modified)} · ${new Date(v.modified).toISOString()}`);
  return dl;
}

/** A row of toggle buttons; `choose(mode)` runs on a click. */
function buttons(list, active, choose) {
  const group = el('div', { class: 'modes', role: 'group', 'aria-label': 'Show as' });
  for (const [mode, label] of list) {
    group.append(el('button', {
      type: 'button',
      class: 'mode',
      'aria-pressed': String(mode === active),
      dataset: { mode },
      text: label,
      on: { click: () => choose(mode) },
    }));
  }
  return group;
}

function modeButtons(kind, redraw) {
  const lists = {
    json: [['tree', 'Tree'], ['raw', 'Text'], ['hex', 'Hex']],
    text: [['text', 'Text'], ['hex', 'Hex']],
    image: [['image', 'Image'], ['hex', 'Hex']],
  };
  if (!lists[kind]) return null;
  return buttons(lists[kind], modes[kind], (m) => {
    modes[kind] = m;
    redraw();
  });
}

/** The value itself, as its kind's chosen mode says. */
function body(c, v, isPrevious = false) {
  if (c.kind === 'missing') {
    return el('p', { class: 'hint', text: `Too large to keep in the page (${size(v.size)}).` });
  }
  const mode = isPrevious ? ({ json: 'tree', text: 'text', binary: 'hex', image: 'image' })[c.kind] : modes[c.kind];
  if (mode === 'hex' || c.kind === 'binary') return hexDump(v.bytes);
  if (c.kind === 'image') {
    const url = URL.createObjectURL(new Blob([v.bytes], { type: v.ct }));
    blobs.push(url);
    return el('div', { class: 'image' }, el('img', { src: url, alt: `the image stored (${v.ct})` }));
  }
  if (c.kind === 'json' && mode === 'tree') {
    return el('div', { class: 'json', role: 'group', 'aria-label': 'JSON' }, jsonTree(c.json, null, true, 0));
  }
  if (c.kind === 'json') return el('pre', { class: 'text json-text', text: JSON.stringify(c.json, null, 2) });
  if (c.text === '') return el('p', { class: 'hint', text: '(empty)' });
  return el('pre', { class: 'text', text: c.text });
}

/** One JSON value as a collapsible tree: objects and arrays are <details> (open). */
function jsonTree(v, key, last, depth) {
  const keyPart = key === null ? null : el('span', { class: 'j-key', text: `${JSON.stringify(key)}: ` });
  const comma = last ? '' : ',';
  if (v === null || typeof v !== 'object') {
    const type = v === null ? 'null' : typeof v;
    return el('div', { class: 'j-line' }, keyPart, el('span', { class: `j-${type}`, text: JSON.stringify(v) }), comma);
  }
  const isArray = Array.isArray(v);
  const entries = isArray ? v.map((x, i) => [null, x]) : Object.entries(v);
  const [open, close] = isArray ? ['[', ']'] : ['{', '}'];
  if (!entries.length) return el('div', { class: 'j-line' }, keyPart, `${open}${close}${comma}`);
  if (depth >= JSON_DEPTH) {
    return el('pre', { class: 'j-line' }, keyPart, JSON.stringify(v, null, 2) + comma);
  }
  const count = `${entries.length} ${isArray ? (entries.length === 1 ? 'item' : 'items') : (entries.length === 1 ? 'key' : 'keys')}`;
  return el('details', { class: 'j', open: true },
    el('summary', {}, keyPart, open, el('span', { class: 'j-fold', text: ` ${count} ${close}${comma}` })),
    el('div', { class: 'j-body' }, entries.map(([k, x], i) => jsonTree(x, k, i === entries.length - 1, depth + 1))),
    el('div', { class: 'j-close', text: `${close}${comma}` }));
}

/** `offset  16 bytes in hex  |ASCII|` lines, like `hexdump -C`. */
export function hexDump(bytes) {
  const n = Math.min(bytes.length, HEX_MAX);
  const lines = [];
  for (let off = 0; off < n; off += 16) {
    const row = bytes.subarray(off, Math.min(off + 16, n));
    let hex = '';
    let ascii = '';
    for (let i = 0; i < 16; i++) {
      if (i === 8) hex += ' ';
      if (i < row.length) {
        hex += `${row[i].toString(16).padStart(2, '0')} `;
        ascii += row[i] >= 0x20 && row[i] < 0x7f ? String.fromCharCode(row[i]) : '.';
      } else {
        hex += '   ';
      }
    }
    lines.push(`${off.toString(16).padStart(8, '0')}  ${hex} |${ascii}|`);
  }
  if (bytes.length > n) lines.push(`… ${(bytes.length - n).toLocaleString('en')} more bytes`);
  if (!bytes.length) lines.push('(empty)');
  return el('pre', { class: 'hex', text: lines.join('\n') });
}

/** A line diff from `a` (previous) to `b` (current): longest common subsequence. */
export function diff(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const out = el('pre', { class: 'diff', 'aria-label': 'Changes from the previous value' });
  if (a === b) {
    out.append(el('span', { class: 'same', text: '(the same value)' }));
    return out;
  }
  if (x.length * y.length > DIFF_MAX) {
    out.append(el('span', { class: 'same', text: `Too many lines to compare (${x.length} and ${y.length}).` }));
    return out;
  }
  const m = x.length;
  const n = y.length;
  // lcs[i][j]: length of the LCS of x[i..] and y[j..], in one flat array.
  const lcs = new Uint32Array((m + 1) * (n + 1));
  for (let i = m - 1; i >= 0; i--) {
    for (let j = n - 1; j >= 0; j--) {
      lcs[i * (n + 1) + j] = x[i] === y[j]
        ? lcs[(i + 1) * (n + 1) + j + 1] + 1
        : Math.max(lcs[(i + 1) * (n + 1) + j], lcs[i * (n + 1) + j + 1]);
    }
  }
  let i = 0;
  let j = 0;
  const line = (cls, sign, text) => out.append(el('span', { class: cls, text: `${sign} ${text}\n` }));
  while (i < m && j < n) {
    if (x[i] === y[j]) { line('same', ' ', x[i]); i++; j++; }
    else if (lcs[(i + 1) * (n + 1) + j] >= lcs[i * (n + 1) + j + 1]) { line('del', '-', x[i]); i++; }
    else { line('ins', '+', y[j]); j++; }
  }
  while (i < m) line('del', '-', x[i++]);
  while (j < n) line('ins', '+', y[j++]);
  return out;
}

/** The numbers seen for this thing since the page opened, as a small line chart. */
function sparkline(numbers) {
  const w = 240;
  const h = 40;
  const values = numbers.map((p) => p.v);
  const min = Math.min(...values);
  const max = Math.max(...values);
  const span = max - min || 1;
  const px = (i) => (numbers.length === 1 ? w / 2 : (i / (numbers.length - 1)) * (w - 4) + 2);
  const py = (v) => (max === min ? h / 2 : h - 3 - ((v - min) / span) * (h - 6));
  const chart = svg('svg', { class: 'spark', viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: 'img', 'aria-label': `${numbers.length} values seen, from ${min} to ${max}` });
  if (numbers.length > 1) {
    chart.append(svg('polyline', { points: numbers.map((p, i) => `${px(i).toFixed(1)},${py(p.v).toFixed(1)}`).join(' ') }));
  }
  const last = numbers[numbers.length - 1];
  chart.append(svg('circle', { cx: px(numbers.length - 1).toFixed(1), cy: py(last.v).toFixed(1), r: 2.5 }));
  return el('figure', { class: 'sparkline' },
    chart,
    el('figcaption', {},
      el('span', { text: `now ${last.v}` }),
      el('span', { text: `min ${min}` }),
      el('span', { text: `max ${max}` }),
      el('span', { text: `${numbers.length} seen` })));
}
