// SPDX-License-Identifier: GPL-3.0-or-later
//! The clamd client against a fake clamd on loopback (TCP and unix socket), and against the
//! real clamd when the end-to-end harness exports one (`PEC_E2E_CLAMD=tcp:127.0.0.1:PORT`).

use std::time::Duration;

use pec::antivirus::{Antivirus, AvError, Clamd, ScanVerdict, CHUNK_SIZE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// How the fake clamd behaves after reading the command.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Like clamd with the test DB: EICAR and the PEC marker are found, the rest is clean.
    Normal,
    /// Answers `... ERROR` to every INSTREAM.
    Error,
    /// Reads everything and never answers.
    Silent,
    /// clamd with `StreamMaxLength` = this many bytes: past it, the size-limit error, then close.
    Limit(usize),
}

/// What the fake saw on one connection.
#[derive(Debug, Default)]
struct Seen {
    command: Vec<u8>,
    chunks: Vec<usize>,
    data: Vec<u8>,
    terminated: bool,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, mode: Mode) -> Seen {
    let mut seen = Seen::default();
    let mut b = [0u8; 1];
    loop {
        if s.read_exact(&mut b).await.is_err() {
            return seen;
        }
        if b[0] == 0 {
            break;
        }
        seen.command.push(b[0]);
    }
    match seen.command.as_slice() {
        b"zPING" => {
            let _ = s.write_all(b"PONG\0").await;
            return seen;
        }
        b"zINSTREAM" => {}
        _ => {
            let _ = s.write_all(b"UNKNOWN COMMAND\0").await;
            return seen;
        }
    }
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).await.is_err() {
            return seen;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            seen.terminated = true;
            break;
        }
        seen.chunks.push(len);
        let mut chunk = vec![0u8; len];
        if s.read_exact(&mut chunk).await.is_err() {
            return seen;
        }
        seen.data.extend_from_slice(&chunk);
        if let Mode::Limit(max) = mode {
            if seen.data.len() > max {
                let _ = s.write_all(b"INSTREAM size limit exceeded. ERROR\0").await;
                return seen; // dropping the stream closes it, unread data and all
            }
        }
    }
    let reply: &[u8] = match mode {
        Mode::Silent => {
            std::future::pending::<()>().await;
            b""
        }
        Mode::Error => b"stream: Can't allocate memory ERROR\0",
        Mode::Normal | Mode::Limit(_) => {
            if contains(&seen.data, b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE") {
                b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0"
            } else if contains(&seen.data, b"PEC-TEST-VIRUS-MARKER") {
                b"stream: PEC.Test.Marker.UNOFFICIAL FOUND\0"
            } else {
                b"stream: OK\0"
            }
        }
    };
    let _ = s.write_all(reply).await;
    seen
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A fake clamd on a free loopback TCP port; returns its `tcp:` address and the per-connection
/// records.
async fn fake_tcp(mode: Mode) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("tcp:{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(serve(s, mode).await);
            });
        }
    });
    (addr, rx)
}

async fn fake_unix(dir: &tempfile::TempDir, mode: Mode) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let path = dir.path().join("clamd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(serve(s, mode).await);
            });
        }
    });
    (format!("unix:{}", path.display()), rx)
}

fn clamd(addr: &str) -> Clamd {
    Clamd::new(addr, Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn tcp_clean_infected_and_ping() {
    let (addr, mut seen) = fake_tcp(Mode::Normal).await;
    let av = clamd(&addr);
    assert_eq!(av.addr(), addr);

    assert_eq!(av.scan(b"hello world").await.unwrap(), ScanVerdict::Clean);
    let s = seen.recv().await.unwrap();
    assert_eq!(s.command, b"zINSTREAM");
    assert_eq!(s.data, b"hello world");
    assert!(s.terminated);

    assert_eq!(
        av.scan(EICAR).await.unwrap(),
        ScanVerdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
    );
    av.ping().await.unwrap();
}

#[tokio::test]
async fn unix_clean_infected_and_ping() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut seen) = fake_unix(&dir, Mode::Normal).await;
    let av = clamd(&addr);
    assert_eq!(av.scan(b"just text").await.unwrap(), ScanVerdict::Clean);
    assert!(seen.recv().await.unwrap().terminated);
    let mail = b"Subject: x\r\n\r\nsome PEC-TEST-VIRUS-MARKER inside\r\n";
    assert_eq!(
        av.scan(mail).await.unwrap(),
        ScanVerdict::Infected("PEC.Test.Marker.UNOFFICIAL".into())
    );
    av.ping().await.unwrap();
}

#[tokio::test]
async fn large_data_is_sent_in_chunks_of_at_most_64k() {
    let (addr, mut seen) = fake_tcp(Mode::Normal).await;
    let av = clamd(&addr);
    let data: Vec<u8> = (0..3 * CHUNK_SIZE + 8193)
        .map(|i| (i % 251) as u8)
        .collect();
    assert_eq!(av.scan(&data).await.unwrap(), ScanVerdict::Clean);
    let s = seen.recv().await.unwrap();
    assert_eq!(s.chunks, vec![CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, 8193]);
    assert!(s.data == data);
    assert!(s.terminated);

    // empty data: only the terminating chunk
    assert_eq!(av.scan(b"").await.unwrap(), ScanVerdict::Clean);
    let s = seen.recv().await.unwrap();
    assert!(s.chunks.is_empty() && s.terminated);
}

#[tokio::test]
async fn error_reply_is_a_protocol_error() {
    let (addr, _seen) = fake_tcp(Mode::Error).await;
    match clamd(&addr).scan(b"data").await {
        Err(AvError::Protocol(m)) => assert!(m.contains("ERROR"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stream_size_limit_is_a_protocol_error() {
    for unix in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _seen) = if unix {
            fake_unix(&dir, Mode::Limit(100 * 1024)).await
        } else {
            fake_tcp(Mode::Limit(100 * 1024)).await
        };
        // far more than the limit, so that clamd closes while we are still writing
        let data = vec![b'a'; 8 * 1024 * 1024];
        match clamd(&addr).scan(&data).await {
            Err(AvError::Protocol(m)) => {
                assert!(m.contains("size limit exceeded"), "unix={unix}: {m}")
            }
            other => panic!("unix={unix}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn silent_clamd_times_out() {
    let (addr, _seen) = fake_tcp(Mode::Silent).await;
    let av = Clamd::new(&addr, Duration::from_millis(200)).unwrap();
    let started = std::time::Instant::now();
    match av.scan(b"data").await {
        Err(AvError::Timeout(t)) => assert_eq!(t, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    let dir = tempfile::tempdir().unwrap();
    let (addr, _seen) = fake_unix(&dir, Mode::Silent).await;
    let av = Clamd::new(&addr, Duration::from_millis(200)).unwrap();
    assert!(matches!(av.scan(b"data").await, Err(AvError::Timeout(_))));
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("tcp:127.0.0.1:{port}");
    match clamd(&addr).scan(b"x").await {
        Err(AvError::Unreachable { addr: a, .. }) => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        clamd(&addr).ping().await,
        Err(AvError::Unreachable { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("missing.sock").display());
    assert!(matches!(
        clamd(&addr).scan(b"x").await,
        Err(AvError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn usable_as_a_trait_object() {
    let (addr, _seen) = fake_tcp(Mode::Normal).await;
    let av: Box<dyn Antivirus> = Box::new(clamd(&addr));
    assert_eq!(av.scan(b"ok").await.unwrap(), ScanVerdict::Clean);
}

/// The real clamd started by tests/e2e (lib.sh `clamd_start`), when its address is exported
/// as `PEC_E2E_CLAMD`. With `PEC_E2E_CLAMD_STREAM_MAX` (bytes, clamd's `StreamMaxLength`)
/// also checks that an oversized stream is a protocol error.
#[tokio::test]
async fn real_clamd_when_available() {
    let Ok(addr) = std::env::var("PEC_E2E_CLAMD") else {
        eprintln!(
            "SKIPPED real_clamd_when_available: PEC_E2E_CLAMD not set (tests/e2e exports it)"
        );
        return;
    };
    if let Ok(max) = std::env::var("PEC_E2E_CLAMD_STREAM_MAX") {
        let max: usize = max.parse().unwrap();
        let av = Clamd::new(&addr, Duration::from_secs(10)).unwrap();
        let data = vec![b'a'; max + 4 * 1024 * 1024];
        match av.scan(&data).await {
            Err(AvError::Protocol(m)) => assert!(m.contains("size limit exceeded"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let av = Clamd::new(&addr, Duration::from_secs(10)).unwrap();
    av.ping().await.unwrap();
    assert_eq!(av.scan(b"clean text\n").await.unwrap(), ScanVerdict::Clean);
    assert_eq!(
        av.scan(EICAR).await.unwrap(),
        ScanVerdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
    );
    let mail = b"From: a@pec.example.it\r\nTo: b@pec.example.it\r\nSubject: t\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=x.bin\r\n\r\n\
UEVDLVRFU1QtVklSVVMtTUFSS0VS\r\n--b--\r\n";
    assert_eq!(
        av.scan(mail).await.unwrap(),
        ScanVerdict::Infected("PEC.Test.Marker.UNOFFICIAL".into())
    );
    // Nested: the marker deflated in a zip, attached (base64) to a message that is itself
    // attached base64 as message/rfc822, and the same forwarded inside a PEC envelope's
    // postacert.eml: clamd decodes every level, and it stays a virus (issue 21).
    use pec::access::testfiles::{forward, message, pec_envelope, zip, Attachment, ZipFile};
    let text = format!(
        "{}PEC-TEST-VIRUS-MARKER{}",
        "lorem ipsum ".repeat(500),
        "dolor sit amet ".repeat(500)
    );
    let archive = zip(&[ZipFile::deflated("documenti/nota.txt", text.as_bytes())]);
    assert!(!archive.windows(21).any(|w| w == b"PEC-TEST-VIRUS-MARKER"));
    let inner = message(
        "interno",
        &[Attachment::new(
            "documenti.zip",
            "application/zip",
            &archive,
        )],
    );
    let outer = message(
        "esterno",
        &[Attachment::new("inoltrato.eml", "message/rfc822", &inner)],
    );
    assert_eq!(
        av.scan(&outer).await.unwrap(),
        ScanVerdict::Infected("PEC.Test.Marker.UNOFFICIAL".into())
    );
    let forwarded = forward("busta.eml", &pec_envelope(&inner));
    assert_eq!(
        av.scan(&forwarded).await.unwrap(),
        ScanVerdict::Infected("PEC.Test.Marker.UNOFFICIAL".into())
    );
    // the same archive without the marker is clean
    let clean = zip(&[ZipFile::deflated("documenti/nota.txt", b"testo pulito")]);
    let outer = message(
        "esterno",
        &[Attachment::new("documenti.zip", "application/zip", &clean)],
    );
    assert_eq!(av.scan(&outer).await.unwrap(), ScanVerdict::Clean);
}
