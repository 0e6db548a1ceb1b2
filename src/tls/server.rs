//! The downstream (terminating) TLS configuration of a listener.

use std::sync::Arc;

use rustls::server::{
    ProducesTickets, ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedProtocolVersion};

use portico_core::tls::prefers_chacha20;
use rustls::server::ClientHello;

use super::{provider, CertResolver, TlsError};
use crate::config::{ListenerTls, TlsVersion};

/// What a listener keeps across reloads so clients can resume sessions.
#[derive(Debug, Clone)]
pub(crate) struct SessionState {
    pub(crate) resolver: Arc<CertResolver>,
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
    /// Who had to present a certificate when these sessions were made.
    client_auth: ClientAuth,
}

/// A listener's client authentication, as far as resuming a session goes:
/// none, or certificates from these CAs (a fingerprint of their subjects
/// and keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Required(u64),
}

impl ClientAuth {
    fn of(tls: &ListenerTls) -> Self {
        match &tls.client_ca {
            None => Self::None,
            Some(roots) => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for anchor in &roots.roots {
                    anchor.subject.as_ref().hash(&mut h);
                    anchor.subject_public_key_info.as_ref().hash(&mut h);
                }
                Self::Required(h.finish())
            }
        }
    }
}

impl SessionState {
    pub(crate) fn new(tls: &ListenerTls) -> Result<Self, TlsError> {
        let ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Verifier {
                detail: format!("session ticketer: {e}"),
            })?;
        Ok(Self {
            resolver: Arc::new(CertResolver::new(tls.certificates.clone())),
            ticketer,
            cache: ServerSessionMemoryCache::new(4096),
            client_auth: ClientAuth::of(tls),
        })
    }

    /// The state for a reloaded `tls`: the same ticket key and cache when
    /// client authentication is unchanged, so clients resume; new ones when
    /// it changed, because a resumed session is not authenticated again
    /// (a client without a certificate, or one from a CA no longer trusted,
    /// must not resume its way past the new rule).
    pub(crate) fn reloaded(&self, tls: &ListenerTls) -> Result<Self, TlsError> {
        if ClientAuth::of(tls) != self.client_auth {
            tracing::info!(
                "client authentication changed: session tickets and the session cache start afresh"
            );
            return Self::new(tls);
        }
        Ok(Self {
            resolver: Arc::new(CertResolver::new(tls.certificates.clone())),
            ticketer: self.ticketer.clone(),
            cache: self.cache.clone(),
            client_auth: self.client_auth,
        })
    }
}

/// A listener's server configurations: the suite is the server's choice
/// (AES-128-GCM first), except for clients that list ChaCha20-Poly1305 before
/// AES, which get their own order (they lack AES instructions).
#[derive(Debug, Clone)]
pub(crate) struct ServerTls {
    server_order: Arc<ServerConfig>,
    client_order: Arc<ServerConfig>,
}

impl ServerTls {
    /// The configuration that finishes this client's handshake.
    pub(crate) fn for_hello(&self, hello: &ClientHello<'_>) -> &Arc<ServerConfig> {
        if prefers_chacha20(hello.cipher_suites()) {
            &self.client_order
        } else {
            &self.server_order
        }
    }
}

/// Builds a listener's server configurations around its session state.
pub(crate) fn server_config(
    tls: &ListenerTls,
    session: &SessionState,
) -> Result<ServerTls, TlsError> {
    let config = client_order_config(tls, session)?;
    let mut server_order = (*config).clone();
    server_order.ignore_client_order = true;
    Ok(ServerTls {
        server_order: Arc::new(server_order),
        client_order: config,
    })
}

fn client_order_config(
    tls: &ListenerTls,
    session: &SessionState,
) -> Result<Arc<ServerConfig>, TlsError> {
    static BOTH: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static ONLY_13: [&SupportedProtocolVersion; 1] = [&TLS13];
    let versions: &[&SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V12 => &BOTH,
        TlsVersion::V13 => &ONLY_13,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Verifier {
            detail: e.to_string(),
        })?;
    let builder = match &tls.client_ca {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Verifier {
                    detail: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(session.resolver.clone());
    config.alpn_protocols = tls.alpn.clone();
    config.ticketer = session.ticketer.clone();
    config.session_storage = session.cache.clone();
    // A TLS 1.3 stream protects its records itself once established.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}
