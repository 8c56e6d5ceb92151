// SPDX-License-Identifier: GPL-3.0-or-later
//! Owner self-service, after queue: the reply to a log request the access point accepted
//! ([`super::request`]), built by the after-queue filter ([`crate::reception::AfterQueue`])
//! when the marked request message comes through it, and staged with the request closed
//! and its event ([`crate::store::Effect::LogReply`]).

use tracing::info;

use super::request::{self, RequestSettings, REQUEST_HEADER};
use crate::issuing::{Emitted, IssueError, Issuing};
use crate::message::ids::unbracketed;
use crate::message::mime::{fields, normalize_crlf, split_header_body};
use crate::smtp::Transaction;
use crate::store::outbox::log_reply_key;
use crate::store::Effect;

/// An owner's log request accepted by the access point (marked with
/// [`REQUEST_HEADER`], every recipient the service address it was recorded with):
/// builds the reply, injects it, and closes the request with its event; the request
/// message itself is consumed. `None` when the message is not such a request (no
/// mark, or a mark we did not record: a header anybody could write, treated as any
/// other mail).
pub async fn after_queue(
    kit: &Issuing,
    settings: &RequestSettings,
    tx: &Transaction,
) -> Result<Option<(String, Option<String>)>, IssueError> {
    let Some(id) = request_id(&tx.data) else {
        return Ok(None);
    };
    let id2 = id.clone();
    let Some((request, answered)) = kit.store(move |s| s.log_request(&id2)).await? else {
        return Ok(None);
    };
    if !tx
        .rcpt_to
        .iter()
        .all(|r| r.eq_ignore_ascii_case(&request.address))
    {
        return Ok(None);
    }
    let queue_id = tx.queue_id.as_deref().unwrap_or("-");
    if answered {
        info!(queue_id, request = %id, "after queue: log request answered already: consumed");
        return Ok(Some((id, None)));
    }
    let content = match &request.period {
        Ok(period) => {
            let filters = request::Filters::parse(&request.subject).0;
            let (owner, period, max, f) = (
                request.owner.clone(),
                *period,
                settings.max_records,
                filters.clone(),
            );
            let (events, more) = kit
                .store(move |s| request::owner_records(s, &owner, &f, period, max))
                .await?;
            request::extract(&events, more, &request, &filters, kit.clock.now())
        }
        Err(why) => request::ReplyContent::BadPeriod(why.clone()),
    };
    let now = kit.clock.now();
    let reply_id = kit.ids.next_id(now);
    let (settings2, request2, content2, reply_id2) = (
        settings.clone(),
        request.clone(),
        content.clone(),
        reply_id.clone(),
    );
    let reply = kit
        .build(move |b| request::build_reply(b, &settings2, &request2, &content2, &reply_id2, now))
        .await?;
    let event = request::extract_event(
        &request,
        &content,
        &reply.message_id,
        &kit.issuer.provider_name,
        tx.queue_id.clone(),
        now,
    );
    // The request closed, its event and the reply staged in one transaction: a retry
    // (or a concurrent delivery) finds it answered and sends no second reply.
    let emitted = kit
        .emit(log_reply_key(&id), reply, Effect::LogReply(event), now)
        .await?;
    match &emitted {
        Emitted::New(r) => {
            info!(queue_id, request = %id, reply = %r, owner = %request.owner, "after queue: log request answered")
        }
        other => {
            info!(queue_id, request = %id, reply = other.message_id().unwrap_or("-"), "after queue: log request answered by a concurrent delivery: no second reply")
        }
    }
    Ok(Some((id, emitted.message_id().map(str::to_string))))
}

/// The id in the [`REQUEST_HEADER`] field of the top-level header, without angle
/// brackets.
pub fn request_id(data: &[u8]) -> Option<String> {
    let raw = normalize_crlf(data);
    let (header, _) = split_header_body(&raw);
    let fields = fields(header).ok()?;
    let id = fields.iter().find(|f| f.is(REQUEST_HEADER))?.unfolded();
    let id = unbracketed(id.trim());
    (!id.is_empty()).then(|| id.to_string())
}
