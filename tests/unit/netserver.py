#!/usr/bin/env python3
"""netserver.py - a small stand-in for Orthanc's REST API used by the core unit tests.

Binds 127.0.0.1 on a port chosen by the kernel and prints that port on stdout.
Exits when its stdin closes (the test process ended) or on SIGTERM.

Options:
  --auth USER:PASS    require HTTP basic auth (except on /stats)
  --idle SECONDS      close a keep-alive connection idle this long (Orthanc: 1 s)

Routes (the instance id chooses the behaviour; ids are [A-Za-z0-9-]):
  GET /instances/ok-<size>[-<tag>]/file       200, <size> bytes of content(id)
  GET /instances/short-<size>[-<tag>]/file    Content-Length size+100, sends <size>, closes
  GET /instances/slow-<size>[-<tag>]/file     sends the headers and 1 byte, then stalls
  GET /instances/err500-<x>/file              500
  GET /instances/<anything else>/file         404 (Orthanc's JSON error body)
  GET|POST|DELETE /echo                       JSON: conn (connection number), method,
                                              path, headers, body
  GET /status/<code>                          answers with that status
  GET /stats                                  JSON: connections, closed, requests

content(id)[i] = (i + sum(id bytes)) % 251, so a test can compute the expected file.
"""
import base64
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AUTH = None
IDLE = 5.0
LOCK = threading.Lock()
STATS = {"connections": 0, "closed": 0, "requests": 0}


def content(ident, size):
    h = sum(ident.encode()) % 251
    # one period of 251 bytes, repeated
    period = bytes((i + h) % 251 for i in range(251))
    reps = size // 251 + 1
    return (period * reps)[:size]


def parse_size(rest):
    return int(rest.split("-")[0])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.timeout = IDLE
        super().setup()
        # headers and body go out in separate writes: without this, Nagle on
        # this side and delayed ACKs on the client cost 40 ms per request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with LOCK:
            STATS["connections"] += 1
            self.conn_id = STATS["connections"]

    def finish(self):
        try:
            super().finish()
        finally:
            with LOCK:
                STATS["closed"] += 1

    def log_message(self, fmt, *args):
        pass

    def send_body(self, status, body, ctype="application/octet-stream", clen=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if clen is None else clen))
        self.end_headers()
        self.wfile.write(body)

    def authorised(self):
        if AUTH is None or self.path == "/stats":
            return True
        want = "Basic " + base64.b64encode(AUTH.encode()).decode()
        if self.headers.get("Authorization") == want:
            return True
        self.send_body(401, b'{"Message":"Unauthorized"}', "application/json")
        return False

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def echo(self):
        body = self.read_body()
        out = {
            "conn": self.conn_id,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        self.send_body(200, json.dumps(out).encode(), "application/json")

    def route(self):
        with LOCK:
            STATS["requests"] += 1
        if self.path == "/stats":
            with LOCK:
                data = json.dumps(STATS).encode()
            return self.send_body(200, data, "application/json")
        if not self.authorised():
            return
        if self.path == "/echo":
            return self.echo()
        if self.path.startswith("/status/"):
            code = int(self.path[len("/status/"):])
            if code == 204:
                self.send_response(204)
                self.end_headers()
                return
            return self.send_body(code, b'{"status":%d}' % code, "application/json")
        parts = self.path.split("/")
        if len(parts) == 4 and parts[1] == "instances" and parts[3] == "file":
            ident = parts[2]
            kind, _, rest = ident.partition("-")
            if kind == "ok":
                return self.send_body(200, content(ident, parse_size(rest)), "application/dicom")
            if kind == "short":
                size = parse_size(rest)
                self.send_body(200, content(ident, size), "application/dicom", clen=size + 100)
                self.wfile.flush()
                self.close_connection = True
                return
            if kind == "slow":
                self.send_response(200)
                self.send_header("Content-Length", str(parse_size(rest)))
                self.end_headers()
                self.wfile.write(b"x")
                self.wfile.flush()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    time.sleep(0.05)
                    try:  # stop stalling once the client has gone away
                        self.connection.setblocking(False)
                        if self.connection.recv(1, 2) == b"":  # MSG_PEEK
                            break
                    except BlockingIOError:
                        pass
                    except OSError:
                        break
                    finally:
                        self.connection.setblocking(True)
                self.close_connection = True
                return
            if kind == "err500":
                return self.send_body(500, b'{"Message":"Internal error"}', "application/json")
        self.send_body(404, b'{"HttpStatus":404,"Message":"Unknown resource"}',
                       "application/json")

    def do_GET(self):
        self.route()

    def do_POST(self):
        if self.path == "/echo" and self.authorised():
            return self.echo()
        self.send_body(404, b"{}", "application/json")

    def do_DELETE(self):
        if self.path == "/echo" and self.authorised():
            return self.echo()
        self.send_body(404, b"{}", "application/json")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        # clients that drop a transfer on purpose (the tests abort on the
        # first error) make the writes fail: that is expected, stay quiet
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    os._exit(0)


def main():
    global AUTH, IDLE
    args = sys.argv[1:]
    while args:
        a = args.pop(0)
        if a == "--auth":
            AUTH = args.pop(0)
        elif a == "--idle":
            IDLE = float(args.pop(0))
        else:
            sys.exit("unknown option " + a)
    srv = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=watch_stdin, daemon=True).start()
    sys.stdout.write("%d\n" % srv.server_address[1])
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
