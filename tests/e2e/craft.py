#!/usr/bin/python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Crafts PEC messages for pec's hostile end-to-end tests (tests/e2e/hostile_peer.sh), as an
attacker holding a provider's genuine key would: take a genuine signed message, change what
it says, sign it again. Standard library and the openssl command only; run with
/usr/bin/python3.

  craft.py resign --in GENUINE.eml --out OUT.eml --cert PEM --key KEY [--certfile PEM]
                  [--id ID] [--msgid <MSGID>] [--to ADDR] [--sender ADDR]
                  [--header 'Name: value']... [--dc NAME=VALUE]... [--pc-header 'Name: value']...
                  [--no-postacert] [--text TEXT] [--keep-date]
      Rebuilds GENUINE (an S/MIME multipart/signed PEC message: envelope or receipt) with the
      changes asked for and signs the new multipart/mixed entity with CERT/KEY
      (openssl cms -sign, detached, SHA-256, CERTFILE's certificates added to the CMS), in the
      layout pec itself writes (src/crypto/smime.rs). The top-level trace fields
      (Received, Return-Path, Delivered-To) are dropped; Date and daticert <data> become now
      unless --keep-date. Changes apply in this order:
        --id ID           top-level Message-ID <ID>, daticert identificativo ID and
                          postacert.eml's Message-ID <ID> (a consistent new envelope);
        --msgid <M>       top-level X-Riferimento-Message-ID, daticert msgid and
                          postacert.eml's X-Riferimento-Message-ID;
        --to ADDR         top-level and postacert.eml To, daticert destinatari (certificato);
        --sender ADDR     daticert mittente and risposte, top-level From
                          "Per conto di: ADDR" <posta-certificata@…> and Reply-To,
                          postacert.eml From and Reply-To (envelopes);
      then the explicit ones, which may contradict the above:
        --header 'Name: value'     replaces (or adds) a top-level field; 'Name:' removes it;
        --pc-header 'Name: value'  the same in postacert.eml's header;
        --dc NAME=VALUE            a daticert element or attribute: tipo, errore, mittente,
                                   risposte, oggetto, gestore-emittente, identificativo, msgid,
                                   ricevuta, consegna, errore-esteso (empty value: removed),
                                   destinatari=ADDR[:tipo],… , ricezione=ADDR,…;
        --no-postacert             drops postacert.eml;
        --text TEXT                replaces the readable part by a text/plain one.

  craft.py strip --in FILE --out OUT
      FILE without its top-level trace fields (Received, Return-Path, Delivered-To,
      X-Original-To), byte for byte otherwise: a genuine message as fetched from a mailbox,
      ready to be replayed (its signature untouched).

  craft.py show FILE
      Prints, as JSON, the top-level class fields and ids and the daticert of a PEC message
      ("daticert": null for a message without one, e.g. an anomaly envelope).

  craft.py field FILE NAME
      The top-level header field NAME of FILE, RFC 2047 decoded ("" when absent).
  craft.py dc FILE NAME
      The daticert field NAME of FILE (lists joined with commas, addresses only).

  craft.py events-since ID < search.json
      Reads `pec log search --format json` and prints the records with an id above ID, one a
      line: "kind receipt_type outcome pec_id sender related_ids | subject | reason".
  craft.py max-id < search.json
      The highest record id (0 when none).
  craft.py queue-only ADDR < postqueue-j-output
      Exit 0 when every queued message (postqueue -j) is addressed to ADDR only (or nothing
      is queued): the queue holds nothing but what the test keeps there on purpose.

Exit code 2 means a usage error or a message that cannot be taken apart.
"""

import argparse
import base64
import datetime
import email.utils
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
from email.header import Header, decode_header, make_header

CRLF = b"\r\n"


def die(msg, code=2):
    print(f"craft: {msg}", file=sys.stderr)
    sys.exit(code)


# --- raw MIME -------------------------------------------------------------------------------


def crlf(data):
    return re.sub(rb"\r?\n", CRLF, data)


def split_message(raw):
    i = raw.find(b"\r\n\r\n")
    if i < 0:
        return raw, b""
    return raw[:i + 2], raw[i + 4:]


def fields_of(header):
    """[(name, raw bytes of the field, folded lines included, with its CRLF)]."""
    out = []
    for line in header.split(CRLF):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            out[-1][1] += line + CRLF
        else:
            name = line.split(b":", 1)[0].decode("ascii", "replace").strip()
            out.append([name, line + CRLF])
    return out


def value_of(fields, name):
    for n, raw in fields:
        if n.lower() == name.lower():
            v = raw.split(b":", 1)[1] if b":" in raw else b""
            return re.sub(rb"\r\n[ \t]+", b" ", v).strip().decode("utf-8", "replace")
    return None


def encode_value(value):
    try:
        value.encode("ascii")
        return value
    except UnicodeEncodeError:
        return Header(value, "utf-8").encode()


def set_field(fields, spec):
    """spec 'Name: value' replaces the first Name (others removed); 'Name:' removes all."""
    if ":" not in spec:
        die(f"header \"{spec}\": expected 'Name: value'")
    name, value = spec.split(":", 1)
    name, value = name.strip(), value.strip()
    idx = [i for i, (n, _) in enumerate(fields) if n.lower() == name.lower()]
    if not value:
        return [f for f in fields if f[0].lower() != name.lower()]
    new = [name, f"{name}: {encode_value(value)}".encode() + CRLF]
    if idx:
        fields[idx[0]] = new
        return [f for i, f in enumerate(fields) if i not in idx[1:]]
    fields.append(new)
    return fields


def boundary_of(fields):
    ct = value_of(fields, "Content-Type") or ""
    m = re.search(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', ct, re.I)
    if not m:
        die("no multipart boundary")
    return (m.group(1) or m.group(2)).encode()


def split_multipart(body, boundary):
    """(preamble, [part bytes], epilogue): each part from after its delimiter line to before
    the CRLF of the next delimiter."""
    delim = b"--" + boundary
    lines = re.split(rb"(?:^|\r\n)" + re.escape(delim), body)
    if len(lines) < 3:
        die("multipart without parts")
    preamble = lines[0]
    parts, epilogue = [], b""
    for chunk in lines[1:]:
        if chunk.startswith(b"--"):
            epilogue = chunk[2:]
            break
        if not chunk.startswith(CRLF):
            chunk = chunk.split(CRLF, 1)[1] if CRLF in chunk else b""
        else:
            chunk = chunk[2:]
        parts.append(chunk)
    return preamble, parts, epilogue


def join_multipart(preamble, parts, boundary):
    out = preamble if preamble.endswith(CRLF) or not preamble else preamble + CRLF
    for p in parts:
        out += b"--" + boundary + CRLF + p + CRLF
    return out + b"--" + boundary + b"--" + CRLF


def part_name(part):
    head, _ = split_message(part)
    m = re.search(rb'(?:file)?name\s*=\s*"?([^";\r\n]+)', head, re.I)
    return m.group(1).decode().strip().lower() if m else None


def signed_entity(raw):
    """(top-level fields, the signed multipart/mixed entity)."""
    header, body = split_message(raw)
    fields = fields_of(header)
    ct = (value_of(fields, "Content-Type") or "").lower()
    if not ct.startswith("multipart/signed"):
        die(f"not multipart/signed: {ct}")
    _, parts, _ = split_multipart(body, boundary_of(fields))
    return fields, parts[0]


# --- daticert.xml ----------------------------------------------------------------------------

ORDER_INT = ["mittente", "destinatari", "risposte", "oggetto"]


def parse_daticert(xml):
    root = ET.fromstring(xml)
    d = {"tipo": root.get("tipo"), "errore": root.get("errore", "nessuno"),
         "destinatari": [], "ricezione": []}
    inte, dati = root.find("intestazione"), root.find("dati")
    for el in inte:
        if el.tag == "destinatari":
            d["destinatari"].append((el.text or "", el.get("tipo", "certificato")))
        else:
            d[el.tag] = el.text or ""
    for el in dati:
        if el.tag == "data":
            d["data"] = {"zona": el.get("zona"), "giorno": el.findtext("giorno"),
                         "ora": el.findtext("ora")}
        elif el.tag == "ricevuta":
            d["ricevuta"] = el.get("tipo")
        elif el.tag == "ricezione":
            d["ricezione"].append(el.text or "")
        else:
            d[el.tag] = el.text or ""
    return d


def esc(s, attr=False):
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace('"', "&quot;") if attr else s


def write_daticert(d):
    i4, i8, i12 = " " * 4, " " * 8, " " * 12
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<postacert tipo="{esc(d["tipo"], True)}" errore="{esc(d.get("errore") or "nessuno", True)}">',
           f"{i4}<intestazione>",
           f"{i8}<mittente>{esc(d['mittente'])}</mittente>"]
    for addr, tipo in d["destinatari"]:
        out.append(f'{i8}<destinatari tipo="{esc(tipo, True)}">{esc(addr)}</destinatari>')
    out.append(f"{i8}<risposte>{esc(d.get('risposte', ''))}</risposte>")
    if d.get("oggetto") is not None:
        out.append(f"{i8}<oggetto>{esc(d['oggetto'])}</oggetto>")
    out += [f"{i4}</intestazione>", f"{i4}<dati>",
            f"{i8}<gestore-emittente>{esc(d['gestore-emittente'])}</gestore-emittente>",
            f'{i8}<data zona="{esc(d["data"]["zona"], True)}">',
            f"{i12}<giorno>{d['data']['giorno']}</giorno>",
            f"{i12}<ora>{d['data']['ora']}</ora>",
            f"{i8}</data>",
            f"{i8}<identificativo>{esc(d['identificativo'])}</identificativo>"]
    if d.get("msgid"):
        out.append(f"{i8}<msgid>{esc(d['msgid'])}</msgid>")
    if d.get("ricevuta"):
        out.append(f'{i8}<ricevuta tipo="{esc(d["ricevuta"], True)}" />')
    if d.get("consegna"):
        out.append(f"{i8}<consegna>{esc(d['consegna'])}</consegna>")
    for r in d.get("ricezione", []):
        out.append(f"{i8}<ricezione>{esc(r)}</ricezione>")
    if d.get("errore-esteso"):
        out.append(f"{i8}<errore-esteso>{esc(d['errore-esteso'])}</errore-esteso>")
    out += [f"{i4}</dati>", "</postacert>", ""]
    return "\n".join(out).encode("utf-8")


def set_dc(d, spec):
    if "=" not in spec:
        die(f"--dc \"{spec}\": expected NAME=VALUE")
    name, value = spec.split("=", 1)
    if name == "destinatari":
        d[name] = [(a.split(":")[0], (a.split(":") + ["certificato"])[1])
                   for a in value.split(",") if a]
    elif name == "ricezione":
        d[name] = [a for a in value.split(",") if a]
    elif name in ("tipo", "errore", "mittente", "risposte", "oggetto", "gestore-emittente",
                  "identificativo", "msgid", "ricevuta", "consegna", "errore-esteso"):
        if value == "" and name not in ("mittente", "tipo", "identificativo"):
            d.pop(name, None)
        else:
            d[name] = value
    else:
        die(f"--dc: unknown daticert field {name}")


def b64_lines(data):
    s = base64.b64encode(data)
    return CRLF.join(s[i:i + 76] for i in range(0, len(s), 76))


# --- resign ----------------------------------------------------------------------------------


def legal_now():
    try:
        from zoneinfo import ZoneInfo
        now = datetime.datetime.now(ZoneInfo("Europe/Rome"))
    except Exception:  # no tz database: UTC is still a valid zone for daticert
        now = datetime.datetime.now(datetime.timezone.utc)
    return now


def sign_detached(entity, cert, key, certfile):
    with tempfile.TemporaryDirectory() as t:
        src, out = os.path.join(t, "entity"), os.path.join(t, "sig.der")
        with open(src, "wb") as f:
            f.write(entity)
        cmd = ["openssl", "cms", "-sign", "-binary", "-in", src, "-signer", cert,
               "-inkey", key, "-md", "sha256", "-outform", "DER", "-out", out]
        if certfile:
            cmd += ["-certfile", certfile]
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0:
            die(f"openssl cms -sign failed: {r.stderr.decode(errors='replace')}")
        return open(out, "rb").read()


def service_address(fields):
    frm = value_of(fields, "From") or ""
    m = re.search(r"<([^>]+)>", frm)
    return m.group(1) if m else frm.strip()


def cmd_resign(a):
    raw = crlf(open(a.input, "rb").read())
    top, entity = signed_entity(raw)
    top = [f for f in top if f[0].lower() not in
           ("received", "return-path", "delivered-to", "x-original-to",
            "mime-version", "content-type")]
    ent_head, ent_body = split_message(entity)
    ent_fields = fields_of(ent_head)
    mixed_b = boundary_of(ent_fields)
    preamble, parts, _ = split_multipart(ent_body, mixed_b)

    di = next((i for i, p in enumerate(parts) if part_name(p) == "daticert.xml"), None)
    pi = next((i for i, p in enumerate(parts) if part_name(p) == "postacert.eml"), None)
    if di is None:
        die("no daticert.xml part")
    dhead, dbody = split_message(parts[di])
    d = parse_daticert(base64.b64decode(re.sub(rb"\s", b"", dbody)))
    pc_fields, pc_body = (None, None)
    if pi is not None:
        phead, pmsg = split_message(parts[pi])
        h, pc_body = split_message(pmsg)
        pc_fields = fields_of(h)

    def pc_set(spec):
        nonlocal pc_fields
        if pc_fields is not None:
            pc_fields = set_field(pc_fields, spec)

    if not a.keep_date:
        now = legal_now()
        top = set_field(top, "Date: " + email.utils.format_datetime(now))
        z = now.strftime("%z")
        d["data"] = {"zona": z, "giorno": now.strftime("%d/%m/%Y"), "ora": now.strftime("%H:%M:%S")}
    if a.id:
        top = set_field(top, f"Message-ID: <{a.id}>")
        d["identificativo"] = a.id
        pc_set(f"Message-ID: <{a.id}>")
    if a.msgid:
        top = set_field(top, f"X-Riferimento-Message-ID: {a.msgid}")
        d["msgid"] = a.msgid
        pc_set(f"X-Riferimento-Message-ID: {a.msgid}")
    if a.to:
        top = set_field(top, f"To: {a.to}")
        pc_set(f"To: {a.to}")
        d["destinatari"] = [(a.to, "certificato")]
    if a.sender:
        d["mittente"] = d["risposte"] = a.sender
        svc = service_address(top)
        top = set_field(top, f'From: "Per conto di: {a.sender}" <{svc}>')
        top = set_field(top, f"Reply-To: {a.sender}")
        if value_of(top, "Sender"):
            top = set_field(top, f'Sender: "Per conto di: {a.sender}" <{svc}>')
        pc_set(f"From: {a.sender}")
        pc_set(f"Reply-To: {a.sender}")
    for spec in a.header:
        top = set_field(top, spec)
    for spec in a.pc_header:
        pc_set(spec)
    for spec in a.dc:
        set_dc(d, spec)

    parts[di] = dhead + CRLF + b64_lines(write_daticert(d))
    if pi is not None:
        if a.no_postacert:
            parts[pi] = None
        else:
            parts[pi] = phead + CRLF + b"".join(f[1] for f in pc_fields) + CRLF + pc_body
    if a.text is not None:
        body = a.text.encode("latin-1", "replace").replace(b"\n", CRLF)
        parts[0] = (b'Content-Type: text/plain; charset="iso-8859-1"\r\n'
                    b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body)
    parts = [p for p in parts if p is not None]
    new_entity = ent_head + CRLF + join_multipart(preamble, parts, mixed_b)
    if new_entity.endswith(CRLF):
        # The signed content ends before the CRLF that precedes the outer delimiter.
        new_entity = new_entity[:-2]

    sig = sign_detached(new_entity, a.cert, a.key, a.certfile)
    outer = ("----=_signed_" + uuid.uuid4().hex).encode()
    top += [["MIME-Version", b"MIME-Version: 1.0\r\n"],
            ["Content-Type", b'Content-Type: multipart/signed; protocol="application/x-pkcs7-signature"; micalg=sha-256;\r\n boundary="'
             + outer + b'"\r\n']]
    out = (b"".join(f[1] for f in top) + CRLF
           + b"This is an S/MIME signed message\r\n\r\n--" + outer + CRLF + new_entity
           + CRLF + b"--" + outer + CRLF
           + b'Content-Type: application/x-pkcs7-signature; name="smime.p7s"\r\n'
             b"Content-Transfer-Encoding: base64\r\n"
             b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
           + b64_lines(sig) + CRLF + b"--" + outer + b"--" + CRLF)
    with open(a.out, "wb") as f:
        f.write(out)
    return 0


def cmd_strip(a):
    raw = crlf(open(a.input, "rb").read())
    header, body = split_message(raw)
    fields = [f for f in fields_of(header) if f[0].lower() not in
              ("received", "return-path", "delivered-to", "x-original-to")]
    with open(a.out, "wb") as f:
        f.write(b"".join(x[1] for x in fields) + CRLF + body)
    return 0


def decoded(v):
    if v is None:
        return None
    try:
        return str(make_header(decode_header(v)))
    except Exception:
        return v


def cmd_show(a):
    raw = crlf(open(a.file, "rb").read())
    header, _ = split_message(raw)
    fields = fields_of(header)
    heads = {n: decoded(value_of(fields, n)) for n in
             ("Message-ID", "X-Riferimento-Message-ID", "Subject", "From", "To", "Reply-To",
              "X-Trasporto", "X-Ricevuta", "X-Mittente", "X-VerificaSicurezza")}
    dc = None
    try:
        _, entity = signed_entity(raw)
        eh, eb = split_message(entity)
        _, parts, _ = split_multipart(eb, boundary_of(fields_of(eh)))
        for p in parts:
            if part_name(p) == "daticert.xml":
                _, body = split_message(p)
                dc = parse_daticert(base64.b64decode(re.sub(rb"\s", b"", body)))
    except SystemExit:
        pass
    print(json.dumps({"headers": heads, "daticert": dc}, ensure_ascii=False))
    return 0


def cmd_field(a):
    raw = crlf(open(a.file, "rb").read())
    header, _ = split_message(raw)
    v = decoded(value_of(fields_of(header), a.name))
    print(v if v is not None else "")
    return 0


def cmd_dc(a):
    raw = crlf(open(a.file, "rb").read())
    _, entity = signed_entity(raw)
    eh, eb = split_message(entity)
    _, parts, _ = split_multipart(eb, boundary_of(fields_of(eh)))
    for p in parts:
        if part_name(p) == "daticert.xml":
            _, body = split_message(p)
            d = parse_daticert(base64.b64decode(re.sub(rb"\s", b"", body)))
            v = d.get(a.name)
            if isinstance(v, list):
                v = ",".join(x[0] if isinstance(x, tuple) else x for x in v)
            print(v if v is not None else "")
            return 0
    die("no daticert.xml", 1)


def read_events():
    text = sys.stdin.read().strip()
    return json.loads(text) if text else []


def cmd_events_since(a):
    for e in read_events():
        if e["id"] > a.id:
            print(f"{e['kind']} {e.get('receipt_type') or '-'} {e['outcome']} {e['pec_id']} "
                  f"{e['sender']} {','.join(e.get('related_ids') or []) or '-'} "
                  f"| {e.get('subject') or ''} | {e.get('reason') or ''}")
    return 0


def cmd_max_id(a):
    print(max([e["id"] for e in read_events()] or [0]))
    return 0


def cmd_queue_only(a):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        q = json.loads(line)
        rcpts = {r["address"].lower() for r in q.get("recipients", [])}
        if rcpts != {a.addr.lower()}:
            return 1
    return 0


def main():
    p = argparse.ArgumentParser(description="crafts PEC messages for hostile tests")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resign")
    r.add_argument("--in", dest="input", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--cert", required=True)
    r.add_argument("--key", required=True)
    r.add_argument("--certfile")
    r.add_argument("--id")
    r.add_argument("--msgid")
    r.add_argument("--to")
    r.add_argument("--sender")
    r.add_argument("--header", action="append", default=[])
    r.add_argument("--pc-header", action="append", default=[])
    r.add_argument("--dc", action="append", default=[])
    r.add_argument("--no-postacert", action="store_true")
    r.add_argument("--text")
    r.add_argument("--keep-date", action="store_true")
    r.set_defaults(func=cmd_resign)
    s = sub.add_parser("strip", help="drop the top-level trace fields (signature untouched)")
    s.add_argument("--in", dest="input", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_strip)
    s = sub.add_parser("show")
    s.add_argument("file")
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("field", help="a top-level header field, decoded")
    s.add_argument("file")
    s.add_argument("name")
    s.set_defaults(func=cmd_field)
    s = sub.add_parser("dc", help="a daticert field")
    s.add_argument("file")
    s.add_argument("name")
    s.set_defaults(func=cmd_dc)
    s = sub.add_parser("events-since")
    s.add_argument("id", type=int)
    s.set_defaults(func=cmd_events_since)
    s = sub.add_parser("max-id")
    s.set_defaults(func=cmd_max_id)
    s = sub.add_parser("queue-only")
    s.add_argument("addr")
    s.set_defaults(func=cmd_queue_only)
    a = p.parse_args()
    sys.exit(a.func(a))


if __name__ == "__main__":
    main()
