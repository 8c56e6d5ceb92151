#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""A test RFC 3161 time-stamping authority over HTTP or HTTPS (tests only).

Usage: tsa.py TSA_CNF [--tls CERT KEY] [--user NAME PASSWORD_FILE] [--client-ca CA]
              [--mode-file FILE] [--offset-file FILE] [--until-killed]

Listens on 127.0.0.1 on a free port, prints the port on the first line of standard output,
and answers every POST of an application/timestamp-query with the TimeStampResp made by
`openssl ts -reply -config TSA_CNF` (see make-tsa.sh). A query that OpenSSL cannot answer
gets HTTP 500. Stops when standard input closes, so that it never outlives its test
(with --until-killed: when killed, for shell scripts that stop it by pid).

  --tls CERT KEY        serve HTTPS with that certificate (make-tsa.sh: server.pem/key);
  --user NAME FILE      require HTTP basic authentication (password in FILE), else 401;
  --client-ca CA        require a TLS client certificate issued by CA;
  --mode-file FILE      read FILE at each request (absent or empty: "ok"), to play a
                        faulty TSA: "down" (HTTP 503), "other-imprint" (a token over other
                        data), "expired" (signed with the expired certificate), "refuse"
                        (status rejection), "garbage" (a body that is no TimeStampResp),
                        "no-nonce" (a token without the nonce).
  --offset-file FILE    read FILE at each request (absent or empty: 0): an integer number of
                        seconds, possibly negative, that the TSA's clock is ahead of the real
                        one. A non-zero offset runs `openssl ts -reply` under libfaketime
                        (`faketime -f +Ns`, Debian package faketime), so that the token's
                        genTime moves with it: the tests that move their own clock (`pec
                        timers run --now`) past a wait get time stamps of that time, not of
                        the real one (which precedes their signing time and is refused).
"""
import base64
import http.server
import os
import ssl
import subprocess
import sys
import tempfile
import threading


def option(name, n):
    if name not in sys.argv:
        return None
    i = sys.argv.index(name)
    return sys.argv[i + 1:i + 1 + n]


def mode():
    if not MODE_FILE or not os.path.exists(MODE_FILE):
        return "ok"
    with open(MODE_FILE) as f:
        return f.read().strip() or "ok"


def offset():
    """The clock offset of --offset-file, in seconds (0 without one); None when unreadable."""
    if not OFFSET_FILE or not os.path.exists(OFFSET_FILE):
        return 0
    with open(OFFSET_FILE) as f:
        text = f.read().strip()
    try:
        return int(text or "0")
    except ValueError:
        return None


def other_imprint(query):
    """The same query over other data: the last 32 bytes before the nonce are the
    SHA-256 imprint (OCTET STRING 04 20 ...); flip them."""
    i = query.find(b"\x04\x20")
    if i < 0:
        return query
    imprint = bytes(b ^ 0xff for b in query[i + 2:i + 34])
    return query[:i + 2] + imprint + query[i + 34:]


def without_nonce(query):
    """The query without its nonce (INTEGER after the imprint): the token has none."""
    i = query.find(b"\x04\x20")
    if i < 0:
        return query
    j = i + 34
    if query[j:j + 1] == b"\x06":  # the policy
        j += 2 + query[j + 1]
    if query[j:j + 1] != b"\x02":
        return query
    n = query[j + 1]
    body = query[2:j] + query[j + 2 + n:]
    return bytes([0x30, len(body)]) + body


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def answer(self, code, body=b"", ctype="application/timestamp-reply"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="tsa"')
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        query = self.rfile.read(length)
        if USER is not None:
            want = "Basic " + base64.b64encode(USER.encode()).decode()
            if self.headers.get("Authorization", "") != want:
                self.answer(401)
                return
        m = mode()
        if m == "down":
            self.answer(503)
            return
        if m == "garbage":
            self.answer(200, b"\x30\x03\x02\x01")
            return
        shift = offset()
        if shift is None:
            sys.stderr.write("tsa.py: %s holds no integer number of seconds\n" % OFFSET_FILE)
            self.answer(500)
            return
        # The clock moved by the test: openssl under libfaketime ("+Ns" ahead, "-Ns" behind).
        clock = ["faketime", "-f", "%+ds" % shift] if shift else []
        section = []
        if m == "other-imprint":
            query = other_imprint(query)
        elif m == "no-nonce":
            query = without_nonce(query)
        elif m == "expired":
            section = ["-section", "expired_tsa"]
        elif m == "refuse":
            # status rejection (2) with a text: what a TSA answers a query it will not serve.
            text = b"\x0c\x07refused"
            status = b"\x02\x01\x02\x30" + bytes([len(text)]) + text
            info = b"\x30" + bytes([len(status)]) + status
            self.answer(200, b"\x30" + bytes([len(info)]) + info)
            return
        with tempfile.TemporaryDirectory() as d:
            qpath = os.path.join(d, "query.tsq")
            rpath = os.path.join(d, "reply.tsr")
            with open(qpath, "wb") as f:
                f.write(query)
            # `openssl ts -reply` reads and rewrites the serial file: one at a time.
            with LOCK:
                try:
                    done = subprocess.run(
                        [*clock, "openssl", "ts", "-reply", "-config", CONFIG, *section,
                         "-queryfile", qpath, "-out", rpath],
                        capture_output=True)
                except OSError as e:  # no faketime (scripts/install-deps.sh) or openssl
                    sys.stderr.write("tsa.py: %s\n" % e)
                    self.answer(500)
                    return
            if done.returncode != 0 or not os.path.exists(rpath):
                self.answer(500)
                sys.stderr.write(done.stderr.decode(errors="replace"))
                return
            with open(rpath, "rb") as f:
                reply = f.read()
        self.answer(200, reply)

    def log_message(self, *args):
        pass


CONFIG = sys.argv[1]
LOCK = threading.Lock()
user = option("--user", 2)
USER = None
if user:
    with open(user[1]) as f:
        USER = user[0] + ":" + f.read().strip()
MODE_FILE = (option("--mode-file", 1) or [None])[0]
OFFSET_FILE = (option("--offset-file", 1) or [None])[0]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
tls = option("--tls", 2)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls[0], tls[1])
    client_ca = option("--client-ca", 1)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca[0])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
if "--until-killed" in sys.argv:
    server.serve_forever()
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
