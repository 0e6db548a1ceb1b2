//! Active health checks: one task per target, probing tcp, http or https
//! and sending each result to the group's keeper.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::keeper::Event;
use super::target::Target;
use super::TargetGroup;
use crate::config::{HealthCheckConfig, HealthProtocol};

/// Why a probe failed; its text becomes the target's reason in `/targets`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP status {status} from {path}")]
    Status { status: u16, path: String },
}

/// Probes `target` every interval, the first probe at once, until the
/// group is replaced or stopped or the target is removed.
pub(crate) async fn run(group: Arc<TargetGroup>, target: Arc<Target>) {
    let config = &group.config.health_check;
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = group.cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if target.is_draining() {
            return;
        }
        let result = tokio::select! {
            _ = group.cancel.cancelled() => return,
            r = tokio::time::timeout(config.timeout, probe(&group, &target, config)) => match r {
                Ok(r) => r,
                Err(_) => Err(ProbeError::Timeout(config.timeout)),
            },
        };
        let checked = Event::Checked {
            target: target.clone(),
            result,
        };
        if group.report(checked).await.is_err() {
            return;
        }
    }
}

async fn probe(
    group: &TargetGroup,
    target: &Target,
    config: &HealthCheckConfig,
) -> Result<(), ProbeError> {
    let addr = SocketAddr::new(target.addr.ip(), config.port.unwrap_or(target.addr.port()));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    match config.protocol {
        HealthProtocol::Tcp => Ok(()),
        HealthProtocol::Http => http_get(tcp, &host_header(target, addr), config).await,
        HealthProtocol::Https => {
            let name = group.server_name(target);
            let tls = TlsConnector::from(group.health_tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|source| ProbeError::Tls { addr, source })?;
            http_get(tls, &host_header(target, addr), config).await
        }
    }
}

fn host_header(target: &Target, addr: SocketAddr) -> String {
    match &target.spec {
        crate::config::TargetSpec::Host { host, .. } => format!("{host}:{}", addr.port()),
        crate::config::TargetSpec::Addr(_) => addr.to_string(),
    }
}

async fn http_get<S>(stream: S, host: &str, config: &HealthCheckConfig) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let request = hyper::Request::get(config.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "portico-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let mut connection = std::pin::pin!(connection);
    let mut send = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        r = &mut send => r,
        r = &mut connection => match r {
            // The connection may finish as it hands over the response.
            Ok(()) => send.await,
            Err(e) => return Err(e.into()),
        },
    }?;
    let status = response.status().as_u16();
    if config.matcher.matches(status) {
        Ok(())
    } else {
        Err(ProbeError::Status {
            status,
            path: config.path.clone(),
        })
    }
}
