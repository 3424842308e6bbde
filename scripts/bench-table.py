#!/usr/bin/env python3
"""bench-table: turn bench-compare's results.jsonl into the all-results table and the table
of targets (issues 6 and 16: ratio to the peer or ceiling measured in the same run,
PASS/MISS). Scenarios measured in several alternating rounds (HTTP, CoAP) are compared on
the mean of their rounds; each round is listed in the all-results table."""
import json
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for r in rows:
    by[(r["target"], r["scenario"])].append(r)


def get(t, s):
    rs = by.get((t, s))
    return rs[0] if rs else None


def thr(t, s):
    rs = [r for r in by.get((t, s), []) if r.get("ok")]
    return sum(r.get("delivered_per_s") or 0 for r in rs) / len(rs) if rs else None


def p99(t, s):
    r = get(t, s)
    return r and (r.get("latency") or {}).get("p99_us")


def extra(t, s, key):
    r = get(t, s)
    return r and (r.get("extra") or {}).get(key)


print("All results (throughput = deliveries or answers per second; latency end to end)")
print("%-26s %-11s %3s %12s %9s %9s %9s %14s %s" % ("scenario", "target", "rnd", "per s", "p50 us", "p99 us", "p99.9 us", "peak RSS MiB", "status"))
for r in rows:
    l = r.get("latency") or {}
    rss = r.get("server_peak_rss_kib")
    print("%-26s %-11s %3s %12.0f %9.0f %9.0f %9.0f %14s %s" % (
        r["scenario"], r["target"], r.get("round", ""), r.get("delivered_per_s") or 0, l.get("p50_us", 0), l.get("p99_us", 0),
        l.get("p999_us", 0), "%.1f" % (rss / 1024) if rss else "-",
        "ok" if r.get("ok") else "FAIL " + str(r.get("failure"))))

print()
print("Targets (issues 6 and 16)")
print("%-50s %12s %12s %8s %8s  %s" % ("target", "ponte", "peer", "ratio", "goal", "verdict"))


def line(label, a, b, goal, higher=True, fmt="%12.0f"):
    if a is None or b is None or b == 0:
        print("%-50s %12s %12s %8s %8s  %s" % (label, "-" if a is None else "%.0f" % a, "-" if b is None else "%.0f" % b, "-", goal, "NOT MEASURED"))
        return
    ratio = a / b
    ok = ratio >= goal if higher else ratio <= goal
    print(("%-50s " + fmt + " " + fmt + " %8.2f %8s  %s") % (label, a, b, ratio, ("≥" if higher else "≤") + str(goal), "PASS" if ok else "MISS"))


for peer in ("mosquitto", "aedes"):
    for s in ("mqtt-1to1-qos0", "mqtt-1to1-qos1", "mqtt-1to100-qos1", "mqtt-100to1-qos1"):
        line("%s msg/s vs %s" % (s, peer), thr("ponte", s), thr(peer, s), 1.5)
    for s in ("mqtt-1to1-qos0-10k", "mqtt-1to1-qos1-10k"):
        line("%s p99 us vs %s" % (s, peer), p99("ponte", s), p99(peer, s), 1.0, higher=False)
    line("mqttwrk 1to1 QoS 1 msg/s vs %s" % peer, thr("ponte", "mqttwrk-1to1-qos1"), thr(peer, "mqttwrk-1to1-qos1"), 1.5)
for s in ("mqtt-1to1-qos0", "mqtt-1to1-qos1", "mqtt-1to100-qos1", "mqtt-100to1-qos1"):
    line(s + "-pinned vs mosquitto", thr("ponte", s + "-pinned"), thr("mosquitto", s + "-pinned"), 1.0)

# The HTTP ceiling (bare axum, same runtime and profile), alternating rounds.
line("HTTP GET --memory vs the axum ceiling", thr("ponte", "wrk-http-get"), thr("ceiling", "wrk-http-get"), 0.9)
line("HTTP GET sled vs the axum ceiling", thr("ponte-sled", "wrk-http-get"), thr("ceiling", "wrk-http-get"), 0.9)
line("HTTP PUT --memory vs the axum ceiling", thr("ponte", "wrk-http-put"), thr("ceiling", "wrk-http-put"), 0.75)
line("HTTP PUT sled vs the axum ceiling", thr("ponte-sled", "wrk-http-put"), thr("ceiling", "wrk-http-put"), 0.6)
line("HTTP PUT sled, periodic sync, vs the ceiling", thr("ponte-periodic", "wrk-http-put"), thr("ceiling", "wrk-http-put"), 0.6)
# CoAP against libcoap's coap-server-notls (C, in memory).
line("CoAP GET --memory vs libcoap", thr("ponte", "coap-get"), thr("libcoap", "coap-get"), 1.5)
line("CoAP GET sled vs libcoap", thr("ponte-sled", "coap-get"), thr("libcoap", "coap-get"), 1.5)
line("CoAP PUT --memory vs libcoap", thr("ponte", "coap-put"), thr("libcoap", "coap-put"), 1.5)
line("CoAP PUT sled vs libcoap", thr("ponte-sled", "coap-put"), thr("libcoap", "coap-put"), 1.0)
line("CoAP PUT sled, periodic sync, vs libcoap", thr("ponte-periodic", "coap-put"), thr("libcoap", "coap-put"), 1.0)
# The original Ponte (issue 6).
for eng in ("ponte", "ponte-sled"):
    for s in ("wrk-http-get", "wrk-http-put", "coap-get", "coap-put"):
        line("%s %s vs original Ponte" % (eng, s), thr(eng, s), thr("ponte-orig", s), 5.0)
for eng in ("ponte", "ponte-sled"):
    r = get(eng, "http-mqtt-10k")
    if r:
        rate = r.get("sent_per_s", 0)
        v = p99(eng, "http-mqtt-10k")
        verdict = "PASS" if v is not None and v < 2000 and rate >= 9500 and r.get("ok") else "MISS"
        print("%-50s %12.0f %12s %8s %8s  %s (PUT rate reached %.0f/s)" % (eng + " HTTP PUT->MQTT p99 us @10k/s", v or 0, "", "", "<2000", verdict, rate))
line("retained QoS1 msg/s sled vs --memory", thr("ponte-sled", "mqtt-10to1-qos1-retain"), thr("ponte", "mqtt-10to1-qos1-retain"), 0.5)

print()
print("Idle MQTT connections (RSS delta / connections held; linear projection)")
print("%-11s %8s %10s %14s %14s %14s" % ("server", "held", "B/conn", "50k MiB", "100k MiB", "1M MiB"))
for t in ("ponte", "mosquitto", "aedes"):
    r = get(t, "mqtt-idle")
    if not r:
        print("%-11s %8s" % (t, "NOT MEASURED"))
        continue
    ex = r.get("extra") or {}
    print("%-11s %8s %10s %14s %14s %14s%s" % (
        t, r.get("delivered"), ex.get("bytes_per_connection", "-"), ex.get("projected_50k_mib", "-"),
        ex.get("projected_100k_mib", "-"), ex.get("projected_1m_mib", "-"), "" if r.get("ok") else "  FAIL " + str(r.get("failure"))))
pi, mi = extra("ponte", "mqtt-idle", "bytes_per_connection"), extra("mosquitto", "mqtt-idle", "bytes_per_connection")
if pi is not None:
    print("%-50s %12s %12s %8s %8s  %s" % ("idle B/conn ≤ 1 KiB (floor 2 KiB)", pi, mi if mi is not None else "-", "-", "≤1024",
                                          "PASS" if pi <= 1024 else ("FLOOR" if pi <= 2048 else "MISS")))

print()
print("Under attack (the attacked ponte)")
st = get("ponte", "stall")
if st:
    ex = st.get("extra") or {}
    print("stalled readers: peak RSS %s MiB (goal < 200), %s MiB after they left, baseline %s MiB (residual %s MiB, goal < 20): %s" % (
        ex.get("rss_peak_mib", "-"), ex.get("rss_after_disconnect_mib", "-"), ex.get("rss_baseline_mib", "-"),
        ex.get("residual_mib", "-"), "ok" if st.get("ok") else "FAIL " + str(st.get("failure"))))
sb = get("ponte", "http-slow-body")
if sb:
    ex = sb.get("extra") or {}
    l = sb.get("latency") or {}
    print("slow bodies: %s/%s answered 408 and closed after %s-%s s; normal requests p50 %.1f ms p99 %.1f ms max %s ms; "
          "fds before %s peak %s after %s; peak RSS %s MiB: %s" % (
              ex.get("answered_408_and_closed"), sb.get("expected"), ex.get("closed_after_s_min"), ex.get("closed_after_s_max"),
              (l.get("p50_us") or 0) / 1e3, (l.get("p99_us") or 0) / 1e3, ex.get("normal_max_ms"),
              ex.get("fds_before"), ex.get("fds_peak"), ex.get("fds_after"),
              round((sb.get("server_peak_rss_kib") or 0) / 1024, 1), "ok" if sb.get("ok") else "FAIL " + str(sb.get("failure"))))
df = get("ponte", "dtls-hello-flood")
if df:
    ex = df.get("extra") or {}
    print("DTLS ClientHello flood: %s of %s answered with HelloVerifyRequest (%.0f/s); sessions held after: %s; "
          "a real client's handshake + PUT after: %s ms; peak RSS %s MiB: %s" % (
              ex.get("hello_verify_requests"), df.get("sent"), df.get("delivered_per_s") or 0, ex.get("sessions_after_flood"),
              ex.get("client_ms"), round((df.get("server_peak_rss_kib") or 0) / 1024, 1),
              "ok" if df.get("ok") else "FAIL " + str(df.get("failure"))))

fails = [r for r in rows if not r.get("ok")]
print()
print("%d of %d runs ok%s" % (len(rows) - len(fails), len(rows), "" if not fails else "; failed: " + ", ".join("%s/%s" % (r["target"], r["scenario"]) for r in fails)))
