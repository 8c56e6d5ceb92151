#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""A test RFC 3161 time-stamping authority over HTTP (tests only).

Usage: tsa.py TSA_CNF

Listens on 127.0.0.1 on a free port, prints the port on the first line of standard output,
and answers every POST of an application/timestamp-query with the TimeStampResp made by
`openssl ts -reply -config TSA_CNF` (see make-tsa.sh). A query that OpenSSL cannot answer
gets HTTP 500. Stops when standard input closes, so that it never outlives its test.
"""
import http.server
import os
import subprocess
import sys
import tempfile
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        query = self.rfile.read(length)
        with tempfile.TemporaryDirectory() as d:
            qpath = os.path.join(d, "query.tsq")
            rpath = os.path.join(d, "reply.tsr")
            with open(qpath, "wb") as f:
                f.write(query)
            # `openssl ts -reply` reads and rewrites the serial file: one at a time.
            with LOCK:
                done = subprocess.run(
                    ["openssl", "ts", "-reply", "-config", CONFIG,
                     "-queryfile", qpath, "-out", rpath],
                    capture_output=True)
            if done.returncode != 0 or not os.path.exists(rpath):
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                sys.stderr.write(done.stderr.decode(errors="replace"))
                return
            with open(rpath, "rb") as f:
                reply = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


CONFIG = sys.argv[1]
LOCK = threading.Lock()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
