// SPDX-License-Identifier: GPL-3.0-or-later
//! A local HTTPS server for the REM trust tests (Trusted Lists and peers' CSI documents
//! fetched as in service), whose answers the test sets and breaks; and the kit's TL_CCA
//! made to point at it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

use super::lists::SignedKit;

/// What a path answers: a 200 with this body, or this error status (0: the connection is
/// closed without an answer).
pub type Answer = Result<String, u16>;

/// An HTTPS server on 127.0.0.1 with the test PKI's server certificate (made by
/// `tests/tsa/make-tsa.sh`, for 127.0.0.1 and localhost), answering each GET as set
/// (404 for a path never set). It runs until the test process ends.
pub struct Https {
    pub port: u16,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    /// The CA file a client trusts it with.
    pub ca_file: PathBuf,
}

impl Https {
    pub fn start(kit: &SignedKit) -> Https {
        let files = kit.pki.dir.join("https");
        super::tsa::make_files(&files, &kit.pki.dir);
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor
            .set_private_key_file(files.join("server.key"), SslFiletype::PEM)
            .unwrap();
        acceptor
            .set_certificate_chain_file(files.join("server.pem"))
            .unwrap();
        let acceptor = acceptor.build();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let served = answers.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(mut s) = acceptor.accept(s) else {
                    continue;
                };
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got);
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let answer = served
                    .lock()
                    .unwrap()
                    .get(&path)
                    .cloned()
                    .unwrap_or(Err(404));
                let (status, body) = match answer {
                    Ok(b) => ("200 OK".to_string(), b),
                    Err(0) => {
                        let _ = s.shutdown();
                        continue;
                    }
                    Err(code) => (format!("{code} Failed"), String::new()),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.shutdown();
            }
        });
        Https {
            port,
            answers,
            ca_file: kit.pki.ca_cert.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// `path` answers `answer` from now on.
    pub fn set(&self, path: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_string(), answer);
    }
}

/// A loopback port where nothing listens (bound, then let go).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The kit's TL_CCA (unsigned, dates moved by [`SignedKit`]) with RB-REMS's identity made
/// the `pec.example.it` test certificate (so that the tests can sign its CSI) and the
/// https supply points of SA-REMS and RB-REMS set to `a_csi` and `b_csi`; RC-REMS's points
/// at a loopback port where nothing listens (a server down; no test resolves the kit's
/// hosts).
pub fn kit_list(kit: &SignedKit, a_csi: &str, b_csi: &str) -> String {
    let text = kit
        .unsigned
        .replace(
            "https://rem-provider-a-service.cca/CapabilityAndSecurityMetadata.xml",
            a_csi,
        )
        .replace(
            "https://rem-provider-b-service.ccb/CapabilityAndSecurityMetadata.xml",
            b_csi,
        )
        .replace(
            "https://rem-provider-c-service.ccc/CapabilityAndSecurityMetadata.xml",
            &format!("https://127.0.0.1:{}/c.xml", dead_port()),
        );
    let b = text
        .find("RB-REMS provider</Name>")
        .expect("RB-REMS in TL_CCA");
    let open = b + text[b..].find("<X509Certificate>").unwrap() + "<X509Certificate>".len();
    let close = open + text[open..].find("</X509Certificate>").unwrap();
    let ours = base64::engine::general_purpose::STANDARD.encode(&kit.signer);
    format!("{}{ours}{}", &text[..open], &text[close..])
}

/// `text` (a kit list) without its `https://` supply points: no CSI to fetch.
pub fn without_csi(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("<ServiceSupplyPoint>https://"))
        .map(|l| format!("{l}\n"))
        .collect()
}
