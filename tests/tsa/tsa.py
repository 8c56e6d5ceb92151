#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""A test RFC 3161 time-stamping authority over HTTP or HTTPS (tests only).

Usage: tsa.py TSA_CNF [--tls CERT KEY] [--user NAME PASSWORD_FILE] [--client-ca CA]
              [--mode-file FILE] [--offset-file FILE] [--until-killed]

Listens on 127.0.0.1 on a free port, prints the port on the first line of standard output,
and answers every POST of an application/timestamp-query with a TimeStampResp made as
`openssl ts -reply -config TSA_CNF` makes it (see make-tsa.sh): the [tsa] section's
default_tsa (signer_cert, signer_key, certs, serial file, default_policy, digests,
accuracy, tsa_name; SHA-256 signature and ESS signing certificate v2, as make-tsa.sh
configures), built in this process (DER by hand, signed with the Python `cryptography`
package, Debian python3-cryptography) rather than by an `openssl ts` process per stamp,
which cost about 10 ms of CPU each. A query it cannot parse gets HTTP 500; a policy or
digest it does not serve, a granted-status rejection as OpenSSL's. HTTP/1.1 with
keep-alive. Stops when standard input closes, so that it never outlives its test (with
--until-killed: when killed, for shell scripts that stop it by pid).

  --tls CERT KEY        serve HTTPS with that certificate (make-tsa.sh: server.pem/key);
  --user NAME FILE      require HTTP basic authentication (password in FILE), else 401;
  --client-ca CA        require a TLS client certificate issued by CA;
  --mode-file FILE      read FILE at each request (absent or empty: "ok"), to play a
                        faulty TSA: "down" (HTTP 503), "other-imprint" (a token over other
                        data), "expired" (signed with the expired certificate), "refuse"
                        (status rejection), "garbage" (a body that is no TimeStampResp),
                        "no-nonce" (a token without the nonce), "close-reused" (a request
                        on a connection that already carried one is read, then the
                        connection closed unanswered: a server that closed an idle
                        keep-alive connection under its client).
  --offset-file FILE    read FILE at each request (absent or empty: 0): an integer number of
                        seconds, possibly negative, that the TSA's clock is ahead of the real
                        one: the token's genTime (and signing time) moves with it, so that
                        the tests that move their own clock (`pec timers run --now`) past a
                        wait get time stamps of that time, not of the real one (which
                        precedes their signing time and is refused).
"""
import base64
import datetime
import hashlib
import http.server
import os
import re
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


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


# DER, by hand: what a TimeStampResp needs.
def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, *parts):
    body = b"".join(parts)
    return bytes([tag]) + der_len(len(body)) + body


def seq(*parts):
    return tlv(0x30, *parts)


def der_int(n):
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def oid(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7f]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7f))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def elements(der):
    """The (tag, whole TLV, content) of each element of a DER sequence's content."""
    out, i = [], 0
    while i < len(der):
        tag, n = der[i], der[i + 1]
        j = i + 2
        if n & 0x80:
            k = n & 0x7f
            n = int.from_bytes(der[j:j + k], "big")
            j += k
        if j + n > len(der):
            raise ValueError("truncated")
        out.append((tag, der[i:j + n], der[j:j + n]))
        i = j + n
    return out


def content(der):
    (tag, _, body), = elements(der)
    return tag, body


OID_SHA = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
           "sha512": "2.16.840.1.101.3.4.2.3", "sha1": "1.3.14.3.2.26"}
ALG_NULL = lambda name: seq(oid(OID_SHA[name]), b"\x05\x00")  # noqa: E731


def parse_query(query):
    """TimeStampReq: (imprint TLV, its digest OID TLV, policy OID TLV or None, nonce TLV or
    None, certReq)."""
    tag, body = content(query)
    if tag != 0x30:
        raise ValueError("not a sequence")
    parts = elements(body)
    if not parts or parts[0][0] != 0x02 or len(parts) < 2 or parts[1][0] != 0x30:
        raise ValueError("no version or imprint")
    imprint = parts[1][1]
    alg = elements(elements(parts[1][2])[0][2])[0][1]
    policy = nonce = None
    cert_req = False
    for t, whole, body in parts[2:]:
        if t == 0x06:
            policy = whole
        elif t == 0x02:
            nonce = whole
        elif t == 0x01:
            cert_req = body != b"\x00"
    return imprint, alg, policy, nonce, cert_req


def read_cnf(path):
    """The [section] key = value pairs of an OpenSSL config file ($dir expanded)."""
    sections, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"\[\s*(\S+)\s*\]$", line)
            if m:
                cur = sections.setdefault(m.group(1), {})
            elif "=" in line and cur is not None:
                k, v = (x.strip() for x in line.split("=", 1))
                v = re.sub(r"\$\{?(\w+)\}?", lambda g: cur.get(g.group(1), g.group(0)), v)
                cur[k] = v
    return sections


class Signer:
    """One TSA section of tsa.cnf: its key, certificates, policy and serial file."""

    def __init__(self, cnf, name):
        sec = cnf[name]
        with open(sec["signer_key"], "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)
        with open(sec["signer_cert"], "rb") as f:
            self.cert = x509.load_pem_x509_certificate(f.read())
        self.chain = []
        if sec.get("certs"):
            with open(sec["certs"], "rb") as f:
                pem = f.read()
            # Each PEM block (load_pem_x509_certificates needs cryptography >= 39; Debian 12
            # has 38).
            self.chain = [x509.load_pem_x509_certificate(b) for b in re.findall(
                rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)]
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.serial_file = sec["serial"]
        self.policy = oid(sec["default_policy"])
        self.digests = [oid(OID_SHA[d.strip()]) for d in sec.get("digests", "sha256").split(",")]
        self.accuracy = b""
        m = re.match(r"secs:(\d+)", sec.get("accuracy", ""))
        if m:
            self.accuracy = seq(der_int(int(m.group(1))))
        self.tsa_name = (sec.get("tsa_name", "no") == "yes")
        self.subject = self.cert.subject.public_bytes()
        self.sid = seq(self.cert.issuer.public_bytes(), der_int(self.cert.serial_number))
        # ESS signing certificate v2 (ess_cert_id_alg sha256, the default: no hashAlgorithm).
        self.ess = seq(seq(seq(tlv(0x04, hashlib.sha256(self.cert_der).digest()))))
        if isinstance(self.key, rsa.RSAPrivateKey):
            self.sig_alg = seq(oid("1.2.840.113549.1.1.1"), b"\x05\x00")
            self.sign = lambda data: self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            self.sig_alg = seq(oid("1.2.840.10045.4.3.2"))
            self.sign = lambda data: self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def next_serial(self):
        """The serial file's number, incremented in the file (as openssl ts does)."""
        with open(self.serial_file) as f:
            serial = int(f.read().strip() or "1", 16)
        with open(self.serial_file, "w") as f:
            f.write("%02X\n" % (serial + 1))
        return serial

    def reply(self, query, now):
        """The DER TimeStampResp to `query` at `now` (a Unix time)."""
        imprint, alg, policy, nonce, cert_req = parse_query(query)
        if policy is not None and policy != self.policy:
            return rejection(b"unacceptable policy", 15)  # unacceptedPolicy
        if alg not in self.digests:
            return rejection(b"Message digest algorithm is not supported.", 0)  # badAlg
        with LOCK:
            serial = self.next_serial()
        when = datetime.datetime.fromtimestamp(int(now), datetime.timezone.utc)
        tst = seq(
            der_int(1), self.policy, imprint, der_int(serial),
            tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode()),
            self.accuracy, nonce or b"",
            tlv(0xa0, tlv(0xa4, self.subject)) if self.tsa_name else b"")
        attrs = sorted([
            seq(oid("1.2.840.113549.1.9.3"), tlv(0x31, oid("1.2.840.113549.1.9.16.1.4"))),
            seq(oid("1.2.840.113549.1.9.5"),
                tlv(0x31, tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode()))),
            seq(oid("1.2.840.113549.1.9.4"),
                tlv(0x31, tlv(0x04, hashlib.sha256(tst).digest()))),
            seq(oid("1.2.840.113549.1.9.16.2.47"), tlv(0x31, self.ess)),
        ])
        signature = self.sign(tlv(0x31, *attrs))
        signer_info = seq(der_int(1), self.sid, ALG_NULL("sha256"), tlv(0xa0, *attrs),
                          self.sig_alg, tlv(0x04, signature))
        certs = b""
        if cert_req:
            certs = tlv(0xa0, self.cert_der,
                        *(c.public_bytes(serialization.Encoding.DER) for c in self.chain))
        signed = seq(der_int(3), tlv(0x31, ALG_NULL("sha256")),
                     seq(oid("1.2.840.113549.1.9.16.1.4"), tlv(0xa0, tlv(0x04, tst))),
                     certs, tlv(0x31, signer_info))
        token = seq(oid("1.2.840.113549.1.7.2"), tlv(0xa0, signed))
        return seq(seq(der_int(0)), token)


def rejection(text, fail_bit):
    """A TimeStampResp with status rejection (2), a text and the failInfo bit numbered
    `fail_bit` (RFC 3161 PKIFailureInfo: badAlg 0, unacceptedPolicy 15)."""
    nbytes = fail_bit // 8 + 1
    bits = bytes(nbytes - 1) + bytes([1 << (7 - fail_bit % 8)])
    info = bytes([7 - fail_bit % 8]) + bits
    return seq(seq(der_int(2), seq(tlv(0x0c, text)), tlv(0x03, info)))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body are two writes: without TCP_NODELAY the body would wait for the
    # client's delayed ACK of the head (40 ms per stamp on a kept-alive connection).
    disable_nagle_algorithm = True
    # An idle keep-alive connection is closed after this many seconds.
    timeout = 30

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
        served = getattr(self, "served", 0)
        self.served = served + 1
        if USER is not None:
            want = "Basic " + base64.b64encode(USER.encode()).decode()
            if self.headers.get("Authorization", "") != want:
                self.answer(401)
                return
        m = mode()
        if m == "close-reused" and served > 0:
            self.close_connection = True
            return
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
        signer = SIGNERS["tsa"]
        if m == "other-imprint":
            query = other_imprint(query)
        elif m == "no-nonce":
            query = without_nonce(query)
        elif m == "expired":
            signer = SIGNERS["expired"]
        elif m == "refuse":
            # status rejection (2) with a text: what a TSA answers a query it will not serve.
            text = b"\x0c\x07refused"
            status = b"\x02\x01\x02\x30" + bytes([len(text)]) + text
            info = b"\x30" + bytes([len(status)]) + status
            self.answer(200, b"\x30" + bytes([len(info)]) + info)
            return
        try:
            reply = signer.reply(query, time.time() + shift)
        except (ValueError, IndexError, OSError) as e:
            sys.stderr.write("tsa.py: cannot answer: %s\n" % e)
            self.answer(500)
            return
        self.answer(200, reply)

    def log_message(self, *args):
        pass


CONFIG = sys.argv[1]
# The serial file is read and rewritten by one request at a time.
LOCK = threading.Lock()
_cnf = read_cnf(CONFIG)
_default = _cnf["tsa"]["default_tsa"]
SIGNERS = {"tsa": Signer(_cnf, _default)}
SIGNERS["expired"] = Signer(_cnf, "expired_tsa") if "expired_tsa" in _cnf else SIGNERS["tsa"]
user = option("--user", 2)
USER = None
if user:
    with open(user[1]) as f:
        USER = user[0] + ":" + f.read().strip()
MODE_FILE = (option("--mode-file", 1) or [None])[0]
OFFSET_FILE = (option("--offset-file", 1) or [None])[0]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
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
