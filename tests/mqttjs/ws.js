// MQTT.js over WebSocket against ponte: subscribe to ws/#, publish a retained QoS 1 message,
// print every message received as one JSON line, exit 0 after `want` messages.
// usage: node ws.js ws://127.0.0.1:PORT/mqtt WANT
const mqtt = require('mqtt');
const [url, wantArg] = process.argv.slice(2);
const want = Number(wantArg || 1);
const client = mqtt.connect(url, { protocolVersion: 4, clientId: 'mqttjs-' + process.pid, reconnectPeriod: 0 });
let got = 0;
let done = false;
client.on('connect', (ack) => {
  console.log(JSON.stringify({ event: 'connect', sessionPresent: ack.sessionPresent }));
  client.subscribe('ws/#', { qos: 1 }, (err, granted) => {
    if (err) { console.error('subscribe failed', err.message); process.exit(2); }
    console.log(JSON.stringify({ event: 'suback', granted }));
    client.publish('ws/from-js', 'hello from mqtt.js', { qos: 1, retain: true }, (err) => {
      if (err) { console.error('publish failed', err.message); process.exit(2); }
      console.log(JSON.stringify({ event: 'puback' }));
    });
  });
});
client.on('message', (topic, payload, packet) => {
  console.log(JSON.stringify({ event: 'message', topic, payload: payload.toString(), retain: packet.retain, qos: packet.qos }));
  got += 1;
  if (got >= want && !done) {
    done = true;
    // MQTT.js acknowledges after this handler returns: let the PUBACK out before DISCONNECT.
    setTimeout(() => client.end(false, {}, () => process.exit(0)), 50);
  }
});
client.on('error', (e) => {
  if (done) { process.exit(0); }
  console.error('error', e.message); process.exit(1);
});
setTimeout(() => { console.error('timeout after', got, 'messages'); process.exit(3); }, 8000);
