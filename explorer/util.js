// Small helpers shared by the explorer's modules. Nothing here touches the network.
//
// Every piece of text that comes from a value, a topic or the server goes into the page
// through textContent (el() below), never as HTML: a stored value can hold anything.

/** An element: el('div', {class: 'row', dataset: {key: 'a'}}, 'text', child). */
export function el(tag, attrs = {}, ...children) {
  const isSvg = Boolean(attrs.svg);
  const node = isSvg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false || k === 'svg') continue;
    if (k === 'class') node.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'on') for (const [ev, f] of Object.entries(v)) node.addEventListener(ev, f);
    else if (k === 'text') node.textContent = v;
    else if (!isSvg && k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** An SVG element (createElementNS), attributes set as given. */
export function svg(tag, attrs = {}, ...children) {
  return el(tag, { ...attrs, svg: true }, ...children);
}

/** "3 s ago", "5 min ago", "2 h ago", "4 d ago"; "" when unknown. */
export function ago(ms, now = Date.now()) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** "0 B", "512 B", "1.5 kB", "2.0 MB" (decimal units, as HTTP tools print them). */
export function size(n) {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(1)} GB`;
}

/** A duration in seconds as "42 s", "3 min", "2 h 5 min", "3 d 4 h". */
export function duration(secs) {
  const s = Math.floor(secs);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** `s` quoted for a POSIX shell when it needs to be. */
export function shq(s) {
  if (/^[A-Za-z0-9_\/.:@%+=,-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A topic as a URL path: each level percent-encoded on its own, levels joined by "/". */
export function topicPath(topic) {
  return topic.split('/').map(encodeURIComponent).join('/');
}

/** The bytes of a base64 string. */
export function fromBase64(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** base64 of UTF-8 `text` (btoa only takes Latin-1). */
export function toBase64(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** `bytes` as text when they are UTF-8 without control characters (tab and newlines
 * allowed), else null: such values are shown as a hex dump. */
export function asText(bytes) {
  let text;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    return null;
  }
  return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? null : text;
}

/** Whether a media type is JSON (application/json or any +json). */
export function isJsonType(ct) {
  const base = (ct || '').split(';')[0].trim().toLowerCase();
  return base === 'application/json' || base.endsWith('+json') || base === 'text/json';
}

/** Whether a media type is an image a browser shows. */
export function isImageType(ct) {
  return /^image\/[a-z0-9.+-]+/i.test((ct || '').trim());
}

/** The number `text` holds (a plain decimal, as sensors send them), else null. */
export function asNumber(text) {
  if (typeof text !== 'string' || text.length > 40) return null;
  if (!/^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(text)) return null;
  const n = Number(text);
  return Number.isFinite(n) ? n : null;
}

/** One line of at most `max` characters for a preview. */
export function oneLine(text, max = 60) {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}
