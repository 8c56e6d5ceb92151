// SPDX-License-Identifier: GPL-3.0-or-later
//! The HTTP/1.1 client of pec's fetches (the time-stamping authority of [`super::tsa`], the
//! REM Trusted Lists and CSIs of [`get`]) and the responses pec reads (those, and the CRL and
//! OCSP servers of [`super::revocation`]): the TLS client contexts, built once per trust
//! settings and files ([`tls_context`]); the peer checked for its host name or address
//! ([`tls_connect`]); a response read whole under each client's own size and time bounds,
//! down to its body; and the connections kept alive between requests ([`request`]).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode, SslOptions, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::verify::X509CheckFlags;

/// The parts of an `http[s]://HOST[:PORT]/PATH` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses `http[s]://HOST[:PORT]/PATH` (no user information).
pub fn parse_url(url: &str) -> Option<Url> {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().ok()?,
        ),
        _ => (authority, default),
    };
    if host.is_empty() || authority.contains('@') {
        return None;
    }
    Some(Url {
        tls,
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// Sends the request on `stream` and reads the whole response (at most `max` bytes).
pub fn exchange<S: Read + Write>(
    mut stream: S,
    head: &[u8],
    body: &[u8],
    max: u64,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(head)
        .and_then(|_| stream.write_all(body))
        .and_then(|_| stream.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    match stream.take(max + 1).read_to_end(&mut response) {
        Ok(_) if response.len() as u64 > max => Err(format!("response larger than {max} bytes")),
        Ok(_) => Ok(response),
        // A TLS server that closes without close_notify: what arrived is checked by
        // [`response_body`] (Content-Length or chunked framing), a truncated answer is
        // refused there.
        Err(e) if !response.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(response)
        }
        Err(e) => Err(format!("receive: {e}")),
    }
}

/// GETs `url` (`http://` or `https://`, the server certificate verified against
/// `tls_ca_file` alone or else the system store, [`tls_context`]) and returns the body of a
/// 200 answer of at most `max` bytes; `timeout` bounds the connection and each read and
/// write. One connection per fetch (these are minutes apart).
pub fn get(
    url: &str,
    tls_ca_file: Option<&Path>,
    timeout: Duration,
    max: u64,
) -> Result<Vec<u8>, String> {
    let url = parse_url(url).ok_or("expected http[s]://HOST[:PORT]/PATH")?;
    let trust = TlsTrust {
        ca_file: tls_ca_file.map(Path::to_path_buf),
        client_cert: None,
    };
    let stream = connect(&url, timeout)?;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pec/{}\r\n\
         Connection: close\r\n\r\n",
        url.path,
        host_header(&url),
        env!("CARGO_PKG_VERSION")
    );
    let response = if url.tls {
        let (context, _) = tls_context(&trust)?;
        let stream = tls_connect(&context, &url.host, stream)?;
        exchange(stream, head.as_bytes(), b"", max)?
    } else {
        exchange(stream, head.as_bytes(), b"", max)?
    };
    response_body(&response)
}

/// The `Host` header's value for `url` (the port when it is not the scheme's).
pub fn host_header(url: &Url) -> String {
    match (url.tls, url.port) {
        (false, 80) | (true, 443) => url.host.clone(),
        _ if url.host.contains(':') => format!("[{}]:{}", url.host, url.port),
        _ => format!("{}:{}", url.host, url.port),
    }
}

/// A TCP connection to `url`'s host and port, `timeout` bounding the connection and then
/// each read and write.
fn connect(url: &Url, timeout: Duration) -> Result<TcpStream, String> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or("no address")?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    set_timeouts(&stream, timeout)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn set_timeouts(stream: &TcpStream, timeout: Duration) -> Result<(), String> {
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())
}

/// What a TLS client context trusts and presents: the PEM CA file the server's certificate
/// must chain to (trusted alone; `None`: the system trust store), and the client
/// certificate and its key (PEM files), if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsTrust {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A file as it was when a context was built from it: length, modification time, inode.
type FileStamp = (u64, Option<std::time::SystemTime>, u64);

/// One built TLS context, with the state of its files then and how many times a context
/// was built for its trust (also its generation: connections made with an older one are
/// not reused, [`request`]).
struct BuiltContext {
    trust: TlsTrust,
    files: Vec<FileStamp>,
    context: SslContext,
    builds: u64,
}

/// The TLS contexts built so far, one per [`TlsTrust`]: building one costs the parsing of
/// its CA file (the whole system trust bundle without a CA file, ~20 ms of CPU), so it is
/// built once and reused by every connection, and rebuilt only when one of its files
/// changes (a configuration reload with other paths makes another entry). A handful of
/// entries at most: one per trust configured over the process's life. `SslContext` is
/// reference-counted and safe to share between threads; each connection has its own `Ssl`.
static CONTEXTS: Mutex<Vec<BuiltContext>> = Mutex::new(Vec::new());

/// The [`FileStamp`]s of the files of `trust` (`None` when one cannot be read: the build
/// reports why). The system trust store is not watched: it is read once per process.
fn file_stamps(trust: &TlsTrust) -> Option<Vec<FileStamp>> {
    use std::os::unix::fs::MetadataExt as _;
    let paths = trust
        .ca_file
        .iter()
        .chain(trust.client_cert.iter().flat_map(|(c, k)| [c, k]))
        .collect::<Vec<_>>();
    paths
        .into_iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok(), m.ino()))
        })
        .collect()
}

/// The TLS client context of `trust` and its generation ([`BuiltContext`]): the server
/// verified against `ca_file` only when it is given (the system trust store is then not
/// loaded at all), else against the system store; the client certificate presented when
/// configured. Built once per [`TlsTrust`] and state of its files ([`CONTEXTS`]).
pub fn tls_context(trust: &TlsTrust) -> Result<(SslContext, u64), String> {
    let Some(files) = file_stamps(trust) else {
        return build_context(trust).map(|c| (c, 0));
    };
    let mut contexts = CONTEXTS.lock().unwrap_or_else(|e| e.into_inner());
    let index = match contexts.iter().position(|c| &c.trust == trust) {
        Some(i) if contexts[i].files == files => {
            return Ok((contexts[i].context.clone(), contexts[i].builds))
        }
        Some(i) => {
            contexts[i].context = build_context(trust)?;
            i
        }
        None => {
            contexts.push(BuiltContext {
                trust: trust.clone(),
                files: Vec::new(),
                context: build_context(trust)?,
                builds: 0,
            });
            contexts.len() - 1
        }
    };
    let entry = &mut contexts[index];
    entry.files = files;
    entry.builds += 1;
    Ok((entry.context.clone(), entry.builds))
}

/// How many times the TLS context of `trust` was built in this process: once, plus once per
/// change of one of its files. For tests.
#[doc(hidden)]
pub fn tls_context_builds(trust: &TlsTrust) -> u64 {
    let contexts = CONTEXTS.lock().unwrap_or_else(|e| e.into_inner());
    contexts
        .iter()
        .find(|c| &c.trust == trust)
        .map_or(0, |c| c.builds)
}

/// Builds the TLS client context of `trust` ([`tls_context`]). The options, modes and cipher
/// list are those of `openssl::ssl::SslConnector::builder`, the peer verified
/// (`SSL_VERIFY_PEER`: a handshake whose server chain does not verify fails), TLS 1.2 at
/// least whatever the system's OpenSSL configuration allows, and the system trust store
/// loaded only when no CA file is given.
fn build_context(trust: &TlsTrust) -> Result<SslContext, String> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    let mut opts = SslOptions::ALL
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3
        | SslOptions::SINGLE_DH_USE
        | SslOptions::SINGLE_ECDH_USE;
    opts &= !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS;
    b.set_options(opts);
    b.set_mode(
        SslMode::AUTO_RETRY
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::RELEASE_BUFFERS,
    );
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| e.to_string())?;
    b.set_cipher_list("DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK")
        .map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::PEER);
    match &trust.ca_file {
        Some(ca) => b
            .set_ca_file(ca)
            .map_err(|e| format!("tls ca file \"{}\": {e}", ca.display()))?,
        None => b
            .set_default_verify_paths()
            .map_err(|e| format!("system trust store: {e}"))?,
    }
    if let Some((cert, key)) = &trust.client_cert {
        b.set_certificate_chain_file(cert)
            .map_err(|e| format!("client certificate \"{}\": {e}", cert.display()))?;
        b.set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| format!("client key \"{}\": {e}", key.display()))?;
        b.check_private_key()
            .map_err(|e| format!("client key does not match its certificate: {e}"))?;
    }
    Ok(b.build())
}

/// The TLS session of a connection to `host` on `stream`: SNI for a host name, and the
/// server certificate checked for `host` (its name, or its address for an IP literal; no
/// partial wildcards) on top of its chain, as `SslConnector::connect` does.
pub fn tls_connect(
    context: &SslContext,
    host: &str,
    stream: TcpStream,
) -> Result<SslStream<TcpStream>, String> {
    let tls = |e: &dyn std::fmt::Display| format!("tls: {e}");
    let mut ssl = Ssl::new(context).map_err(|e| tls(&e))?;
    let ip = host.parse::<IpAddr>().ok();
    if ip.is_none() {
        ssl.set_hostname(host).map_err(|e| tls(&e))?;
    }
    let param = ssl.param_mut();
    param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
    match ip {
        Some(ip) => param.set_ip(ip),
        None => param.set_host(host),
    }
    .map_err(|e| tls(&e))?;
    ssl.connect(stream).map_err(|e| tls(&e))
}

/// A connection of [`request`]: plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    /// Whether an idle connection can still carry a request: nothing to read yet (the
    /// server neither closed it nor sent anything, a TLS alert included).
    fn idle_and_open(&self) -> bool {
        if let Conn::Tls(s) = self {
            if s.ssl().pending() > 0 {
                return false;
            }
        }
        let tcp = self.tcp();
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let open = matches!(
            tcp.peek(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        tcp.set_nonblocking(false).is_ok() && open
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Where an idle connection goes back to: the scheme, host and port, and the trust of its
/// TLS context with that context's generation (a connection verified with a CA file since
/// changed is not reused).
#[derive(Clone, PartialEq, Eq)]
struct PoolKey {
    tls: bool,
    host: String,
    port: u16,
    trust: TlsTrust,
    generation: u64,
}

struct Idle {
    key: PoolKey,
    conn: Conn,
    since: Instant,
}

/// How long an idle connection is kept: shorter than the usual servers' keep-alive timeout
/// (Apache's 5 s), so that most are dropped by us rather than closed under us.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// At most this many idle connections per server (the peak of concurrent requests beyond
/// it opens new ones, closed after their request).
pub const MAX_IDLE_PER_SERVER: usize = 4;

/// The idle connections of [`request`], most recently used last.
static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

/// Connections [`request`] opened, per `host:port`. For tests.
static OPENED: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// How many connections [`request`] opened to `host:port` (`url`'s) in this process. For
/// tests.
#[doc(hidden)]
pub fn connections_opened(url: &str) -> u64 {
    let Some(url) = parse_url(url) else {
        return 0;
    };
    let name = format!("{}:{}", url.host, url.port);
    let opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    opened
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, c)| *c)
}

/// An idle connection for `key`, if one is still open (expired and closed ones dropped).
fn take_idle(key: &PoolKey) -> Option<Conn> {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    idle.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
    while let Some(i) = idle.iter().rposition(|i| &i.key == key) {
        let conn = idle.remove(i).conn;
        if conn.idle_and_open() {
            return Some(conn);
        }
    }
    None
}

fn put_idle(key: PoolKey, conn: Conn) {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    if idle.iter().filter(|i| i.key == key).count() >= MAX_IDLE_PER_SERVER {
        if let Some(oldest) = idle.iter().position(|i| i.key == key) {
            idle.remove(oldest);
        }
    }
    idle.push(Idle {
        key,
        conn,
        since: Instant::now(),
    });
}

fn open(
    url: &Url,
    key: &PoolKey,
    context: Option<&SslContext>,
    timeout: Duration,
) -> Result<Conn, String> {
    let stream = connect(url, timeout)?;
    let conn = match context {
        Some(context) => Conn::Tls(Box::new(tls_connect(context, &url.host, stream)?)),
        None => Conn::Plain(stream),
    };
    let name = format!("{}:{}", key.host, key.port);
    let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    match opened.iter_mut().find(|(n, _)| *n == name) {
        Some((_, c)) => *c += 1,
        None => opened.push((name, 1)),
    }
    Ok(conn)
}

/// Sends one request (`head`, which must not ask `Connection: close`, then `body`) to `url`
/// and returns the whole response (at most `max` bytes, [`response_body`] takes its body),
/// over a connection kept alive between requests: an idle one to the same server with the
/// same TLS trust when there is one, else a new one; put back idle after a response that
/// leaves it usable (framed by `Content-Length` or chunks, no `Connection: close`). A
/// request on a reused connection that the server had closed (the write fails, or the
/// connection ends before any byte of a response) is sent again once on a new connection:
/// only for requests that may be repeated (`idempotent`; else the failure is returned).
pub fn request(
    url: &Url,
    trust: &TlsTrust,
    timeout: Duration,
    head: &[u8],
    body: &[u8],
    max: u64,
    idempotent: bool,
) -> Result<Vec<u8>, String> {
    let (context, generation) = match url.tls {
        true => {
            let (c, g) = tls_context(trust)?;
            (Some(c), g)
        }
        false => (None, 0),
    };
    let key = PoolKey {
        tls: url.tls,
        host: url.host.clone(),
        port: url.port,
        trust: if url.tls {
            trust.clone()
        } else {
            TlsTrust::default()
        },
        generation,
    };
    let mut reused = take_idle(&key);
    loop {
        let retry = reused.is_some() && idempotent;
        let mut conn = match reused.take() {
            Some(conn) => {
                set_timeouts(conn.tcp(), timeout)?;
                conn
            }
            None => open(url, &key, context.as_ref(), timeout)?,
        };
        match send_and_read(&mut conn, head, body, max) {
            Ok((response, keep)) => {
                if keep {
                    put_idle(key, conn);
                }
                return Ok(response);
            }
            Err((e, closed)) if closed && retry => {
                drop((e, conn));
                continue;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// One exchange on `conn`: the response and whether the connection may carry another
/// request; or the error and whether it says the server had closed the connection before
/// answering (nothing received).
fn send_and_read(
    conn: &mut Conn,
    head: &[u8],
    body: &[u8],
    max: u64,
) -> Result<(Vec<u8>, bool), (String, bool)> {
    conn.write_all(head)
        .and_then(|_| conn.write_all(body))
        .and_then(|_| conn.flush())
        .map_err(|e| (format!("send: {e}"), true))?;
    read_response(conn, max)
}

/// Reads one response from `conn`: its head, then its body as its framing says
/// (`Content-Length`, chunks, none for 1xx/204/304, else up to the end of the connection),
/// at most `max` bytes in all. Returns it whole, and whether the connection may carry
/// another request; an error says whether nothing at all was received.
fn read_response<S: Read>(conn: &mut S, max: u64) -> Result<(Vec<u8>, bool), (String, bool)> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let too_large = || (format!("response larger than {max} bytes"), false);
    let mut fill = |data: &mut Vec<u8>| -> Result<bool, (String, bool)> {
        match conn.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            // A TLS server that closes without close_notify: the end of the connection.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            // Nothing received and no time-out: the server closed the connection (reset,
            // or a TLS end without close_notify, which OpenSSL 3 reports as an error).
            Err(e) => Err((
                format!("receive: {e}"),
                data.is_empty()
                    && !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
            )),
        }
    };
    let head_end = loop {
        if let Some(i) = memchr::memmem::find(&data, b"\r\n\r\n") {
            break i + 4;
        }
        if data.len() > max {
            return Err(too_large());
        }
        if !fill(&mut data)? {
            return Err(match data.is_empty() {
                true => ("receive: connection closed".to_string(), true),
                false => ("truncated response headers".to_string(), false),
            });
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let http10 = status_line.starts_with("HTTP/1.0");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut chunked, mut close, mut keep_alive) = (None, false, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let reusable = !close && (!http10 || keep_alive);
    let framed_end = |data: &[u8]| -> Option<usize> {
        if chunked {
            chunked_len(&data[head_end..]).map(|n| head_end + n)
        } else if (100..200).contains(&status) || status == 204 || status == 304 {
            Some(head_end)
        } else {
            length.map(|n| head_end.saturating_add(n))
        }
    };
    let bounded = chunked || length.is_some() || framed_end(&data).is_some();
    loop {
        if bounded {
            if let Some(end) = framed_end(&data) {
                if end > max {
                    return Err(too_large());
                }
                if data.len() >= end {
                    data.truncate(end);
                    return Ok((data, reusable));
                }
            }
        }
        if data.len() > max {
            return Err(too_large());
        }
        if !fill(&mut data)? {
            // Closed: a response read up to the end of the connection is whole; a framed
            // one that stops short is checked (and refused) by [`response_body`].
            return Ok((data, false));
        }
    }
}

/// The length of a whole chunked body at the start of `data` (its last chunk and trailers
/// included), or `None` while it is incomplete or malformed.
fn chunked_len(data: &[u8]) -> Option<usize> {
    let mut at = walk_chunks(data, |_| {})?;
    // Trailer fields, then the empty line.
    loop {
        let eol = at + memchr::memmem::find(data.get(at..)?, b"\r\n")?;
        let empty = eol == at;
        at = eol + 2;
        if empty {
            return Some(at);
        }
    }
}

/// Walks the chunks at the start of `data` (RFC 9112 §7.1; chunk extensions ignored),
/// giving each chunk's data to `chunk`: the offset just past the last chunk's size line, or
/// `None` while a chunk is incomplete or a size line malformed.
fn walk_chunks(data: &[u8], mut chunk: impl FnMut(&[u8])) -> Option<usize> {
    let mut at = 0usize;
    loop {
        let eol = at + memchr::memmem::find(data.get(at..)?, b"\r\n")?;
        let size = std::str::from_utf8(&data[at..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at = eol + 2;
        if size == 0 {
            return Some(at);
        }
        chunk(data.get(at..at.checked_add(size)?)?);
        at = at.checked_add(size)?.checked_add(2)?;
        if data.len() < at {
            return None;
        }
    }
}

/// The body of a whole `response`: status 200 required; `Transfer-Encoding: chunked`
/// decoded, else `Content-Length` honoured (a shorter body is an error). Errors are plain
/// text for the caller's error type.
pub fn response_body(response: &[u8]) -> Result<Vec<u8>, String> {
    let end = memchr::memmem::find(response, b"\r\n\r\n")
        .ok_or_else(|| "truncated response headers".to_string())?;
    let head = String::from_utf8_lossy(&response[..end]);
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!(
            "status \"{}\"",
            status.chars().take(80).collect::<String>()
        ));
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value.parse().map_err(|_| {
                    format!(
                        "bad content-length \"{}\"",
                        value.chars().take(20).collect::<String>()
                    )
                })?;
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    if chunked {
        return dechunk(body).ok_or_else(|| "malformed chunked body".to_string());
    }
    match length {
        Some(n) => body
            .get(..n)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "truncated body".to_string()),
        None => Ok(body.to_vec()),
    }
}

/// The `Content-Length` of a response head (the client stops reading there), if any.
pub fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
}

/// A chunked body decoded ([`walk_chunks`]; trailers dropped).
fn dechunk(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    walk_chunks(data, |c| out.extend_from_slice(c))?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives `data` in pieces of `step` bytes, then ends or fails.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        step: usize,
        end: Option<std::io::ErrorKind>,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.data.len() {
                return match self.end {
                    Some(kind) => Err(kind.into()),
                    None => Ok(0),
                };
            }
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn pieces(data: &[u8], end: Option<std::io::ErrorKind>) -> Pieces {
        Pieces {
            data: data.to_vec(),
            at: 0,
            step: 3,
            end,
        }
    }

    #[test]
    fn responses_are_read_as_their_framing_says() {
        // Content-Length: read up to it, not until the end (a timed-out read would fail).
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let mut r = pieces(ok, Some(std::io::ErrorKind::TimedOut));
        assert_eq!(read_response(&mut r, 1000).unwrap(), (ok.to_vec(), true));
        // Chunked, trailers included: whole, and the connection reusable.
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n";
        let mut r = pieces(chunked, Some(std::io::ErrorKind::TimedOut));
        assert_eq!(
            read_response(&mut r, 1000).unwrap(),
            (chunked.to_vec(), true)
        );
        assert_eq!(response_body(chunked).unwrap(), b"abc");
        // Connection: close, or HTTP/1.0 without keep-alive: not reusable.
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na";
        assert!(!read_response(&mut pieces(close, None), 1000).unwrap().1);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na";
        assert!(!read_response(&mut pieces(old, None), 1000).unwrap().1);
        let kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na";
        assert!(read_response(&mut pieces(kept, None), 1000).unwrap().1);
        // No length: up to the end of the connection, not reusable.
        let eof = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(
            read_response(&mut pieces(eof, None), 1000).unwrap(),
            (eof.to_vec(), false)
        );
        // 204: no body.
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        let mut r = pieces(empty, Some(std::io::ErrorKind::TimedOut));
        assert!(read_response(&mut r, 1000).unwrap().1);
        // Too large, by its length or by what arrives.
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
        assert!(read_response(&mut pieces(big, None), 1000).is_err());
        let endless = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 2000]].concat();
        assert!(read_response(&mut pieces(&endless, None), 1000).is_err());
    }

    #[test]
    fn a_connection_closed_before_any_answer_is_told_apart() {
        // Nothing at all: closed (the request may be sent again on a new connection).
        assert!(read_response(&mut pieces(b"", None), 1000).unwrap_err().1);
        let reset = Some(std::io::ErrorKind::ConnectionReset);
        assert!(read_response(&mut pieces(b"", reset), 1000).unwrap_err().1);
        // A time-out, or a part of an answer: not.
        let timeout = Some(std::io::ErrorKind::TimedOut);
        assert!(
            !read_response(&mut pieces(b"", timeout), 1000)
                .unwrap_err()
                .1
        );
        assert!(
            !read_response(&mut pieces(b"HTTP/1.1 200", None), 1000)
                .unwrap_err()
                .1
        );
        // A body cut short is returned as it is, and refused by response_body.
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        let (got, keep) = read_response(&mut pieces(short, None), 1000).unwrap();
        assert!(!keep);
        assert_eq!(response_body(&got).unwrap_err(), "truncated body");
    }

    #[test]
    fn chunked_lengths() {
        assert_eq!(chunked_len(b"3\r\nabc\r\n0\r\n\r\n"), Some(13));
        assert_eq!(chunked_len(b"3\r\nabc\r\n0\r\n\r\nnext"), Some(13));
        assert_eq!(chunked_len(b"3\r\nabc\r\n0\r\nT: 1\r\n\r\n"), Some(19));
        assert_eq!(chunked_len(b"3\r\nabc\r\n0\r\n"), None);
        assert_eq!(chunked_len(b"3\r\nab"), None);
        assert_eq!(chunked_len(b"zz\r\n"), None);
    }

    #[test]
    fn host_headers() {
        let url = |tls, host: &str, port| Url {
            tls,
            host: host.into(),
            port,
            path: "/".into(),
        };
        assert_eq!(
            host_header(&url(true, "tsa.example.it", 443)),
            "tsa.example.it"
        );
        assert_eq!(
            host_header(&url(false, "127.0.0.1", 8080)),
            "127.0.0.1:8080"
        );
        assert_eq!(host_header(&url(true, "::1", 8443)), "[::1]:8443");
    }

    #[test]
    fn bodies_by_length_by_chunks_and_errors() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(response_body(ok).unwrap(), b"abc");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(response_body(chunked).unwrap(), b"abcde");
        assert_eq!(
            response_body(b"HTTP/1.1 200 OK\r\n\r\nall").unwrap(),
            b"all"
        );
        assert!(response_body(b"HTTP/1.1 503 Busy\r\n\r\n")
            .unwrap_err()
            .contains("503"));
        assert_eq!(
            response_body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").unwrap_err(),
            "truncated body"
        );
        assert!(response_body(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(
            response_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(response_body(b"HTTP/1.1 200").is_err());
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ncontent-length: 12"),
            Some(12)
        );
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n\r\n").unwrap(), b"abc");
        assert!(dechunk(b"5\r\nab").is_none());
        assert!(dechunk(b"ffffffffffffffff\r\nab").is_none());
    }
}
