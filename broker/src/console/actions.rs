//! What an admin changes from the console, each journaled before it is
//! answered: purge a queue's waiting messages, delete a queue, send a
//! message to it, and move dead letters back to where they came from
//! ("retry").
//!
//! The same actions two ways: `POST /api/queues/NAME/{purge,send,retry}`
//! and `DELETE /api/queues/NAME` answer JSON; the queue page's forms post
//! to `/queues/NAME/{purge,delete,send,retry}` and are sent back to the
//! page (303) with what was done. Both need an admin's HTTP Basic login and
//! refuse requests from another origin.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

use super::{admin_of, json, pages, queue_name, respond, text};
use crate::intake::{self, Accepted, Arriving, Source, Stamps};
use crate::router::{Destination, Kind, QueueActionError};
use crate::shared::{ActionError, BrokerCore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Purge,
    Delete,
    Send,
    Retry,
}

/// Who asked: a program (JSON) or the queue page's form (a redirect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Json,
    Page,
}

/// Why an action was not done, with its HTTP status.
struct Refused(StatusCode, String);

impl From<ActionError> for Refused {
    fn from(e: ActionError) -> Self {
        let status = match &e {
            ActionError::Refused(QueueActionError::NotFound(_)) => StatusCode::NOT_FOUND,
            ActionError::Refused(QueueActionError::HasConsumers { .. }) => StatusCode::CONFLICT,
            ActionError::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

fn target(method: &Method, path: &str) -> Option<(Action, Reply, String)> {
    let (rest, reply) = match (
        path.strip_prefix("/api/queues/"),
        path.strip_prefix("/queues/"),
    ) {
        (Some(rest), _) => (rest, Reply::Json),
        (None, Some(rest)) => (rest, Reply::Page),
        _ => return None,
    };
    if reply == Reply::Json && method == Method::DELETE && !rest.contains('/') {
        return Some((Action::Delete, reply, rest.to_owned()));
    }
    if method != Method::POST {
        return None;
    }
    let (name, verb) = rest.rsplit_once('/')?;
    let action = match verb {
        "purge" => Action::Purge,
        "delete" if reply == Reply::Page => Action::Delete,
        "send" => Action::Send,
        "retry" => Action::Retry,
        _ => return None,
    };
    Some((action, reply, name.to_owned()))
}

/// A state-changing request to the console.
pub(super) async fn change(
    core: &Arc<BrokerCore>,
    req: Request<Incoming>,
    path: &str,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let Some((action, reply, raw_name)) = target(req.method(), path) else {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "state changes: POST /api/queues/NAME/purge, /send or /retry, DELETE /api/queues/NAME \
             (or the queue page's forms)\n",
        );
    };
    let Some(name) = queue_name(&raw_name) else {
        return text(StatusCode::BAD_REQUEST, "invalid queue name\n");
    };
    let user = match admin_of(core, &req, &name, remote).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let query = req.uri().query().unwrap_or_default().to_owned();
    // A form's fields (a message body at most as large as a frame).
    let limit = core.limits.max_frame_size + 64 * 1024;
    let form = match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => {
            let body = body.to_bytes();
            let mut fields: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            fields.extend(form_urlencoded::parse(&body).into_owned());
            fields
        }
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request is larger than a message may be\n",
            )
        }
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let done = match action {
        Action::Purge => core
            .purge(&name, false)
            .await
            .map(|n| (format!("purged {n} messages"), n))
            .map_err(Refused::from),
        Action::Delete if is_hidden(&name) => Err(Refused(
            StatusCode::CONFLICT,
            "this queue belongs to a durable subscription: UNSUBSCRIBE with its \
             activemq.subscriptionName to remove it"
                .into(),
        )),
        Action::Delete => core
            .purge(&name, true)
            .await
            .map(|n| (format!("deleted, with {n} messages"), n))
            .map_err(Refused::from),
        Action::Retry => intake::retry(core, &name, field("id").map(str::to_owned))
            .await
            .map(|n| (format!("moved {n} messages back to their destinations"), n))
            .map_err(Refused::from),
        Action::Send => {
            let message = Sent {
                user,
                queue: name.clone(),
                body: field("body").unwrap_or_default().as_bytes().to_vec(),
                persistent: matches!(field("persistent"), Some("true" | "on")),
                headers: field("headers").unwrap_or_default(),
            };
            send(core, message)
                .await
                .map(|()| ("sent 1 message".to_owned(), 1))
        }
    };
    let key = match action {
        Action::Purge => "purged",
        Action::Delete => "deleted",
        Action::Retry => "retried",
        Action::Send => "sent",
    };
    match (done, reply) {
        (Ok((_, n)), Reply::Json) => json(&serde_json::json!({ "queue": name, key: n })),
        (Ok((what, _)), Reply::Page) => {
            let back = if action == Action::Delete {
                "/queues".to_owned()
            } else {
                let done: String = form_urlencoded::byte_serialize(what.as_bytes()).collect();
                format!("{}?done={done}", pages::queue_path(&name))
            };
            let mut r = respond(StatusCode::SEE_OTHER, "text/plain", format!("{what}\n"));
            if let Ok(v) = HeaderValue::from_str(&back) {
                r.headers_mut().insert(LOCATION, v);
            }
            r
        }
        (Err(Refused(status, why)), Reply::Json) => text(status, &format!("{why}\n")),
        (Err(Refused(status, why)), Reply::Page) => respond(
            status,
            "text/html; charset=utf-8",
            pages::failure(core, &pages::queue_path(&name), &why),
        ),
    }
}

fn is_hidden(name: &str) -> bool {
    crate::durable::is_hidden(&Destination {
        kind: Kind::Queue,
        name: name.to_owned(),
    })
}

/// A message an admin sends from the console.
struct Sent<'a> {
    user: String,
    queue: String,
    body: Vec<u8>,
    persistent: bool,
    /// `name:value` lines.
    headers: &'a str,
}

/// Takes the message through the intake, as a client's SEND is, and
/// routes it once it is stored.
async fn send(core: &BrokerCore, sent: Sent<'_>) -> Result<(), Refused> {
    let bad = |why: String| Refused(StatusCode::BAD_REQUEST, why);
    let queue = Destination::parse(&format!("queue://{}", sent.queue)).map_err(bad)?;
    if crate::durable::is_hidden(&queue) {
        return Err(bad(
            "a durable subscription's queue takes only its topic's messages".into(),
        ));
    }
    let mut headers = Vec::new();
    for line in sent.headers.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("a header line is name:value, not {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    if headers.len() > core.limits.max_headers {
        return Err(bad(format!("at most {} headers", core.limits.max_headers)));
    }
    if sent.persistent {
        headers.push(("persistent".to_owned(), "true".to_owned()));
    }
    let stamps = Stamps::read(&headers).map_err(bad)?;
    core.router
        .ensure(queue.clone())
        .await
        .map_err(|e| Refused(StatusCode::CONFLICT, e.to_string()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let arriving = Arriving {
        source: Source::Client,
        destination: queue,
        headers: &headers,
        body: sent.body,
        persistent: sent.persistent,
        sender: Some(Arc::from(sent.user.as_str())),
        dedup: None,
        expires: stamps.expires,
        priority: stamps.priority,
        group: stamps.group.clone(),
        deliver_at: stamps.schedule.due(now, 0),
        message_id: None,
    };
    let stored = |e: crate::store::JournalError| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the message could not be stored: {e}"),
        )
    };
    if let Accepted::Taken { message, durable } =
        intake::accept(core, arriving).await.map_err(stored)?
    {
        if let Some(durable) = durable {
            durable.wait().await.map_err(stored)?;
        }
        core.router.send(message).await;
    }
    Ok(())
}
