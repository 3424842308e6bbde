// The tree of things: a model (every thing the stream told us about, with the last two
// values and the numbers seen) and its view (a WAI-ARIA tree, one row per topic level,
// rendered only for expanded levels, updated at most once per animation frame).

import { el, ago, size, asNumber, oneLine, asText, fromBase64 } from './util.js';

/** Payloads larger than this are not kept in the page (they are fetched when shown). */
export const KEEP_BYTES = 64 * 1024;

/** Numbers kept per thing for its sparkline. */
const HISTORY = 120;

/** Levels the user has not opened or closed are open while the tree holds fewer things
 * than this; above it only the top level is. */
const OPEN_BELOW = 500;

/** Bytes of UTF-8 `text`. */
function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00) { n += 4; i++; }
    else n += 3;
  }
  return n;
}

/** Bytes a base64 string decodes to. */
function base64Length(b64) {
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  return (b64.length / 4) * 3 - pad;
}

/** A thing's current value as bytes, or null when it was too large to keep. */
export function bytesOf(v) {
  if (v.text !== null && v.text !== undefined) return new TextEncoder().encode(v.text);
  if (v.base64 !== null && v.base64 !== undefined) return fromBase64(v.base64);
  return null;
}

/** The short preview of a value in its row. */
function preview(t) {
  if (t.text !== null && t.text !== undefined) {
    return t.text === '' ? '(empty)' : oneLine(t.text);
  }
  if (t.base64 !== null && t.base64 !== undefined) {
    const b = fromBase64(t.base64.slice(0, 16));
    const text = asText(b);
    if (text !== null) return oneLine(text);
    return `${Array.from(b.slice(0, 8), (x) => x.toString(16).padStart(2, '0')).join(' ')}${t.size > 8 ? ' …' : ''}`;
  }
  return t.size > KEEP_BYTES ? `(${size(t.size)})` : '';
}

export class Tree {
  /** `container` becomes the tree; `onSelect(thing)` runs when the user opens a thing. */
  constructor(container, { onSelect, onCount }) {
    this.container = container;
    this.onSelect = onSelect;
    this.onCount = onCount || (() => {});
    /** thing → {thing, ct, size, text, base64, modified, etag, prev, numbers} */
    this.things = new Map();
    this.root = { key: null, name: '', depth: 0, parent: null, children: new Map(), sorted: null, thing: null, count: 0, open: true };
    /** key (the topic of that level) → node */
    this.nodes = new Map();
    /** key → row element, for the rows on screen */
    this.rows = new Map();
    this.substring = '';
    this.selected = null;
    this.focused = null;
    this.changed = new Set();
    this.dirty = new Set();
    this.scheduled = false;
    container.addEventListener('animationend', (e) => e.target.classList.remove('flash'));
    container.addEventListener('click', (e) => this.click(e));
    container.addEventListener('keydown', (e) => this.key(e));
    container.addEventListener('focusin', (e) => {
      const row = e.target.closest('.row');
      if (row) this.focus(row.dataset.key, false);
    });
    setInterval(() => this.tickAges(), 1000);
  }

  // ----- model ---------------------------------------------------------------------

  /** A value from the stream. `live`: a write that happened now (not a replay of the
   * current values when the stream opened); its row (or the nearest shown level above
   * it) flashes. Returns the thing. */
  put(thing, { content_type: ct, text, base64 }, live) {
    const bytes = text !== undefined ? utf8Length(text) : base64Length(base64 || '');
    const keep = bytes <= KEEP_BYTES;
    const value = {
      ct,
      size: bytes,
      text: keep && text !== undefined ? text : null,
      base64: keep && base64 !== undefined ? base64 : null,
    };
    let t = this.things.get(thing);
    const same = t && t.ct === value.ct && t.size === value.size && t.text === value.text && t.base64 === value.base64 && (t.text !== null || t.base64 !== null);
    if (t && same && !live) return t;
    if (!t) {
      t = { thing, prev: null, numbers: [], modified: null, etag: null, filled: true, ...value };
      this.things.set(thing, t);
      this.attach(thing, t);
    } else {
      if (!same && t.filled) {
        t.prev = { ct: t.ct, size: t.size, text: t.text, base64: t.base64, modified: t.modified, etag: t.etag };
      }
      Object.assign(t, value);
      if (live) t.etag = null;
      t.filled = true;
    }
    if (live) t.modified = Date.now();
    const n = value.text !== null ? asNumber(value.text) : null;
    if (n !== null && (live || t.numbers.length === 0)) {
      t.numbers.push({ t: Date.now(), v: n });
      if (t.numbers.length > HISTORY) t.numbers.shift();
    }
    // The current values replayed when the stream opens are not changes: no flash.
    if (live) this.changed.add(thing);
    this.dirty.add(thing);
    this.schedule();
    return t;
  }

  /** What the listing says about a thing (its modification time, size, ETag). */
  meta(item) {
    let t = this.things.get(item.thing);
    if (!t) {
      t = { thing: item.thing, prev: null, numbers: [], ct: item.content_type, size: item.size, text: null, base64: null, modified: null, etag: null, filled: false };
      this.things.set(item.thing, t);
      this.attach(item.thing, t);
    }
    const modified = Date.parse(item.modified);
    // A live write seen after the listing was read is newer than what it says.
    if (t.modified !== null && t.modified > modified) return;
    t.modified = modified;
    t.etag = item.etag;
    this.dirty.add(item.thing);
    this.schedule();
  }

  /** A thing was cleared. */
  remove(thing) {
    if (!this.things.has(thing)) return;
    this.things.delete(thing);
    let node = this.nodes.get(thing);
    node.thing = null;
    for (let n = node; n && n !== this.root; n = n.parent) {
      n.count -= 1;
      this.dirty.add(n.key);
    }
    // Drop levels left with neither a value nor children.
    while (node !== this.root && !node.thing && node.children.size === 0) {
      node.parent.children.delete(node.name);
      node.parent.sorted = null;
      this.nodes.delete(node.key);
      if (this.focused === node.key) this.focused = node.parent.key;
      node = node.parent;
    }
    this.schedule();
  }

  /** Keep only the things in `keep` (the listing after a (re)connect): drops those deleted
   * while the stream was away. */
  retainOnly(keep) {
    for (const thing of [...this.things.keys()]) if (!keep.has(thing)) this.remove(thing);
  }

  /** Forget everything (a new server-side filter). */
  clear() {
    for (const thing of [...this.things.keys()]) this.remove(thing);
  }

  /** The thing named `thing`, if known. */
  get(thing) {
    return this.things.get(thing);
  }

  /** Show only things whose topic contains `s` (case-insensitive); "" shows all. */
  setSubstring(s) {
    this.substring = s.toLowerCase();
    this.schedule();
  }

  /** Hang a new thing's node (and any missing levels above it) into the tree. */
  attach(thing, t) {
    const levels = thing.split('/');
    let node = this.root;
    for (let d = 0; d < levels.length; d++) {
      const name = levels[d];
      let child = node.children.get(name);
      if (!child) {
        const key = levels.slice(0, d + 1).join('/');
        child = { key, name, depth: d + 1, parent: node, children: new Map(), sorted: null, thing: null, count: 0, open: null };
        node.children.set(name, child);
        node.sorted = null;
        this.nodes.set(key, child);
      }
      child.count += 1;
      this.dirty.add(child.key);
      node = child;
    }
    node.thing = t;
  }

  // ----- view ----------------------------------------------------------------------

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => this.render());
  }

  /** Whether `node`'s children are shown: as the user chose, else by the tree's size. */
  isOpen(node) {
    return node.open ?? (node.depth === 1 || this.things.size < OPEN_BELOW);
  }

  /** Children of `node` in byte order of their names. */
  sortedChildren(node) {
    if (!node.sorted) node.sorted = [...node.children.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return node.sorted;
  }

  /** Keys of every level to show under the substring filter (matches and their parents). */
  matching() {
    const keys = new Set();
    for (const thing of this.things.keys()) {
      if (!thing.toLowerCase().includes(this.substring)) continue;
      for (let n = this.nodes.get(thing); n && n !== this.root && !keys.has(n.key); n = n.parent) keys.add(n.key);
    }
    return keys;
  }

  /** The nodes on screen, in order. */
  visible() {
    const shown = [];
    const only = this.substring ? this.matching() : null;
    const walk = (node) => {
      for (const child of this.sortedChildren(node)) {
        if (only && !only.has(child.key)) continue;
        shown.push(child);
        if (child.children.size && (only || this.isOpen(child))) walk(child);
      }
    };
    walk(this.root);
    this.shownCount = only ? [...only].filter((k) => this.nodes.get(k)?.thing).length : this.things.size;
    return shown;
  }

  render() {
    this.scheduled = false;
    const small = this.things.size < OPEN_BELOW;
    if (small !== this.small) {
      // Levels nobody opened or closed change state: redraw every row.
      this.small = small;
      for (const key of this.rows.keys()) this.dirty.add(key);
    }
    const shown = this.visible();
    const keep = new Set(shown.map((n) => n.key));
    for (const [key, row] of this.rows) {
      if (!keep.has(key)) {
        row.remove();
        this.rows.delete(key);
      }
    }
    let before = this.container.firstChild;
    for (const node of shown) {
      let row = this.rows.get(node.key);
      if (!row) {
        row = this.makeRow(node);
        this.rows.set(node.key, row);
        this.fill(row, node);
      } else if (this.dirty.has(node.key)) {
        this.fill(row, node);
      }
      if (before !== row) this.container.insertBefore(row, before);
      before = row.nextSibling;
    }
    this.dirty.clear();
    const flashing = new Set();
    for (const thing of this.changed) {
      let node = this.nodes.get(thing);
      while (node && node !== this.root && !this.rows.has(node.key)) node = node.parent;
      if (node && node !== this.root) flashing.add(this.rows.get(node.key));
    }
    this.changed.clear();
    flash(flashing, this.container);
    if (this.focused !== null && !this.rows.has(this.focused)) this.focused = null;
    const tabbable = this.focused ?? (this.rows.has(this.selected) ? this.selected : shown[0]?.key);
    for (const [key, row] of this.rows) row.tabIndex = key === tabbable ? 0 : -1;
    this.onCount(this.shownCount, this.things.size);
  }

  makeRow(node) {
    const row = el('div', { class: 'row', role: 'treeitem', dataset: { key: node.key } });
    row.style.setProperty('--depth', String(node.depth - 1));
    row.cells = {
      caret: el('span', { class: 'caret', 'aria-hidden': 'true' }),
      name: el('span', { class: 'name' }),
      preview: el('span', { class: 'preview' }),
      ct: el('span', { class: 'ct' }),
      size: el('span', { class: 'size' }),
      age: el('span', { class: 'age' }),
    };
    row.append(...Object.values(row.cells));
    return row;
  }

  fill(row, node) {
    const c = row.cells;
    const t = node.thing;
    const parent = node.children.size > 0;
    row.setAttribute('aria-level', String(node.depth));
    if (parent) row.setAttribute('aria-expanded', String(this.substring ? true : this.isOpen(node)));
    else row.removeAttribute('aria-expanded');
    row.setAttribute('aria-selected', String(this.selected === node.key));
    row.classList.toggle('group', !t);
    if (t) row.dataset.thing = node.key;
    else delete row.dataset.thing;
    c.caret.textContent = parent ? (this.substring || this.isOpen(node) ? '▾' : '▸') : '';
    c.name.textContent = node.name === '' ? '∅' : node.name;
    c.name.title = node.name === '' ? 'an empty topic level' : node.key;
    if (t) {
      c.preview.textContent = preview(t);
      c.ct.textContent = t.ct;
      c.size.textContent = size(t.size);
      c.age.textContent = ago(t.modified);
      row.setAttribute('aria-label', `${node.key}: ${preview(t)}`);
    } else {
      const below = node.count;
      c.preview.textContent = `${below} ${below === 1 ? 'thing' : 'things'}`;
      c.ct.textContent = '';
      c.size.textContent = '';
      c.age.textContent = '';
      row.setAttribute('aria-label', `${node.key}: ${below} ${below === 1 ? 'thing' : 'things'}`);
    }
  }

  tickAges() {
    const now = Date.now();
    for (const [key, row] of this.rows) {
      const t = this.nodes.get(key)?.thing;
      if (t) row.cells.age.textContent = ago(t.modified, now);
    }
  }

  // ----- interaction ---------------------------------------------------------------

  /** Open `thing` (programmatically or from a click / Enter). */
  select(key) {
    const previous = this.selected;
    this.selected = key;
    for (const k of [previous, key]) if (k !== null && this.nodes.has(k)) this.dirty.add(k);
    this.schedule();
    const node = this.nodes.get(key);
    if (node?.thing) this.onSelect(key);
  }

  /** Move keyboard focus to the row of `key`. */
  focus(key, move = true) {
    this.focused = key;
    for (const [k, row] of this.rows) row.tabIndex = k === key ? 0 : -1;
    const row = this.rows.get(key);
    if (move && row) {
      row.focus();
      row.scrollIntoView({ block: 'nearest' });
    }
  }

  toggle(node, open = !this.isOpen(node)) {
    if (!node.children.size || this.substring) return;
    node.open = open;
    this.dirty.add(node.key);
    this.render();
  }

  click(e) {
    const row = e.target.closest('.row');
    if (!row) return;
    const node = this.nodes.get(row.dataset.key);
    if (!node) return;
    if (e.target.classList.contains('caret') || !node.thing) this.toggle(node);
    if (node.thing) this.select(node.key);
    this.focus(node.key);
  }

  key(e) {
    const row = e.target.closest('.row');
    if (!row || e.altKey || e.ctrlKey || e.metaKey) return;
    const keys = [...this.rows.keys()];
    const order = [...this.container.children].map((r) => r.dataset.key);
    const i = order.indexOf(row.dataset.key);
    const node = this.nodes.get(row.dataset.key);
    if (!node || !keys.length) return;
    let handled = true;
    switch (e.key) {
      case 'ArrowDown':
        if (i + 1 < order.length) this.focus(order[i + 1]);
        break;
      case 'ArrowUp':
        if (i > 0) this.focus(order[i - 1]);
        break;
      case 'Home':
        this.focus(order[0]);
        break;
      case 'End':
        this.focus(order[order.length - 1]);
        break;
      case 'ArrowRight':
        if (node.children.size && !this.isOpen(node) && !this.substring) this.toggle(node, true);
        else if (node.children.size && i + 1 < order.length) this.focus(order[i + 1]);
        break;
      case 'ArrowLeft':
        if (node.children.size && this.isOpen(node) && !this.substring) this.toggle(node, false);
        else if (node.parent && node.parent !== this.root) this.focus(node.parent.key);
        break;
      case 'Enter':
      case ' ':
        if (node.thing) this.select(node.key);
        else this.toggle(node);
        this.focus(node.key);
        break;
      default:
        handled = false;
    }
    if (handled) e.preventDefault();
  }
}

/** Restart the flash animation of `rows`: every class removed, one style recalculation
 * for all of them (not one per row: a burst of writes changes many rows in a frame), then
 * the class added again. */
function flash(rows, container) {
  if (!rows.size) return;
  for (const row of rows) row.classList.remove('flash');
  void container.offsetWidth;
  for (const row of rows) row.classList.add('flash');
}
