# SPDX-License-Identifier: GPL-3.0-or-later
# pec: files PEC receipts and notices into folders by their X-Ricevuta type, and anomaly
# envelopes (X-Trasporto: errore) into "Anomalie". Transport envelopes (X-Trasporto:
# posta-certificata, the certified messages themselves) and everything else stay in INBOX.
#
#   X-Ricevuta                 folder
#   accettazione               Ricevute/Accettazione
#   presa-in-carico            Ricevute/Presa in carico
#   avvenuta-consegna          Ricevute/Consegna
#   non-accettazione           Avvisi/Non accettazione
#   errore-consegna            Avvisi/Mancata consegna
#   preavviso-errore-consegna  Avvisi/Superamento tempo massimo
#   rilevazione-virus          Avvisi/Rilevazione virus
#   X-Trasporto: errore        Anomalie
#
# Folders are created on first use (fileinto :create). "/" is the hierarchy separator of
# the folder names: the mail namespace needs `separator = /` (dovecot/40-pec-sieve.conf).
#
# Enabled per mailbox: the mailbox's own Sieve script includes this one, which Dovecot finds
# in sieve_global (dovecot/40-pec-sieve.conf; docs/operator-guide.md, "Filing receipts"):
#   require "include";
#   include :global "pec-receipts";
# The script trusts the X-Ricevuta and X-Trasporto fields because everything in a PEC
# mailbox comes through pec's delivery point, which delivers only what pec made or verified
# (a class field on unsigned mail makes it an anomaly envelope). It does not stop: rules of
# the mailbox's own script after the include still run.
require ["fileinto", "mailbox"];

if header :is "X-Ricevuta" "accettazione" {
  fileinto :create "Ricevute/Accettazione";
} elsif header :is "X-Ricevuta" "presa-in-carico" {
  fileinto :create "Ricevute/Presa in carico";
} elsif header :is "X-Ricevuta" "avvenuta-consegna" {
  fileinto :create "Ricevute/Consegna";
} elsif header :is "X-Ricevuta" "non-accettazione" {
  fileinto :create "Avvisi/Non accettazione";
} elsif header :is "X-Ricevuta" "errore-consegna" {
  fileinto :create "Avvisi/Mancata consegna";
} elsif header :is "X-Ricevuta" "preavviso-errore-consegna" {
  fileinto :create "Avvisi/Superamento tempo massimo";
} elsif header :is "X-Ricevuta" "rilevazione-virus" {
  fileinto :create "Avvisi/Rilevazione virus";
} elsif header :is "X-Trasporto" "errore" {
  fileinto :create "Anomalie";
}
