#!/usr/bin/python3
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

  audit.py check --accepted FILE --sender-maildir DIR --recipient-maildir DIR
                 --recipient ADDR --log-a A.json --log-b B.json [--empty DIR ...]
                 [--pec PEC_BIN --trust PEM ... --verify-sample N]
      Prints a summary; exit 1 with every violation listed (up to 20 of each kind).
      --known-crash-effects (the fault test) reports, without failing, what a crash of
      `pec serve` at the wrong instant is known to leave: a message stored twice (same
      Message-ID), a receipt issued twice (two Message-IDs; the legal log still records
      the event once), a BustaTrasporto record for a submission the client saw refused.
      --verify-sample N runs `pec verify` on N messages of each mailbox (0: none, -1: all).

  audit.py latency --accepted FILE --sender-maildir DIR
      Submission (the start of the SMTP transaction) to arrival in the sender's Maildir (the
      delivery instant Dovecot writes into the file name), for the acceptance and for the
      delivery receipt: p50, p90, p99 and max in milliseconds.
"""

import argparse
import collections
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
            subject, start, end = line.rstrip("\n").split("\t")
            acc[subject] = (float(start), float(end))
    return acc


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


def cmd_check(a):
    acc = read_accepted(a.accepted)
    bad = Problems()
    rcpt = a.recipient.lower()

    # Mailboxes.
    # transaction → the Message-IDs of its messages of each kind
    acceptances, deliveries, envelopes = (collections.defaultdict(list) for _ in range(3))
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
            deliveries[t].append(h.get("message-id"))
        else:
            others.append(f"sender mailbox: {t}: X-Ricevuta {kind!r}")
    for path in maildir_files(a.recipient_maildir):
        h = headers(path)
        t = transaction_of(h)
        if t is not None and h.get("x-trasporto") == "posta-certificata":
            envelopes[t].append(h.get("message-id"))
        else:
            others.append(f"recipient mailbox: {os.path.basename(path)}: {h.get('subject', '')!r}")
    for d in a.empty or []:
        for path in maildir_files(d):
            others.append(f"{d}: {headers(path).get('subject', '')!r}")

    # After a crash (tolerated with --known-crash-effects, reported either way):
    #   copy     the same message (one Message-ID) stored twice: the LMTP proxy died between
    #            Dovecot's 250 and its own reply, and Postfix delivered again;
    #   twice    two different receipts for one event: died between injecting the receipt
    #            and recording it, and the retry built another one.
    crash = a.known_crash_effects
    for name, ids in (("acceptance", acceptances), ("delivery receipt", deliveries),
                      ("transport envelope", envelopes)):
        for s in acc:
            v = ids.get(s, [])
            if not v:
                bad.add(f"missing {name} in a mailbox", s)
            elif len(v) > len(set(v)):
                bad.add(f"{name} stored twice (a copy, same Message-ID)", f"{s}: {len(v)}", known=crash)
            if len(set(v)) > 1:
                bad.add(f"{name} issued twice (different Message-IDs)", f"{s}: {sorted(set(v))}",
                        known=crash)
        for s in ids:
            if s not in acc:
                bad.add(f"{name} for a message never accepted (false)", s)
    for o in others:
        bad.add("unexpected message", o)

    # Legal logs.
    log_a = json.load(open(a.log_a))
    log_b = json.load(open(a.log_b))
    pec_ids = {}
    a_kinds = collections.defaultdict(collections.Counter)
    for r in log_a:
        t = SUBJECT.search(r.get("subject") or "")
        if not t:
            continue
        t = t.group(1)
        certified = [x["address"].lower() for x in r["recipients"] if x.get("tipo") == "certificato"]
        if r["kind"] in ("BustaTrasporto", "Accettazione"):
            if rcpt not in certified:
                bad.add(f"A's {r['kind']} without the certified recipient", f"{t}: {r['recipients']}")
            a_kinds[t][r["kind"]] += 1
            if pec_ids.setdefault(t, r["pec_id"]) != r["pec_id"]:
                bad.add("A's records of one message with two PEC msgids", t)
    b_presa, b_consegna = collections.Counter(), collections.Counter()
    for r in log_b:
        t = SUBJECT.search(r.get("subject") or "")
        if not t:
            continue
        t = t.group(1)
        n = sum(1 for x in r["recipients"] if x["address"].lower() == rcpt)
        if r["kind"] == "PresaInCarico":
            b_presa[t] += n
        elif r["kind"] in ("Consegna", "MancataConsegna", "MancataConsegnaVirus"):
            b_consegna[t] += n
        else:
            continue
        if pec_ids.get(t) not in (None, r["pec_id"]):
            bad.add("B's record with another PEC msgid than A's envelope", f"{t}: {r['kind']}")
    for s in acc:
        for kind in ("BustaTrasporto", "Accettazione"):
            n = a_kinds[s][kind]
            if n != 1:
                bad.add(f"A's legal log: {kind} not exactly once", f"{s}: {n}")
        if b_presa[s] != 1:
            bad.add("B's legal log: recipient not exactly once in a PresaInCarico", f"{s}: {b_presa[s]}")
        if b_consegna[s] != 1:
            bad.add("B's legal log: recipient not exactly once in a Consegna/MancataConsegna",
                    f"{s}: {b_consegna[s]}")
    for t in set(a_kinds) | set(b_presa) | set(b_consegna):
        if t not in acc:
            # The milter logs the BustaTrasporto when it wraps the submission: a crash before
            # Postfix queued it leaves that record for a message the client saw refused.
            only_envelope = (t not in b_presa and t not in b_consegna
                             and set(a_kinds[t]) <= {"BustaTrasporto"})
            bad.add("legal log record for a message never accepted", f"{t}: {dict(a_kinds[t])}",
                    known=crash and only_envelope)

    # Signatures.
    verified = 0
    if a.pec and a.verify_sample:
        files = maildir_files(a.sender_maildir) + maildir_files(a.recipient_maildir)
        if a.verify_sample > 0 and len(files) > a.verify_sample:
            files = random.Random(7).sample(files, a.verify_sample)
        trust = [x for p in a.trust for x in ("--trust", p)]
        for path in files:
            r = subprocess.run([a.pec, "verify", *trust, path], capture_output=True, text=True)
            if r.returncode != 0:
                bad.add("pec verify refused a message", f"{path}: {r.stdout.strip()[:200]} {r.stderr.strip()[:200]}")
            verified += 1

    print(f"audit: {len(acc)} accepted; mailboxes: {sum(map(len, acceptances.values()))} "
          f"acceptances, {sum(map(len, deliveries.values()))} delivery receipts, "
          f"{sum(map(len, envelopes.values()))} envelopes; "
          f"A's log: {sum(k['BustaTrasporto'] for k in a_kinds.values())} BustaTrasporto, "
          f"{sum(k['Accettazione'] for k in a_kinds.values())} Accettazione; B's log: "
          f"{sum(b_presa.values())} PresaInCarico, {sum(b_consegna.values())} Consegna; "
          f"{verified} messages verified")
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
    c.add_argument("--empty", action="append")
    c.add_argument("--pec")
    c.add_argument("--trust", action="append", default=[])
    c.add_argument("--verify-sample", type=int, default=0)
    c.add_argument("--known-crash-effects", action="store_true",
                   help="report copies and twice-issued receipts after crashes without failing")
    c.set_defaults(func=cmd_check)
    lt = sub.add_parser("latency")
    lt.add_argument("--accepted", required=True)
    lt.add_argument("--sender-maildir", required=True)
    lt.set_defaults(func=cmd_latency)
    a = p.parse_args()
    sys.exit(a.func(a))


if __name__ == "__main__":
    main()
