#!/usr/bin/env python3
"""aiocoap client driven by tests/interop.rs (one scenario per invocation).

Usage: client.py SCENARIO BASE_URI [ARGS...]; prints one JSON object on stdout and exits 0,
or prints a diagnostic on stderr and exits 1. Every wait is bounded by asyncio timeouts.

Scenarios:
  block1 URI FILE    PUT the file's bytes (aiocoap uses Block1 when they exceed one block),
                     print {"code": "2.01", "location": [...]}          (TD_COAP_BLOCK_02/04)
  block2 URI         GET a large value (aiocoap follows Block2), print {"code", "len", "sha256"}
                     (TD_COAP_BLOCK_01/03)
  observe URI N      observe through the Python API, print the first N payloads (initial value
                     then notifications) as {"payloads": [...], "codes": [...]}  (TD_COAP_OBS_01)
"""

import asyncio
import hashlib
import json
import sys

try:
    import aiocoap
except ImportError:  # the Rust test decides between SKIP and failure
    print("aiocoap is not installed", file=sys.stderr)
    sys.exit(3)

TIMEOUT = 20


async def block1(uri, path):
    ctx = await aiocoap.Context.create_client_context()
    try:
        with open(path, "rb") as f:
            body = f.read()
        req = aiocoap.Message(code=aiocoap.PUT, uri=uri, payload=body,
                              content_format=42)
        resp = await asyncio.wait_for(ctx.request(req).response, TIMEOUT)
        return {"code": str(resp.code.dotted),
                "location": list(resp.opt.location_path)}
    finally:
        await ctx.shutdown()


async def block2(uri):
    ctx = await aiocoap.Context.create_client_context()
    try:
        req = aiocoap.Message(code=aiocoap.GET, uri=uri)
        resp = await asyncio.wait_for(ctx.request(req).response, TIMEOUT)
        return {"code": str(resp.code.dotted), "len": len(resp.payload),
                "sha256": hashlib.sha256(resp.payload).hexdigest()}
    finally:
        await ctx.shutdown()


async def observe(uri, n):
    ctx = await aiocoap.Context.create_client_context()
    payloads, codes = [], []
    try:
        req = aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0)
        pr = ctx.request(req)
        first = await asyncio.wait_for(pr.response, TIMEOUT)
        payloads.append(first.payload.decode("utf-8", "replace"))
        codes.append(str(first.code.dotted))
        # Tell the test we are registered: it then writes the later values.
        print("REGISTERED", file=sys.stderr, flush=True)
        obs = pr.observation.__aiter__()
        while len(payloads) < n:
            note = await asyncio.wait_for(obs.__anext__(), TIMEOUT)
            payloads.append(note.payload.decode("utf-8", "replace"))
            codes.append(str(note.code.dotted))
        pr.observation.cancel()
        return {"payloads": payloads, "codes": codes}
    finally:
        await ctx.shutdown()


def main():
    scenario, uri, *rest = sys.argv[1:]
    if scenario == "block1":
        out = block1(uri, rest[0])
    elif scenario == "block2":
        out = block2(uri)
    elif scenario == "observe":
        out = observe(uri, int(rest[0]))
    else:
        print(f"unknown scenario {scenario}", file=sys.stderr)
        sys.exit(2)
    try:
        print(json.dumps(asyncio.run(out)), flush=True)
    except Exception as e:  # noqa: BLE001 - report anything to the Rust side
        print(f"{scenario} failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
