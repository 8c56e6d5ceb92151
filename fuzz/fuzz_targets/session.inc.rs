// SPDX-License-Identifier: GPL-3.0-or-later
// Shared by the two session targets: drives one server session over an in-memory pipe.
//
// The client half writes the fuzz input (then closes its side) while reading every reply,
// so that neither side can block the other; the session must end by itself once the input
// is exhausted, well within the deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2525))
}

/// Runs `serve(server_end)` against `input`; returns every byte the server wrote.
fn drive<F, Fut>(input: &[u8], serve: F) -> Vec<u8>
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(8 * 1024);
        let session = tokio::spawn(serve(server));
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            // The server may close first (QUIT, too many errors): a failed write is fine.
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let talk = async { tokio::join!(write, read).1 };
        let out = tokio::time::timeout(Duration::from_secs(10), talk)
            .await
            .expect("the session ends once the client has closed");
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session task ends")
            .expect("the session task does not panic");
        out
    })
}

/// Every reply line the server wrote is a reply: three digits, then space or dash.
fn check_replies(out: &[u8]) {
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.ends_with(b"\r"), "reply line without CRLF: {line:?}");
        assert!(line.len() >= 4, "short reply line: {line:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit), "bad reply: {line:?}");
        assert!(matches!(line[3], b' ' | b'-' | b'\r'), "bad reply: {line:?}");
    }
}
