// SPDX-License-Identifier: GPL-3.0-or-later
//! A bounded reader of zip archives (APPNOTE.TXT 6.3), for the attachment checks: it walks
//! the central directory one entry at a time (the caller stops when its entry budget is
//! spent, so a 100,000-entry archive costs no more than the budget), reads an entry's data
//! through its local header, stored or deflated, up to a byte limit the caller gives (a zip
//! bomb inflates no further than that), and reports an encrypted entry (flag bit 0) without
//! reading it. Every offset is checked against the data: a corrupt archive is an error,
//! never a panic.
//!
//! Our own, not the `zip` crate: that crate parses the whole central directory into memory
//! before the first entry can be looked at and wants `Read + Seek`; this reader needs
//! neither, and the entry and byte budgets are enforced where the work happens.

use std::io::Read;
use std::time::Instant;

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ZipError {
    /// No end-of-central-directory record: not a zip archive.
    #[error("no end of central directory record")]
    NotZip,
    #[error("corrupt archive: {0}")]
    Corrupt(&'static str),
    /// A compression method other than stored (0) and deflate (8).
    #[error("unsupported compression method {0}")]
    Unsupported(u16),
    #[error("time limit reached")]
    Deadline,
}

pub(crate) const EOCD: &[u8; 4] = b"PK\x05\x06";
const EOCD64_LOCATOR: &[u8; 4] = b"PK\x06\x07";
const EOCD64: &[u8; 4] = b"PK\x06\x06";
pub(crate) const CENTRAL: &[u8; 4] = b"PK\x01\x02";
pub(crate) const LOCAL: &[u8; 4] = b"PK\x03\x04";

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// One central-directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (CP437 or UTF-8), read lossily as UTF-8.
    pub name: String,
    /// General purpose flag bit 0: the data is encrypted (ZipCrypto or AES).
    pub encrypted: bool,
    pub method: u16,
    pub compressed_size: u64,
    /// The uncompressed size the directory declares (a bomb may lie; reads are bounded by
    /// the caller's limit, not by this).
    pub size: u64,
    local_offset: u64,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }
}

/// An archive over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct Archive<'a> {
    data: &'a [u8],
    /// The central directory.
    directory: &'a [u8],
    /// Entries the end record declares.
    declared: u64,
}

impl<'a> Archive<'a> {
    /// Finds the end record (the last 64 KiB + 22 bytes) and the central directory.
    pub fn open(data: &'a [u8]) -> Result<Self, ZipError> {
        let floor = data.len().saturating_sub(22 + 0xFFFF);
        let end = (floor..=data.len().saturating_sub(22))
            .rev()
            .find(|&i| data.get(i..i + 4) == Some(EOCD))
            .ok_or(ZipError::NotZip)?;
        let bad = ZipError::Corrupt("end of central directory record");
        let mut declared = u64::from(u16_at(data, end + 10).ok_or(bad.clone())?);
        let mut size = u64::from(u32_at(data, end + 12).ok_or(bad.clone())?);
        let mut offset = u64::from(u32_at(data, end + 16).ok_or(bad.clone())?);
        if declared == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
            // ZIP64: the locator sits right before the end record.
            let locator = end.checked_sub(20).ok_or(bad.clone())?;
            if data.get(locator..locator + 4) != Some(EOCD64_LOCATOR) {
                return Err(ZipError::Corrupt("zip64 locator missing"));
            }
            let record = u64_at(data, locator + 8).ok_or(bad.clone())?;
            let record = usize::try_from(record).map_err(|_| bad.clone())?;
            if data.get(record..record.saturating_add(4)) != Some(EOCD64) {
                return Err(ZipError::Corrupt("zip64 end record missing"));
            }
            declared = u64_at(data, record + 32).ok_or(bad.clone())?;
            size = u64_at(data, record + 40).ok_or(bad.clone())?;
            offset = u64_at(data, record + 48).ok_or(bad.clone())?;
        }
        let start = usize::try_from(offset).map_err(|_| bad.clone())?;
        let stop = usize::try_from(offset.saturating_add(size)).map_err(|_| bad.clone())?;
        let directory = data
            .get(start..stop)
            .ok_or(ZipError::Corrupt("central directory outside the data"))?;
        Ok(Archive {
            data,
            directory,
            declared,
        })
    }

    /// How many entries the end record declares.
    pub fn declared_entries(&self) -> u64 {
        self.declared
    }

    /// The central-directory entries, in order; the first error ends the walk.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            directory: self.directory,
            at: 0,
            failed: false,
        }
    }

    /// The entry's data, decompressed, at most `limit` bytes: `(data, complete)`, where
    /// `complete` is false when the entry holds more than `limit` bytes. Inflating stops at
    /// `deadline`.
    pub fn read(
        &self,
        entry: &Entry,
        limit: u64,
        deadline: Instant,
    ) -> Result<(Vec<u8>, bool), ZipError> {
        let bad = ZipError::Corrupt("local header");
        let at = usize::try_from(entry.local_offset).map_err(|_| bad.clone())?;
        if self.data.get(at..at.saturating_add(4)) != Some(LOCAL) {
            return Err(bad);
        }
        let name_len = usize::from(u16_at(self.data, at + 26).ok_or(bad.clone())?);
        let extra_len = usize::from(u16_at(self.data, at + 28).ok_or(bad.clone())?);
        let start = at + 30 + name_len + extra_len;
        let len = usize::try_from(entry.compressed_size).map_err(|_| bad.clone())?;
        let raw = self
            .data
            .get(start..start.saturating_add(len))
            .ok_or(ZipError::Corrupt("entry data outside the archive"))?;
        match entry.method {
            0 => {
                let n = raw.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
                Ok((raw[..n].to_vec(), n == raw.len()))
            }
            8 => inflate(raw, limit, deadline),
            m => Err(ZipError::Unsupported(m)),
        }
    }
}

/// Inflates `raw` into at most `limit` bytes, 64 KiB at a time, checking the deadline
/// between pieces.
fn inflate(raw: &[u8], limit: u64, deadline: Instant) -> Result<(Vec<u8>, bool), ZipError> {
    const PIECE: usize = 64 * 1024;
    let mut decoder = flate2::read::DeflateDecoder::new(raw);
    let mut out = Vec::new();
    let mut piece = vec![0u8; PIECE];
    loop {
        if Instant::now() >= deadline {
            return Err(ZipError::Deadline);
        }
        let n = decoder
            .read(&mut piece)
            .map_err(|_| ZipError::Corrupt("deflate stream"))?;
        if n == 0 {
            return Ok((out, true));
        }
        let room = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(out.len());
        if n > room {
            out.extend_from_slice(&piece[..room]);
            return Ok((out, false));
        }
        out.extend_from_slice(&piece[..n]);
    }
}

/// The walk over the central directory.
#[derive(Debug)]
pub struct Entries<'a> {
    directory: &'a [u8],
    at: usize,
    failed: bool,
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry, ZipError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.directory.len() {
            return None;
        }
        let r = parse_central(self.directory, self.at);
        match r {
            Ok((entry, next)) => {
                self.at = next;
                Some(Ok(entry))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn parse_central(d: &[u8], at: usize) -> Result<(Entry, usize), ZipError> {
    let bad = ZipError::Corrupt("central directory entry");
    if d.get(at..at.saturating_add(4)) != Some(CENTRAL) {
        return Err(bad);
    }
    let flags = u16_at(d, at + 8).ok_or(bad.clone())?;
    let method = u16_at(d, at + 10).ok_or(bad.clone())?;
    let mut compressed_size = u64::from(u32_at(d, at + 20).ok_or(bad.clone())?);
    let mut size = u64::from(u32_at(d, at + 24).ok_or(bad.clone())?);
    let name_len = usize::from(u16_at(d, at + 28).ok_or(bad.clone())?);
    let extra_len = usize::from(u16_at(d, at + 30).ok_or(bad.clone())?);
    let comment_len = usize::from(u16_at(d, at + 32).ok_or(bad.clone())?);
    let mut local_offset = u64::from(u32_at(d, at + 42).ok_or(bad.clone())?);
    let name_at = at + 46;
    let name = d.get(name_at..name_at + name_len).ok_or(bad.clone())?;
    let extra = d
        .get(name_at + name_len..name_at + name_len + extra_len)
        .ok_or(bad.clone())?;
    // ZIP64 extended information (0x0001): the 64-bit values of the fields set to all ones,
    // in this order.
    let mut x = 0;
    while x + 4 <= extra.len() {
        let id = u16_at(extra, x).ok_or(bad.clone())?;
        let len = usize::from(u16_at(extra, x + 2).ok_or(bad.clone())?);
        let body = extra.get(x + 4..x + 4 + len).ok_or(bad.clone())?;
        if id == 1 {
            let mut f = 0;
            for field in [&mut size, &mut compressed_size, &mut local_offset] {
                if *field == 0xFFFF_FFFF {
                    *field = u64_at(body, f).ok_or(bad.clone())?;
                    f += 8;
                }
            }
        }
        x += 4 + len;
    }
    let next = name_at + name_len + extra_len + comment_len;
    if next > d.len() {
        return Err(bad);
    }
    Ok((
        Entry {
            name: String::from_utf8_lossy(name).into_owned(),
            encrypted: flags & 1 == 1,
            method,
            compressed_size,
            size,
            local_offset,
        },
        next,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::testfiles::{zip, ZipFile as File};
    use std::time::Duration;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn reads_stored_and_deflated_entries() {
        let data = zip(&[
            File::stored("a.txt", b"hello"),
            File::deflated("dir/b.txt", &b"abc".repeat(1000)),
        ]);
        let a = Archive::open(&data).unwrap();
        assert_eq!(a.declared_entries(), 2);
        let entries: Vec<Entry> = a.entries().map(|e| e.unwrap()).collect();
        assert_eq!(entries[0].name, "a.txt");
        assert_eq!(entries[1].name, "dir/b.txt");
        assert_eq!(entries[1].method, 8);
        assert_eq!(
            a.read(&entries[0], 100, later()).unwrap(),
            (b"hello".to_vec(), true)
        );
        let (b, complete) = a.read(&entries[1], 1_000_000, later()).unwrap();
        assert!(complete);
        assert_eq!(b, b"abc".repeat(1000));
        // the limit cuts the inflation short
        let (b, complete) = a.read(&entries[1], 10, later()).unwrap();
        assert_eq!((b.len(), complete), (10, false));
    }

    #[test]
    fn encrypted_flag_and_errors() {
        let data = zip(&[File {
            encrypted: true,
            ..File::stored("secret.txt", b"xx")
        }]);
        let a = Archive::open(&data).unwrap();
        assert!(a.entries().next().unwrap().unwrap().encrypted);
        assert_eq!(Archive::open(b"not a zip").unwrap_err(), ZipError::NotZip);
        // a central directory pointing past the end
        let mut bad = data.clone();
        let n = bad.len();
        bad[n - 6..n - 2].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
        assert!(matches!(Archive::open(&bad), Err(ZipError::Corrupt(_))));
        // every truncation is an error or a shorter walk, never a panic
        for cut in 0..data.len() {
            if let Ok(a) = Archive::open(&data[..cut]) {
                for e in a.entries().flatten() {
                    let _ = a.read(&e, 1000, later());
                }
            }
        }
    }

    #[test]
    fn deadline_stops_inflating() {
        let data = zip(&[File::deflated("z", &vec![0u8; 1_000_000])]);
        let a = Archive::open(&data).unwrap();
        let e = a.entries().next().unwrap().unwrap();
        assert_eq!(
            a.read(&e, u64::MAX, Instant::now()).unwrap_err(),
            ZipError::Deadline
        );
    }
}
