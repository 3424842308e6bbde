// The status strip: connections per protocol, messages per second in and out, retained
// values, uptime — read from /metrics (the Prometheus text every monitoring system reads
// too), every few seconds while the page is visible.

import { request } from './api.js';
import { el, duration } from './util.js';

/** Seconds between two reads of /metrics. */
const PERIOD = 2000;

/** The samples of a Prometheus text exposition: [{name, labels, value}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    if (space < 0) continue;
    const head = line.slice(0, space);
    const value = Number(line.slice(space + 1));
    const brace = head.indexOf('{');
    const name = brace < 0 ? head : head.slice(0, brace);
    const labels = {};
    if (brace >= 0) {
      for (const m of head.slice(brace).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
    }
    samples.push({ name, labels, value });
  }
  return samples;
}

/** The sum of `name`'s samples whose label `label` is one of `values` (all when omitted). */
function sum(samples, name, label, values) {
  return samples
    .filter((s) => s.name === name && (!values || values.includes(s.labels[label])))
    .reduce((a, s) => a + s.value, 0);
}

export class Status {
  /** `root` is the strip; `allowed()` says whether /metrics may be read now (with
   * `[http] metrics_auth`, only once signed in). */
  constructor(root, allowed) {
    this.root = root;
    this.allowed = allowed;
    this.last = null;
    this.timer = null;
    this.cells = {};
    const cell = (key, label) => {
      const value = el('b', { text: '–' });
      this.cells[key] = value;
      return el('span', { class: 'stat', dataset: { stat: key } }, value, ` ${label}`);
    };
    root.replaceChildren(
      el('span', { class: 'group', 'aria-label': 'Connections' },
        cell('mqtt', 'MQTT'), cell('coap', 'CoAP'), cell('http', 'HTTP'), cell('sse', 'SSE')),
      el('span', { class: 'group', 'aria-label': 'Messages per second' },
        cell('in', 'in/s'), cell('out', 'out/s')),
      el('span', { class: 'group' }, cell('retained', 'retained'), cell('uptime', 'up')),
    );
    document.addEventListener('visibilitychange', () => this.schedule(0));
  }

  start() {
    this.schedule(0);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.poll(), ms);
  }

  async poll() {
    if (document.hidden) return;
    if (!this.allowed()) {
      this.root.title = '/metrics needs credentials ([http] metrics_auth): sign in to see the counters';
      this.schedule(PERIOD);
      return;
    }
    try {
      const r = await request('/metrics');
      if (r.ok) this.show(parseMetrics(await r.text()));
      else this.root.title = `/metrics: ${r.status}`;
    } catch {
      this.root.title = '/metrics could not be read';
    }
    this.schedule(PERIOD);
  }

  show(samples) {
    const now = performance.now();
    const received = sum(samples, 'ponte_messages_received_total');
    const sent = sum(samples, 'ponte_messages_sent_total');
    const c = this.cells;
    c.mqtt.textContent = sum(samples, 'ponte_connections', 'protocol', ['mqtt', 'mqtts', 'mqtt_ws', 'mqtt_wss']);
    const observers = sum(samples, 'ponte_coap_observers');
    c.coap.textContent = sum(samples, 'ponte_connections', 'protocol', ['coap_tcp', 'coaps']);
    c.coap.parentElement.title = `CoAP over TCP and DTLS sessions; ${observers} observers`;
    c.http.textContent = sum(samples, 'ponte_connections', 'protocol', ['http', 'https']);
    c.sse.textContent = sum(samples, 'ponte_connections', 'protocol', ['sse']);
    c.retained.textContent = sum(samples, 'ponte_retained_messages');
    c.uptime.textContent = duration(sum(samples, 'ponte_uptime_seconds'));
    if (this.last) {
      const secs = (now - this.last.at) / 1000;
      c.in.textContent = Math.max(0, (received - this.last.received) / secs).toFixed(1);
      c.out.textContent = Math.max(0, (sent - this.last.sent) / secs).toFixed(1);
    }
    this.last = { at: now, received, sent };
    this.root.title = '';
  }
}
