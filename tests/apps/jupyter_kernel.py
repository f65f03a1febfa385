#!/usr/bin/env python3
"""Runs `print(6*7)` in a Jupyter kernel through snirouter, as JupyterLab would.

Usage: jupyter_kernel.py HOST PORT CA_PEM TOKEN

HOST (e.g. jupyter.tailnet-e2e.ts.net) is resolved to 127.0.0.1, where the router
listens on PORT; certificates are verified against CA_PEM (the simulated tailscaled's
root) for HOST. Creates a kernel over REST, opens its channels WebSocket
(wss://HOST:PORT/api/kernels/ID/channels, with the Origin a browser would send), sends
an execute_request on the shell channel and waits for the `stream` output on iopub and
the execute_reply. Deletes the kernel. Prints one JSON line with what it saw; exits 1
with the reason on stderr otherwise. Everything is bounded by a 60 s deadline.
"""

import asyncio
import datetime
import json
import socket
import ssl
import sys
import time
import uuid

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

HOST, PORT, CA, TOKEN = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
BASE = f"https://{HOST}:{PORT}"

_getaddrinfo = socket.getaddrinfo


def _resolve(host, *args, **kwargs):
    # The tailnet name points at the router on loopback (what MagicDNS does for real).
    return _getaddrinfo("127.0.0.1" if host == HOST else host, *args, **kwargs)


socket.getaddrinfo = _resolve

CTX = ssl.create_default_context(cafile=CA)
HEADERS = {"Authorization": f"token {TOKEN}"}


async def rest(method, path, body=None):
    req = HTTPRequest(
        BASE + path,
        method=method,
        headers=dict(HEADERS, **({"Content-Type": "application/json"} if body is not None else {})),
        body=json.dumps(body) if body is not None else None,
        ssl_options=CTX,
        request_timeout=30,
    )
    try:
        resp = await AsyncHTTPClient().fetch(req)
    except HTTPClientError as e:
        body = e.response.body.decode(errors="replace") if e.response else ""
        raise SystemExit(f"{method} {path}: HTTP {e.code}: {body}")
    return json.loads(resp.body) if resp.body else None


def message(session, channel, msg_type, content):
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "username": "snirouter-test",
            "session": session,
            "msg_type": msg_type,
            "version": "5.3",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


async def main():
    started = time.monotonic()
    kernel = await rest("POST", "/api/kernels", {"name": "python3"})
    kid = kernel["id"]
    seen = {"kernel": kid, "stdout": "", "reply": None, "messages": 0}
    try:
        session = uuid.uuid4().hex
        ws = await websocket_connect(
            HTTPRequest(
                f"wss://{HOST}:{PORT}/api/kernels/{kid}/channels?session_id={session}",
                headers=dict(HEADERS, Origin=BASE),
                ssl_options=CTX,
                request_timeout=30,
            )
        )
        req = message(
            session,
            "shell",
            "execute_request",
            {
                "code": "print(6*7)",
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        msg_id = req["header"]["msg_id"]
        await ws.write_message(json.dumps(req))
        while seen["reply"] is None or "42" not in seen["stdout"]:
            raw = await ws.read_message()
            if raw is None:
                raise SystemExit(f"the kernel WebSocket closed: code {ws.close_code} {ws.close_reason}; saw {seen}")
            if isinstance(raw, bytes):
                continue  # binary frames (v1 protocol) are not used without a subprotocol
            msg = json.loads(raw)
            seen["messages"] += 1
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if msg["channel"] == "iopub" and kind == "stream" and msg["content"]["name"] == "stdout":
                seen["stdout"] += msg["content"]["text"]
            elif msg["channel"] == "iopub" and kind == "error":
                raise SystemExit(f"the kernel raised: {msg['content']}")
            elif msg["channel"] == "shell" and kind == "execute_reply":
                seen["reply"] = msg["content"]["status"]
        ws.close()
    finally:
        await rest("DELETE", f"/api/kernels/{kid}")
    seen["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 60))
