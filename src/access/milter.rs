// SPDX-License-Identifier: GPL-3.0-or-later
//! The indymilter adapter of the access point: one callback per milter stage, collecting
//! the envelope, the header and the body; at end of message it asks
//! [`AccessPoint::decide`] and applies the decision. No PEC rule here (style rule 1).

use std::ffi::{CStr, CString};
use std::future::Future;
use std::sync::Arc;

use indymilter::{
    Actions, Callbacks, Config, ContextActions, EomContext, MacroStage, ProtoOpts, SetErrorReply,
    Status,
};
use tokio::net::TcpListener;
use tracing::warn;

use super::{AccessPoint, Decision, Reply, Submission};
use crate::log::request::REQUEST_HEADER;
use crate::message::build::ENVELOPE_INHERITED;
use crate::message::time::Instant;

/// Per-message state, and the one thing kept across the messages of a connection: when
/// its SASL login was first seen.
#[derive(Debug, Default)]
pub struct Session {
    login: Option<String>,
    /// The login and the instant the milter first saw it in this connection (the
    /// session's authentication time, see [`Submission::auth_at`]).
    auth: Option<(String, Instant)>,
    mail_from: String,
    rcpt_to: Vec<String>,
    /// Header fields as received: name and value (value with its leading white space and
    /// CRLF folds).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body grew past the hard limit: stop collecting, reject at end of message.
    oversize: bool,
}

fn text(c: &CStr) -> String {
    String::from_utf8_lossy(c.to_bytes()).into_owned()
}

/// `<addr>` → `addr`.
fn path(arg: &CStr) -> String {
    let s = text(arg);
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

impl Session {
    /// What a connection keeps of a finished or aborted message: its authentication.
    fn next(self) -> Session {
        Session {
            auth: self.auth,
            ..Session::default()
        }
    }

    /// The message as the client sent it, CRLF (milter header values fold with bare LF).
    /// Takes the collected body: the message is not held twice.
    fn take_message(&mut self) -> Vec<u8> {
        let body = std::mem::take(&mut self.body);
        let mut out = Vec::with_capacity(body.len() + 4096);
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out
    }
}

/// The authentication of a connection after a MAIL FROM carrying `login` at `now`: the
/// instant seen first for the same login (`seen`), else `now`; none without a login.
fn authenticated(
    seen: Option<(String, Instant)>,
    login: Option<&str>,
    now: Instant,
) -> Option<(String, Instant)> {
    let login = login?;
    Some(match seen {
        Some((prev, at)) if prev == login => (prev, at),
        _ => (login.to_string(), now),
    })
}

fn set_reply(reply: &mut indymilter::SmtpReply, r: &Reply) {
    // The text is ours and ASCII-safe; a failure to set it leaves Postfix's default reply.
    let _ = reply.set_error_reply(r.code, Some(r.xcode), [r.text.as_str()]);
}

/// The milter callbacks bound to one access point.
pub fn callbacks(ap: Arc<AccessPoint>) -> Callbacks<Session> {
    callbacks_current(Arc::new(crate::reload::Current::new(ap)))
}

/// The milter callbacks bound to the access point in use in `current` (swapped by a
/// configuration reload; each message uses the one in use when its body starts).
pub fn callbacks_current(current: Arc<crate::reload::Current<AccessPoint>>) -> Callbacks<Session> {
    let for_body = Arc::clone(&current);
    let for_mail = Arc::clone(&current);
    Callbacks::new()
        .on_negotiate(|cx, _, _| {
            Box::pin(async move {
                cx.requested_actions |=
                    Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::REPLACE_BODY;
                cx.requested_opts |= ProtoOpts::LEADING_SPACE;
                if let Ok(m) = CString::new("{auth_authen}") {
                    cx.requested_macros.insert(MacroStage::Mail, m);
                }
                if let Ok(m) = CString::new("i") {
                    cx.requested_macros.insert(MacroStage::Eom, m);
                }
                Status::Continue
            })
        })
        .on_mail(move |cx, args| {
            let now = for_mail.get().kit.clock.now();
            Box::pin(async move {
                let login = cx
                    .macros
                    .get(c"{auth_authen}")
                    .map(text)
                    .filter(|s| !s.is_empty());
                // The first MAIL FROM of the connection with this login dates the
                // authentication; a later message of the same session keeps that instant.
                let seen = cx.data.take().and_then(|s: Session| s.auth);
                let auth = authenticated(seen, login.as_deref(), now);
                cx.data = Some(Session {
                    login,
                    auth,
                    mail_from: args.first().map(|a| path(a)).unwrap_or_default(),
                    ..Session::default()
                });
                Status::Continue
            })
        })
        .on_rcpt(|cx, args| {
            Box::pin(async move {
                if let (Some(s), Some(a)) = (cx.data.as_mut(), args.first()) {
                    s.rcpt_to.push(path(a));
                }
                Status::Continue
            })
        })
        .on_header(|cx, name, value| {
            Box::pin(async move {
                if let Some(s) = cx.data.as_mut() {
                    s.headers.push((text(&name), text(&value)));
                }
                Status::Continue
            })
        })
        .on_body(move |cx, chunk| {
            let hard_limit = for_body.get().policy.hard_size_limit;
            Box::pin(async move {
                if let Some(s) = cx.data.as_mut() {
                    if s.body.len() as u64 + chunk.len() as u64 > hard_limit {
                        s.oversize = true;
                    } else {
                        s.body.extend_from_slice(&chunk);
                    }
                }
                Status::Continue
            })
        })
        .on_eom(move |cx| {
            let ap = current.get();
            Box::pin(async move { eom(cx, ap).await })
        })
        .on_abort(|cx| {
            Box::pin(async move {
                cx.data = cx.data.take().map(Session::next);
                Status::Continue
            })
        })
}

async fn eom(cx: &mut EomContext<Session>, ap: Arc<AccessPoint>) -> Status {
    let Some(mut session) = cx.data.take() else {
        set_reply(
            &mut cx.reply,
            &Reply {
                code: "451",
                xcode: "4.3.0",
                text: "PEC: stato del milter perso".into(),
            },
        );
        return Status::Tempfail;
    };
    // The connection keeps the authentication for its next message.
    cx.data = Some(Session {
        auth: session.auth.clone(),
        ..Session::default()
    });
    let queue_id = cx.macros.get(c"i").map(text);
    let message = session.take_message();
    let auth_at = session.auth.as_ref().map(|(_, at)| *at);
    let submission = Submission {
        queue_id,
        login: session.login.clone(),
        auth_at,
        mail_from: session.mail_from.clone(),
        rcpt_to: session.rcpt_to.clone(),
        // The body stopped being collected past the hard limit: say so in the size.
        size: if session.oversize {
            u64::MAX
        } else {
            message.len() as u64
        },
        message,
    };
    // What a rejection is logged with: everything but the body (the message goes to
    // `decide`, not a copy of it).
    let (head, _) = crate::message::mime::split_header_body(&submission.message);
    let logged = Submission {
        message: head.to_vec(),
        queue_id: submission.queue_id.clone(),
        login: submission.login.clone(),
        auth_at,
        mail_from: submission.mail_from.clone(),
        rcpt_to: submission.rcpt_to.clone(),
        size: submission.size,
    };
    let span = tracing::info_span!(
        "access",
        queue_id = submission.queue_id.as_deref().unwrap_or("-"),
        msgid = tracing::field::Empty
    );
    let started = std::time::Instant::now();
    let decision = {
        use tracing::Instrument;
        ap.decide(submission).instrument(span.clone()).await
    };
    crate::metrics::latency(crate::metrics::Role::Access, started.elapsed());
    record(&decision);
    match decision {
        Decision::Wrap(envelope) => {
            replace(
                cx,
                &session,
                &span,
                &ENVELOPE_INHERITED,
                &envelope.headers,
                &envelope.body,
            )
            .await
        }
        Decision::Dispatch(dispatch) => {
            replace(
                cx,
                &session,
                &span,
                &DISPATCH_INHERITED,
                &dispatch.headers,
                &dispatch.body,
            )
            .await
        }
        Decision::LogRequest(id) => match mark_request(cx, &session, &id).await {
            Ok(()) => Status::Accept,
            Err(e) => {
                warn!(error = %e, "cannot mark the log request: tempfail");
                set_reply(
                    &mut cx.reply,
                    &Reply {
                        code: "451",
                        xcode: "4.3.0",
                        text: "PEC: riscrittura del messaggio non riuscita".into(),
                    },
                );
                Status::Tempfail
            }
        },
        Decision::Refused(None) => Status::Discard,
        Decision::Refused(Some(r)) => {
            set_reply(&mut cx.reply, &r);
            Status::Reject
        }
        Decision::Reject(r) => {
            let (ap2, r2) = (Arc::clone(&ap), r.clone());
            // Logged best effort: the rejection stands even if the log write fails.
            let _ = tokio::task::spawn_blocking(move || ap2.log_rejected(&logged, &r2)).await;
            set_reply(&mut cx.reply, &r);
            Status::Reject
        }
        Decision::Tempfail(r) => {
            set_reply(&mut cx.reply, &r);
            Status::Tempfail
        }
    }
}

/// The metrics of one decision.
fn record(decision: &Decision) {
    use crate::metrics::{message, tempfail, Role};
    match decision {
        Decision::Wrap(_) | Decision::Dispatch(_) => {
            message(Role::Access, "submission", "accepted")
        }
        Decision::LogRequest(_) => message(Role::Access, "log-request", "accepted"),
        Decision::Refused(_) => message(Role::Access, "submission", "refused"),
        Decision::Reject(_) => message(Role::Access, "submission", "rejected"),
        Decision::Tempfail(r) => {
            message(Role::Access, "submission", "tempfail");
            let cause = if r.xcode == "4.3.2" {
                "suspended"
            } else if r.text.contains("antivirus") {
                "antivirus"
            } else if r.text.contains("firma") {
                "signer"
            } else if r.text.contains("archivio") {
                "store"
            } else if r.text.contains("avviso") {
                "reinjection"
            } else {
                "internal"
            };
            tempfail(Role::Access, cause);
        }
    }
}

/// Turns the queued message into the transport envelope: deletes every header field the
/// envelope does not inherit (in reverse order, so indexes stay valid), adds the new ones
/// and replaces the body.
/// Header fields of the submission a REM dispatch keeps: the trace fields only (the
/// dispatch writes its own `To`, `Cc` and `Reply-To`).
const DISPATCH_INHERITED: [&str; 2] = ["Received", "Return-Path"];

/// The queued message replaced by our transport envelope (PEC) or REM dispatch, keeping
/// the client's `inherited` header fields: accepted, or a temporary failure when the
/// milter actions fail.
async fn replace(
    cx: &mut EomContext<Session>,
    session: &Session,
    span: &tracing::Span,
    inherited: &[&str],
    headers: &[(String, String)],
    body: &[u8],
) -> Status {
    match rewrite(cx, session, inherited, headers, body).await {
        Ok(()) => Status::Accept,
        Err(e) => {
            warn!(parent: span, error = %e, "cannot rewrite the queued message: tempfail");
            crate::metrics::tempfail(crate::metrics::Role::Access, "rewrite");
            set_reply(
                &mut cx.reply,
                &Reply {
                    code: "451",
                    xcode: "4.3.0",
                    text: "PEC: riscrittura del messaggio non riuscita".into(),
                },
            );
            Status::Tempfail
        }
    }
}

/// Replaces the queued message: every header field but the `inherited` ones removed,
/// `headers` added, the body replaced.
async fn rewrite(
    cx: &mut EomContext<Session>,
    session: &Session,
    inherited: &[&str],
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), indymilter::ActionError> {
    let mut seen: std::collections::HashMap<String, i32> = std::collections::HashMap::new();
    let mut positions = Vec::with_capacity(session.headers.len());
    for (name, _) in &session.headers {
        let n = seen.entry(name.to_ascii_lowercase()).or_insert(0);
        *n += 1;
        positions.push((name.clone(), *n));
    }
    for (name, nth) in positions.iter().rev() {
        if !inherited.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            cx.actions
                .change_header(name.as_str(), *nth, None::<CString>)
                .await?;
        }
    }
    for (name, value) in headers {
        // LEADING_SPACE is negotiated: we write the space ourselves; folds as bare LF.
        let v = format!(" {}", value.replace("\r\n", "\n"));
        cx.actions.add_header(name.as_str(), v).await?;
    }
    cx.actions.replace_body(body).await?;
    Ok(())
}

/// Marks an accepted log request for the after-queue filter: removes every
/// [`REQUEST_HEADER`] field the client wrote, then adds ours with the request id.
async fn mark_request(
    cx: &mut EomContext<Session>,
    session: &Session,
    id: &str,
) -> Result<(), indymilter::ActionError> {
    let written = session
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(REQUEST_HEADER))
        .count();
    for nth in (1..=written as i32).rev() {
        cx.actions
            .change_header(REQUEST_HEADER, nth, None::<CString>)
            .await?;
    }
    cx.actions
        .add_header(REQUEST_HEADER, format!(" <{id}>"))
        .await?;
    Ok(())
}

/// Runs the milter on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    ap: Arc<AccessPoint>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let config = Config {
        actions: Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::REPLACE_BODY,
        max_connections: 200,
        ..Config::default()
    };
    indymilter::run(listener, callbacks(ap), config, shutdown).await
}

/// Runs the milter on `listener` until `shutdown` completes, with the access point in use
/// in `current`.
pub async fn run_current(
    listener: TcpListener,
    current: Arc<crate::reload::Current<AccessPoint>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let config = Config {
        actions: Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::REPLACE_BODY,
        max_connections: 200,
        ..Config::default()
    };
    indymilter::run(listener, callbacks_current(current), config, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_mail_from_of_a_login_dates_the_authentication() {
        let (t1, t2) = (Instant::from_unix(100), Instant::from_unix(200));
        let first = authenticated(None, Some("alice"), t1);
        assert_eq!(first, Some(("alice".to_string(), t1)));
        // A later message of the same session keeps the first instant.
        assert_eq!(
            authenticated(first.clone(), Some("alice"), t2),
            Some(("alice".to_string(), t1))
        );
        // Another login (a new AUTH in the session) is dated anew; no login, nothing.
        assert_eq!(
            authenticated(first.clone(), Some("bob"), t2),
            Some(("bob".to_string(), t2))
        );
        assert_eq!(authenticated(first, None, t2), None);
        // What the connection keeps of a finished message: its authentication only.
        let s = Session {
            login: Some("alice".into()),
            auth: Some(("alice".into(), t1)),
            mail_from: "alice@pec.example.it".into(),
            ..Session::default()
        }
        .next();
        assert_eq!(s.auth, Some(("alice".to_string(), t1)));
        assert!(s.login.is_none() && s.mail_from.is_empty());
    }
}
