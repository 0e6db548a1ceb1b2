//! The console: HTML pages a person can read, the same figures as JSON
//! under `/api`, and `GET /health` (200 while this node is active).
//!
//! Reading needs no login (the console binds to loopback unless told
//! otherwise). Anything that changes state — `POST /api/queues/NAME/purge`,
//! `DELETE /api/queues/NAME` — needs HTTP Basic credentials of a configured
//! user with the `admin` right on that queue.

mod metrics;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::logins::Refusal;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use portico_core::metrics_text;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Operation;
use crate::router::{Destination, Kind, QueueActionError, QueueStats, Stats};
use crate::shared::{BrokerCore, PurgeError};

/// Console connections open at once; more wait in the kernel's backlog.
const CONNECTIONS: usize = 128;
/// A request's head must arrive within this.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn run(core: Arc<BrokerCore>, listener: TcpListener, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    // Out of descriptors, say: back off, do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let core = core.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(handle(&core, req, remote).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

async fn handle(
    core: &Arc<BrokerCore>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return change(core, &req, &path, remote).await;
    }
    if path == "/health" {
        return respond(
            StatusCode::OK,
            "application/json",
            format!("{{\"status\":\"active\",\"broker\":{:?}}}", core.name),
        );
    }
    let stats = core.router.stats().await;
    if path == "/api/broker" {
        return json(&core.summary(stats.memory));
    }
    match path.as_str() {
        "/metrics" => {
            let text = metrics::render(core, &stats, &core.bridges.info());
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            if metrics_text::wants_openmetrics(accept) {
                respond(StatusCode::OK, metrics_text::OPENMETRICS, text)
            } else {
                respond(
                    StatusCode::OK,
                    metrics_text::PROMETHEUS,
                    metrics_text::openmetrics_to_prometheus(&text),
                )
            }
        }
        "/api/queues" => json(&visible_queues(&stats).collect::<Vec<_>>()),
        "/api/durable-subscriptions" => json(&durable_views(core, &stats)),
        "/api/topics" => json(&stats.topics),
        "/api/connections" => json(&stats.connections),
        "/api/network" => json(&core.bridges.info()),
        "/" | "/queues" | "/topics" | "/durable" | "/connections" | "/network" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page(core, &path, &stats, &core.bridges.info()),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// What a state-changing request asks for.
enum Action {
    Purge,
    Delete,
}

/// `POST /api/queues/NAME/purge` and `DELETE /api/queues/NAME`, for an
/// admin of that queue.
async fn change(
    core: &Arc<BrokerCore>,
    req: &Request<Incoming>,
    path: &str,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let target = path.strip_prefix("/api/queues/").and_then(|rest| {
        match (req.method(), rest.strip_suffix("/purge")) {
            (&Method::POST, Some(name)) => Some((Action::Purge, name)),
            (&Method::DELETE, None) => Some((Action::Delete, rest)),
            _ => None,
        }
    });
    let Some((action, raw_name)) = target else {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only POST /api/queues/NAME/purge and DELETE /api/queues/NAME change state\n",
        );
    };
    let name = match percent_encoding::percent_decode_str(raw_name).decode_utf8() {
        Ok(name) if !name.is_empty() => name.into_owned(),
        _ => return text(StatusCode::BAD_REQUEST, "invalid queue name\n"),
    };
    if let Err(refused) = admin_of(core, req, &name, remote).await {
        return refused;
    }
    let what = match action {
        Action::Purge => "purged",
        Action::Delete => "deleted",
    };
    if crate::durable::is_hidden(&Destination {
        kind: Kind::Queue,
        name: name.clone(),
    }) && matches!(action, Action::Delete)
    {
        return text(
            StatusCode::CONFLICT,
            "this queue belongs to a durable subscription: UNSUBSCRIBE with its activemq.subscriptionName to remove it\n",
        );
    }
    let purged = match core.purge(&name, matches!(action, Action::Delete)).await {
        Ok(purged) => purged,
        Err(PurgeError::Refused(e @ QueueActionError::NotFound(_))) => {
            return text(StatusCode::NOT_FOUND, &format!("{e}\n"))
        }
        Err(PurgeError::Refused(e @ QueueActionError::HasConsumers { .. })) => {
            return text(StatusCode::CONFLICT, &format!("{e}\n"))
        }
        Err(e) => {
            warn!(queue = %name, error = %e, "the purge could not be stored: the messages come back after a restart");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the purge could not be stored\n",
            );
        }
    };
    json(&serde_json::json!({
        "queue": name,
        what: purged,
    }))
}

/// `Ok` when the request carries the credentials of a user with the admin
/// right on queue `name`; otherwise the response that refuses it.
async fn admin_of(
    core: &Arc<BrokerCore>,
    req: &Request<Incoming>,
    name: &str,
    remote: SocketAddr,
) -> Result<(), Response<Full<Bytes>>> {
    // A page elsewhere must not get a browser to act with its cached login.
    if let Some(origin) = req.headers().get(ORIGIN) {
        let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, rest)| Some(rest) == host);
        if !same {
            return Err(text(
                StatusCode::FORBIDDEN,
                "cross-origin requests may not change state\n",
            ));
        }
    }
    if !core.auth.has_users() {
        return Err(text(
            StatusCode::FORBIDDEN,
            "changing state needs a login: configure a [[user]] with the admin right\n",
        ));
    }
    let unauthorized = || {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "a login with the admin right is needed\n",
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portico-broker console\", charset=\"UTF-8\""),
        );
        r
    };
    let Some((user, password)) = basic_credentials(req) else {
        return Err(unauthorized());
    };
    // Password hashes are slow on purpose: checked off the runtime's
    // threads, a few at a time, with back-off for repeated failures.
    let principal = match core
        .logins
        .check(remote.ip(), Some(&user), Some(&password))
        .await
    {
        Ok(principal) => principal,
        Err(why) => {
            core.login_failed();
            // A user name is the client's text: logged escaped.
            info!(client.addr = %remote, user = ?user, "console: authentication failed: {why}");
            return Err(match why {
                Refusal::Backoff { retry_after } => {
                    let mut r = text(StatusCode::TOO_MANY_REQUESTS, &format!("{why}\n"));
                    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
                    {
                        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
                    }
                    r
                }
                _ => unauthorized(),
            });
        }
    };
    let queue = Destination {
        kind: Kind::Queue,
        name: name.to_owned(),
    };
    if !core.auth.allows(&principal, Operation::Admin, &queue) {
        info!(client.addr = %remote, user = ?user, queue = ?name, "console: refused, no admin right");
        return Err(text(
            StatusCode::FORBIDDEN,
            &format!("user {user:?} has no admin right on queue {name:?}\n"),
        ));
    }
    info!(client.addr = %remote, user = ?user, queue = ?name, method = %req.method(), "console: change allowed");
    Ok(())
}

/// (user, password) from an `Authorization: Basic` header.
fn basic_credentials(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (user, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some((user, password))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Queues as users name them: durable subscriptions' hidden queues are
/// shown as the subscriptions they are.
fn visible_queues(stats: &Stats) -> impl Iterator<Item = &QueueStats> {
    stats
        .queues
        .iter()
        .filter(|q| !q.name.starts_with(crate::durable::QUEUE_PREFIX))
}

/// A durable subscription as the console and `/api/durable-subscriptions`
/// show it.
#[derive(Debug, serde::Serialize)]
pub(super) struct DurableView {
    client_id: String,
    subscription: String,
    topic: String,
    selector: Option<String>,
    /// Its subscriber is connected.
    active: bool,
    /// Messages it keeps: waiting, and delivered and not acknowledged.
    pending: usize,
    /// Messages it took since start.
    enqueued: u64,
    /// Messages its subscriber acknowledged since start.
    dequeued: u64,
}

pub(super) fn durable_views(core: &BrokerCore, stats: &Stats) -> Vec<DurableView> {
    core.durables
        .list()
        .into_iter()
        .map(|sub| {
            let queue = stats.queues.iter().find(|q| q.name == sub.queue);
            DurableView {
                active: queue.is_some_and(|q| q.consumers > 0),
                pending: queue.map_or(0, |q| q.pending),
                enqueued: queue.map_or(0, |q| q.enqueued),
                dequeued: queue.map_or(0, |q| q.dequeued),
                client_id: sub.client_id,
                subscription: sub.name,
                topic: sub.topic,
                selector: sub.selector,
            }
        })
        .collect()
}

fn page(
    core: &BrokerCore,
    path: &str,
    stats: &Stats,
    bridges: &[crate::network::BridgeInfo],
) -> String {
    let mut html = String::new();
    let broker = escape(&core.name);
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>{broker} — portico-broker</title><style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}nav a{{margin-right:1em}}</style></head><body>\
         <h1>{broker}</h1><nav><a href=\"/queues\">Queues</a><a href=\"/topics\">Topics</a>\
         <a href=\"/durable\">Durable subscribers</a><a href=\"/connections\">Connections</a><a href=\"/network\">Network</a></nav>"
    );
    match path {
        "/topics" => {
            html.push_str("<h2>Topics</h2><table><tr><th>Name</th><th>Subscribers</th><th>Enqueued</th><th>Dequeued</th><th>Expired</th></tr>");
            for t in &stats.topics {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&t.name),
                    t.subscribers,
                    t.enqueued,
                    t.dequeued,
                    t.expired
                );
            }
        }
        "/durable" => {
            html.push_str("<h2>Durable topic subscribers</h2><table><tr><th>Client id</th><th>Subscription</th><th>Topic</th><th>Selector</th><th>State</th><th>Pending</th><th>Enqueued</th><th>Dequeued</th></tr>");
            for d in durable_views(core, stats) {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&d.client_id),
                    escape(&d.subscription),
                    escape(&d.topic),
                    escape(d.selector.as_deref().unwrap_or("")),
                    if d.active { "active" } else { "offline" },
                    d.pending,
                    d.enqueued,
                    d.dequeued
                );
            }
        }
        "/connections" => {
            html.push_str("<h2>Connections</h2><table><tr><th>Client</th><th>User</th><th>Transport</th><th>Version</th><th>Subscriptions</th><th>Connected</th></tr>");
            for c in &stats.connections {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&c.remote),
                    escape(&c.user),
                    escape(&c.transport),
                    c.version,
                    c.subscriptions,
                    c.connected_at
                );
            }
        }
        "/network" => {
            html.push_str("<h2>Network bridges</h2><table><tr><th>Bridge</th><th>Remote broker</th><th>Remote address</th><th>Direction</th><th>State</th><th>Forwarded</th><th>Received</th></tr>");
            for b in bridges {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&b.name),
                    escape(&b.remote_broker),
                    escape(&b.remote_address),
                    b.direction,
                    if b.duplex { " (duplex)" } else { "" },
                    b.state,
                    b.messages_forwarded,
                    b.messages_received
                );
            }
        }
        _ => {
            html.push_str("<h2>Queues</h2><table><tr><th>Name</th><th>Pending</th><th>Consumers</th><th>Enqueued</th><th>Dequeued</th><th>Expired</th><th>Dead-lettered</th></tr>");
            for q in visible_queues(stats) {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&q.name),
                    q.pending,
                    q.consumers,
                    q.enqueued,
                    q.dequeued,
                    q.expired,
                    q.dead_lettered
                );
            }
        }
    }
    html.push_str("</table></body></html>");
    html
}
