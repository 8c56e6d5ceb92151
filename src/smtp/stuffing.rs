// SPDX-License-Identifier: GPL-3.0-or-later
//! The data of `DATA` written straight to the socket: dot-stuffing (RFC 5321 §4.5.2), the
//! final line end and the closing `.` line, optionally with line ends made CRLF on the
//! way, from a message given in pieces (a header built apart and a body, say). Memory: one
//! buffer of about [`CHUNK`] bytes, whatever the size of the message; no stuffed copy.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes of input encoded between two writes.
pub const CHUNK: usize = 64 * 1024;

/// How the line ends of the input are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnds {
    /// Bare LF and bare CR become CRLF (a message handed to Postfix).
    Crlf,
    /// Sent as they are (the LMTP proxy relays Postfix's data byte for byte).
    Keep,
}

/// The encoder: fed the message in any number of pieces, it writes the stuffed data to
/// an output buffer; the pieces behave as one message (a CR at the end of one piece and
/// an LF at the start of the next are one line end).
#[derive(Debug)]
pub struct Stuffer {
    ends: LineEnds,
    /// The next output byte starts a line.
    line_start: bool,
    /// A CR was read whose next byte is not known yet (`LineEnds::Crlf` only).
    pending_cr: bool,
    /// The last two message bytes written (after line-end conversion, before stuffing).
    last: [u8; 2],
    /// Message bytes written (after line-end conversion, before stuffing): the `SIZE=`
    /// of RFC 1870 once [`Stuffer::finish`] has run.
    size: u64,
}

impl Stuffer {
    pub fn new(ends: LineEnds) -> Self {
        Stuffer {
            ends,
            line_start: true,
            pending_cr: false,
            last: [0, 0],
            size: 0,
        }
    }

    /// The message bytes so far, line ends converted, before stuffing.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn emit(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        self.line_start = b == b'\n';
        self.last = [self.last[1], b];
        self.size += 1;
    }

    /// Encodes the next piece of the message into `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32 + 4);
        match self.ends {
            LineEnds::Keep => {
                // Only the bytes after a line end can need a dot: copy the runs between.
                let mut rest = input;
                while !rest.is_empty() {
                    if self.line_start && rest[0] == b'.' {
                        out.push(b'.');
                    }
                    let run = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                    out.extend_from_slice(&rest[..run]);
                    self.size += run as u64;
                    self.last = match run {
                        1 => [self.last[1], rest[0]],
                        _ => [rest[run - 2], rest[run - 1]],
                    };
                    self.line_start = rest[run - 1] == b'\n';
                    rest = &rest[run..];
                }
            }
            LineEnds::Crlf => {
                for &b in input {
                    if self.pending_cr {
                        self.pending_cr = false;
                        self.emit(b'\r', out);
                        self.emit(b'\n', out);
                        if b == b'\n' {
                            continue;
                        }
                    }
                    match b {
                        b'\r' => self.pending_cr = true,
                        b'\n' => {
                            self.emit(b'\r', out);
                            self.emit(b'\n', out);
                        }
                        _ => self.emit(b, out),
                    }
                }
            }
        }
    }

    /// Ends the message: a last line end when the message does not end with one, then
    /// the `.` line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.emit(b'\r', out);
            self.emit(b'\n', out);
        }
        let ended = match self.ends {
            LineEnds::Crlf => self.last == *b"\r\n",
            LineEnds::Keep => self.last[1] == b'\n',
        };
        if self.size > 0 && !ended {
            out.extend_from_slice(b"\r\n");
            self.size += 2;
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The message size `SIZE=` announces (RFC 1870): the message with its line ends
/// converted and the last line ended, before stuffing. Encodes without keeping the output.
pub fn size(parts: &[&[u8]], ends: LineEnds) -> u64 {
    let mut s = Stuffer::new(ends);
    let mut scratch = Vec::with_capacity(2 * CHUNK + 8);
    for part in parts {
        for piece in part.chunks(CHUNK) {
            scratch.clear();
            s.feed(piece, &mut scratch);
        }
    }
    scratch.clear();
    s.finish(&mut scratch);
    s.size()
}

/// The whole stuffed data in one buffer (tests and small messages).
pub fn stuffed(parts: &[&[u8]], ends: LineEnds) -> Vec<u8> {
    let mut s = Stuffer::new(ends);
    let mut out = Vec::new();
    for part in parts {
        s.feed(part, &mut out);
    }
    s.finish(&mut out);
    out
}

/// Writes the stuffed data of the message made of `parts` to `w`, at least [`CHUNK`]
/// bytes at a time, and flushes. The parts and the terminating `.` line go out together:
/// a small message is one write, so the peer never waits for a last short segment that
/// Nagle's algorithm holds back until the previous one is acknowledged (40 ms on Linux).
pub async fn write<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    parts: &[&[u8]],
    ends: LineEnds,
) -> std::io::Result<()> {
    let mut s = Stuffer::new(ends);
    // Less than CHUNK left over, plus one piece stuffed (at most twice its size).
    let mut buf = Vec::with_capacity(3 * CHUNK + 8);
    for part in parts {
        for piece in part.chunks(CHUNK) {
            s.feed(piece, &mut buf);
            if buf.len() >= CHUNK {
                w.write_all(&buf).await?;
                buf.clear();
            }
        }
    }
    s.finish(&mut buf);
    w.write_all(&buf).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: CRLF conversion of the whole message, then stuffing.
    fn reference(message: &[u8], ends: LineEnds) -> Vec<u8> {
        let data = match ends {
            LineEnds::Crlf => crate::message::mime::normalize_crlf(message).into_owned(),
            LineEnds::Keep => message.to_vec(),
        };
        let mut out = Vec::new();
        let mut line_start = true;
        for &b in &data {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
        let ended = match ends {
            LineEnds::Crlf => data.ends_with(b"\r\n"),
            LineEnds::Keep => data.ends_with(b"\n"),
        };
        if !data.is_empty() && !ended {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn examples() {
        let crlf = |m: &[u8]| stuffed(&[m], LineEnds::Crlf);
        assert_eq!(crlf(b".a\nb\r\n..c\rd"), b"..a\r\nb\r\n...c\r\nd\r\n.\r\n");
        assert_eq!(crlf(b""), b".\r\n");
        assert_eq!(crlf(b"x\r\n.\r\n"), b"x\r\n..\r\n.\r\n");
        assert_eq!(crlf(b"x\r"), b"x\r\n.\r\n");
        let keep = |m: &[u8]| stuffed(&[m], LineEnds::Keep);
        assert_eq!(keep(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(keep(b"x"), b"x\r\n.\r\n");
        assert_eq!(keep(b""), b".\r\n");
        assert_eq!(keep(b"a\nb"), b"a\nb\r\n.\r\n");
        assert_eq!(size(&[b"a\nb"], LineEnds::Crlf), 6);
        assert_eq!(size(&[b""], LineEnds::Crlf), 0);
    }

    /// Any message, cut into pieces anywhere, encodes as the reference does.
    #[test]
    fn pieces_encode_as_one_message() {
        let alphabet = b"ab.\r\n";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            let message: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut cuts: Vec<usize> = (0..(next() % 4))
                .map(|_| (next() % (len as u64 + 1)) as usize)
                .collect();
            cuts.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for c in cuts {
                parts.push(&message[from..c]);
                from = c;
            }
            parts.push(&message[from..]);
            for ends in [LineEnds::Crlf, LineEnds::Keep] {
                let want = reference(&message, ends);
                assert_eq!(stuffed(&parts, ends), want, "{message:?} in {parts:?}");
                let unstuffed_len = match ends {
                    LineEnds::Crlf => {
                        let n = crate::message::mime::normalize_crlf(&message).len();
                        let n = if n > 0
                            && !crate::message::mime::normalize_crlf(&message).ends_with(b"\r\n")
                        {
                            n + 2
                        } else {
                            n
                        };
                        Some(n as u64)
                    }
                    LineEnds::Keep => None,
                };
                if let Some(n) = unstuffed_len {
                    assert_eq!(size(&parts, ends), n, "{message:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn written_in_chunks_as_in_one_buffer() {
        let mut message = Vec::new();
        for i in 0..40_000u32 {
            message.extend_from_slice(if i % 7 == 0 { b".dot\n" } else { b"line\r\n" });
        }
        let (head, body) = message.split_at(12_345);
        let mut out = Vec::new();
        write(&mut out, &[head, body], LineEnds::Crlf)
            .await
            .unwrap();
        assert_eq!(out, reference(&message, LineEnds::Crlf));
        let mut out = Vec::new();
        write(&mut out, &[head, body], LineEnds::Keep)
            .await
            .unwrap();
        assert_eq!(out, reference(&message, LineEnds::Keep));
    }

    /// Counts the writes that reach it.
    #[derive(Default)]
    struct Writes(Vec<usize>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(buf.len());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_small_message_and_its_terminator_are_one_write_a_large_one_full_chunks() {
        let mut w = Writes::default();
        write(
            &mut w,
            &[b"Subject: x\r\n\r\n", b"body\r\n"],
            LineEnds::Crlf,
        )
        .await
        .unwrap();
        assert_eq!(w.0, vec![b"Subject: x\r\n\r\nbody\r\n.\r\n".len()]);

        let big = vec![b'a'; 5 * CHUNK / 2];
        let mut w = Writes::default();
        write(&mut w, &[b"Subject: x\r\n\r\n", &big], LineEnds::Keep)
            .await
            .unwrap();
        let whole = stuffed(&[b"Subject: x\r\n\r\n", &big], LineEnds::Keep);
        assert_eq!(w.0.iter().sum::<usize>(), whole.len());
        let (last, full) = w.0.split_last().unwrap();
        assert!(full.iter().all(|&n| n >= CHUNK), "{:?}", w.0);
        assert!(*last < 2 * CHUNK, "{:?}", w.0);
    }
}
