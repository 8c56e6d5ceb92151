#!/usr/bin/python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Audit of a PEC load run between two providers (standard library only; /usr/bin/python3).

The load (tests/e2e/pecmail.py load --accepted FILE) sent one message per line of FILE from
one sender of provider A to one certified recipient of provider B. This checks the audit
invariants of the spec (§8) against what the mailboxes hold and what the two legal logs
(`pec log export --format json`) say:

  pecmail.py-style subjects "load TAG.K[.rN]" identify the transactions. For every accepted
  submission S:
    sender's mailbox     exactly one acceptance (X-Ricevuta: accettazione) and exactly one
                         delivery receipt (avvenuta-consegna) or non-delivery notice
                         (errore-consegna);
    recipient's mailbox  exactly one transport envelope (X-Trasporto: posta-certificata);
    A's legal log        exactly one BustaTrasporto and one Accettazione naming the
                         recipient as certified;
    B's legal log        the recipient exactly once in a PresaInCarico and exactly once in a
                         Consegna or MancataConsegna, all of the same PEC msgid as A's.
  Nothing else: a receipt or envelope for a subject that was never accepted is a false one,
  and the service mailboxes given with --empty must hold nothing.

  A transaction may have several recipients, of B and of A itself (same provider): the
  accepted file's fourth column lists them (pecmail.py load --rcpt-set; without it, the one
  --recipient). Then the sender holds exactly one delivery receipt or non-delivery notice per
  recipient (the daticert's <consegna> says whom it is about), each recipient's mailbox
  (--recipient-maildir for --recipient, --mailbox ADDR=DIR for the others) exactly one
  envelope, the log of the recipient's provider (A's for the sender's domain, else B's) names
  it exactly once in a PresaInCarico and once in a Consegna/MancataConsegna; A's own
  presa in carico of a transaction with recipients of its domain goes to A's receipt
  mailbox (--own-receipts DIR: exactly one presa-in-carico per such transaction, nothing
  else), B's are consumed by A. No timer notice (preavviso-errore-consegna) may be in the
  sender's mailbox.

  The invariants on the legal logs alone (also `audit.py outcomes`), over every record:
    (i)   at most one final outcome per message (PEC msgid) and recipient in each legal
          log; the final outcomes are the Issued Consegna, MancataConsegna,
          MancataConsegnaVirus and MancataConsegna24h records, and the Ricezione records of
          an avvenuta-consegna or errore-consegna receipt whose outcome is "correlated" (one
          that comes after the recipient already has an outcome is logged "late", one about
          a non-recipient or not ours "uncorrelated": neither counts);
    (ii)  no MancataConsegna12h/24h notice later than the recipient's first final outcome
          (in any of the logs);
    (iii) every recipient that gets a certified outcome, notice or receipt (Issued
          PresaInCarico, Consegna, MancataConsegna*, RilevazioneVirus; correlated Ricezione)
          is a certified recipient among the envelope's destinatari (the Accettazione, else
          BustaTrasporto, record of that PEC msgid, in any of the logs);
    (iv)  every such notice's sender and subject (and the BustaTrasporto's) equal the
          envelope's.
  The recipients of a Ricezione record are whom the receipt is about ("riguarda …" in its
  reason); of the other records, their recipients (a PresaInCarico lists every destinatario
  of the envelope: it counts for a recipient in the log of that recipient's provider only).

  audit.py check --accepted FILE --sender-maildir DIR --recipient-maildir DIR
                 --recipient ADDR --log-a A.json --log-b B.json [--empty DIR ...]
                 [--sender ADDR] [--mailbox ADDR=DIR ...] [--own-receipts DIR]
                 [--pec PEC_BIN --trust PEM ... --verify-sample N]
      Prints a summary; exit 1 with every violation listed (up to 20 of each kind).
      --known-crash-effects (the fault test) reports, without failing, what a crash of
      `pec serve` at the wrong instant is known to leave: a message stored twice (same
      Message-ID), a receipt issued twice (two Message-IDs; the legal log still records
      the event once), a BustaTrasporto record for a submission the client saw refused.
      --verify-sample N runs `pec verify` on N messages of each mailbox (0: none, -1: all).

  audit.py rem-check --accepted FILE --sender-maildir DIR --recipient-maildir DIR
                     --pec PEC_BIN --config-a A.toml --config-b B.toml [--no-consignment]
      A REM load (one sender of A with a sender identity, one recipient of B: REM A → REM B).
      For every accepted submission: the recipient holds exactly one REM dispatch, the
      sender exactly one SubmissionAcceptance and one ContentConsignment REM receipt (with
      --no-consignment: none, the delivery point not issuing it), nothing else; the
      dispatch and the sender's SubmissionAcceptance carry the same REM-Evidence-ID, no
      REM-Evidence-ID is in a mailbox twice, no Message-ID either; `pec evidence list
      --message ID` (ID: the dispatch's Message-ID) names, on A, the SubmissionAcceptance
      issued, the RelayAcceptance and the ContentConsignment received (the last one for
      every dispatch or, in a build that does not store it, for none: said), on B the
      SubmissionAcceptance received, the RelayAcceptance and the ContentConsignment issued,
      each exactly once, and nothing else. A dispatch of a submission the client saw fail
      (a retried one) must be complete likewise; it is counted, not failed.
  audit.py outcomes --log DOMAIN=FILE.json ... [--expect SUBJECT RECIPIENT OUTCOME ...]
      The legal-log invariants above over the logs (`pec log search --format json`), each
      given with the domain of its provider; and for each --expect (the message with that
      subject, one Accettazione in the logs) OUTCOME of RECIPIENT: "delivered" or "failed"
      — exactly one Consegna resp. MancataConsegna for it in the log of its domain's
      provider and no other final outcome there, where that is not the sender's provider
      exactly one correlated Ricezione of the avvenuta-consegna resp. errore-consegna in
      the sender's log and no other final outcome there, and no 12 h/24 h notice anywhere;
      "timeout" — exactly one MancataConsegna12h and one MancataConsegna24h for it in the
      sender's log and no other final outcome in any log. Exit 1 with the violations.

  audit.py latency --accepted FILE --sender-maildir DIR
      Submission (the start of the SMTP transaction) to arrival in the sender's Maildir (the
      delivery instant Dovecot writes into the file name), for the acceptance and for the
      delivery receipt: p50, p90, p99 and max in milliseconds.
"""

import argparse
import collections
import datetime
import email
import email.policy
import json
import os
import random
import re
import subprocess
import sys


def maildir_files(d):
    out = []
    for sub in ("new", "cur"):
        p = os.path.join(d, sub)
        try:
            out += [os.path.join(p, f) for f in sorted(os.listdir(p))]
        except FileNotFoundError:
            pass
    return out


def headers(path):
    """The top-level header fields of a message, unfolded, names lower-cased."""
    fields, cur = [], None
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                break
            if line[:1] in (" ", "\t") and cur is not None:
                cur[1] += " " + line.strip()
                continue
            name, _, value = line.partition(":")
            cur = [name.strip().lower(), value.strip()]
            fields.append(cur)
    h = {}
    for name, value in fields:
        h.setdefault(name, value)
    return h


SUBJECT = re.compile(r"(load \S+)$")


def transaction_of(h):
    m = SUBJECT.search(h.get("subject", ""))
    return m.group(1) if m else None


def arrival(path):
    """Dovecot's delivery instant from a Maildir file name: SECS.M<usecs>P<pid>.host…"""
    m = re.match(r"(\d+)\.M(\d+)P", os.path.basename(path))
    if m:
        return int(m.group(1)) + int(m.group(2)) / 1e6
    return os.stat(path).st_mtime


def read_accepted(path):
    acc = {}
    with open(path) as f:
        for line in f:
            subject, start, end = line.rstrip("\n").split("\t")[:3]
            acc[subject] = (float(start), float(end))
    return acc


def accepted_recipients(path, default):
    """subject → the transaction's recipients (lower case): the accepted file's fourth
    column (comma-separated) when present, else [default]."""
    out = {}
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) > 3 and fields[3]:
                out[fields[0]] = [x.strip().lower() for x in fields[3].split(",") if x.strip()]
            else:
                out[fields[0]] = [default]
    return out


def domain_of(addr):
    return addr.rpartition("@")[2].lower()


def consegna_of(path):
    """Whom a delivery receipt or non-delivery notice is about: the <consegna> of its own
    daticert.xml (not descending into the original it may carry)."""
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.compat32)

    def parts(m):
        yield m
        if m.is_multipart() and m.get_content_type() != "message/rfc822":
            for p in m.get_payload():
                yield from parts(p)

    for p in parts(msg):
        if p.get_filename() == "daticert.xml":
            data = p.get_payload(decode=True) or b""
            m = re.search(rb"<consegna>([^<]*)</consegna>", data)
            return m.group(1).decode().strip().lower() if m else None
    return None


class Problems:
    def __init__(self):
        self.by_kind = collections.OrderedDict()

    def add(self, kind, detail, known=False):
        self.by_kind.setdefault((kind, known), []).append(detail)

    def report(self):
        failed = False
        for (kind, known), details in self.by_kind.items():
            print(f"{'KNOWN' if known else 'VIOLATION'} {kind}: {len(details)}")
            for d in details[:20]:
                print(f"  {d}")
            failed = failed or not known
        return 1 if failed else 0


# The legal-log invariants (see the module's docstring).
FINAL_ISSUED = {"Consegna", "MancataConsegna", "MancataConsegnaVirus", "MancataConsegna24h"}
FINAL_RECEIVED = {"avvenuta-consegna", "errore-consegna"}
TIMER_KINDS = {"MancataConsegna12h", "MancataConsegna24h"}
NOTICE_KINDS = {"PresaInCarico", "Consegna", "MancataConsegna", "MancataConsegnaVirus",
                "MancataConsegna12h", "MancataConsegna24h", "RilevazioneVirus"}


def about(r):
    """The recipients a record is about: for a Ricezione, the "riguarda a, b" of its reason
    (whom the receipt is about); else its recipients."""
    if r["kind"] == "Ricezione":
        for part in (r.get("reason") or "").split(";"):
            part = part.strip()
            if part.startswith("riguarda "):
                return [x.strip().lower() for x in part[len("riguarda "):].split(",") if x.strip()]
        return []
    return [x["address"].lower() for x in r.get("recipients") or []]


def correlated(r):
    return r["kind"] == "Ricezione" and r.get("outcome") == "correlated"


def is_final(r):
    return r["kind"] in FINAL_ISSUED or (correlated(r) and r.get("receipt_type") in FINAL_RECEIVED)


def label(r):
    return f"Ricezione {r.get('receipt_type')} ({r.get('outcome')})" if r["kind"] == "Ricezione" else r["kind"]


def instant(r):
    return datetime.datetime.fromisoformat(r["at"].replace("Z", "+00:00"))


def envelopes_of(logs):
    """PEC msgid → the envelope's record: Accettazione, else BustaTrasporto."""
    env = {}
    for kind in ("BustaTrasporto", "Accettazione"):
        for _, recs in logs:
            for r in recs:
                if r["kind"] == kind:
                    env[r["pec_id"]] = r
    return env


def log_invariants(logs, bad):
    """(i)-(iv) over the records of every log; logs: [(name, records)]. Returns how many
    final outcomes were seen."""
    env = envelopes_of(logs)
    finals = collections.defaultdict(list)  # (pec_id, addr) → [(instant, log, index, label)]
    for name, recs in logs:
        for i, r in enumerate(recs):
            if is_final(r):
                for x in about(r):
                    finals[(r["pec_id"], x)].append((instant(r), name, i, label(r)))

    def what(r, x=None):
        return f"{r.get('subject')!r} {r['pec_id']}" + (f" {x}" if x else "")

    # (i) at most one final outcome per message and recipient in each log
    for (pid, x), v in finals.items():
        per_log = collections.defaultdict(list)
        for at, name, _, lab in v:
            per_log[name].append(lab)
        for name, labs in per_log.items():
            if len(labs) > 1:
                subject = env[pid]["subject"] if pid in env else "?"
                bad.add("(i) more than one final outcome for a recipient in one legal log",
                        f"{name}: {subject!r} {pid} {x}: {labs}")
    for name, recs in logs:
        for i, r in enumerate(recs):
            # (ii) no timer notice after the recipient's first final outcome
            if r["kind"] in TIMER_KINDS:
                at = instant(r)
                for x in about(r):
                    before = sorted((f for f in finals.get((r["pec_id"], x), [])
                                     if (f[1], f[2]) != (name, i) and f[0] <= at), key=lambda f: f[0])
                    if before:
                        bad.add("(ii) timer notice after the recipient's final outcome",
                                f"{name}: {r['kind']} at {r['at']} for {what(r, x)}: "
                                f"{before[0][3]} in {before[0][1]} at {before[0][0].isoformat()}")
            notice = r["kind"] in NOTICE_KINDS or correlated(r)
            if not notice and r["kind"] != "BustaTrasporto":
                continue
            e = env.get(r["pec_id"])
            if e is None:
                bad.add("(iii) certified notice for an envelope no log accepted",
                        f"{name}: {label(r)} {what(r)}")
                continue
            if notice:
                # (iii) only to the envelope's certified recipients
                dest = {d["address"].lower(): d.get("tipo") for d in e.get("recipients") or []}
                who = about(r)
                if not who:
                    bad.add("(iii) certified notice about nobody", f"{name}: {label(r)} {what(r)}")
                for x in who:
                    if x not in dest:
                        bad.add("(iii) certified notice for a recipient not among the envelope's destinatari",
                                f"{name}: {label(r)} {what(r, x)}; destinatari {sorted(dest)}")
                    elif dest[x] != "certificato":
                        bad.add("(iii) certified notice for an external (esterno) recipient",
                                f"{name}: {label(r)} {what(r, x)}")
            # (iv) the envelope's sender and subject
            if (r.get("sender") or "").lower() != (e.get("sender") or "").lower() or \
                    r.get("subject") != e.get("subject"):
                bad.add("(iv) record whose sender or subject differ from the envelope's",
                        f"{name}: {label(r)} {r['pec_id']}: {r.get('sender')!r} {r.get('subject')!r}, "
                        f"envelope {e.get('sender')!r} {e.get('subject')!r}")
    return sum(len(v) for v in finals.values())


def cmd_check(a):
    acc = read_accepted(a.accepted)
    rcpt = a.recipient.lower()
    rcpts_of = accepted_recipients(a.accepted, rcpt)
    home = domain_of(a.sender)
    bad = Problems()
    boxes = {rcpt: a.recipient_maildir}
    for spec in a.mailbox or []:
        addr, _, d = spec.partition("=")
        boxes[addr.strip().lower()] = d
    for s, rs in rcpts_of.items():
        for r in rs:
            if r not in boxes:
                sys.exit(f"audit: {s} went to {r}: give its Maildir with --mailbox {r}=DIR")

    # Mailboxes.
    # (transaction[, recipient]) → the Message-IDs of its messages of each kind
    acceptances, deliveries, envelopes, presas = (collections.defaultdict(list) for _ in range(4))
    others = []
    for path in maildir_files(a.sender_maildir):
        h = headers(path)
        t = transaction_of(h)
        kind = h.get("x-ricevuta", "")
        if t is None:
            others.append(f"sender mailbox: {os.path.basename(path)}: {h.get('subject', '')!r}")
        elif kind == "accettazione":
            acceptances[t].append(h.get("message-id"))
        elif kind in ("avvenuta-consegna", "errore-consegna"):
            deliveries[(t, consegna_of(path))].append(h.get("message-id"))
        elif kind == "preavviso-errore-consegna":
            bad.add("timer notice in the sender's mailbox (false: every recipient has an outcome)",
                    f"{t}: {h.get('subject', '')!r}")
        else:
            others.append(f"sender mailbox: {t}: X-Ricevuta {kind!r}")
    for addr, d in boxes.items():
        for path in maildir_files(d):
            h = headers(path)
            t = transaction_of(h)
            if t is not None and h.get("x-trasporto") == "posta-certificata":
                envelopes[(t, addr)].append(h.get("message-id"))
            else:
                others.append(f"{addr}'s mailbox: {os.path.basename(path)}: {h.get('subject', '')!r}")
    if a.own_receipts:
        for path in maildir_files(a.own_receipts):
            h = headers(path)
            t = transaction_of(h)
            if t is not None and h.get("x-ricevuta") == "presa-in-carico":
                presas[t].append(h.get("message-id"))
            else:
                others.append(f"{a.own_receipts}: {os.path.basename(path)}: {h.get('subject', '')!r}")
    for d in a.empty or []:
        for path in maildir_files(d):
            others.append(f"{d}: {headers(path).get('subject', '')!r}")

    # After a crash (tolerated with --known-crash-effects, reported either way):
    #   copy     the same message (one Message-ID) stored twice: the LMTP proxy died between
    #            Dovecot's 250 and its own reply, and Postfix delivered again;
    #   twice    two different receipts for one event: died between injecting the receipt
    #            and recording it, and the retry built another one.
    crash = a.known_crash_effects
    per_rcpt = {(s, r) for s in acc for r in rcpts_of[s]}
    expected = [("acceptance", acceptances, set(acc)),
                ("delivery receipt", deliveries, per_rcpt),
                ("transport envelope", envelopes, per_rcpt)]
    if a.own_receipts:
        expected.append(("own presa in carico", presas,
                         {s for s in acc if any(domain_of(r) == home for r in rcpts_of[s])}))
    for name, ids, want in expected:
        for k in sorted(want):
            key = " ".join(k) if isinstance(k, tuple) else k
            v = ids.get(k, [])
            if not v:
                bad.add(f"missing {name} in a mailbox", key)
            elif len(v) > len(set(v)):
                bad.add(f"{name} stored twice (a copy, same Message-ID)", f"{key}: {len(v)}", known=crash)
            if len(set(v)) > 1:
                bad.add(f"{name} issued twice (different Message-IDs)", f"{key}: {sorted(set(v))}",
                        known=crash)
        for k in ids:
            if k in want:
                continue
            s = k[0] if isinstance(k, tuple) else k
            key = " ".join(map(str, k)) if isinstance(k, tuple) else k
            if s not in acc:
                bad.add(f"{name} for a message never accepted (false)", key)
            else:
                bad.add(f"{name} for a recipient the message was not sent to (false)", key)
    for o in others:
        bad.add("unexpected message", o)

    # Legal logs.
    log_a = json.load(open(a.log_a))
    log_b = json.load(open(a.log_b))
    logs = {"A": log_a, "B": log_b}

    def log_of(addr):
        return "A" if domain_of(addr) == home else "B"

    pec_ids = {}
    a_kinds = collections.defaultdict(collections.Counter)
    for r in log_a:
        t = SUBJECT.search(r.get("subject") or "")
        if not t:
            continue
        t = t.group(1)
        certified = [x["address"].lower() for x in r["recipients"] if x.get("tipo") == "certificato"]
        if r["kind"] in ("BustaTrasporto", "Accettazione"):
            missing = [x for x in rcpts_of.get(t, [rcpt]) if x not in certified]
            if missing:
                bad.add(f"A's {r['kind']} without a certified recipient", f"{t}: {missing}: {r['recipients']}")
            a_kinds[t][r["kind"]] += 1
            if pec_ids.setdefault(t, r["pec_id"]) != r["pec_id"]:
                bad.add("A's records of one message with two PEC msgids", t)
    # (transaction, recipient) → in the log of the recipient's provider: PresaInCarico,
    # Consegna/MancataConsegna; in the sender's (A's) log, for a recipient of B: the
    # correlated Ricezione of its delivery receipt or non-delivery notice.
    presa, consegna, received = (collections.Counter() for _ in range(3))
    for name, recs in logs.items():
        for r in recs:
            t = SUBJECT.search(r.get("subject") or "")
            if not t:
                continue
            t = t.group(1)
            if r["kind"] in ("PresaInCarico", "Consegna", "MancataConsegna", "MancataConsegnaVirus"):
                for x in (y["address"].lower() for y in r["recipients"]):
                    if log_of(x) != name:
                        continue
                    if r["kind"] == "PresaInCarico":
                        presa[(t, x)] += 1
                    else:
                        consegna[(t, x)] += 1
            elif name == "A" and is_final(r):
                for x in about(r):
                    if log_of(x) != "A":
                        received[(t, x)] += 1
            else:
                continue
            if pec_ids.get(t) not in (None, r["pec_id"]):
                bad.add(f"{name}'s record with another PEC msgid than A's envelope", f"{t}: {r['kind']}")
    for s in acc:
        for kind in ("BustaTrasporto", "Accettazione"):
            n = a_kinds[s][kind]
            if n != 1:
                bad.add(f"A's legal log: {kind} not exactly once", f"{s}: {n}")
        for x in rcpts_of[s]:
            where = "A's" if log_of(x) == "A" else "B's"
            if presa[(s, x)] != 1:
                bad.add(f"{where} legal log: recipient not exactly once in a PresaInCarico",
                        f"{s} {x}: {presa[(s, x)]}")
            if consegna[(s, x)] != 1:
                bad.add(f"{where} legal log: recipient not exactly once in a Consegna/MancataConsegna",
                        f"{s} {x}: {consegna[(s, x)]}")
            if log_of(x) == "B" and received[(s, x)] != 1:
                bad.add("A's legal log: B's receipt for the recipient not correlated exactly once",
                        f"{s} {x}: {received[(s, x)]}")
    seen = set(a_kinds) | {k[0] for k in presa} | {k[0] for k in consegna}
    for t in seen:
        if t not in acc:
            # The milter logs the BustaTrasporto when it wraps the submission: a crash before
            # Postfix queued it leaves that record for a message the client saw refused.
            only_envelope = (all(k[0] != t for k in presa) and all(k[0] != t for k in consegna)
                             and set(a_kinds[t]) <= {"BustaTrasporto"})
            bad.add("legal log record for a message never accepted", f"{t}: {dict(a_kinds[t])}",
                    known=crash and only_envelope)
    n_final = log_invariants([("A", log_a), ("B", log_b)], bad)

    # Signatures.
    verified = 0
    if a.pec and a.verify_sample:
        files = maildir_files(a.sender_maildir)
        for d in boxes.values():
            files += maildir_files(d)
        if a.verify_sample > 0 and len(files) > a.verify_sample:
            files = random.Random(7).sample(files, a.verify_sample)
        trust = [x for p in a.trust for x in ("--trust", p)]
        for path in files:
            r = subprocess.run([a.pec, "verify", *trust, path], capture_output=True, text=True)
            if r.returncode != 0:
                bad.add("pec verify refused a message", f"{path}: {r.stdout.strip()[:200]} {r.stderr.strip()[:200]}")
            verified += 1

    n_local = sum(1 for s in acc if any(log_of(x) == "A" for x in rcpts_of[s]))
    print(f"audit: {len(acc)} accepted ({len(per_rcpt)} recipients, {n_local} with a recipient "
          f"of the sender's provider); mailboxes: {sum(map(len, acceptances.values()))} "
          f"acceptances, {sum(map(len, deliveries.values()))} delivery receipts, "
          f"{sum(map(len, envelopes.values()))} envelopes, {sum(map(len, presas.values()))} own "
          f"presa in carico; A's log: {sum(k['BustaTrasporto'] for k in a_kinds.values())} "
          f"BustaTrasporto, {sum(k['Accettazione'] for k in a_kinds.values())} Accettazione; "
          f"PresaInCarico {sum(presa.values())}, Consegna {sum(consegna.values())}, receipts "
          f"correlated {sum(received.values())}; {n_final} final outcomes in both logs; "
          f"{verified} messages verified")
    return bad.report()


def cmd_outcomes(a):
    bad = Problems()
    logs = []
    for spec in a.log:
        dom, _, path = spec.partition("=")
        logs.append((dom.strip().lower(), json.load(open(path))))
    names = [n for n, _ in logs]
    n_final = log_invariants(logs, bad)
    for subject, rcpt, outcome in a.expect or []:
        rcpt = rcpt.lower()
        acc = [(n, r) for n, recs in logs for r in recs
               if r["kind"] == "Accettazione" and r.get("subject") == subject]
        if len(acc) != 1:
            bad.add("expected message: not exactly one Accettazione", f"{subject!r}: {len(acc)}")
            continue
        sender_log, env = acc[0]
        pid = env["pec_id"]
        rcpt_log = domain_of(rcpt) if domain_of(rcpt) in names else None
        mine = {n: [r for r in recs if r["pec_id"] == pid and rcpt in about(r)] for n, recs in logs}
        finals = {n: [label(r) for r in v if is_final(r)] for n, v in mine.items()}
        timers = {n: sorted(r["kind"] for r in v if r["kind"] in TIMER_KINDS) for n, v in mine.items()}
        what = f"{subject!r} {rcpt}"
        if outcome in ("delivered", "failed"):
            issued = "Consegna" if outcome == "delivered" else "MancataConsegna"
            received = "avvenuta-consegna" if outcome == "delivered" else "errore-consegna"
            if rcpt_log is None:
                bad.add("expected outcome: no log given for the recipient's domain", what)
            else:
                if finals[rcpt_log] != [issued]:
                    bad.add(f"expected outcome: not exactly one {issued} (and nothing else final) "
                            "in the recipient's provider's log", f"{what}: {finals[rcpt_log]}")
                n = sum(1 for r in mine[rcpt_log] if r["kind"] == "PresaInCarico")
                if n != 1:
                    bad.add("expected outcome: recipient not exactly once in a PresaInCarico",
                            f"{what}: {n}")
            if rcpt_log != sender_log:
                want = [f"Ricezione {received} (correlated)"]
                if finals[sender_log] != want:
                    bad.add(f"expected outcome: not exactly one correlated {received} receipt "
                            "(and nothing else final) in the sender's log", f"{what}: {finals[sender_log]}")
            for n, v in timers.items():
                if v:
                    bad.add("expected outcome: timer notice for a recipient with an outcome",
                            f"{what}: {n}: {v}")
        elif outcome == "timeout":
            if timers[sender_log] != ["MancataConsegna12h", "MancataConsegna24h"]:
                bad.add("expected timeout: not exactly one 12 h and one 24 h notice in the sender's log",
                        f"{what}: {timers[sender_log]}")
            for n, v in finals.items():
                want = ["MancataConsegna24h"] if n == sender_log else []
                if v != want:
                    bad.add("expected timeout: another final outcome", f"{what}: {n}: {v}")
        else:
            sys.exit(f"audit: unknown outcome {outcome!r} (delivered, failed, timeout)")
    print(f"outcomes: {sum(len(r) for _, r in logs)} records in {len(logs)} logs, {n_final} final "
          f"outcomes; {len(a.expect or [])} expected outcomes checked")
    return bad.report()


REM_EVENT = "http://uri.etsi.org/19522/Event/"
REM_DISPATCH = "http://uri.etsi.org/19522/v1#/ERDMessageType/dispatch"
REM_RECEIPT = "http://uri.etsi.org/19522/v1#/ERDMessageType/receipt"


def cmd_rem_check(a):
    bad = Problems()
    acc = read_accepted(a.accepted)
    consignment = not a.no_consignment
    # subject → {"dispatch": [(file, headers)], event name: [...]} of each mailbox
    got = {}
    for role, d in (("recipient", a.recipient_maildir), ("sender", a.sender_maildir)):
        seen_ids, seen_mids = {}, {}
        for f in maildir_files(d):
            h = headers(f)
            subject = transaction_of(h)
            mtype = h.get("rem-messagetype", "")
            event = h.get("rem-eventidentifier", "").replace(REM_EVENT, "")
            if subject is None or not mtype:
                bad.add(f"{role}: a message that is no REM message of the load", f"{f}: {h.get('subject')!r}")
                continue
            kind = "dispatch" if mtype == REM_DISPATCH else (event if mtype == REM_RECEIPT else mtype)
            want = {"recipient": ("dispatch",),
                    "sender": ("SubmissionAcceptance",) + (("ContentConsignment",) if consignment else ())}[role]
            if kind not in want:
                bad.add(f"{role}: unexpected REM message", f"{subject!r}: {kind} ({f})")
            got.setdefault(subject, {}).setdefault(kind, []).append((f, h))
            ev_id = h.get("rem-evidence-id", "")
            if ev_id in seen_ids:
                bad.add(f"{role}: a REM-Evidence-ID twice", f"{ev_id}: {seen_ids[ev_id]} and {f}")
            seen_ids[ev_id] = f
            mid = h.get("message-id", "")
            if mid in seen_mids:
                bad.add(f"{role}: a Message-ID twice (a copy stored twice)", f"{mid}: {seen_mids[mid]} and {f}")
            seen_mids[mid] = f
    counts = {"dispatch": 0, "SubmissionAcceptance": 0, "ContentConsignment": 0}
    unaccepted = [s for s in got if s not in acc]
    for subject in sorted(set(acc) | set(got)):
        m = got.get(subject, {})
        want = {"dispatch": 1, "SubmissionAcceptance": 1, "ContentConsignment": 1 if consignment else 0}
        for kind, n in want.items():
            have = len(m.get(kind, []))
            counts[kind] += have
            if have != n:
                bad.add(f"not exactly {n} {kind}", f"{subject!r}: {have}")
        if m.get("dispatch") and m.get("SubmissionAcceptance"):
            d_id = m["dispatch"][0][1].get("rem-evidence-id")
            s_id = m["SubmissionAcceptance"][0][1].get("rem-evidence-id")
            if d_id != s_id:
                bad.add("dispatch and SubmissionAcceptance receipt carry different evidences",
                        f"{subject!r}: {d_id} / {s_id}")
    # The evidences each store holds about each dispatch.
    expected = {
        "a": sorted(["issued SubmissionAcceptance", "received RelayAcceptance"]),
        "b": sorted(["received SubmissionAcceptance", "issued RelayAcceptance"]
                    + (["issued ContentConsignment"] if consignment else [])),
    }
    # A's copy of the ContentConsignment it passed on to the sender: a build either stores
    # every one (then each exactly once) or none (said below); never some.
    a_cc = {}
    n_ev = {"a": 0, "b": 0}
    all_ids = {"a": {}, "b": {}}
    for subject, m in sorted(got.items()):
        for f, h in m.get("dispatch", [])[:1]:
            mid = h.get("message-id", "").strip().strip("<>")
            for side, conf in (("a", a.config_a), ("b", a.config_b)):
                out = subprocess.run([a.pec, "evidence", "list", "-c", conf, "--message", mid],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    bad.add(f"{side}: pec evidence list failed", f"{mid}: {out.stderr.strip()}")
                    continue
                lines = [l.split() for l in out.stdout.splitlines() if l.strip()]
                n_ev[side] += len(lines)
                have = sorted(f"{l[2]} {l[3].rsplit('/', 1)[-1]}" for l in lines)
                if side == "a" and consignment:
                    a_cc[subject] = have.count("received ContentConsignment")
                    have = [x for x in have if x != "received ContentConsignment"]
                if have != expected[side]:
                    bad.add(f"{side}: the evidences of a dispatch are not each exactly once",
                            f"{subject!r} {mid}: {have}")
                for l in lines:
                    if l[0] in all_ids[side]:
                        bad.add(f"{side}: an evidence id about two dispatches", f"{l[0]}")
                    all_ids[side][l[0]] = mid
    stored_cc = sum(1 for v in a_cc.values() if v)
    if stored_cc:
        for subject, v in sorted(a_cc.items()):
            if v != 1:
                bad.add("a: the ContentConsignment received not exactly once (others are stored)",
                        f"{subject!r}: {v}")
    elif consignment:
        print("rem-check: NOTE: A stores none of the ContentConsignment evidences it passes on "
              "to the sender (a build whose reception point does not)")
    print(f"rem-check: {len(acc)} accepted, {len(unaccepted)} more dispatched (submissions the client "
          f"saw fail); recipient: {counts['dispatch']} dispatches; sender: "
          f"{counts['SubmissionAcceptance']} SubmissionAcceptance, {counts['ContentConsignment']} "
          f"ContentConsignment; evidences in the stores: A {n_ev['a']} (of which {stored_cc} "
          f"ContentConsignment received), B {n_ev['b']}")
    return bad.report()


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))
    return v[k]


def cmd_latency(a):
    acc = read_accepted(a.accepted)
    lat = {"accettazione": [], "consegna": []}
    for path in maildir_files(a.sender_maildir):
        h = headers(path)
        t = transaction_of(h)
        if t not in acc:
            continue
        kind = h.get("x-ricevuta", "")
        key = "accettazione" if kind == "accettazione" else "consegna" if kind in (
            "avvenuta-consegna", "errore-consegna") else None
        if key:
            lat[key].append((arrival(path) - acc[t][0]) * 1000)
    for key, label in (("accettazione", "acceptance"), ("consegna", "delivery receipt")):
        v = lat[key]
        print(f"{label}: n={len(v)} p50={pct(v, 50):.0f} ms p90={pct(v, 90):.0f} ms "
              f"p99={pct(v, 99):.0f} ms max={max(v) if v else float('nan'):.0f} ms")
    return 0 if all(len(v) == len(acc) for v in lat.values()) else 1


def main():
    p = argparse.ArgumentParser(description="audit of a PEC load run between two providers")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--accepted", required=True)
    c.add_argument("--sender-maildir", required=True)
    c.add_argument("--recipient-maildir", required=True)
    c.add_argument("--recipient", required=True)
    c.add_argument("--log-a", required=True)
    c.add_argument("--log-b", required=True)
    c.add_argument("--sender", default="alice@pec.example.it",
                   help="the load's sender: its domain is provider A's")
    c.add_argument("--mailbox", action="append", metavar="ADDR=DIR",
                   help="the Maildir of another recipient of the transactions")
    c.add_argument("--own-receipts", metavar="DIR",
                   help="A's receipt mailbox: one presa in carico per transaction with a "
                        "recipient of A, nothing else")
    c.add_argument("--empty", action="append")
    c.add_argument("--pec")
    c.add_argument("--trust", action="append", default=[])
    c.add_argument("--verify-sample", type=int, default=0)
    c.add_argument("--known-crash-effects", action="store_true",
                   help="report copies and twice-issued receipts after crashes without failing")
    c.set_defaults(func=cmd_check)
    o = sub.add_parser("outcomes")
    o.add_argument("--log", action="append", required=True, metavar="DOMAIN=FILE")
    o.add_argument("--expect", action="append", nargs=3, metavar=("SUBJECT", "RECIPIENT", "OUTCOME"))
    o.set_defaults(func=cmd_outcomes)
    r = sub.add_parser("rem-check")
    r.add_argument("--accepted", required=True)
    r.add_argument("--sender-maildir", required=True)
    r.add_argument("--recipient-maildir", required=True)
    r.add_argument("--pec", required=True)
    r.add_argument("--config-a", required=True)
    r.add_argument("--config-b", required=True)
    r.add_argument("--no-consignment", action="store_true",
                   help="the delivery point issues no ContentConsignment (not built yet)")
    r.set_defaults(func=cmd_rem_check)
    lt = sub.add_parser("latency")
    lt.add_argument("--accepted", required=True)
    lt.add_argument("--sender-maildir", required=True)
    lt.set_defaults(func=cmd_latency)
    a = p.parse_args()
    sys.exit(a.func(a))


if __name__ == "__main__":
    main()
