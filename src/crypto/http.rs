// SPDX-License-Identifier: GPL-3.0-or-later
//! The HTTP/1.1 responses pec reads (the time-stamping authority of [`super::tsa`], the CRL
//! and OCSP servers of [`super::revocation`]): a whole response, already read under each
//! client's own size and time bounds, down to its body.

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
