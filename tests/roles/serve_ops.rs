// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec serve` in process, for what an operator sees of it: the Prometheus endpoint after
//! driving the access point, SIGHUP-style reloads (a valid file is swapped in, an invalid
//! one is refused and the running configuration stays), and the `pec status`, `pec keys`,
//! `pec check-config --live` and `pec domain` commands against the running service.
//!
//! One test function: the metrics recorder is process-wide.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use indymilter_test::{Actions, ProtoOpts, Status, TestConnection};
use openssl::x509::X509;
use pec::config::Endpoint;
use pec::crypto::testing::make_test_pki;
use pec::index::ldif::write_ldif;
use pec::index::{ProviderInfo, ProviderRecord};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Ports {
    milter: u16,
    filter: u16,
    lmtp: u16,
    metrics: u16,
    closed: u16,
}

/// The configuration, with `access` extra lines in `[access]`.
fn config_text(dir: &Path, pki: &pec::crypto::testing::TestPki, p: &Ports, access: &str) -> String {
    format!(
        r#"[provider]
name = "PEC Example IT S.p.A."
service_address = "posta-certificata@pec.example.it"
mail_receipt = "ricevute@pec.example.it"
domains = ["pec.example.it"]

[signing]
backend = "pem"
key_file = "{key}"
cert_file = "{cert}"
seal_key_file = "{seal_key}"
seal_cert_file = "{seal_cert}"

[store]
path = "{db}"

[index]
ldif = "{ldif}"

[antivirus]
clamd = "tcp:127.0.0.1:{closed}"
timeout = "2s"

[access]
listen = "inet:127.0.0.1:{milter}"
reinject = "127.0.0.1:{closed}"
{access}

[filter]
listen = "127.0.0.1:{filter}"
reinject = "127.0.0.1:{closed}"

[delivery]
listen = "127.0.0.1:{lmtp}"
dovecot = "127.0.0.1:{closed}"
reinject = "127.0.0.1:{closed}"

[metrics]
listen = "127.0.0.1:{metrics}"

[log]
# No day is sealed in this test (the log starts today): the TSA is irrelevant.
dev_insecure_no_tsa = true

# Containers and CI hosts often have a kernel clock nothing disciplines: warn, and the
# check below still requires the clock line.
[clock]
unsynchronised = "warn"
"#,
        key = pki.it_key.display(),
        cert = pki.it_cert.display(),
        seal_key = pki.it_seal_key.display(),
        seal_cert = pki.it_seal_cert.display(),
        db = dir.join("pec.db").display(),
        ldif = dir.join("index.ldif").display(),
        closed = p.closed,
        milter = p.milter,
        filter = p.filter,
        lmtp = p.lmtp,
        metrics = p.metrics,
    )
}

fn scrape(port: u16) -> String {
    pec::cli::ops::scrape(&Endpoint::Inet {
        host: "127.0.0.1".into(),
        port,
    })
    .unwrap_or_default()
}

/// The value of the sample `line_prefix` (name and labels) on the endpoint, if present.
fn sample(body: &str, line_prefix: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A submission without SASL login, `size` bytes of body: the milter's reply.
async fn submit(milter: SocketAddr, size: usize) -> Status {
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .available_opts(ProtoOpts::all())
        .open_tcp(milter)
        .await
        .unwrap();
    conn.mail(["<alice@pec.example.it>"]).await.unwrap();
    conn.rcpt(["<bob@pec.example.it>"]).await.unwrap();
    conn.header("Subject", " prova").await.unwrap();
    conn.body(vec![b'x'; size]).await.unwrap();
    let (_, status) = conn.eom().await.unwrap();
    let _ = conn.close().await;
    status
}

fn reply(status: &Status) -> String {
    match status {
        Status::Reject { message } | Status::Tempfail { message } => message
            .as_ref()
            .map(|m| m.to_string_lossy().into_owned())
            .unwrap_or_default(),
        other => format!("{other:?}"),
    }
}

fn pec(args: &[&str], cfg: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pec"))
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reload_status_keys_and_domains_against_a_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_test_pki(&dir.path().join("pki")).unwrap();
    let der = X509::from_pem(&std::fs::read(&pki.it_cert).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    std::fs::write(
        dir.path().join("index.ldif"),
        write_ldif(&[ProviderRecord {
            info: ProviderInfo {
                name: "PEC Example IT S.p.A.".into(),
                mail_receipt: "ricevute@pec.example.it".into(),
                managed_domains: vec!["pec.example.it".into()],
            },
            certificates: vec![der],
        }]),
    )
    .unwrap();
    let ports = Ports {
        milter: free_port(),
        filter: free_port(),
        lmtp: free_port(),
        metrics: free_port(),
        closed: free_port(),
    };
    let cfg: PathBuf = dir.path().join("pec.toml");
    std::fs::write(&cfg, config_text(dir.path(), &pki, &ports, "")).unwrap();
    // Without a TSA and without the development opt-out, pec serve does not start (issue
    // 19: the daily time stamp is mandatory).
    let strict = dir.path().join("strict.toml");
    let text = config_text(dir.path(), &pki, &ports, "").replace("dev_insecure_no_tsa = true", "");
    std::fs::write(&strict, text).unwrap();
    let err = pec::serve::run(pec::config::load(&strict).unwrap(), async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("log.tsa_url") && err.contains("required"),
        "{err}"
    );
    let config = pec::config::load(&cfg).unwrap();

    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(pec::serve::run_with(
        config,
        Some(pec::serve::Reloads {
            path: cfg.clone(),
            requests: reload_rx,
        }),
        async {
            let _ = stop_rx.await;
        },
    ));
    let milter: SocketAddr = format!("127.0.0.1:{}", ports.milter).parse().unwrap();
    wait_for("the milter listener", || {
        std::net::TcpStream::connect(milter).ok()
    })
    .await;

    // Metrics: the access point's decision, its latency, and the store gauges.
    let status = submit(milter, 2_000).await;
    assert!(reply(&status).starts_with("530 5.7.0"), "{status:?}");
    let body = wait_for("the metrics of the rejection", || {
        let body = scrape(ports.metrics);
        body.contains("pec_timers_pending").then_some(body)
    })
    .await;
    assert_eq!(
        sample(
            &body,
            r#"pec_messages_total{role="access",kind="submission",outcome="rejected"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"pec_latency_seconds_count{role="access"}"#),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample(&body, "pec_up"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "pec_timers_pending"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "pec_index_age_seconds"), Some(-1.0), "{body}");
    // The daily sealer ran at start; the log starts today, so no day before it was sealed
    // (issue 18: a fresh install seals no empty days from before it existed).
    assert_eq!(sample(&body, "pec_seal_age_seconds"), Some(-1.0), "{body}");
    assert!(body.contains("# HELP pec_messages_total"), "{body}");

    // A valid reload: the new size limit applies to the next message.
    std::fs::write(
        &cfg,
        config_text(
            dir.path(),
            &pki,
            &ports,
            "max_total_size = \"1KB\"\nhard_size_limit = \"1KB\"",
        ),
    )
    .unwrap();
    reload_tx.send(()).await.unwrap();
    wait_for("the reload", || {
        sample(
            &scrape(ports.metrics),
            r#"pec_config_reloads_total{outcome="ok"}"#,
        )
    })
    .await;
    let status = submit(milter, 2_000).await;
    assert!(reply(&status).starts_with("552 5.3.4"), "{status:?}");

    // An invalid file is refused: the running configuration stays.
    std::fs::write(
        &cfg,
        config_text(
            dir.path(),
            &pki,
            &ports,
            "max_total_size = \"1KB\"\nhard_size_limit = \"1KB\"\nmax_recipient = 3",
        ),
    )
    .unwrap();
    reload_tx.send(()).await.unwrap();
    wait_for("the refused reload", || {
        sample(
            &scrape(ports.metrics),
            r#"pec_config_reloads_total{outcome="failed"}"#,
        )
    })
    .await;
    let status = submit(milter, 2_000).await;
    assert!(reply(&status).starts_with("552 5.3.4"), "{status:?}");
    std::fs::write(
        &cfg,
        config_text(
            dir.path(),
            &pki,
            &ports,
            "max_total_size = \"1KB\"\nhard_size_limit = \"1KB\"",
        ),
    )
    .unwrap();

    // pec status: everything up (the signing certificate of the test PKI is valid).
    let (code, out) = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || pec(&["status"], &cfg)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    for line in [
        "store: ok",
        "legal log seals: ok",
        "legal log time stamps: WARNING: no log.tsa_url (log.dev_insecure_no_tsa)",
        "seal certificate: ok",
        "provider index: ok: from the file",
        "timers: ok: 0 certified recipients",
        "quarantine: ok: 0 messages",
        "pec serve: ok",
        "metrics endpoint: ok",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(
        out.contains("signing certificate: ok") || out.contains("signing certificate: WARNING"),
        "{out}"
    );
    // The test PKI's provider key is RSA-3072: no strength warning.
    assert!(out.contains("signing key strength: ok: RSA-3072"), "{out}");
    assert!(
        out.contains("clock: ok: synchronised")
            || out.contains("clock: WARNING: NOT synchronised")
            || out.contains("clock: WARNING: synchronisation UNKNOWN"),
        "{out}"
    );

    // pec keys: the certificate, listed in the index for our provider name.
    let (code, out) = pec(&["keys"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("subject: ") && out.contains("SHA-256 fingerprint: "),
        "{out}"
    );
    assert!(out.contains("key: RSA-3072\n"), "{out}");
    assert!(out.contains("key strength: ok: RSA-3072"), "{out}");
    assert!(
        out.contains("provider index: ok: listed for \"PEC Example IT S.p.A.\""),
        "{out}"
    );
    // Both keys and their certificates.
    assert!(
        out.contains("PEC message key (signs PEC messages only):")
            && out.contains("seal key (signs the daily seals of the legal log):")
            && out.contains("CN=Sigillo registro PEC Example IT S.p.A.")
            && out.contains("seal key validity: ok"),
        "{out}"
    );

    // pec check-config --live: clamd, Dovecot and Postfix are not running here, and each
    // failure is named; the key and the store are fine.
    let (code, out) = pec(&["check-config", "--live"], &cfg);
    assert_eq!(code, 1, "{out}");
    // Issue 19: both keys found and paired with their certificates, nothing signed.
    assert!(
        out.contains(
            "signing key: ok: key found, paired with its certificate (C=IT, \
                      O=PEC Example IT S.p.A., CN=Posta Certificata"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "seal key: ok: key found, paired with its certificate (C=IT, \
                      O=PEC Example IT S.p.A., CN=Sigillo registro"
        ),
        "{out}"
    );
    assert!(out.contains("store: ok"), "{out}");
    assert!(out.contains("clamd: FAILED"), "{out}");
    assert!(out.contains("dovecot lmtp: FAILED"), "{out}");
    assert!(out.contains("postfix reinjection: FAILED"), "{out}");
    assert!(out.contains("provider index: ok"), "{out}");
    // The seal key must be a key of its own, with a certificate fit for signing: the PEC
    // key under another file name, or a CA key, is refused (found without signing).
    let copy = dir.path().join("copy.key");
    std::fs::copy(&pki.it_key, &copy).unwrap();
    let same = dir.path().join("same.toml");
    let text = config_text(dir.path(), &pki, &ports, "")
        .replace(
            &pki.it_seal_key.display().to_string(),
            &copy.display().to_string(),
        )
        .replace(
            &pki.it_seal_cert.display().to_string(),
            &pki.it_cert.display().to_string(),
        );
    std::fs::write(&same, text).unwrap();
    let (code, out) = pec(&["check-config", "--live"], &same);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seal key: FAILED: the seal key is the PEC message key"),
        "{out}"
    );
    let ca = dir.path().join("ca.toml");
    let text = config_text(dir.path(), &pki, &ports, "")
        .replace(
            &pki.it_seal_key.display().to_string(),
            &pki.ca_key.display().to_string(),
        )
        .replace(
            &pki.it_seal_cert.display().to_string(),
            &pki.ca_cert.display().to_string(),
        );
    std::fs::write(&ca, text).unwrap();
    let (code, out) = pec(&["check-config", "--live"], &ca);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seal key: FAILED: certificate of C=IT, O=PEC Test, CN=PEC Test CA: key usage has neither digitalSignature nor nonRepudiation"),
        "{out}"
    );

    // pec domain: added domains are kept in the store and listed with the configured.
    let (code, out) = pec(&["domain", "add", "PEC2.example.it"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("virtual_mailbox_domains = pec.example.it, pec2.example.it"),
        "{out}"
    );
    let (code, _) = pec(&["domain", "add", "pec.example.it"], &cfg);
    assert_eq!(code, 1);
    let (code, _) = pec(&["domain", "add", "not a domain"], &cfg);
    assert_eq!(code, 2);
    let (code, out) = pec(&["domain", "list"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pec.example.it\t(configuration)"), "{out}");
    assert!(out.contains("pec2.example.it\t(pec domain add)"), "{out}");
    let (code, out) = pec(&["domain", "remove", "pec2.example.it"], &cfg);
    assert_eq!(code, 0, "{out}");
    let (code, _) = pec(&["domain", "remove", "pec2.example.it"], &cfg);
    assert_eq!(code, 1);

    stop_tx.send(()).unwrap();
    serve.await.unwrap().unwrap();

    // With the service stopped, pec status says so and fails.
    let (code, out) = pec(&["status"], &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pec serve: FAILED: not running"), "{out}");
}
