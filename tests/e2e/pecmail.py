#!/usr/bin/python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mail client for pec's end-to-end tests (standard library only; run with /usr/bin/python3).

  pecmail.py send  --port N [--host H] [--user U --password P] --from ADDR --to ADDR [--to ...]
                   [--expect-reject] [--timeout S] FILE.eml
      Submits FILE (bytes as they are, CRLF or LF) with an explicit envelope, after AUTH PLAIN
      when --user is given. Prints the server's answer to the end of data ("250 2.0.0 Ok:
      queued as ..."). Exit 0 when accepted; with --expect-reject, exit 0 only when the server
      refuses the message (MAIL, RCPT or DATA), printing the refusal.

  pecmail.py fetch --port N [--host H] --user U --password P [--mailbox INBOX] --dir OUT
                   --count N [--deadline S]
      Polls IMAP until the mailbox holds at least N messages, then saves each one as
      OUT/<uid>.eml and prints the paths. Exit 1 on timeout, or when more than N are there.

  pecmail.py load --port N [--host H] --user U --password P --from ADDR
                  (--to ADDR [--to ...] | --rcpt-set ADDR[,ADDR...] [--rcpt-set ...])
                  --count N --concurrency C --size BYTES --maildir DIR --expect N [--deadline S]
      Submits N messages of about BYTES bytes over C parallel authenticated connections, then
      waits until DIR (a Maildir, new/ + cur/) holds N+… = --expect messages in all. Prints
      "seconds=<time from the first submission until the last delivery>". Exit 1 on timeout.
      Subjects are "load TAG.K" (TAG: --tag, default the pid; K: 0..N-1). --rate R paces the
      submissions at R per second in all; --retry retries temporary refusals (4xx) and lost
      connections until the deadline, marking the retried subject ".rATTEMPT"; --accepted
      FILE writes "SUBJECT<TAB>START<TAB>END" (epoch seconds around each accepted
      submission) and adds "submitted=… retries=…" to the output. --expect 0: no wait.
      --rcpt-set ADDR[,ADDR...] (repeatable) instead of --to: message K goes to the
      (K mod n)-th set (envelope and To:), and --accepted adds a fourth column, the
      recipients (comma-separated).

  pecmail.py instream --port N [--host H] [--timeout S] FILE
      Sends FILE to clamd with zINSTREAM and prints the reply ("stream: OK",
      "stream: NAME FOUND", "... ERROR"). Exit 0 when clamd answered at all.

  pecmail.py balance --listen N --to N [--to N ...] [--host H]
      A TCP load balancer on H:N (default 127.0.0.1) for the nodes of one provider, as
      equal-preference MX hosts would spread them: each connection goes to the next --to port
      of H in turn, bytes passed through unchanged (TLS included). Runs until killed; prints
      "PORT" for each connection it forwarded (flushed), so that the caller can count them.

Every SMTP session (send, load) and IMAP session (fetch) starts TLS with STARTTLS when the
server offers it, and
verifies the server's certificate (host name: --host) against the CA file named by the
environment variable PECMAIL_CAFILE (tests/e2e/provider.sh sets it to the test CA), else
against the system's trust store: a certificate that does not verify ends the session.
PECMAIL_NO_STARTTLS=1 submits in clear even when STARTTLS is offered (to test refusals).

Exit code 2 means a usage or connection error.
"""

import argparse
import imaplib
import os
import smtplib
import socket
import ssl
import struct
import sys
import time


def starttls(smtp, helo):
    """EHLO, then STARTTLS (verified, see the module text) and EHLO again when offered."""
    smtp.ehlo(helo)
    if smtp.has_extn("starttls") and os.environ.get("PECMAIL_NO_STARTTLS") != "1":
        ctx = ssl.create_default_context(cafile=os.environ.get("PECMAIL_CAFILE") or None)
        smtp.starttls(context=ctx)
        smtp.ehlo(helo)


def die(msg, code=1):
    print(f"pecmail: {msg}", file=sys.stderr)
    sys.exit(code)


def cmd_send(a):
    data = open(a.file, "rb").read()
    try:
        smtp = smtplib.SMTP(a.host, a.port, timeout=a.timeout)
    except OSError as e:
        die(f"cannot connect to {a.host}:{a.port}: {e}", 2)
    try:
        starttls(smtp, "pecmail.test")
        if a.user:
            smtp.user, smtp.password = a.user, a.password
            code, resp = smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=True)
            print(f"AUTH: {code} {resp.decode(errors='replace')}")
        code, resp = smtp.mail(getattr(a, "from"))
        if code != 250:
            return refused(a, "MAIL FROM", code, resp)
        for rcpt in a.to:
            code, resp = smtp.rcpt(rcpt)
            if code not in (250, 251):
                return refused(a, f"RCPT TO:<{rcpt}>", code, resp)
        code, resp = smtp.data(data)
        if code != 250:
            return refused(a, "DATA", code, resp)
        print(f"{code} {resp.decode(errors='replace')}")
        smtp.quit()
    except smtplib.SMTPAuthenticationError as e:
        return refused(a, "AUTH", e.smtp_code, e.smtp_error)
    except smtplib.SMTPResponseException as e:
        return refused(a, "SMTP", e.smtp_code, e.smtp_error)
    except (smtplib.SMTPException, OSError) as e:
        die(f"SMTP session with {a.host}:{a.port} failed: {e}", 2)
    if a.expect_reject:
        die("the message was accepted, a refusal was expected")
    return 0


def refused(a, stage, code, resp):
    text = resp.decode(errors="replace") if isinstance(resp, bytes) else str(resp)
    print(f"refused at {stage}: {code} {text}")
    if a.expect_reject:
        return 0
    die(f"refused at {stage}: {code} {text}")


def imap_messages(a):
    """(count, [(uid, bytes)]) of the mailbox, fetching bodies only when count >= a.count."""
    imap = imaplib.IMAP4(a.host, a.port, timeout=a.timeout)
    try:
        if "STARTTLS" in imap.capabilities and os.environ.get("PECMAIL_NO_STARTTLS") != "1":
            imap.starttls(ssl.create_default_context(cafile=os.environ.get("PECMAIL_CAFILE") or None))
        imap.login(a.user, a.password)
        typ, data = imap.select(a.mailbox, readonly=True)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"SELECT {a.mailbox}: {data}")
        typ, data = imap.uid("SEARCH", None, "ALL")
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        out = []
        if len(uids) >= a.count:
            for uid in uids:
                typ, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                body = next(p[1] for p in parts if isinstance(p, tuple))
                out.append((uid.decode(), body))
        return len(uids), out
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def cmd_fetch(a):
    end = time.monotonic() + a.deadline
    last_err, count = None, 0
    while True:
        try:
            count, msgs = imap_messages(a)
            last_err = None
            if count >= a.count:
                break
        except (imaplib.IMAP4.error, OSError) as e:
            last_err = e
        if time.monotonic() >= end:
            why = f" (last error: {last_err})" if last_err else ""
            die(f"{a.user} {a.mailbox}: {count} message(s) after {a.deadline}s, "
                f"expected {a.count}{why}")
        time.sleep(0.1)
    os.makedirs(a.dir, exist_ok=True)
    for uid, body in msgs:
        path = os.path.join(a.dir, f"{uid}.eml")
        with open(path, "wb") as f:
            f.write(body)
        print(path)
    if count > a.count:
        die(f"{a.user} {a.mailbox}: {count} messages, expected {a.count}")
    return 0


def maildir_count(paths):
    n = 0
    for d in paths:
        for sub in ("new", "cur"):
            try:
                n += len(os.listdir(os.path.join(d, sub)))
            except FileNotFoundError:
                pass
    return n


def cmd_load(a):
    import queue
    import threading

    body = ("x" * 75 + "\r\n") * max(1, a.size // 77)
    if a.rcpt_set:
        sets = [[x.strip() for x in s.split(",") if x.strip()] for s in a.rcpt_set]
    elif a.to:
        sets = [a.to]
    else:
        die("load: give --to or --rcpt-set", 2)
    errors, accepted, lock = [], [], threading.Lock()
    todo = queue.Queue()
    for k in range(a.count):
        todo.put(k)
    tag = a.tag or f"{os.getpid()}"
    t0 = time.monotonic()
    wall0 = time.time()

    def connect():
        smtp = smtplib.SMTP(a.host, a.port, timeout=120)
        starttls(smtp, "pecmail.load")
        smtp.user, smtp.password = a.user, a.password
        smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=True)
        return smtp

    def worker(i):
        smtp = None
        while True:
            try:
                k = todo.get_nowait()
            except queue.Empty:
                break
            if a.rate:
                # Paced: message k leaves at t0 + k / rate, whichever worker takes it.
                delay = t0 + k / a.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            attempt = 0
            to = sets[k % len(sets)]
            while True:
                subject = f"load {tag}.{k}" + (f".r{attempt}" if attempt else "")
                msg = (
                    f"From: {getattr(a, 'from')}\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
                    f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
                    f"Message-ID: <load.{tag}.{k}.{attempt}@pecmail.test>\r\n\r\n{body}"
                )
                start = time.time()
                try:
                    if smtp is None:
                        smtp = connect()
                    smtp.sendmail(getattr(a, "from"), to, msg.encode())
                    with lock:
                        accepted.append((subject, start, time.time(), ",".join(to)))
                    break
                except (smtplib.SMTPException, OSError) as e:
                    code = getattr(e, "smtp_code", None)
                    if code is None and isinstance(e, smtplib.SMTPRecipientsRefused):
                        code = min(c for c, _ in e.recipients.values())
                    permanent = code is not None and 500 <= code < 600
                    try:
                        if smtp is not None:
                            smtp.close()
                    except (smtplib.SMTPException, OSError):
                        pass
                    smtp = None
                    if permanent or not a.retry or time.monotonic() > t0 + a.deadline:
                        with lock:
                            errors.append(f"worker {i}, message {k}: {e}")
                        break
                    # A temporary refusal (4xx) or a lost connection: what a mail client does
                    # is try again a little later.
                    attempt += 1
                    with lock:
                        retried[0] += 1
                    time.sleep(0.2)
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass

    retried = [0]
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_sent = time.monotonic()
    if a.accepted:
        with open(a.accepted, "w") as f:
            for subject, start, end, to in sorted(accepted, key=lambda x: x[1]):
                f.write(f"{subject}\t{start:.6f}\t{end:.6f}\t{to}\n")
    if errors:
        die("; ".join(errors[:3]))
    deadline = t0 + a.deadline
    while a.expect and maildir_count(a.maildir) < a.expect:
        if time.monotonic() > deadline:
            die(f"only {maildir_count(a.maildir)} of {a.expect} messages delivered in {a.deadline} s")
        time.sleep(0.02)
    print(f"seconds={time.monotonic() - t0:.3f}")
    if a.accepted:
        print(f"submitted={len(accepted)} retries={retried[0]} submit_seconds={t_sent - t0:.3f} "
              f"start={wall0:.6f}")


def cmd_instream(a):
    data = open(a.file, "rb").read()
    try:
        s = socket.create_connection((a.host, a.port), timeout=a.timeout)
    except OSError as e:
        die(f"cannot connect to clamd at {a.host}:{a.port}: {e}", 2)
    try:
        s.sendall(b"zINSTREAM\0")
        for i in range(0, len(data), 65536):
            chunk = data[i:i + 65536]
            s.sendall(struct.pack(">I", len(chunk)) + chunk)
        s.sendall(struct.pack(">I", 0))
        reply = b""
        while not reply.endswith(b"\0"):
            part = s.recv(4096)
            if not part:
                break
            reply += part
    except OSError as e:
        die(f"clamd INSTREAM failed: {e}", 2)
    finally:
        s.close()
    if not reply:
        die("clamd closed the connection without a reply", 2)
    print(reply.rstrip(b"\0").decode(errors="replace"))
    return 0


def cmd_balance(a):
    import asyncio

    async def pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            try:
                writer.close()
            except OSError:
                pass

    turn = [0]

    async def serve(reader, writer):
        port = a.to[turn[0] % len(a.to)]
        turn[0] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(a.host, port)
        except OSError:
            writer.close()
            return
        print(port, flush=True)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def run():
        server = await asyncio.start_server(serve, a.host, a.listen)
        async with server:
            await server.serve_forever()

    asyncio.run(run())
    return 0


def main():
    p = argparse.ArgumentParser(description="mail client for pec's end-to-end tests")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("send", help="submit an .eml with an explicit envelope")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--user")
    s.add_argument("--password", default="test")
    s.add_argument("--from", required=True)
    s.add_argument("--to", action="append", required=True)
    s.add_argument("--expect-reject", action="store_true")
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("file")
    s.set_defaults(func=cmd_send)

    f = sub.add_parser("fetch", help="wait for and save the messages of an IMAP mailbox")
    f.add_argument("--host", default="127.0.0.1")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--user", required=True)
    f.add_argument("--password", default="test")
    f.add_argument("--mailbox", default="INBOX")
    f.add_argument("--dir", required=True)
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--deadline", type=float, default=30)
    f.add_argument("--timeout", type=float, default=10)
    f.set_defaults(func=cmd_fetch)

    l = sub.add_parser("load", help="submit many messages and time their delivery")
    l.add_argument("--host", default="127.0.0.1")
    l.add_argument("--port", type=int, required=True)
    l.add_argument("--user", required=True)
    l.add_argument("--password", default="test")
    l.add_argument("--from", required=True)
    l.add_argument("--to", action="append")
    l.add_argument("--rcpt-set", action="append", metavar="ADDR[,ADDR...]",
                   help="message K goes to the (K mod n)-th set (instead of --to)")
    l.add_argument("--count", type=int, required=True)
    l.add_argument("--concurrency", type=int, default=10)
    l.add_argument("--size", type=int, default=10240)
    l.add_argument("--maildir", action="append", required=True)
    l.add_argument("--expect", type=int, required=True)
    l.add_argument("--deadline", type=float, default=600)
    l.add_argument("--rate", type=float, help="paced: messages per second in all (default: as fast as possible)")
    l.add_argument("--retry", action="store_true", help="retry temporary refusals and lost connections")
    l.add_argument("--accepted", help="write each accepted message's subject and submission times here")
    l.add_argument("--tag", help="marks the subjects and Message-IDs (default: the process id)")
    l.set_defaults(func=cmd_load)
    b = sub.add_parser("balance", help="spread TCP connections over several ports in turn")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--listen", type=int, required=True)
    b.add_argument("--to", type=int, action="append", required=True)
    b.set_defaults(func=cmd_balance)
    c = sub.add_parser("instream", help="scan a file with clamd INSTREAM")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--timeout", type=float, default=30)
    c.add_argument("file")
    c.set_defaults(func=cmd_instream)

    a = p.parse_args()
    sys.exit(a.func(a))


if __name__ == "__main__":
    main()
