// SPDX-License-Identifier: GPL-3.0-or-later
//! Whether the system clock is synchronised to UTC, as the system says: the technical
//! rules want the time reference within one second of UTC, and `pec status` reports it.
//! pec runs no time daemon; it reads what chrony, ntpd or systemd-timesyncd left:
//!
//! * where systemd runs (`/run/systemd/system` exists), `timedatectl show -p
//!   NTPSynchronized` (systemd-timedated's verdict);
//! * the kernel's NTP state, `adjtimex(2)` with no mode bits (read only, no privilege):
//!   `STA_UNSYNC` or `TIME_ERROR` mean unsynchronised, and `maxerror` bounds the error.
//!   This is also what timedated itself reads, so it is the answer without systemd.
//!
//! When neither answers the state is [`SyncState::Unknown`]; what `pec status` makes of
//! each state is its own policy (`[clock]`).

use std::time::Duration;

/// What the system says of its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    Synchronised {
        /// Where the answer comes from (`timedatectl`, `kernel`).
        source: &'static str,
        /// The kernel's maximum error, when it was read.
        max_error: Option<Duration>,
        /// The kernel's estimated error, when it was read.
        est_error: Option<Duration>,
    },
    Unsynchronised {
        source: &'static str,
        detail: String,
    },
    /// No source answered; why, for each.
    Unknown(String),
}

/// A source of [`SyncState`]: the system, or a test double.
pub trait SyncSource {
    fn state(&self) -> SyncState;
}

/// The system's answer: timedatectl under systemd, else the kernel.
pub struct SystemSync;

/// The kernel's NTP state, from `adjtimex(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelState {
    /// The return value: the clock state (`TIME_ERROR` = 5: unsynchronised).
    pub clock_state: i32,
    /// `status` bits (`STA_UNSYNC` = 0x40).
    pub status: i32,
    /// Maximum and estimated error, microseconds.
    pub max_error_us: i64,
    pub est_error_us: i64,
}

const TIME_ERROR: i32 = 5;
const STA_UNSYNC: i32 = 0x40;
/// The kernel's ceiling for `maxerror` (16 s): reached means no source disciplines it.
const MAX_ERROR_CEILING_US: i64 = 16_000_000;

/// Reads the kernel's NTP state without changing it.
#[allow(unsafe_code)]
pub fn kernel_state() -> std::io::Result<KernelState> {
    // SAFETY: `timex` is plain old data for which all-zero bytes are a valid value;
    // adjtimex(2) with `modes == 0` only writes into the struct we own and pass by
    // exclusive reference, and reads nothing else of ours.
    let (rc, t) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        let rc = libc::adjtimex(&mut t);
        (rc, t)
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `c_long` is i64 here, i32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    Ok(KernelState {
        clock_state: rc,
        status: t.status,
        max_error_us: i64::from(t.maxerror),
        est_error_us: i64::from(t.esterror),
    })
}

impl KernelState {
    pub fn synchronised(&self) -> bool {
        self.clock_state != TIME_ERROR
            && self.status & STA_UNSYNC == 0
            && self.max_error_us < MAX_ERROR_CEILING_US
    }

    fn max_error(&self) -> Duration {
        Duration::from_micros(self.max_error_us.max(0) as u64)
    }

    fn est_error(&self) -> Duration {
        Duration::from_micros(self.est_error_us.max(0) as u64)
    }

    /// The state this says.
    pub fn state(&self) -> SyncState {
        if self.synchronised() {
            SyncState::Synchronised {
                source: "kernel",
                max_error: Some(self.max_error()),
                est_error: Some(self.est_error()),
            }
        } else {
            SyncState::Unsynchronised {
                source: "kernel",
                detail: format!(
                    "adjtimex: {}{}, maximum error {} s",
                    if self.status & STA_UNSYNC != 0 {
                        "STA_UNSYNC set"
                    } else {
                        "STA_UNSYNC clear"
                    },
                    if self.clock_state == TIME_ERROR {
                        ", clock state TIME_ERROR"
                    } else {
                        ""
                    },
                    self.max_error_us as f64 / 1e6
                ),
            }
        }
    }
}

/// `NTPSynchronized=yes|no` of `timedatectl show`; `None` when systemd does not run or the
/// command fails.
fn timedatectl() -> Result<bool, String> {
    if !std::path::Path::new("/run/systemd/system").is_dir() {
        return Err("systemd is not running".into());
    }
    let out = std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
        .map_err(|e| format!("timedatectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "timedatectl: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("timedatectl: unexpected answer \"{other}\"")),
    }
}

impl SyncSource for SystemSync {
    fn state(&self) -> SyncState {
        let kernel = kernel_state();
        match (timedatectl(), &kernel) {
            (Ok(true), k) => SyncState::Synchronised {
                source: "timedatectl",
                max_error: k.as_ref().ok().map(KernelState::max_error),
                est_error: k.as_ref().ok().map(KernelState::est_error),
            },
            (Ok(false), _) => SyncState::Unsynchronised {
                source: "timedatectl",
                detail: "NTPSynchronized=no".into(),
            },
            (Err(_), Ok(k)) => k.state(),
            (Err(t), Err(k)) => SyncState::Unknown(format!("{t}; adjtimex: {k}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_states() {
        let synced = KernelState {
            clock_state: 0,
            status: 0x2001,
            max_error_us: 12_000,
            est_error_us: 300,
        };
        assert!(synced.synchronised());
        assert_eq!(
            synced.state(),
            SyncState::Synchronised {
                source: "kernel",
                max_error: Some(Duration::from_millis(12)),
                est_error: Some(Duration::from_micros(300)),
            }
        );
        // What this container's kernel says: nothing disciplines it.
        let loose = KernelState {
            clock_state: TIME_ERROR,
            status: STA_UNSYNC,
            max_error_us: MAX_ERROR_CEILING_US,
            est_error_us: MAX_ERROR_CEILING_US,
        };
        assert!(!loose.synchronised());
        match loose.state() {
            SyncState::Unsynchronised { detail, .. } => {
                assert!(detail.contains("STA_UNSYNC set"), "{detail}");
                assert!(detail.contains("TIME_ERROR"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        for k in [
            KernelState {
                status: STA_UNSYNC,
                ..synced
            },
            KernelState {
                max_error_us: MAX_ERROR_CEILING_US,
                ..synced
            },
        ] {
            assert!(!k.synchronised(), "{k:?}");
        }
    }

    #[test]
    fn the_kernel_answers_here() {
        // adjtimex with no mode bits needs no privilege; whatever the state, it is read.
        let k = kernel_state().expect("adjtimex");
        assert!(k.max_error_us >= 0, "{k:?}");
    }
}
