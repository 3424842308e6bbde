#!/usr/bin/env bash
# A walkthrough with the tools our users already have: curl, mosquitto_sub/pub and
# coap-client-notls (apt-get install -y curl mosquitto-clients libcoap3-bin).
# Start the gateway first:  cargo run --release
# then run:                 bash examples/walkthrough.sh
#
# Where the gateway is (these are the script's variables, not ponte's configuration):
#   WALK_HTTP       http://127.0.0.1:3000     the HTTP base URL
#   WALK_COAP       coap://127.0.0.1:5683     the CoAP base URI
#   WALK_MQTT_HOST  127.0.0.1                 the MQTT broker's host
#   WALK_MQTT_PORT  1883                      the MQTT broker's port
set -euo pipefail
H=${WALK_HTTP:-http://127.0.0.1:3000}
C=${WALK_COAP:-coap://127.0.0.1:5683}
M_HOST=${WALK_MQTT_HOST:-127.0.0.1}
M_PORT=${WALK_MQTT_PORT:-1883}

if ! curl -s -o /dev/null --max-time 3 "$H/livez"; then
  echo "walkthrough: nothing answers at $H -- is ponte running? (cargo run --release, or set WALK_HTTP)" >&2
  exit 1
fi

echo "# an MQTT subscriber watches everything in the kitchen"
mosquitto_sub -h "$M_HOST" -p "$M_PORT" -t 'kitchen/#' -v -F '%t %p (retain=%r qos=%q)' -W 10 &
SUB=$!
sleep 0.5

echo "# a curl script writes a value (201 the first time, 204 after)"
curl -si -X PUT -H 'Content-Type: text/plain' --data '21.5' "$H/resources/kitchen/temperature" | head -1

echo "# a CoAP device reads it, with its Content-Format and ETag"
coap-client-notls -v 6 -m get "$C/r/kitchen/temperature" 2>&1 | grep -E 't:(ACK|CON|NON)' || true

echo "# a CoAP device writes; HTTP reads it back"
coap-client-notls -m put -t 0 -e '22.0' "$C/r/kitchen/temperature"
curl -s "$H/resources/kitchen/temperature"; echo

echo "# an MQTT client publishes a retained value; HTTP and CoAP read it"
mosquitto_pub -h "$M_HOST" -p "$M_PORT" -t kitchen/humidity -m 40 -r -q 1
curl -s "$H/resources/kitchen/humidity"; echo
coap-client-notls -m get "$C/r/kitchen/humidity"; echo

echo "# DELETE clears it for every protocol"
curl -si -X DELETE "$H/resources/kitchen/humidity" | head -1
coap-client-notls -m get "$C/r/kitchen/humidity" 2>&1 || true

kill "$SUB" 2>/dev/null || true
