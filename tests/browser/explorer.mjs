// End-to-end tests of ponte's explorer in a real browser: Debian's chromium driven by
// playwright-core (never a downloaded browser), against a gateway tests/explorer.rs
// started, with real curl, mosquitto_pub/mosquitto_sub, coap-client-notls and MQTT.js.
//
//   EXPLORER_TEST='{"base":"http://127.0.0.1:PORT",...}' node explorer.mjs open|auth
//
// Prints one line per step, "ok <step>" or "not ok <step>: <why>", and exits 1 when any
// step failed. tests/explorer.rs checks that every step it expects said "ok".

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const scenario = process.argv[2];
const cfg = JSON.parse(process.env.EXPLORER_TEST || '{}');
const shots = cfg.shots;
fs.mkdirSync(shots, { recursive: true });
// Screenshots of failed steps from an earlier run would mislead.
for (const f of fs.readdirSync(shots)) if (f.startsWith(`failed-${scenario}-`)) fs.rmSync(path.join(shots, f));

/** Chromium as root in a closed network: no sandbox (root), no GPU, and none of the
 * background connections it would otherwise try. playwright-core gives it a new empty
 * profile directory of its own. */
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage'];

let failed = 0;

/** The page a failing step is screenshotted from. */
let current = null;

/** Run one named step; a failure is reported (with a screenshot) and the next steps
 * still run. */
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`not ok ${name}: ${(e && e.stack) || e}`);
    const file = path.join(shots, `failed-${scenario}-${failed}.png`);
    await current?.screenshot({ path: file }).then(() => console.log(`# screenshot: ${file}`), () => {});
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(what);
}

function eq(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

/** Run a command to its end (10 s at most): {code, stdout, stderr}. */
function run(cmd, args, { input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish in 10 s`));
    }, 10_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/** Run a command that must succeed; its standard output. */
async function ok(cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** A running command whose output is watched: waitFor(regex) resolves with the output. */
function watchProcess(cmd, args) {
  // Line-buffered through stdbuf (coreutils): mosquitto_sub's stdio would hold its
  // output back while it writes to a pipe.
  const child = spawn('stdbuf', ['-oL', '-eL', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters = [];
  const check = () => {
    for (const w of [...waiters]) {
      if (w.re.test(out)) {
        waiters.splice(waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(out);
      }
    }
  };
  child.stdout.on('data', (d) => { out += d; check(); });
  child.stderr.on('data', (d) => { out += d; check(); });
  return {
    waitFor(re, ms = 5000) {
      return new Promise((resolve, reject) => {
        const w = { re, resolve };
        w.timer = setTimeout(() => reject(new Error(`${cmd} did not print ${re} within ${ms} ms; it printed: ${out}`)), ms);
        waiters.push(w);
        check();
      });
    },
    kill() { child.kill('SIGKILL'); },
  };
}

const url = (thing) => `${cfg.base}/resources/${thing}`;
const curlPut = (thing, type, data) => ok('curl', ['-sS', '--fail-with-body', '-X', 'PUT', '-H', `Content-Type: ${type}`, '--data-binary', data, url(thing)]);
const row = (thing) => `.row[data-thing="${thing}"]`;

/** Collects the page's console errors and uncaught exceptions; `expect(re)` tolerates
 * errors matching `re` while a step provokes them on purpose (a 412 it asked for). */
function consoleWatch(page) {
  const errors = [];
  let tolerated = null;
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    if (tolerated && tolerated.test(m.text())) return;
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  return {
    errors,
    expect(re) { tolerated = re; },
    done() { tolerated = null; },
  };
}

async function launch() {
  return chromium.launch({ executablePath: cfg.chromium || '/usr/bin/chromium', args: ARGS, timeout: 30_000 });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

/** Wait until `thing`'s row shows `text` as its preview. */
async function previewIs(page, thing, text, timeout = 1000) {
  await page.waitForFunction(([sel, want]) => document.querySelector(sel)?.querySelector('.preview')?.textContent === want,
    [row(thing), text], { timeout });
}

// ---------------------------------------------------------------------------------------

async function open() {
  const browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // A step that waits for what never comes fails in seconds, not playwright's 30 s.
  context.setDefaultTimeout(5000);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: cfg.base });
  const page = await context.newPage();
  current = page;
  const watch = consoleWatch(page);
  let navigations = 0;
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations += 1; });

  await step('the page loads, with its CSP, and no console errors', async () => {
    const response = await page.goto(`${cfg.base}/`);
    eq(response.status(), 200, 'status of /');
    const csp = response.headers()['content-security-policy'] || '';
    assert(csp.includes("script-src 'self'") && !csp.includes('unsafe'), `CSP without inline script: ${csp}`);
    await page.waitForSelector('#live[data-state=live]', { timeout: 5000 });
    eq(await page.title(), `ponte ${cfg.version} · explorer`, 'title');
    await page.evaluate(() => { window.sameDocument = 'still here'; });
    eq(watch.errors.length, 0, `console errors: ${watch.errors.join(' | ')}`);
  });

  await step('a value PUT with curl appears in the tree within 1 s, without a reload', async () => {
    await curlPut('kitchen/temperature', 'text/plain', '21.5');
    await page.waitForSelector(row('kitchen/temperature'), { timeout: 1000 });
    await previewIs(page, 'kitchen/temperature', '21.5');
    await page.waitForFunction((sel) => !document.querySelector(sel).classList.contains('flash'), row('kitchen/temperature'), { timeout: 3000 });
    await curlPut('kitchen/temperature', 'text/plain', '22.5');
    await previewIs(page, 'kitchen/temperature', '22.5');
    assert(await page.$eval(row('kitchen/temperature'), (r) => r.classList.contains('flash')), 'the changed row flashes');
    eq(await page.evaluate(() => window.sameDocument), 'still here', 'the same document');
    eq(navigations, 1, 'navigations');
    const level = await page.$eval('.row[data-key="kitchen"]', (r) => r.getAttribute('aria-expanded'));
    eq(level, 'true', 'the kitchen level is an open tree node');
  });

  await step('a retained MQTT publish appears in the tree within 1 s', async () => {
    await ok('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-t', 'garden/humidity', '-m', '55', '-r', '-q', '1']);
    await page.waitForSelector(row('garden/humidity'), { timeout: 1000 });
    await previewIs(page, 'garden/humidity', '55');
  });

  await step('a CoAP PUT appears in the tree within 1 s', async () => {
    await ok('coap-client-notls', ['-m', 'put', '-e', 'open', `coap://127.0.0.1:${cfg.coap_port}/r/garage/door`]);
    await page.waitForSelector(row('garage/door'), { timeout: 1000 });
    await previewIs(page, 'garage/door', 'open');
  });

  const lamp = { on: true, level: 3, rooms: ['hall', 'attic'], light: { r: 255, g: 128 } };
  await step('JSON is pretty-printed and collapsible', async () => {
    await curlPut('kitchen/lamp', 'application/json', JSON.stringify(lamp));
    await page.click(row('kitchen/lamp'));
    await page.waitForSelector('.current .json', { timeout: 2000 });
    const keys = await page.$$eval('.current .json .j-key', (ks) => ks.map((k) => k.textContent));
    for (const k of ['"on": ', '"level": ', '"rooms": ', '"light": ', '"r": ', '"g": ']) assert(keys.includes(k), `key ${k} among ${keys}`);
    eq(await page.$$eval('.current .json details', (d) => d.length), 3, 'collapsible object, array and nested object');
    // Each member on its own line: the tree's text, line by line, is the pretty-printed JSON.
    const shown = await page.$eval('.current .json', (j) => j.innerText.replace(/^[▾▸] /gm, '').replace(/\n+/g, '\n').trim());
    const lines = shown.split('\n').map((l) => l.replace(/^[▾▸ ]+/, '').trim());
    const pretty = JSON.stringify(lamp, null, 2).split('\n').map((l) => l.trim());
    eq(lines.join('\n'), pretty.join('\n'), 'the tree reads as pretty-printed JSON');
    // Collapse "rooms": its items are hidden and a summary says how many.
    const rooms = page.locator('.current .json details', { has: page.locator(':scope > summary > .j-key', { hasText: '"rooms"' }) });
    await rooms.locator(':scope > summary').click();
    eq(await rooms.evaluate((d) => d.open), false, 'rooms collapsed');
    assert((await rooms.locator(':scope > summary').innerText()).includes('2 items ]'), 'the folded summary counts the items');
    await rooms.locator(':scope > summary').click();
    await page.click('.current button[data-mode=raw]');
    eq(await page.$eval('.current pre.json-text', (p) => p.textContent), JSON.stringify(lamp, null, 2), 'the text view');
    await page.click('.current button[data-mode=tree]');
  });

  await step('a changed JSON value is shown beside the previous one, with a diff', async () => {
    await curlPut('kitchen/lamp', 'application/json', JSON.stringify({ ...lamp, level: 4 }));
    await page.waitForFunction(() => document.querySelector('.previous pre.diff .ins')?.textContent.includes('"level": 4'), null, { timeout: 2000 });
    const del = await page.$$eval('.previous pre.diff .del', (s) => s.map((x) => x.textContent.trim()));
    const ins = await page.$$eval('.previous pre.diff .ins', (s) => s.map((x) => x.textContent.trim()));
    eq(JSON.stringify(del), JSON.stringify(['-   "level": 3,']), 'removed lines');
    eq(ins.length, 1, 'one added line');
    await shot(page, 'explorer');
  });

  await step('a binary value shows as a hex dump', async () => {
    const file = path.join(os.tmpdir(), `ponte-explorer-${process.pid}.bin`);
    fs.writeFileSync(file, Buffer.from([0x00, 0x01, 0x02, 0xfe, 0xff, ...Buffer.from('hello, world!')]));
    try {
      await ok('curl', ['-sS', '--fail-with-body', '-X', 'PUT', '-H', 'Content-Type: application/octet-stream', '--data-binary', `@${file}`, url('garage/firmware')]);
    } finally {
      fs.rmSync(file, { force: true });
    }
    await page.waitForSelector(row('garage/firmware'), { timeout: 1000 });
    await page.click(row('garage/firmware'));
    await page.waitForFunction(() => document.querySelector('.value-title')?.textContent === 'garage/firmware', null, { timeout: 2000 });
    const hex = await page.$eval('.current pre.hex', (p) => p.textContent);
    eq(hex.split('\n')[0], '00000000  00 01 02 fe ff 68 65 6c  6c 6f 2c 20 77 6f 72 6c  |.....hello, worl|', 'first line');
    eq(hex.split('\n')[1], '00000010  64 21                                             |d!|', 'second line');
    await shot(page, 'value-hex');
  });

  await step('an image/* value is shown as an image', async () => {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20" fill="#1d5f8a"/></svg>';
    await curlPut('garage/camera', 'image/svg+xml', svg);
    await page.waitForSelector(row('garage/camera'), { timeout: 1000 });
    await page.click(row('garage/camera'));
    await page.waitForFunction(() => document.querySelector('.current .image img')?.naturalWidth === 40, null, { timeout: 2000 });
  });

  await step('numbers are plotted as a sparkline, the previous value diffed', async () => {
    await curlPut('kitchen/temperature', 'text/plain', '23.0');
    await page.click(row('kitchen/temperature'));
    await curlPut('kitchen/temperature', 'text/plain', '21.0');
    await page.waitForFunction(() => document.querySelector('.sparkline figcaption')?.textContent.includes('4 seen'), null, { timeout: 2000 });
    const points = await page.$eval('svg.spark polyline', (p) => p.getAttribute('points').split(' ').length);
    eq(points, 4, 'points: 21.5, 22.5, 23.0 and 21.0, seen since the page opened');
    const caption = await page.$eval('.sparkline figcaption', (f) => f.textContent);
    assert(caption.includes('min 21') && caption.includes('max 23') && caption.includes('now 21'), caption);
    eq(await page.$eval('.previous pre.diff .del', (s) => s.textContent.trim()), '- 23.0', 'previous line');
    eq(await page.$eval('.previous pre.diff .ins', (s) => s.textContent.trim()), '+ 21.0', 'current line');
    await shot(page, 'value-number');
  });

  await step('a value edited in the page is seen by an MQTT subscriber', async () => {
    const sub = watchProcess('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-t', 'kitchen/temperature', '-v', '-R', '-d', '-C', '1']);
    try {
      await sub.waitFor(/SUBACK/);
      await page.click(row('kitchen/temperature'));
      await page.waitForFunction(() => document.querySelector('#w-thing').value === 'kitchen/temperature', null, { timeout: 2000 });
      await page.fill('#w-value', '19.5');
      await page.fill('#w-type', 'text/plain');
      await page.click('#w-put');
      await page.waitForFunction(() => /^Saved kitchen\/temperature: 204/.test(document.querySelector('#w-result').textContent), null, { timeout: 2000 });
      await sub.waitFor(/kitchen\/temperature 19\.5/);
      await previewIs(page, 'kitchen/temperature', '19.5');
    } finally {
      sub.kill();
    }
  });

  await step('server errors are shown with their detail (412, 400)', async () => {
    watch.expect(/status of (412|400)/);
    try {
      await page.click(row('kitchen/temperature'));
      await page.waitForFunction(() => !document.querySelector('#w-ifmatch').disabled, null, { timeout: 2000 });
      await page.check('#w-ifmatch');
      await page.fill('#w-value', '30');
      await curlPut('kitchen/temperature', 'text/plain', '25');
      await previewIs(page, 'kitchen/temperature', '25');
      await page.click('#w-put');
      await page.waitForFunction(() => /^412 /.test(document.querySelector('#w-result').textContent), null, { timeout: 2000 });
      const said = await page.$eval('#w-result', (p) => p.textContent);
      const problem = JSON.parse(await ok('curl', ['-sS', '-X', 'PUT', '-H', 'If-Match: "0"', '--data', '30', url('kitchen/temperature')]));
      assert(said.startsWith('412 Precondition Failed: ') && said.length > 40, said);
      eq(await page.$eval('#w-result', (p) => p.getAttribute('role')), 'alert', 'errors are announced');
      assert(problem.detail && said.includes(problem.detail.split(' ').slice(0, 3).join(' ')), `the problem's detail (${problem.detail}) in ${said}`);
      await page.uncheck('#w-ifmatch');
      await page.fill('#w-thing', 'kitchen/+/bad');
      await page.click('#w-put');
      await page.waitForFunction(() => /^400 Bad Request: .*\+/.test(document.querySelector('#w-result').textContent), null, { timeout: 2000 });
    } finally {
      watch.done();
    }
  });

  await step('DELETE asks for confirmation, then the thing disappears', async () => {
    await page.click(row('garage/door'));
    await page.waitForFunction(() => document.querySelector('#w-thing').value === 'garage/door', null, { timeout: 2000 });
    await page.click('#w-delete');
    await page.waitForSelector('#confirm[open]', { timeout: 1000 });
    eq(await page.$eval('#confirm-thing', (c) => c.textContent), 'garage/door', 'the dialog names the thing');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#confirm', { state: 'hidden', timeout: 1000 });
    assert(await page.$(row('garage/door')), 'still there after Cancel');
    await page.click('#w-delete');
    await page.click('#confirm-delete');
    await page.waitForSelector(row('garage/door'), { state: 'detached', timeout: 1000 });
    const code = await ok('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', url('garage/door')]);
    eq(code, '404', 'GET after the DELETE');
    // A DELETE from elsewhere removes a row too.
    await ok('curl', ['-sS', '--fail-with-body', '-X', 'DELETE', url('garden/humidity')]);
    await page.waitForSelector(row('garden/humidity'), { state: 'detached', timeout: 1000 });
    assert(!(await page.$('.row[data-key="garden"]')), 'the empty level went with it');
  });

  await step('the filter box takes an MQTT filter or a substring', async () => {
    const things = () => page.$$eval('.row[data-thing]', (rs) => rs.map((r) => r.dataset.thing));
    await page.fill('#filter', 'kitchen/#');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('.row[data-thing]')].every((r) => r.dataset.thing.startsWith('kitchen/')) && document.querySelectorAll('.row[data-thing]').length === 2, null, { timeout: 2000 });
    await page.fill('#filter', '+/lamp');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('.row[data-thing]').length === 1, null, { timeout: 2000 });
    eq(JSON.stringify(await things()), '["kitchen/lamp"]', '+/lamp');
    await page.fill('#filter', 'FIRM');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('.row[data-thing]').length === 1 && document.querySelector('.row[data-thing="garage/firmware"]'), null, { timeout: 2000 });
    await page.fill('#filter', 'a/#/b');
    await page.press('#filter', 'Enter');
    await page.waitForSelector('#filter-error:not([hidden])', { timeout: 1000 });
    await page.press('#filter', 'Escape');
    await page.waitForFunction(() => document.querySelectorAll('.row[data-thing]').length === 4, null, { timeout: 2000 });
  });

  await step('the tree is usable by keyboard', async () => {
    await page.click('h1');
    await page.keyboard.press('/');
    eq(await page.evaluate(() => document.activeElement.id), 'filter', '/ focuses the filter');
    await page.keyboard.press('ArrowDown');
    eq(await page.evaluate(() => document.activeElement.dataset.key), 'garage', 'ArrowDown enters the tree');
    for (let i = 0; i < 10; i++) {
      if ((await page.evaluate(() => document.activeElement.dataset.thing)) === 'kitchen/lamp') break;
      await page.keyboard.press('ArrowDown');
    }
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('.value-title')?.textContent === 'kitchen/lamp', null, { timeout: 2000 });
    await page.keyboard.press('ArrowLeft');
    eq(await page.evaluate(() => document.activeElement.dataset.key), 'kitchen', 'ArrowLeft goes to the parent level');
    await page.keyboard.press('ArrowLeft');
    await page.waitForSelector(row('kitchen/lamp'), { state: 'detached', timeout: 1000 });
    eq(await page.$eval('.row[data-key="kitchen"]', (r) => r.getAttribute('aria-expanded')), 'false', 'collapsed');
    await page.keyboard.press('ArrowRight');
    await page.waitForSelector(row('kitchen/lamp'), { timeout: 1000 });
    eq(await page.$$eval('.row[tabindex="0"]', (r) => r.length), 1, 'one row in the tab order (roving tabindex)');
  });

  await step('copyable commands name this server\'s ports, and work', async () => {
    await page.click(row('kitchen/temperature'));
    await page.waitForSelector('li[data-command="curl GET"]', { timeout: 2000 });
    const command = (label) => page.$eval(`li[data-command="${label}"] code`, (c) => c.textContent);
    const get = await command('curl GET');
    eq(get, `curl ${cfg.base}/resources/kitchen/temperature`, 'curl GET');
    eq(await ok('sh', ['-c', get]), '25', 'what the curl command prints');
    const coap = await command('coap-client GET');
    eq(coap, `coap-client-notls -m get coap://127.0.0.1:${cfg.coap_port}/r/kitchen/temperature`, 'coap-client GET');
    eq((await ok('sh', ['-c', coap])).trim(), '25', 'what coap-client prints');
    const sub = await command('mosquitto_sub');
    eq(sub, `mosquitto_sub -h 127.0.0.1 -p ${cfg.mqtt_port} -t kitchen/temperature -v`, 'mosquitto_sub');
    eq((await ok('sh', ['-c', `${sub} -C 1 -W 5`])).trim(), 'kitchen/temperature 25', 'what mosquitto_sub prints');
    const observe = await command('coap-client observe');
    assert(observe.startsWith('coap-client-notls -s 60 coap://127.0.0.1:'), observe);
    const put = await command('curl PUT');
    eq(put, `curl -X PUT -H 'Content-Type: text/plain' --data-binary 25 ${cfg.base}/resources/kitchen/temperature`, 'curl PUT');
    await page.click('li[data-command="mosquitto_pub"] button.copy');
    await page.waitForFunction(() => document.querySelector('li[data-command="mosquitto_pub"] button.copy').textContent === 'Copied', null, { timeout: 1000 });
    eq(await page.evaluate(() => navigator.clipboard.readText()), await command('mosquitto_pub'), 'the clipboard holds the command');
  });

  await step('the status strip shows connections, rates, retained values and uptime', async () => {
    await page.waitForFunction(() => {
      const v = (k) => document.querySelector(`[data-stat=${k}] b`)?.textContent;
      return Number(v('retained')) >= 4 && Number(v('sse')) >= 1 && /\d/.test(v('in')) && /\d+ (s|min)/.test(v('uptime'));
    }, null, { timeout: 6000 });
    const text = await page.$eval('#status', (s) => s.textContent);
    assert(/\d MQTT/.test(text) && /\d CoAP/.test(text) && /\d+ retained/.test(text), text);
  });

  await step('MQTT.js over WebSocket at /mqtt from the page, received by mosquitto_sub', async () => {
    const bundle = fs.readFileSync(path.join(here, '../mqttjs/node_modules/mqtt/dist/mqtt.min.js'), 'utf8');
    const sub = watchProcess('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-t', 'browser/hello', '-v', '-d', '-C', '1']);
    try {
      await sub.waitFor(/SUBACK/);
      // The browser bundle declares `var mqtt`; evaluated from here (the page's CSP
      // rightly refuses inline script) it is published as window.mqtt.
      await page.evaluate(`${bundle}\n;window.mqtt = mqtt;`);
      await page.evaluate(() => new Promise((resolve, reject) => {
        const client = window.mqtt.connect(`ws://${location.host}/mqtt`, { clientId: 'explorer-page', reconnectPeriod: 0, timerVariant: 'native' });
        const timer = setTimeout(() => reject(new Error('no PUBACK within 5 s')), 5000);
        client.on('error', (e) => reject(e));
        client.on('connect', () => {
          client.publish('browser/hello', 'hello from the page', { qos: 1, retain: true }, (err) => {
            clearTimeout(timer);
            client.end();
            if (err) reject(err);
            else resolve();
          });
        });
      }));
      await sub.waitFor(/browser\/hello hello from the page/);
      // The page's own stream saw the retained publish too.
      await previewIs(page, 'browser/hello', 'hello from the page');
    } finally {
      sub.kill();
    }
  });

  await step('no console errors while using the page', async () => {
    eq(watch.errors.length, 0, `console errors: ${watch.errors.join(' | ')}`);
  });

  await step('a phone-sized screen shows the tree, then the value, without sideways scrolling', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    phone.setDefaultTimeout(5000);
    const p = await phone.newPage();
    const w = consoleWatch(p);
    await p.goto(`${cfg.base}/`);
    await p.waitForSelector(row('kitchen/lamp'), { timeout: 5000 });
    eq(await p.$$eval('.row.flash', (r) => r.length), 0, 'values already there do not flash when the page opens');
    eq(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal overflow');
    await p.tap(row('kitchen/lamp'));
    await p.waitForSelector('.current .json', { timeout: 2000 });
    eq(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal overflow with a value open');
    await shot(p, 'phone');
    eq(w.errors.length, 0, `console errors: ${w.errors.join(' | ')}`);
    await phone.close();
  });

  await page.click(row('kitchen/lamp'));
  await page.waitForSelector('.current .json', { timeout: 2000 });
  await shot(page, 'tree');
  await browser.close();
}

// ---------------------------------------------------------------------------------------

async function auth() {
  const browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  context.setDefaultTimeout(5000);
  const page = await context.newPage();
  current = page;
  const watch = consoleWatch(page);
  const unauthenticated = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if ((u.pathname.startsWith('/resources') || u.pathname === '/metrics') && !r.headers().authorization) unauthenticated.push(u.pathname);
  });

  const signIn = async (p, user, password, remember = false) => {
    await p.waitForSelector('#login[open]', { timeout: 5000 });
    await p.check('#login input[value=password]');
    await p.fill('#login-user', user);
    await p.fill('#login-pass', password);
    if (remember) await p.check('#login-remember');
    await p.click('#login-submit');
  };

  await step('without credentials the page asks for them and shows nothing', async () => {
    await page.goto(`${cfg.base}/`);
    await page.waitForSelector('#login[open]', { timeout: 5000 });
    eq(await page.$$eval('.row', (r) => r.length), 0, 'rows');
    await shot(page, 'login');
    eq(unauthenticated.length, 0, `requests without credentials: ${unauthenticated}`);
  });

  await step('a wrong password is refused with the server\'s detail', async () => {
    watch.expect(/status of 401/);
    await signIn(page, 'alice', 'not her password');
    await page.waitForFunction(() => /^401 Unauthorized: /.test(document.querySelector('#login-error').textContent), null, { timeout: 3000 });
    watch.done();
  });

  await step('alice signs in and sees only her things', async () => {
    await signIn(page, 'alice', cfg.users.alice);
    await page.waitForSelector(row('alice/door'), { timeout: 3000 });
    await page.waitForSelector('#live[data-state=live]', { timeout: 3000 });
    eq(await page.$eval('#who', (w) => w.textContent), 'signed in as alice', 'who');
    // Writes by others: alice's arrive, bob's never.
    await ok('curl', ['-sS', '--fail-with-body', '-u', `bob:${cfg.users.bob}`, '-X', 'PUT', '--data', 'shut', url('bob/window')]);
    await ok('curl', ['-sS', '--fail-with-body', '-u', `alice:${cfg.users.alice}`, '-X', 'PUT', '--data', 'locked', url('alice/door')]);
    await previewIs(page, 'alice/door', 'locked');
    const text = await page.evaluate(() => document.body.innerText);
    assert(!text.includes('bob') && !text.includes('carol') && !text.includes('window'), `nothing of bob's or carol's: ${text}`);
    eq(JSON.stringify(await page.$$eval('.row[data-thing]', (rs) => rs.map((r) => r.dataset.thing))), '["alice/door"]', 'things shown');
    await page.waitForFunction(() => Number(document.querySelector('[data-stat=retained] b').textContent) >= 3, null, { timeout: 5000 });
    eq(unauthenticated.length, 0, `requests without credentials: ${unauthenticated}`);
  });

  await step('a write outside the grant shows 403 with its detail', async () => {
    watch.expect(/status of 403/);
    await page.fill('#w-thing', 'bob/window');
    await page.fill('#w-value', 'open');
    await page.click('#w-put');
    await page.waitForFunction(() => /^403 Forbidden: .*bob\/window/.test(document.querySelector('#w-result').textContent), null, { timeout: 2000 });
    watch.done();
  });

  await step('credentials are kept for the session only, unless "remember" is ticked', async () => {
    const stored = await page.evaluate(() => [sessionStorage.length, localStorage.length]);
    eq(JSON.stringify(stored), '[1,0]', 'session storage only');
    await page.reload();
    await page.waitForSelector(row('alice/door'), { timeout: 3000 });
    eq(await page.$eval('#login', (d) => d.open), false, 'no question after a reload (same session)');
    const other = await context.newPage();
    await other.goto(`${cfg.base}/`);
    await signIn(other, 'alice', cfg.users.alice, true);
    await other.waitForSelector(row('alice/door'), { timeout: 3000 });
    eq(await other.evaluate(() => localStorage.length), 1, 'remembered');
    const third = await context.newPage();
    await third.goto(`${cfg.base}/`);
    await third.waitForSelector(row('alice/door'), { timeout: 3000 });
    await third.click('#signout');
    await third.waitForSelector('#login[open]', { timeout: 2000 });
    eq(JSON.stringify(await third.evaluate(() => [sessionStorage.length, localStorage.length])), '[0,0]', 'signing out forgets');
    await other.close();
    await third.close();
    const fresh = await browser.newContext();
    const p = await fresh.newPage();
    await p.goto(`${cfg.base}/`);
    await p.waitForSelector('#login[open]', { timeout: 5000 });
    await fresh.close();
  });

  await step('a bearer token works too, and shows only what it may read', async () => {
    await page.click('#signout');
    await page.waitForSelector('#login[open]', { timeout: 2000 });
    await page.check('#login input[value=token]');
    await page.fill('#login-jwt', cfg.token);
    await page.click('#login-submit');
    await page.waitForSelector(row('carol/lamp'), { timeout: 3000 });
    eq(JSON.stringify(await page.$$eval('.row[data-thing]', (rs) => rs.map((r) => r.dataset.thing))), '["carol/lamp"]', 'things shown');
    eq(await page.$eval('#who', (w) => w.textContent), 'signed in as bearer token', 'who');
    eq(unauthenticated.length, 0, `requests without credentials: ${unauthenticated}`);
  });

  await step('no console errors beyond the refusals asked for', async () => {
    eq(watch.errors.length, 0, `console errors: ${watch.errors.join(' | ')}`);
  });
  await browser.close();
}

const scenarios = { open, auth };
if (!scenarios[scenario]) {
  console.log(`not ok scenario: unknown scenario ${scenario}`);
  process.exit(2);
}
try {
  await scenarios[scenario]();
} catch (e) {
  failed += 1;
  console.log(`not ok ${scenario} (aborted): ${(e && e.stack) || e}`);
}
console.log(failed ? `${failed} step(s) failed` : 'all steps passed');
process.exit(failed ? 1 : 0);
