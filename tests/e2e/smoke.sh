#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Self-test of the end-to-end harness, with no pec involved: clamd, Dovecot and Postfix on
# free loopback ports in a temporary directory.
#
#  1. clamd answers PING and finds EICAR and the PEC test marker (in a base64 attachment)
#     through INSTREAM, and passes clean data;
#  2. Postfix "a" refuses a submission without AUTH, and delivers one submitted with AUTH
#     PLAIN (SASL through Dovecot) to Dovecot over LMTP, where IMAP finds it;
#  3. postfix_route: a second instance "b" serves b.test; "a" routes b.test to it over SMTP,
#     and a message submitted to "a" for b.test arrives in b.test's mailbox.
#
# Prints PASS or FAIL and the wall time. Needs root and tests/e2e/install.sh's packages.
# Set E2E_KEEP=1 to keep the temporary directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
pecmail=("$E2E_PYTHON" "$here/pecmail.py")

started=$(_e2e_now_us)
step="setup"
root=$(e2e_tmpdir)

finish() {
  local rc=$? elapsed
  trap - EXIT
  set +e
  if [ "$rc" -ne 0 ]; then
    e2e_show_log "$root/pf-a/maillog"
    e2e_show_log "$root/pf-b/maillog"
    e2e_show_log "$root/dovecot/dovecot.log"
    e2e_show_log "$root/clamd/clamd.log"
  fi
  e2e_log "stopping"
  postfix_stop "$root/pf-b"
  postfix_stop "$root/pf-a"
  e2e_log "postfix stopped"
  dovecot_stop "$root/dovecot"
  e2e_log "dovecot stopped"
  clamd_stop "$root/clamd"
  e2e_log "clamd stopped"
  if [ "${E2E_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "instance directories kept in $root" >&2
  else
    rm -rf "$root"
  fi
  elapsed=$(( ($(_e2e_now_us) - started) / 1000 ))
  if [ "$rc" -eq 0 ]; then
    printf 'PASS e2e smoke (%d.%03d s)\n' $((elapsed / 1000)) $((elapsed % 1000))
  else
    printf 'FAIL e2e smoke at step "%s" (exit %d, %d.%03d s)\n' "$step" "$rc" \
      $((elapsed / 1000)) $((elapsed % 1000))
  fi
  exit "$rc"
}
trap finish EXIT

expect_reply() {
  local what=$1 want=$2 got
  got=$("${pecmail[@]}" instream --port "$clamd_port" "$root/$what")
  if [ "$got" != "$want" ]; then
    e2e_fail "clamd on $what: got \"$got\", expected \"$want\""
    return 1
  fi
  e2e_log "clamd on $what: $got"
}

# a message with a unique token, so that the fetched copy can be recognised
write_message() {
  local file=$1 from=$2 to=$3 token=$4
  printf '%s\r\n' \
    "From: <$from>" \
    "To: <$to>" \
    "Subject: e2e smoke $token" \
    "Message-ID: <$token@pecmail.test>" \
    "Date: $(LC_ALL=C date -R)" \
    "MIME-Version: 1.0" \
    "Content-Type: text/plain; charset=us-ascii" \
    "" \
    "smoke test body $token" > "$file"
}

fetch_one() {
  local user=$1 out=$2 token=$3 path
  path=$("${pecmail[@]}" fetch --port "$imap_port" --user "$user" --dir "$out" \
    --count 1 --deadline 30)
  if ! grep -q "smoke test body $token" "$path"; then
    e2e_fail "$path is not the message sent (token $token)"
    return 1
  fi
  e2e_log "$user got $path"
}

free=$(e2e_free_ports 7)
mapfile -t ports <<< "$free"
clamd_port=${ports[0]} lmtp_port=${ports[1]} imap_port=${ports[2]}
a_sub=${ports[3]} a_smtp=${ports[4]} b_sub=${ports[5]} b_smtp=${ports[6]}

step="start clamd"
clamd_start "$root/clamd" "$clamd_port"
step="start dovecot"
dovecot_start "$root/dovecot" "$lmtp_port" "$imap_port"
step="start postfix a"
# no content filter, no milter, no reinjection listener in this smoke test
postfix_start --sasl-path "$root/dovecot/run/auth-postfix" \
  "$root/pf-a" a "$a_sub" "$a_smtp" "" "" "" "$lmtp_port" a.test

step="clamd INSTREAM"
clamd_ping "$clamd_port"
e2e_eicar > "$root/eicar.com"
printf 'nothing to see here\n' > "$root/clean.txt"
{
  printf '%s\r\n' "From: <alice@a.test>" "To: <bob@a.test>" "Subject: marker" "MIME-Version: 1.0" \
    'Content-Type: multipart/mixed; boundary="b"' "" "--b" "Content-Type: text/plain" "" "hello" \
    "--b" "Content-Type: application/octet-stream" "Content-Transfer-Encoding: base64" \
    'Content-Disposition: attachment; filename="x.bin"' ""
  printf '%s' PEC-TEST-VIRUS-MARKER | base64
  printf '%s\r\n' "--b--"
} > "$root/marker.eml"
expect_reply eicar.com "stream: Eicar-Test-Signature.UNOFFICIAL FOUND"
expect_reply marker.eml "stream: PEC.Test.Marker.UNOFFICIAL FOUND"
expect_reply clean.txt "stream: OK"

step="submission without AUTH is refused"
token="t$RANDOM$RANDOM"
write_message "$root/m1.eml" alice@a.test bob@a.test "$token"
"${pecmail[@]}" send --port "$a_sub" --from alice@a.test --to bob@a.test --expect-reject \
  "$root/m1.eml" >&2

step="submission with AUTH PLAIN, delivery over LMTP, IMAP fetch"
"${pecmail[@]}" send --port "$a_sub" --user alice@a.test --password test \
  --from alice@a.test --to bob@a.test "$root/m1.eml" >&2
fetch_one bob@a.test "$root/got-bob" "$token"
postfix_wait_queue_empty "$root/pf-a" 30

step="start postfix b"
postfix_start --sasl-path "$root/dovecot/run/auth-postfix" \
  "$root/pf-b" b "$b_sub" "$b_smtp" "" "" "" "$lmtp_port" b.test
step="postfix_route a → b"
postfix_route "$root/pf-a" b.test "127.0.0.1:$b_smtp"
token="t$RANDOM$RANDOM"
write_message "$root/m2.eml" alice@a.test carol@b.test "$token"
"${pecmail[@]}" send --port "$a_sub" --user alice@a.test --password test \
  --from alice@a.test --to carol@b.test "$root/m2.eml" >&2
fetch_one carol@b.test "$root/got-carol" "$token"
wait_for_file_match "$root/pf-a/maillog" "to=<carol@b.test>, relay=b.test\[127.0.0.1\]:$b_smtp,.*status=sent" 10
postfix_wait_queue_empty "$root/pf-a" 30
postfix_wait_queue_empty "$root/pf-b" 30

step="stop"
