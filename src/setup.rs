// SPDX-License-Identifier: GPL-3.0-or-later
//! Installation helpers (issue 18): what a command writes better than an administrator
//! copies from prose. The single-provider index file (our own record, before the national
//! index is synchronised) and the Postfix and Dovecot lines that match a configuration.
//! Pure functions of their inputs; the CLI writes their output.

use crate::index::{ldif::write_ldif, ProviderInfo, ProviderRecord};

/// Our own provider record as an index LDIF (`[index] ldif`), from the provider's name,
/// receipt mailbox and domains and the PEM certificate (the first one of `cert_pem`).
pub fn own_index_ldif(
    name: &str,
    mail_receipt: &str,
    domains: &[String],
    cert_pem: &[u8],
) -> Result<String, String> {
    let certs = openssl::x509::X509::stack_from_pem(cert_pem)
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = certs
        .first()
        .ok_or_else(|| "no certificate in the PEM file".to_string())?;
    let der = cert.to_der().map_err(|e| format!("certificate: {e}"))?;
    let record = ProviderRecord {
        info: ProviderInfo {
            name: name.to_string(),
            mail_receipt: mail_receipt.to_string(),
            managed_domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        },
        certificates: vec![der],
    };
    Ok(write_ldif(std::slice::from_ref(&record)))
}

/// Where pec listens and what it reaches, as the Postfix and Dovecot lines need them.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub domains: Vec<String>,
    /// `[access] listen`, in Postfix's milter syntax (`inet:127.0.0.1:10030`).
    pub milter: String,
    /// `[filter] listen`, HOST:PORT.
    pub filter: String,
    /// `[delivery] listen`, HOST:PORT.
    pub delivery: String,
    /// The reinjection listener pec injects into, HOST:PORT.
    pub reinject: String,
    /// `[delivery] dovecot`: HOST:PORT or unix:/PATH.
    pub dovecot: String,
    /// The largest message pec accepts at submission (`[access] hard_size_limit`), bytes.
    pub message_size_limit: u64,
    /// `[index] tls_policy_map`: the Postfix TLS policy map pec writes from the index.
    pub tls_policy_map: Option<String>,
}

fn host_port(addr: &str) -> (&str, &str) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => (addr, ""),
    }
}

/// The `postconf -e` settings of main.cf for these hooks, one `name = value` per line.
/// `smtp_tls_policy_maps` comes only with `tls_policy_map` (pec writes no map without it,
/// and Postfix's SMTP client stops on a missing one).
pub fn postfix_main_lines(h: &Hooks) -> Vec<String> {
    let (fh, fp) = host_port(&h.filter);
    let mut tls = vec![
        "smtpd_tls_security_level = may".to_string(),
        "smtp_tls_security_level = may".into(),
    ];
    if let Some(map) = &h.tls_policy_map {
        tls.push(format!("smtp_tls_policy_maps = texthash:{map}"));
    }
    tls.extend([
        "smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt".into(),
        "smtp_tls_loglevel = 1".into(),
    ]);
    [
        format!("virtual_mailbox_domains = {}", h.domains.join(" ")),
        format!("virtual_transport = lmtp:inet:{}", h.delivery),
        "recipient_delimiter = +".into(),
        "disable_mime_output_conversion = yes".into(),
        "smtputf8_enable = no".into(),
        format!("content_filter = pecfilter:[{fh}]:{fp}"),
    ]
    .into_iter()
    .chain(tls)
    .chain([
        "milter_default_action = tempfail".into(),
        "milter_protocol = 6".into(),
        "milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr}".into(),
        "milter_end_of_data_macros = i".into(),
        "milter_content_timeout = 300s".into(),
        format!("message_size_limit = {}", h.message_size_limit),
        "maximal_queue_lifetime = 1d".into(),
        "bounce_queue_lifetime = 1d".into(),
    ])
    .collect()
}

/// The master.cf services for these hooks (submission with the milter, the filter
/// transport, the reinjection listener), as in /usr/share/pec/postfix/master.cf.snippet.
pub fn postfix_master_lines(h: &Hooks) -> String {
    format!(
        "submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=private/auth
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o smtpd_milters={milter}
  -o milter_macro_daemon_name=ORIGINATING
pecfilter unix  -       -       n       -       20      smtp
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_tls_security_level=none
  -o smtp_tls_policy_maps=
  -o smtp_data_done_timeout=1200s
{reinject} inet n  -       n       -       20      smtpd
  -o syslog_name=postfix/pec-reinject
  -o content_filter=
  -o smtpd_milters=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters,no_address_mappings
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_tls_security_level=none
",
        milter = h.milter,
        reinject = h.reinject
    )
}

/// The Dovecot configuration for these hooks: the delivery to `user+FOLDER@domain` into
/// FOLDER (the `folder` mailbox policy), LMTP where pec forwards (nothing when that is a
/// Unix socket: Dovecot's own /run/dovecot/lmtp), and the doveadm server's socket for the
/// service user (the post-crash duplicate check).
pub fn dovecot_lines(h: &Hooks, service_user: &str) -> String {
    let mut out = String::from(
        "recipient_delimiter = +\nlmtp_save_to_detail_mailbox = yes\nlda_mailbox_autocreate = yes\n",
    );
    if let Some(path) = h.dovecot.strip_prefix("unix:") {
        out.push_str(&format!(
            "# LMTP: pec uses the socket {path}; Dovecot's listener there must let user {service_user} connect.\n"
        ));
    } else {
        let (host, port) = host_port(&h.dovecot);
        out.push_str(&format!(
            "service lmtp {{\n  inet_listener lmtp {{\n    address = {host}\n    port = {port}\n  }}\n}}\n"
        ));
    }
    out.push_str(&format!(
        "service doveadm {{\n  unix_listener doveadm-server {{\n    user = {service_user}\n    mode = 0600\n  }}\n}}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks() -> Hooks {
        Hooks {
            domains: vec!["pec.example.it".into()],
            milter: "inet:127.0.0.1:10030".into(),
            filter: "127.0.0.1:10026".into(),
            delivery: "127.0.0.1:10025".into(),
            reinject: "127.0.0.1:10027".into(),
            dovecot: "127.0.0.1:24".into(),
            message_size_limit: 157_286_400,
            tls_policy_map: Some("/var/lib/pec/tls_policy".into()),
        }
    }

    /// The lines for the sample configuration are the shipped snippet's settings.
    #[test]
    fn postfix_lines_match_the_shipped_snippet() {
        let snippet = include_str!("../postfix/main.cf.snippet");
        let settings: Vec<&str> = snippet
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(postfix_main_lines(&hooks()), settings);
        let master = include_str!("../postfix/master.cf.snippet");
        for line in postfix_master_lines(&hooks()).lines() {
            let first = line.split_whitespace().next().unwrap();
            assert!(
                master
                    .lines()
                    .any(|m| m.split_whitespace().next() == Some(first)
                        && m.split_whitespace().collect::<Vec<_>>()
                            == line.split_whitespace().collect::<Vec<_>>()),
                "{line}"
            );
        }
    }

    #[test]
    fn dovecot_lines_follow_the_lmtp_address() {
        let tcp = dovecot_lines(&hooks(), "pec");
        assert!(tcp.contains("address = 127.0.0.1\n    port = 24"), "{tcp}");
        assert!(tcp.contains("user = pec"));
        assert!(tcp.starts_with("recipient_delimiter = +\nlmtp_save_to_detail_mailbox = yes\n"));
        let mut h = hooks();
        h.dovecot = "unix:/run/dovecot/lmtp".into();
        assert!(!dovecot_lines(&h, "pec").contains("inet_listener"));
    }

    #[test]
    fn own_index_reads_back() {
        let key = openssl::rsa::Rsa::generate(2048).unwrap();
        let pkey = openssl::pkey::PKey::from_rsa(key).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("O", "PEC Example IT S.p.A.")
            .unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&pkey).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&pkey, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let cert = b.build();
        let pem = cert.to_pem().unwrap();
        let ldif = own_index_ldif(
            "PEC Example IT S.p.A.",
            "ricevute@pec.example.it",
            &["PEC.example.it".to_string()],
            &pem,
        )
        .unwrap();
        let records = crate::index::ldif::parse_ldif(&ldif).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].info.managed_domains, vec!["pec.example.it"]);
        assert_eq!(records[0].certificates, vec![cert.to_der().unwrap()]);
        assert!(own_index_ldif("x", "y", &[], b"not pem").is_err());
    }
}
