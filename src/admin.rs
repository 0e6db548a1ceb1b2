//! The admin server: `GET /healthz`, `GET /metrics`, `GET /targets`.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use portico_core::metrics_text;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::snapshot::Shared;
use crate::upstream::{Problem, TargetView};

/// Admin connections open at once; more wait in the kernel's backlog.
const CONNECTIONS: usize = 128;
/// A request's head must arrive within this.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves admin requests until `stop` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors, say: back off, do not spin.
                    debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!(client.addr = %peer, error = %e, "admin connection failed");
                },
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/healthz" => healthz(shared),
        "/metrics" => {
            // OpenMetrics for a scraper that asks for it; the Prometheus
            // text format (which browsers show) for everyone else.
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (body, content_type) = if metrics_text::wants_openmetrics(accept) {
                (shared.metrics.render(), metrics_text::OPENMETRICS)
            } else {
                (shared.metrics.render_prometheus(), metrics_text::PROMETHEUS)
            };
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(content_type),
            );
            response
        }
        "/targets" => json(StatusCode::OK, &targets(shared)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /metrics or /targets\n".into(),
        ),
    }
}

/// `ok` (200): serving as configured. `degraded` (200): serving, with
/// something to look at (the last reload failed, a pair has two active
/// nodes). `unavailable` (503): some clients cannot be served (a target
/// group with no healthy target, a pair with no active node). Each problem
/// is listed.
fn healthz(shared: &Shared) -> Response<Full<Bytes>> {
    let error = shared
        .reload_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let snapshot = shared.snapshot.load();
    let mut problems: Vec<Problem> = snapshot
        .config
        .target_groups
        .iter()
        .filter_map(|g| snapshot.groups.get(&g.name))
        .flat_map(|g| g.problems())
        .collect();
    if let Some(e) = &error {
        let first = e.lines().next().unwrap_or_default();
        problems.push(Problem::degraded(format!(
            "the last reload failed (the running configuration stays): {first}"
        )));
    }
    let (status, code) = if problems.iter().any(|p| p.unavailable) {
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
    } else if problems.is_empty() {
        ("ok", StatusCode::OK)
    } else {
        ("degraded", StatusCode::OK)
    };
    let body = serde_json::json!({
        "status": status,
        "problems": problems,
        "config": snapshot.config.path.display().to_string(),
        "last_reload_error": error,
    });
    json(code, &body)
}

/// Every target of every group, in configuration order.
pub(crate) fn targets(shared: &Shared) -> Vec<TargetView> {
    let snapshot = shared.snapshot.load();
    snapshot
        .config
        .target_groups
        .iter()
        .filter_map(|g| snapshot.groups.get(&g.name))
        .flat_map(|g| g.view())
        .chain(shared.drains.view())
        .collect()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
