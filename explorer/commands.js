// Copyable commands for the selected thing, with this server's real host and ports:
// curl (GET, PUT, SSE), mosquitto_sub / mosquitto_pub, coap-client-notls (GET, observe).
// Passwords and tokens are never written into a command: curl asks for the password,
// the others read it from a variable the user sets.

import { el, shq, topicPath } from './util.js';

/** The host a client should use for `listener` ({ip, port} from server.json): the host
 * this page was loaded from when the listener is on every address or the same one as
 * HTTP, else its own address. */
function hostOf(server, listener) {
  const ip = listener?.ip;
  if (!ip || ip === server.http.ip) return location.hostname.replace(/^\[|\]$/g, '');
  return ip;
}

/** `host` as written in a URL (IPv6 in brackets). */
function urlHost(host) {
  return host.includes(':') ? `[${host}]` : host;
}

/** The commands for `thing` as [label, command] pairs. `sample` is a value to write;
 * `who` is {kind, user} or null. */
export function commands(server, thing, { ct, sample, who }) {
  const url = `${location.origin}/resources/${topicPath(thing)}`;
  const curlAuth = who?.kind === 'basic' ? ` -u ${shq(who.user)}` : who?.kind === 'bearer' ? ' -H "Authorization: Bearer $PONTE_TOKEN"' : '';
  const mqttAuth = who?.kind === 'basic' ? ` -u ${shq(who.user)} -P "$PONTE_PASSWORD"` : '';
  const mqttHost = hostOf(server, server.mqtt);
  const coapHost = urlHost(hostOf(server, server.coap));
  const coapUrl = `coap://${coapHost}:${server.coap.port}/r/${topicPath(thing)}`;
  const value = shq(sample);
  const list = [
    ['curl GET', `curl${curlAuth} ${shq(url)}`],
    ['curl PUT', `curl${curlAuth} -X PUT -H ${shq(`Content-Type: ${ct}`)} --data-binary ${value} ${shq(url)}`],
    ['curl follow (SSE)', `curl -N${curlAuth} -H 'Accept: text/event-stream' ${shq(url)}`],
    ['mosquitto_sub', `mosquitto_sub -h ${shq(mqttHost)} -p ${server.mqtt.port}${mqttAuth} -t ${shq(thing)} -v`],
    ['mosquitto_pub', `mosquitto_pub -h ${shq(mqttHost)} -p ${server.mqtt.port}${mqttAuth} -t ${shq(thing)} -m ${value} -r -q 1`],
    ['coap-client GET', `coap-client-notls -m get ${shq(coapUrl)}`],
    ['coap-client observe', `coap-client-notls -s 60 ${shq(coapUrl)}`],
  ];
  if (server.mqtts) {
    list.push(['mosquitto_sub (TLS)', `mosquitto_sub --cafile ca.pem -h ${shq(hostOf(server, server.mqtts))} -p ${server.mqtts.port}${mqttAuth} -t ${shq(thing)} -v`]);
  }
  if (server.coaps && who?.kind === 'basic') {
    const coaps = `coaps://${urlHost(hostOf(server, server.coaps))}:${server.coaps.port}/r/${topicPath(thing)}`;
    list.push(['coap-client (DTLS)', `coap-client-openssl -u ${shq(who.user)} -k "$PONTE_PSK" ${shq(coaps)}`]);
  }
  return list;
}

/** Draw the commands into `root`. */
export function renderCommands(root, server, thing, options) {
  root.replaceChildren();
  if (!thing) return;
  root.append(el('h3', { text: 'Commands' }));
  const list = el('ul', { class: 'commands' });
  for (const [label, command] of commands(server, thing, options)) {
    const code = el('code', { text: command });
    const button = el('button', {
      type: 'button',
      class: 'copy',
      text: 'Copy',
      'aria-label': `Copy the ${label} command`,
      on: { click: () => copy(command, button) },
    });
    list.append(el('li', { dataset: { command: label } }, el('span', { class: 'label', text: label }), code, button));
  }
  root.append(list);
  const who = options.who;
  if (who?.kind === 'basic') {
    root.append(el('p', { class: 'hint', text: 'curl asks for the password; set PONTE_PASSWORD for the MQTT commands.' }));
  } else if (who?.kind === 'bearer') {
    root.append(el('p', { class: 'hint', text: 'Set PONTE_TOKEN to your token first.' }));
  }
}

/** Put `text` on the clipboard (the Clipboard API where the page is a secure context,
 * else a selected text area and the copy command) and say so on `button`. */
async function copy(text, button) {
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      ok = true;
    }
  } catch {
    ok = false;
  }
  if (!ok) {
    const area = el('textarea', { class: 'offscreen', readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
  }
  button.textContent = ok ? 'Copied' : 'Select and copy';
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}
