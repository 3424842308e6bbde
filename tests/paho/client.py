#!/usr/bin/env python3
"""paho-mqtt (2.x) clients driven by tests/paho.rs, one scenario per invocation.

Usage: client.py SCENARIO HOST PORT; prints JSON objects, one per line, on stdout and exits 0,
or prints a diagnostic on stderr and exits 1 (exit 3: paho-mqtt is not installed). Every
wait is bounded. Clients use the VERSION2 callback API and MQTT 5 unless noted.

Scenarios (what each prints):
  request_response  a responder subscribed to rr/req answers a request carrying Response
                    Topic + Correlation Data: {"event": "request", ...} as the responder saw
                    it, then {"event": "response", ...} as the requester saw the answer
  user_properties   {"event": "message", "user_properties": [[k, v], ...]} as received
  subscription_ids  one client subscribed to sid/+ (id 1) and sid/# (id 2):
                    {"event": "message", "ids": [...]} per copy, then {"event": "done"}
  shared            two members of $share/g/sh/t, 20 QoS 1 messages:
                    {"event": "done", "a": [payloads], "b": [payloads]}
  topic_alias       a publisher sets Topic Alias 1 for ta/t, then publishes with the alias
                    only: {"event": "message", "topic", "payload"} per message received
  content_type      publishes T=ct/paho retained, QoS 1, Content Type application/cbor:
                    {"event": "published"} once acknowledged
  v311_receives_v5  a 3.1.1 client subscribed to x/v5 receives a v5 publish with properties:
                    {"event": "message", "topic", "payload", "qos"}
  diagnostics       a client with Request Response Information 1 prints its CONNACK
                    {"event": "connack", "response_information"}, subscribes to ok/# and
                    to deep/a/b/c/# (run against max_topic_levels = 3, so refused)
                    {"event": "suback", "codes", "reason_string"},
                    and publishes QoS 1 where nobody listens {"event": "puback", "code"}
"""

import json
import queue
import sys
import threading
import time

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError:  # the Rust test decides between SKIP and failure
    print("paho-mqtt is not installed", file=sys.stderr)
    sys.exit(3)

TIMEOUT = 10
QUIET = 0.7


def emit(obj):
    print(json.dumps(obj), flush=True)


class Peer:
    """One paho client on its own network thread; received messages go to a queue."""

    def __init__(self, host, port, name, protocol=mqtt.MQTTv5, connect_props=None):
        self.name = name
        self.v5 = protocol == mqtt.MQTTv5
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"paho-{name}-{time.time_ns()}",
                                  protocol=protocol)
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.acks = {}
        self.ack_props = {}
        self.connack_props = None
        self.lock = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = self._on_ack
        self.client.on_publish = self._on_publish
        if self.v5:
            self.client.connect(host, port, keepalive=30, clean_start=True,
                                properties=connect_props)
        else:
            self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise RuntimeError(f"{name}: no CONNACK")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"{self.name}: CONNACK {reason_code}", file=sys.stderr)
        else:
            self.connack_props = properties
            self.connected.set()

    def _on_ack(self, client, userdata, mid, reason_codes, properties):
        with self.lock:
            self.acks[mid] = reason_codes
            self.ack_props[mid] = properties
            self.lock.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.acks[mid] = reason_code
            self.ack_props[mid] = properties
            self.lock.notify_all()

    def wait_ack(self, mid):
        with self.lock:
            if not self.lock.wait_for(lambda: mid in self.acks, TIMEOUT):
                raise RuntimeError(f"{self.name}: no acknowledgement for mid {mid}")
            return self.acks.pop(mid)

    def subscribe(self, topic, qos=1, sub_id=None):
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        if self.v5:
            rc, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=qos),
                                            properties=props)
        else:
            rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"{self.name}: subscribe {topic}: {rc}")
        codes = self.wait_ack(mid)
        for c in codes:
            if getattr(c, "is_failure", False) or c == 0x80:
                raise RuntimeError(f"{self.name}: subscribe {topic} refused: {c}")

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            rc = self.wait_ack(info.mid)
            if getattr(rc, "is_failure", False):
                raise RuntimeError(f"{self.name}: publish {topic} refused: {rc}")
        else:
            info.wait_for_publish(TIMEOUT)

    def next(self, timeout=TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def props_of(msg):
    p = getattr(msg, "properties", None)
    out = {}
    if p is None:
        return out
    if hasattr(p, "ResponseTopic"):
        out["response_topic"] = p.ResponseTopic
    if hasattr(p, "CorrelationData"):
        out["correlation_data"] = p.CorrelationData.hex()
    if hasattr(p, "UserProperty"):
        out["user_properties"] = [list(kv) for kv in p.UserProperty]
    if hasattr(p, "SubscriptionIdentifier"):
        out["ids"] = sorted(p.SubscriptionIdentifier)
    if hasattr(p, "ContentType"):
        out["content_type"] = p.ContentType
    return out


def pub_props(**kw):
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def request_response(host, port):
    responder = Peer(host, port, "responder")
    requester = Peer(host, port, "requester")
    responder.subscribe("rr/req")
    requester.subscribe("rr/resp/requester")
    corr = bytes([0, 1, 0xFE, 0xFF]) + b"corr"
    requester.publish("rr/req", b"ping",
                      props=pub_props(ResponseTopic="rr/resp/requester",
                                      CorrelationData=corr))
    req = responder.next()
    if req is None:
        raise RuntimeError("responder got no request")
    seen = props_of(req)
    emit({"event": "request", "topic": req.topic, "payload": req.payload.decode(), **seen})
    reply = pub_props(CorrelationData=req.properties.CorrelationData)
    responder.publish(req.properties.ResponseTopic, b"pong", props=reply)
    resp = requester.next()
    if resp is None:
        raise RuntimeError("requester got no response")
    emit({"event": "response", "topic": resp.topic, "payload": resp.payload.decode(),
          **props_of(resp)})
    responder.close()
    requester.close()


def user_properties(host, port):
    sub = Peer(host, port, "sub")
    pub = Peer(host, port, "pub")
    sub.subscribe("up/t")
    p = pub_props()
    p.UserProperty = ("a", "1")
    p.UserProperty = ("b", "2")
    p.UserProperty = ("a", "3")
    p.UserProperty = ("z", "\u00e9\u00e8")
    pub.publish("up/t", b"x", props=p)
    m = sub.next()
    if m is None:
        raise RuntimeError("no message")
    emit({"event": "message", **props_of(m)})
    sub.close()
    pub.close()


def subscription_ids(host, port):
    sub = Peer(host, port, "sub")
    pub = Peer(host, port, "pub")
    sub.subscribe("sid/+", sub_id=1)
    sub.subscribe("sid/#", sub_id=2)
    pub.publish("sid/x", b"one")
    m = sub.next()
    while m is not None:
        emit({"event": "message", "topic": m.topic, "ids": props_of(m).get("ids", [])})
        m = sub.next(QUIET)
    emit({"event": "done"})
    sub.close()
    pub.close()


def shared(host, port):
    a = Peer(host, port, "a")
    b = Peer(host, port, "b")
    pub = Peer(host, port, "pub")
    a.subscribe("$share/g/sh/t")
    b.subscribe("$share/g/sh/t")
    n = 20
    for i in range(n):
        pub.publish("sh/t", str(i).encode())
    got = {"a": [], "b": []}
    deadline = time.monotonic() + TIMEOUT
    while len(got["a"]) + len(got["b"]) < n and time.monotonic() < deadline:
        for name, peer in (("a", a), ("b", b)):
            m = peer.next(0.05)
            if m is not None:
                got[name].append(m.payload.decode())
    # Anything more would be a duplicate.
    time.sleep(QUIET)
    for name, peer in (("a", a), ("b", b)):
        m = peer.next(0.01)
        while m is not None:
            got[name].append(m.payload.decode())
            m = peer.next(0.01)
    emit({"event": "done", **got})
    for p in (a, b, pub):
        p.close()


def topic_alias(host, port):
    sub = Peer(host, port, "sub")
    pub = Peer(host, port, "pub")
    sub.subscribe("ta/t")
    pub.publish("ta/t", b"first", props=pub_props(TopicAlias=1))
    pub.publish("", b"second", props=pub_props(TopicAlias=1))
    pub.publish("", b"third", props=pub_props(TopicAlias=1), qos=0)
    for _ in range(3):
        m = sub.next()
        if m is None:
            break
        emit({"event": "message", "topic": m.topic, "payload": m.payload.decode()})
    sub.close()
    pub.close()


def content_type(host, port):
    pub = Peer(host, port, "pub")
    pub.publish("ct/paho", b"\xa1\x61\x61\x01", retain=True,
                props=pub_props(ContentType="application/cbor"))
    emit({"event": "published"})
    pub.close()


def v311_receives_v5(host, port):
    sub = Peer(host, port, "v311", protocol=mqtt.MQTTv311)
    pub = Peer(host, port, "v5")
    sub.subscribe("x/v5")
    p = pub_props(ContentType="text/plain", ResponseTopic="x/back",
                  CorrelationData=b"c", MessageExpiryInterval=60)
    p.UserProperty = ("k", "v")
    pub.publish("x/v5", b"from v5", props=p)
    m = sub.next()
    if m is None:
        raise RuntimeError("v3.1.1 client got nothing")
    emit({"event": "message", "topic": m.topic, "payload": m.payload.decode(), "qos": m.qos})
    sub.close()
    pub.close()


def diagnostics(host, port):
    props = Properties(PacketTypes.CONNECT)
    props.RequestResponseInformation = 1
    c = Peer(host, port, "diag", connect_props=props)
    emit({"event": "connack",
          "response_information": getattr(c.connack_props, "ResponseInformation", None)})
    rc, mid = c.client.subscribe([("ok/#", SubscribeOptions(qos=1)),
                                  ("deep/a/b/c/#", SubscribeOptions(qos=1))])
    if rc != mqtt.MQTT_ERR_SUCCESS:
        raise RuntimeError(f"subscribe: {rc}")
    codes = c.wait_ack(mid)
    emit({"event": "suback", "codes": [c.value for c in codes],
          "reason_string": getattr(c.ack_props.get(mid), "ReasonString", None)})
    info = c.client.publish("nobody/listens", b"x", qos=1)
    code = c.wait_ack(info.mid)
    emit({"event": "puback", "code": code.value, "name": str(code)})
    c.close()


SCENARIOS = {f.__name__: f for f in (request_response, user_properties, subscription_ids,
                                     shared, topic_alias, content_type, v311_receives_v5,
                                     diagnostics)}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in SCENARIOS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        SCENARIOS[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
    except Exception as e:  # noqa: BLE001 - reported to the Rust test
        print(f"{sys.argv[1]} failed: {e!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
