//! TLS material: the crypto provider, loading PEM certificates, keys and
//! CA bundles, and a certificate resolver that chooses by SNI.

mod resolver;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use resolver::CertResolver;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{path} is not valid PEM: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("{path}: unsupported private key: {source}")]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: no usable CA certificate: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error("cannot build the client-certificate verifier: {detail}")]
    Verifier { detail: String },
}

impl TlsError {
    /// The file the error is about; for a mismatch, the key.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Read { path, .. }
            | Self::NoCertificate { path }
            | Self::NoKey { path }
            | Self::Pem { path, .. }
            | Self::UnsupportedKey { path, .. }
            | Self::BadCa { path, .. } => Some(path),
            Self::KeyMismatch { key, .. } => Some(key),
            Self::Verifier { .. } => None,
        }
    }
}

/// The one crypto provider portico uses: ring, whose suites are all
/// forward-secret AEADs, with AES-128-GCM first in each protocol version.
///
/// AES-128-GCM is as strong as a TLS session needs and the cheapest suite on
/// any CPU with AES instructions: its SHA-256 key schedule runs on the SHA
/// extensions where SHA-384 has none, and it has fewer AES rounds. Servers
/// pick it for clients that do not ask for ChaCha20 first (see the front
/// door's listener configuration); as a client portico offers it first.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            provider
                .cipher_suites
                .sort_by_key(|suite| suite_rank(suite.suite()));
            Arc::new(provider)
        })
        .clone()
}

/// Order within a protocol version: AES-128-GCM, AES-256-GCM,
/// ChaCha20-Poly1305. TLS 1.3 suites stay ahead of TLS 1.2 ones, and the
/// sort is stable, so ECDSA stays ahead of RSA.
fn suite_rank(suite: CipherSuite) -> (bool, Option<Cipher>) {
    let tls12 = !matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
    (tls12, Cipher::of(suite))
}

/// The AEAD ciphers of the suites portico speaks, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl Cipher {
    fn of(suite: CipherSuite) -> Option<Self> {
        match suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(Self::Aes128Gcm),
            CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(Self::Aes256Gcm),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
                Some(Self::ChaCha20Poly1305)
            }
            _ => None,
        }
    }
}

/// Whether a client lists ChaCha20-Poly1305 before any AES-GCM suite, as
/// clients without AES instructions do; a server honours that choice.
pub fn prefers_chacha20(offered: &[CipherSuite]) -> bool {
    offered.iter().find_map(|suite| Cipher::of(*suite)) == Some(Cipher::ChaCha20Poly1305)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate of a PEM file (a chain: leaf first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a certificate chain and its private key, and checks they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certificates(cert)?;
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_owned(),
        },
        other => TlsError::Pem {
            path: key.to_owned(),
            detail: other.to_string(),
        },
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::UnsupportedKey {
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
    })?;
    Ok(Arc::new(certified))
}

/// Reads a CA bundle into a root store; every certificate must be usable.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_certificates(path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_leads_each_protocol_version() {
        let suites: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(suites[1], CipherSuite::TLS13_AES_256_GCM_SHA384);
        assert_eq!(suites[2], CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert_eq!(
            suites[3],
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }

    #[test]
    fn a_client_listing_chacha20_before_aes_prefers_it() {
        use CipherSuite as S;
        assert!(prefers_chacha20(&[
            S::TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
            S::TLS13_CHACHA20_POLY1305_SHA256,
            S::TLS13_AES_128_GCM_SHA256,
        ]));
        assert!(!prefers_chacha20(&[
            S::TLS13_AES_256_GCM_SHA384,
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ]));
        assert!(!prefers_chacha20(&[]));
    }
}
