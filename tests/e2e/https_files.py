#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""A static HTTPS file server for the REM tests: Trusted Lists and CSI files (tests only).

Usage: https_files.py ROOT CERT KEY [--mode-file FILE]

Listens on 127.0.0.1 on a free port, prints the port on the first line of standard output,
and answers GET and HEAD of /NAME with the file ROOT/NAME (a regular file directly or
further down in ROOT; no listing, no "..": 404), as application/xml for .xml files.
Runs until killed (the harness stops it by pid).

  --mode-file FILE   read FILE at each request (absent or empty: "ok") to play a faulty
                     server: "down" (HTTP 503), "garbage" (200 with a body that is no XML).
"""
import http.server
import os
import ssl
import sys


def mode():
    if not MODE_FILE or not os.path.exists(MODE_FILE):
        return "ok"
    with open(MODE_FILE) as f:
        return f.read().strip() or "ok"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, with_body):
        m = mode()
        if m == "down":
            return self.reply(503, b"down\n", "text/plain", with_body)
        if m == "garbage":
            return self.reply(200, b"\x00\xffnot xml", "application/xml", with_body)
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            return self.reply(404, b"not found\n", "text/plain", with_body)
        file = os.path.join(ROOT, *parts)
        if not os.path.isfile(file):
            return self.reply(404, b"not found\n", "text/plain", with_body)
        with open(file, "rb") as f:
            body = f.read()
        kind = "application/xml" if file.endswith(".xml") else "application/octet-stream"
        return self.reply(200, body, kind, with_body)

    def reply(self, code, body, kind, with_body):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stderr.flush()


if len(sys.argv) < 4:
    sys.exit(__doc__)
ROOT, CERT, KEY = sys.argv[1:4]
ROOT = os.path.abspath(ROOT)
MODE_FILE = None
if "--mode-file" in sys.argv:
    MODE_FILE = sys.argv[sys.argv.index("--mode-file") + 1]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
