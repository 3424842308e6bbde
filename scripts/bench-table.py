#!/usr/bin/env python3
"""bench-table: turn bench-compare's results.jsonl into the all-results table and the table
of issue 6's targets (ratio to the peer measured in the same run, PASS/MISS)."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["target"], r["scenario"]): r for r in rows}


def get(t, s):
    return by.get((t, s))


def thr(t, s):
    r = get(t, s)
    return r and r.get("delivered_per_s")


def p99(t, s):
    r = get(t, s)
    return r and (r.get("latency") or {}).get("p99_us")


print("All results (throughput = deliveries or answers per second; latency end to end)")
print("%-26s %-11s %12s %9s %9s %9s %14s %s" % ("scenario", "target", "per s", "p50 us", "p99 us", "p99.9 us", "peak RSS MiB", "status"))
for r in rows:
    l = r.get("latency") or {}
    rss = r.get("server_peak_rss_kib")
    print("%-26s %-11s %12.0f %9.0f %9.0f %9.0f %14s %s" % (
        r["scenario"], r["target"], r.get("delivered_per_s") or 0, l.get("p50_us", 0), l.get("p99_us", 0),
        l.get("p999_us", 0), "%.1f" % (rss / 1024) if rss else "-",
        "ok" if r.get("ok") else "FAIL " + str(r.get("failure"))))

print()
print("Targets (issue 6)")
print("%-44s %12s %12s %8s %8s  %s" % ("target", "ponte", "peer", "ratio", "goal", "verdict"))


def line(label, a, b, goal, higher=True, fmt="%12.0f"):
    if a is None or b is None or b == 0:
        print("%-44s %12s %12s %8s %8s  %s" % (label, a if a is not None else "-", b if b is not None else "-", "-", goal, "NOT MEASURED"))
        return
    ratio = a / b
    ok = ratio >= goal if higher else ratio <= goal
    print(("%-44s " + fmt + " " + fmt + " %8.2f %8s  %s") % (label, a, b, ratio, ("≥" if higher else "≤") + str(goal), "PASS" if ok else "MISS"))


for s in ("mqtt-1to1-qos0", "mqtt-1to1-qos1", "mqtt-1to100-qos1", "mqtt-100to1-qos1"):
    line(s + " msg/s vs mosquitto", thr("ponte", s), thr("mosquitto", s), 1.5)
for s in ("mqtt-1to1-qos0-10k", "mqtt-1to1-qos1-10k"):
    line(s + " p99 us vs mosquitto", p99("ponte", s), p99("mosquitto", s), 1.0, higher=False)
for s in ("mqtt-1to1-qos0", "mqtt-1to1-qos1", "mqtt-1to100-qos1", "mqtt-100to1-qos1"):
    line(s + "-pinned vs mosquitto", thr("ponte", s + "-pinned"), thr("mosquitto", s + "-pinned"), 1.0)
idle = get("ponte", "mqtt-idle")
if idle:
    ex = idle.get("extra") or {}
    print("%-44s %12s %12s %8s %8s  %s" % (
        "idle: %s conns held, projected 50k MiB" % idle.get("delivered"), ex.get("projected_50k_mib", "-"),
        "%s B/conn" % ex.get("bytes_per_connection", "-"), "-", "<500", "PASS" if ex.get("projected_50k_mib", 1e9) < 500 and idle.get("ok") else "MISS"))
    mq = get("mosquitto", "mqtt-idle")
    if mq:
        print("%-44s %12s %12s" % ("  mosquitto bytes/conn (same run)", "", (mq.get("extra") or {}).get("bytes_per_connection", "-")))
for eng in ("ponte", "ponte-sled"):
    for s in ("wrk-http-get", "wrk-http-put", "coap-get", "coap-put"):
        line("%s %s vs original Ponte" % (eng, s), thr(eng, s), thr("ponte-orig", s), 5.0)
for eng in ("ponte", "ponte-sled"):
    r = get(eng, "http-mqtt-10k")
    if r:
        rate = r.get("sent_per_s", 0)
        v = p99(eng, "http-mqtt-10k")
        verdict = "PASS" if v is not None and v < 2000 and rate >= 9500 and r.get("ok") else "MISS"
        print("%-44s %12.0f %12s %8s %8s  %s (PUT rate reached %.0f/s)" % (eng + " HTTP PUT->MQTT p99 us @10k/s", v or 0, "", "", "<2000", verdict, rate))
line("retained QoS1 msg/s sled vs --memory", thr("ponte-sled", "mqtt-10to1-qos1-retain"), thr("ponte", "mqtt-10to1-qos1-retain"), 0.5)
fails = [r for r in rows if not r.get("ok")]
print()
print("%d of %d runs ok%s" % (len(rows) - len(fails), len(rows), "" if not fails else "; failed: " + ", ".join("%s/%s" % (r["target"], r["scenario"]) for r in fails)))
