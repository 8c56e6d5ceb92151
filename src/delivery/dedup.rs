//! Not storing a message twice when Postfix retries a delivery (see
//! [`crate::store::outbox`]): the delivery point records, per (Message-ID, recipient), an
//! intent before handing the message to Dovecot and the completion after Dovecot's 250.
//!
//! * completion recorded: the retry answers 250 and delivers nothing;
//! * intent only (we died between handing the message over and recording Dovecot's
//!   answer): the mailbox is asked ([`MailboxProbe`], by default `doveadm search`); held →
//!   answered as delivered; not held, or the check could not be made → delivered again (a
//!   copy is better than a lost message).
//! * intent of another node still alive (several nodes on one store,
//!   [`crate::store::outbox::intent_is_live`]): being delivered now, answered 4xx; the
//!   intent of a dead node is taken over and handled as above.
//!
//! Messages without a `Message-ID` are always delivered.

use std::process::Stdio;
use std::time::Duration;

use crate::message::ids::unbracketed;
use crate::message::mime::{fields, split_header_body};
use crate::BoxFuture;

/// `delivery.duplicate_check` by default.
pub const DEFAULT_CHECK: &[&str] = &[
    "doveadm",
    "search",
    "-u",
    "%u",
    "header",
    "Message-ID",
    "%m",
];

/// How long the check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Asks whether `user`'s mailbox holds a message with Message-ID `message_id`.
pub trait MailboxProbe: Send + Sync {
    /// `Ok(true)`: held; `Ok(false)`: not held; `Err`: could not tell.
    fn holds<'a>(
        &'a self,
        user: &'a str,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// The configured command (`delivery.duplicate_check`).
#[derive(Debug, Clone)]
pub struct CommandProbe {
    argv: Vec<String>,
}

impl CommandProbe {
    /// `None` when `argv` is empty (no check).
    pub fn new(argv: Vec<String>) -> Option<Self> {
        (!argv.is_empty()).then_some(CommandProbe { argv })
    }
}

impl MailboxProbe for CommandProbe {
    fn holds<'a>(
        &'a self,
        user: &'a str,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let args: Vec<String> = self
                .argv
                .iter()
                .map(|a| a.replace("%u", user).replace("%m", message_id))
                .collect();
            let mut cmd = tokio::process::Command::new(&args[0]);
            cmd.args(&args[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let out = tokio::time::timeout(CHECK_TIMEOUT, cmd.output())
                .await
                .map_err(|_| format!("\"{}\" timed out", args[0]))?
                .map_err(|e| format!("\"{}\": {e}", args[0]))?;
            if !out.status.success() {
                return Err(format!(
                    "\"{}\" {}: {}",
                    args[0],
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
        })
    }
}

/// The top-level `Message-ID` of `data`, without angle brackets. Only the header is read.
pub fn message_id(data: &[u8]) -> Option<String> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| data.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(data.len());
    let head = crate::message::mime::normalize_crlf(&data[..end]);
    let (header, _) = split_header_body(&head);
    let fields = fields(header).ok()?;
    let id = fields.iter().find(|f| f.is("Message-ID"))?.unfolded();
    let id = unbracketed(id.trim());
    // A Message-ID with spaces or control characters is not used as a key.
    (!id.is_empty() && id.len() <= 998 && !id.bytes().any(|b| b <= b' ' || b == 0x7f))
        .then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_reads_the_top_level_header_only() {
        let m = b"Subject: x\r\nMessage-ID:\r\n <a.b@c>\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(message_id(m).as_deref(), Some("a.b@c"));
        assert_eq!(message_id(b"Subject: x\n\nMessage-ID: <b@x>\n"), None);
        assert_eq!(message_id(b"Message-ID: <a b@c>\r\n\r\n"), None);
        assert_eq!(message_id(b"garbage"), None);
    }

    #[tokio::test]
    async fn the_command_says_held_by_its_output_and_fails_safe() {
        let held = CommandProbe::new(vec!["echo".into(), "%u %m".into()]).unwrap();
        assert_eq!(held.holds("bob@x", "id@y").await, Ok(true));
        let empty = CommandProbe::new(vec!["true".into(), "%u".into()]).unwrap();
        assert_eq!(empty.holds("bob@x", "id@y").await, Ok(false));
        let failing = CommandProbe::new(vec!["false".into()]).unwrap();
        assert!(failing.holds("bob@x", "id@y").await.is_err());
        let missing = CommandProbe::new(vec!["/nonexistent/doveadm".into()]).unwrap();
        assert!(missing.holds("bob@x", "id@y").await.is_err());
        assert!(CommandProbe::new(Vec::new()).is_none());
    }
}
