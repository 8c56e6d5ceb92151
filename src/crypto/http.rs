// SPDX-License-Identifier: GPL-3.0-or-later
//! The HTTP/1.1 responses pec reads (the time-stamping authority of [`super::tsa`], the CRL
//! and OCSP servers of [`super::revocation`], the REM Trusted Lists): a whole response,
//! already read under each client's own size and time bounds, down to its body; and the
//! plain or HTTPS exchange of the TSA client and of [`get`].

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod};

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
/// `tls_ca_file` or the system store) and returns the body of a 200 answer of at most
/// `max` bytes; `timeout` bounds the connection and each read and write.
pub fn get(
    url: &str,
    tls_ca_file: Option<&Path>,
    timeout: Duration,
    max: u64,
) -> Result<Vec<u8>, String> {
    let Url {
        tls,
        host,
        port,
        path,
    } = parse_url(url).ok_or("expected http[s]://HOST[:PORT]/PATH")?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or("no address")?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let host_header = match (tls, port) {
        (false, 80) | (true, 443) => host.clone(),
        _ => format!("{host}:{port}"),
    };
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: pec/{}\r\n\
         Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let response = if tls {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        if let Some(ca) = tls_ca_file {
            b.set_ca_file(ca)
                .map_err(|e| format!("tls ca file \"{}\": {e}", ca.display()))?;
        }
        let stream = b
            .build()
            .connect(&host, stream)
            .map_err(|e| format!("tls: {e}"))?;
        exchange(stream, head.as_bytes(), b"", max)?
    } else {
        exchange(stream, head.as_bytes(), b"", max)?
    };
    response_body(&response)
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

/// A chunked body decoded (RFC 9112 §7.1; chunk extensions ignored, trailers dropped).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = memchr::memmem::find(data, b"\r\n")?;
        let size = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size.checked_add(2)?..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
