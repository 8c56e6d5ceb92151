// SPDX-License-Identifier: GPL-3.0-or-later
//! A submission through the access point's milter, as Postfix's smtpd drives it
//! (indymilter-test), and the message as Postfix queues it after the milter's actions.
#![allow(dead_code)]

use indymilter_test::{Actions, EomAction, MacroStage, ProtoOpts, Status, TestConnection};

/// One submission: SASL login, SMTP envelope, header fields (name, value without the
/// leading space) and body (CRLF).
pub struct Mail {
    pub login: Option<&'static str>,
    pub mail_from: &'static str,
    pub rcpt: Vec<&'static str>,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// Submits `m` to the milter at `addr` with Postfix queue id `queue_id`: the end-of-message
/// actions and reply. The body goes in two chunks, as Postfix sends large bodies.
pub async fn submit(
    addr: std::net::SocketAddr,
    m: &Mail,
    queue_id: &str,
) -> (Vec<EomAction>, Status) {
    let mut conn = TestConnection::configure()
        .available_actions(Actions::all())
        .available_opts(ProtoOpts::all())
        .exact_leading_space(true)
        .open_tcp(addr)
        .await
        .unwrap();
    if let Some(login) = m.login {
        conn.macros(MacroStage::Mail, [("{auth_authen}", login)])
            .await
            .unwrap();
    }
    assert_eq!(
        conn.mail([format!("<{}>", m.mail_from)]).await.unwrap(),
        Status::Continue
    );
    for r in &m.rcpt {
        assert_eq!(
            conn.rcpt([format!("<{r}>")]).await.unwrap(),
            Status::Continue
        );
    }
    for (n, v) in &m.headers {
        assert_eq!(
            conn.header(*n, format!(" {v}")).await.unwrap(),
            Status::Continue
        );
    }
    let body = m.body.as_bytes();
    let (a, b) = body.split_at(body.len() / 2);
    conn.body(a.to_vec()).await.unwrap();
    conn.body(b.to_vec()).await.unwrap();
    conn.macros(MacroStage::Eom, [("i", queue_id)])
        .await
        .unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    conn.close().await.unwrap();
    (actions.actions, status)
}

/// The message as Postfix queues it after the milter's actions: header fields deleted and
/// added, and the body replaced when the milter replaced it.
pub fn queued(m: &Mail, actions: &[EomAction]) -> Vec<u8> {
    let mut headers: Vec<(String, String)> = m
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), format!(" {v}")))
        .collect();
    let mut body: Option<Vec<u8>> = None;
    for a in actions {
        match a {
            EomAction::DeleteHeader { name, index } => {
                let name = name.to_str().unwrap();
                let pos = headers
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                    .nth(*index as usize - 1)
                    .map(|(i, _)| i)
                    .expect("deleted header exists");
                headers.remove(pos);
            }
            EomAction::AddHeader { name, value } => headers.push((
                name.to_str().unwrap().to_string(),
                value.to_str().unwrap().to_string(),
            )),
            EomAction::ReplaceBody { chunk } => {
                body.get_or_insert_with(Vec::new).extend_from_slice(chunk)
            }
            // The envelope's recipients, not the message: see [`removed`].
            EomAction::DeleteRecipient { .. } => {}
            other => panic!("unexpected action {other:?}"),
        }
    }
    let mut out = Vec::new();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}:{}\r\n", v.replace('\n', "\r\n")).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body.unwrap_or_else(|| m.body.as_bytes().to_vec()));
    out
}

/// The recipients the milter's actions remove from the envelope, as it names them.
pub fn removed(actions: &[EomAction]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteRecipient { rcpt } => Some(rcpt.to_str().unwrap().to_string()),
            _ => None,
        })
        .collect()
}
