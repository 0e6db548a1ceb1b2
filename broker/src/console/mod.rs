//! The console: HTML pages a person can read, the same figures as JSON
//! under `/api`, and `GET /health` (200 while this node is active).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::router::Stats;
use crate::BrokerCore;

pub(crate) async fn run(core: Arc<BrokerCore>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let core = core.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(handle(&core, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

async fn handle(core: &BrokerCore, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        return respond(
            StatusCode::OK,
            "application/json",
            format!("{{\"status\":\"active\",\"broker\":{:?}}}", core.name),
        );
    }
    if path == "/api/broker" {
        return json(&core.summary());
    }
    let stats = core.router.stats().await;
    match path.as_str() {
        "/api/queues" => json(&stats.queues),
        "/api/topics" => json(&stats.topics),
        "/api/connections" => json(&stats.connections),
        "/api/network" => json(&core.bridges.info()),
        "/" | "/queues" | "/topics" | "/connections" | "/network" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page(&core.name, &path, &stats, &core.bridges.info()),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
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

fn page(broker: &str, path: &str, stats: &Stats, bridges: &[crate::network::BridgeInfo]) -> String {
    let mut html = String::new();
    let broker = escape(broker);
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>{broker} — portico-broker</title><style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}nav a{{margin-right:1em}}</style></head><body>\
         <h1>{broker}</h1><nav><a href=\"/queues\">Queues</a><a href=\"/topics\">Topics</a>\
         <a href=\"/connections\">Connections</a><a href=\"/network\">Network</a></nav>"
    );
    match path {
        "/topics" => {
            html.push_str("<h2>Topics</h2><table><tr><th>Name</th><th>Subscribers</th><th>Enqueued</th><th>Dequeued</th></tr>");
            for t in &stats.topics {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&t.name),
                    t.subscribers,
                    t.enqueued,
                    t.dequeued
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
            html.push_str("<h2>Queues</h2><table><tr><th>Name</th><th>Pending</th><th>Consumers</th><th>Enqueued</th><th>Dequeued</th></tr>");
            for q in &stats.queues {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&q.name),
                    q.pending,
                    q.consumers,
                    q.enqueued,
                    q.dequeued
                );
            }
        }
    }
    html.push_str("</table></body></html>");
    html
}
