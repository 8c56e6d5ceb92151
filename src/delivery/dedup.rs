// SPDX-License-Identifier: GPL-3.0-or-later
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
//! Messages without a `Message-ID` are always delivered. A message is known by its
//! [`Identity`]: its Message-ID, and its class when it is anything but a transport envelope
//! or plain mail. An anomaly envelope keeps the Message-ID of the message it wraps (spec
//! §3.11): were it known by the Message-ID alone, a wrapped copy delivered first would make
//! the certified envelope of that id look delivered, and its receipt certify a delivery
//! that did not happen. The mailbox check looks for the class too (`%c`).

use std::process::Stdio;
use std::time::Duration;

use crate::message::ids::unbracketed;
use crate::message::mime::{fields, split_header_body};
use crate::BoxFuture;

/// `delivery.duplicate_check` by default. `%u` is the mailbox, `%m` the Message-ID, and an
/// argument that is exactly `%c` stands for the search terms of the message's class
/// (`header X-Trasporto posta-certificata`, `header X-Ricevuta avvenuta-consegna`, …; none
/// for plain mail).
pub const DEFAULT_CHECK: &[&str] = &[
    "doveadm",
    "search",
    "-u",
    "%u",
    "header",
    "Message-ID",
    "%m",
    "%c",
];

/// What a delivered message is known by (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The top-level Message-ID, without angle brackets.
    pub message_id: String,
    /// The class header (`X-Trasporto` or `X-Ricevuta`) and its value, lower case.
    pub class: Option<(&'static str, String)>,
}

impl Identity {
    /// The key of its delivery records: the Message-ID for a transport envelope and for
    /// plain mail (as recorded before classes were); the Message-ID and the class for an
    /// anomaly envelope or a receipt, so that they never stand for the envelope of their id.
    pub fn key(&self) -> String {
        match &self.class {
            None => self.message_id.clone(),
            Some(("X-Trasporto", v)) if v == "posta-certificata" => self.message_id.clone(),
            Some((name, v)) => format!("{} {}:{v}", self.message_id, name.to_ascii_lowercase()),
        }
    }

    /// The mailbox-check terms that `%c` stands for.
    fn search_terms(&self) -> Vec<String> {
        match &self.class {
            Some((name, v)) => vec!["header".into(), (*name).into(), v.clone()],
            None => Vec::new(),
        }
    }
}

/// The command line of the check `template` (`[delivery] duplicate_check`) for `user` and
/// `message`: `%u` and `%m` replaced, an argument that is exactly `%c` replaced by the
/// class's search terms (none for plain mail).
pub fn check_argv(template: &[String], user: &str, message: &Identity) -> Vec<String> {
    template
        .iter()
        .flat_map(|a| match a.as_str() {
            "%c" => message.search_terms(),
            _ => vec![a.replace("%u", user).replace("%m", &message.message_id)],
        })
        .collect()
}

/// The [`Identity`] of `data`; `None` without a usable Message-ID. Only the header is
/// read.
pub fn identity(data: &[u8]) -> Option<Identity> {
    let message_id = message_id(data)?;
    let (header, _) = split_header_body(data);
    let fields = fields(header).ok()?;
    let class = ["X-Trasporto", "X-Ricevuta"].into_iter().find_map(|name| {
        fields
            .iter()
            .find(|f| f.is(name))
            .map(|f| (name, f.unfolded().trim().to_ascii_lowercase()))
    });
    Some(Identity { message_id, class })
}

/// How long the check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Asks whether `user`'s mailbox holds the message known as `message` (its Message-ID and
/// class).
pub trait MailboxProbe: Send + Sync {
    /// `Ok(true)`: held; `Ok(false)`: not held; `Err`: could not tell.
    fn holds<'a>(
        &'a self,
        user: &'a str,
        message: &'a Identity,
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
        message: &'a Identity,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let args = check_argv(&self.argv, user, message);
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

    fn id(class: Option<(&'static str, &str)>) -> Identity {
        Identity {
            message_id: "id@y".into(),
            class: class.map(|(n, v)| (n, v.to_string())),
        }
    }

    #[tokio::test]
    async fn the_command_says_held_by_its_output_and_fails_safe() {
        let held = CommandProbe::new(vec!["echo".into(), "%u %m".into()]).unwrap();
        assert_eq!(held.holds("bob@x", &id(None)).await, Ok(true));
        let empty = CommandProbe::new(vec!["true".into(), "%u".into()]).unwrap();
        assert_eq!(empty.holds("bob@x", &id(None)).await, Ok(false));
        let failing = CommandProbe::new(vec!["false".into()]).unwrap();
        assert!(failing.holds("bob@x", &id(None)).await.is_err());
        let missing = CommandProbe::new(vec!["/nonexistent/doveadm".into()]).unwrap();
        assert!(missing.holds("bob@x", &id(None)).await.is_err());
        assert!(CommandProbe::new(Vec::new()).is_none());
    }

    /// `%c` becomes the class's search terms (none for plain mail): the check of a
    /// transport envelope is never answered by the anomaly envelope of the same id.
    #[tokio::test]
    async fn the_class_is_part_of_the_check() {
        // `test` succeeds (and prints nothing) only when its arguments are as expected.
        let probe = |want: &str| {
            CommandProbe::new(
                [
                    "sh",
                    "-c",
                    "[ \"$*\" = \"$0\" ] && echo found",
                    want,
                    "%m",
                    "%c",
                ]
                .map(String::from)
                .to_vec(),
            )
            .unwrap()
        };
        let envelope = id(Some(("X-Trasporto", "posta-certificata")));
        assert_eq!(
            probe("id@y header X-Trasporto posta-certificata")
                .holds("bob@x", &envelope)
                .await,
            Ok(true)
        );
        assert_eq!(probe("id@y").holds("bob@x", &id(None)).await, Ok(true));
        assert_eq!(
            probe("id@y").holds("bob@x", &envelope).await,
            Err("\"sh\" exit status: 1: ".into())
        );
    }

    #[test]
    fn an_anomaly_envelope_is_not_known_as_the_envelope_it_wraps() {
        let envelope =
            identity(b"Message-ID: <opec.1@x>\r\nX-Trasporto: Posta-Certificata\r\n\r\nx\r\n")
                .unwrap();
        let anomaly =
            identity(b"X-Trasporto: errore\r\nMessage-ID: <opec.1@x>\r\n\r\nx\r\n").unwrap();
        let receipt =
            identity(b"Message-ID: <opec.1@x>\r\nX-Ricevuta: avvenuta-consegna\r\n\r\nx\r\n")
                .unwrap();
        let plain = identity(b"Message-ID: <opec.1@x>\r\n\r\nx\r\n").unwrap();
        assert_eq!(envelope.key(), "opec.1@x");
        assert_eq!(plain.key(), "opec.1@x");
        assert_eq!(anomaly.key(), "opec.1@x x-trasporto:errore");
        assert_eq!(receipt.key(), "opec.1@x x-ricevuta:avvenuta-consegna");
        assert_eq!(anomaly.search_terms(), ["header", "X-Trasporto", "errore"]);
        assert!(plain.search_terms().is_empty());
    }
}
