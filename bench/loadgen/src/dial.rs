//! Connecting to a target: TCP, then TLS verified against the given CA.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::Resumption;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Target;

/// Anything a measurement reads and writes: a TLS or a plain TCP stream.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Whether a dialer may resume earlier TLS sessions.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sessions {
    /// Every connection makes a full handshake.
    Full,
    /// Connections resume where the server lets them.
    Resume,
}

/// Opens connections to one target.
pub(crate) struct Dialer {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    pub(crate) fn new(target: &Target, sessions: Sessions) -> anyhow::Result<Self> {
        let tls = match (&target.ca, target.plain) {
            (Some(ca), false) => {
                let roots = portico_core::tls::load_roots(ca)?;
                // A stock rustls client (its default suite order), the same for
                // every contender.
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                if sessions == Sessions::Full {
                    config.resumption = Resumption::disabled();
                }
                let name = ServerName::try_from(target.server_name.clone())
                    .context("--server-name is not a valid DNS name or IP address")?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        Ok(Self {
            target: target.clone(),
            tls,
        })
    }

    pub(crate) async fn dial(&self) -> anyhow::Result<Box<dyn Conn>> {
        let tcp = TcpStream::connect(self.target.target)
            .await
            .with_context(|| format!("connect to {}", self.target.target))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                Ok(Box::new(tls))
            }
        }
    }

    /// The negotiated protocol and suite of one fresh connection, for the report.
    pub(crate) async fn describe(&self) -> String {
        let Some((connector, name)) = &self.tls else {
            return "plain TCP".to_owned();
        };
        let Ok(tcp) = TcpStream::connect(self.target.target).await else {
            return "unreachable".to_owned();
        };
        match connector.connect(name.clone(), tcp).await {
            Ok(tls) => {
                let (_, session) = tls.get_ref();
                format!(
                    "{:?} {:?}",
                    session
                        .protocol_version()
                        .unwrap_or(rustls::ProtocolVersion::Unknown(0)),
                    session
                        .negotiated_cipher_suite()
                        .map(|s| s.suite())
                        .unwrap_or(rustls::CipherSuite::Unknown(0))
                )
            }
            Err(e) => format!("handshake failed: {e}"),
        }
    }
}
