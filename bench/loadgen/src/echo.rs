//! The benchmark backend: echoes every byte back, over TLS unless `--plain`,
//! and answers `HTTP/1.1 200` on a separate health port for the contenders'
//! health checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use rustls::server::ServerConfig;
use rustls::sign::SingleCertAndKey;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Args)]
pub(crate) struct EchoArgs {
    /// Address the echo service listens on (port 0 picks one)
    #[arg(long)]
    listen: SocketAddr,
    /// Address of the HTTP health endpoint (port 0 picks one)
    #[arg(long)]
    health: Option<SocketAddr>,
    /// Certificate chain (PEM) served on the echo port
    #[arg(long, required_unless_present = "plain")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of that certificate
    #[arg(long, required_unless_present = "plain")]
    key: Option<PathBuf>,
    /// Plain TCP instead of TLS
    #[arg(long)]
    plain: bool,
    /// Neither session tickets nor a session cache: every handshake with
    /// this backend is a full one (a proxy cannot resume its upstream leg)
    #[arg(long)]
    no_resumption: bool,
}

/// Serves until the process is stopped; prints the bound addresses first.
pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<String> {
    let acceptor = match (&args.cert, &args.key, args.plain) {
        (Some(cert), Some(key), false) => {
            let certified = portico_core::tls::load_certified_key(cert, key)?;
            let mut config = ServerConfig::builder_with_provider(portico_core::tls::provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
            // The server picks the suite (AES-128-GCM first), as every
            // contender is set up to, so the direct baseline uses it too.
            config.ignore_client_order = true;
            if args.no_resumption {
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
            Some(TlsAcceptor::from(Arc::new(config)))
        }
        _ => None,
    };
    let listener = TcpListener::bind(args.listen).await?;
    let health = match args.health {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "echo": listener.local_addr()?.to_string(),
            "health": health.as_ref().map(|h| h.local_addr().map(|a| a.to_string())).transpose()?,
        })
    );
    if let Some(health) = health {
        tokio::spawn(serve_health(health));
    }
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or similar: let the backlog hold the rest.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        echo(tls).await;
                    }
                }
                None => echo(tcp).await,
            }
        });
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

async fn serve_health(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            // Read the request head (bounded), then answer and close.
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
                .await;
            let _ = tcp.shutdown().await;
        });
    }
}
