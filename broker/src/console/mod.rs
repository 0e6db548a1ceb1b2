//! The console: HTML pages a person can read, the same figures as JSON
//! under `/api`, and `GET /health` (200 while this node is active).
//!
//! Reading needs no login (the console binds to loopback unless told
//! otherwise). Anything that changes state (see `actions`) needs HTTP
//! Basic credentials of a configured user with the `admin` right on that
//! queue.

mod actions;
mod metrics;
mod pages;

use std::convert::Infallible;
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
use tracing::info;

use crate::auth::Operation;
use crate::router::{Destination, Kind, QueueStats, Stats};
use crate::shared::BrokerCore;

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
        return actions::change(core, req, &path, remote).await;
    }
    if path == "/health" {
        return respond(
            StatusCode::OK,
            "application/json",
            format!("{{\"status\":\"active\",\"broker\":{:?}}}", core.name),
        );
    }
    let stats = core.router.stats().await;
    let html = |body: String| respond(StatusCode::OK, "text/html; charset=utf-8", body);
    match path.as_str() {
        "/api/broker" => json(&core.summary(stats.memory)),
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
        "/api/topics" => json(&stats.topics),
        "/api/durable-subscriptions" => json(&durable_views(core, &stats)),
        "/api/connections" => json(&stats.connections),
        "/api/network" => json(&core.bridges.info()),
        "/" => html(pages::overview(core, &stats, &core.bridges.info())),
        "/queues" => html(pages::queues(core, &stats)),
        "/topics" => html(pages::topics(core, &stats)),
        "/durable" => html(pages::durable(core, &stats)),
        "/connections" => html(pages::connections(core, &stats)),
        "/network" => html(pages::network(core, &core.bridges.info())),
        "/live" => html(pages::live(core, websocket_url(core, &req).as_deref())),
        "/static/stomp.umd.min.js" => script(include_str!("assets/stomp.umd.min.js")),
        "/static/live.js" => script(include_str!("assets/live.js")),
        _ => {
            if let Some(name) = path
                .strip_prefix("/api/queues/")
                .and_then(|rest| rest.strip_suffix("/messages"))
            {
                return browse_json(core, name).await;
            }
            if let Some(name) = path.strip_prefix("/queues/") {
                let Some(name) = queue_name(name) else {
                    return text(StatusCode::BAD_REQUEST, "invalid queue name\n");
                };
                let notice = req.uri().query().and_then(notice_of);
                return match core.router.browse(name.clone(), pages::BROWSE).await {
                    Ok(browsed) => html(pages::queue(
                        core,
                        &stats,
                        &pages::QueuePage {
                            name: &name,
                            browsed: &browsed,
                            notice: notice.as_deref(),
                        },
                    )),
                    Err(e) => respond(
                        StatusCode::NOT_FOUND,
                        "text/html; charset=utf-8",
                        pages::failure(core, "/queues", &e.to_string()),
                    ),
                };
            }
            respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into())
        }
    }
}

/// A queue name from a URL path segment (percent-decoded).
pub(super) fn queue_name(raw: &str) -> Option<String> {
    match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(name) if !name.is_empty() && !name.contains('/') => Some(name.into_owned()),
        _ => None,
    }
}

/// `?done=…` after an action: what it did, shown on the queue's page.
fn notice_of(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "done")
        .map(|(_, v)| v.chars().take(200).collect())
}

/// `GET /api/queues/NAME/messages`: the first waiting messages as JSON.
async fn browse_json(core: &BrokerCore, raw: &str) -> Response<Full<Bytes>> {
    let Some(name) = queue_name(raw) else {
        return text(StatusCode::BAD_REQUEST, "invalid queue name\n");
    };
    match core.router.browse(name.clone(), pages::BROWSE).await {
        Ok(browsed) => json(&serde_json::json!({
            "queue": name,
            "waiting": browsed.waiting,
            "messages": browsed.messages.iter().map(|(m, redelivered)| serde_json::json!({
                "message_id": m.message_id,
                "priority": m.priority,
                "persistent": m.stored,
                "redelivered": redelivered,
                "headers": m.headers.iter()
                    .filter(|(k, _)| k != crate::durable::TOPIC_HEADER)
                    .map(|(k, v)| [k, v]).collect::<Vec<_>>(),
                "body": String::from_utf8_lossy(&m.body[..m.body.len().min(4096)]),
                "bytes": m.body.len(),
            })).collect::<Vec<_>>(),
        })),
        Err(e) => text(StatusCode::NOT_FOUND, &format!("{e}\n")),
    }
}

/// The user, when the request carries the credentials of a user with the admin
/// right on queue `name`; otherwise the response that refuses it.
pub(super) async fn admin_of(
    core: &Arc<BrokerCore>,
    req: &Request<Incoming>,
    name: &str,
    remote: SocketAddr,
) -> Result<String, Response<Full<Bytes>>> {
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
    Ok(user)
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

/// A script the console serves as it is.
fn script(body: &'static str) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        body.to_owned(),
    )
}

/// Where a browser reaches the broker's STOMP over WebSocket: `[console]
/// websocket_url` if set (a front door's), else the first
/// `stomp+wss` (else `stomp+ws`) transport, on its bound address, or on
/// the host the browser used for the console when it listens on all
/// addresses.
fn websocket_url(core: &BrokerCore, req: &Request<Incoming>) -> Option<String> {
    if let Some(url) = &core.live_url {
        return Some(url.clone());
    }
    let (tls, addr) = *core.websocket.get()?;
    let host = if addr.ip().is_unspecified() {
        let header = req.headers().get(hyper::header::HOST)?.to_str().ok()?;
        let host = header.rsplit_once(':').map_or(header, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                header
            }
        });
        host.to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let scheme = if tls { "wss" } else { "ws" };
    Some(format!("{scheme}://{host}:{}/", addr.port()))
}

pub(super) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
}

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Queues as users name them: durable subscriptions' hidden queues are
/// shown as the subscriptions they are.
pub(super) fn visible_queues(stats: &Stats) -> impl Iterator<Item = &QueueStats> {
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
