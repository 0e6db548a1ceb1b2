//! TLS material: the crypto provider, loading PEM certificates, keys and
//! CA bundles, and a certificate resolver that chooses by SNI.

mod resolver;
mod validity;

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
    #[error("certificate {path} expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("certificate {path} is not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
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
            | Self::BadCa { path, .. }
            | Self::Expired { path, .. }
            | Self::NotYetValid { path, .. } => Some(path),
            Self::KeyMismatch { key, .. } => Some(key),
            Self::Verifier { .. } => None,
        }
    }
}

/// The one crypto provider portico uses: aws-lc-rs, whose suites are all
/// forward-secret AEADs, with AES-128-GCM first in each protocol version.
/// Chosen over ring by figures on x86-64 (bench/README.md): its X25519 is
/// twice as fast (a proxied connection makes two exchanges), RSA-2048
/// signatures and P-256 as fast. Key exchange prefers X25519; the hybrid
/// X25519MLKEM768 is there for a client that offers only that.
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
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            provider
                .cipher_suites
                .sort_by_key(|suite| suite_rank(suite.suite()));
            Arc::new(provider)
        })
        .clone()
}

/// A client configuration that verifies servers against `roots`: TLS 1.2
/// and 1.3 with [`provider`]'s suites, no client certificate.
pub fn client_config(roots: impl Into<Arc<RootCertStore>>) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the crypto provider supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
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

/// Reads a file for TLS, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What is wrong with a PEM file, in words of ours: never the file's own
/// bytes (a malformed line of a key file would otherwise be echoed into
/// `check` output, reload errors and logs).
fn pem_problem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        Error::IllegalSectionStart { .. } => "a malformed -----BEGIN line".into(),
        Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        Error::Io(e) => format!("read error: {e}"),
        Error::NoItemsFound => "no PEM item of the expected kind".into(),
        Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => "malformed PEM".into(),
    }
}

/// Reads every certificate of a PEM file (a chain: leaf first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(path, &read(path)?)
}

/// Every certificate of `pem`, the contents of `path` (named in errors).
pub fn parse_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            detail: pem_problem(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a certificate chain and its private key, and checks they belong
/// together and that the certificate is valid now. A key file that group or
/// others may read is served, with a warning.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    parse_certified_key((cert, &cert_pem), (key, &key_pem))
}

/// `load_certified_key` on contents already read: each a path (named in
/// errors, its permissions checked) and its bytes.
pub fn parse_certified_key(
    (cert, cert_pem): (&Path, &[u8]),
    (key, key_pem): (&Path, &[u8]),
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = parse_certificates(cert, cert_pem)?;
    check_validity(cert, &chain[0], time::OffsetDateTime::now_utc())?;
    warn_if_readable_by_others(key);
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_owned(),
        },
        other => TlsError::Pem {
            path: key.to_owned(),
            detail: pem_problem(&other),
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

/// A leaf outside its validity period would be refused by every client:
/// refuse it at load, with the date.
fn check_validity(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now: time::OffsetDateTime,
) -> Result<(), TlsError> {
    let Some(validity) = validity::Validity::of(leaf) else {
        return Ok(());
    };
    let show = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    if now > validity.not_after {
        return Err(TlsError::Expired {
            path: path.to_owned(),
            not_after: show(validity.not_after),
        });
    }
    if now < validity.not_before {
        return Err(TlsError::NotYetValid {
            path: path.to_owned(),
            not_before: show(validity.not_before),
        });
    }
    Ok(())
}

/// The permission bits that let someone other than the owner read `path`,
/// if any.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then_some(mode & 0o777)
}

fn warn_if_readable_by_others(key: &Path) {
    if let Some(mode) = readable_by_others(key) {
        tracing::warn!(
            path = %key.display(),
            mode = format!("{mode:o}"),
            "private key file may be read by group or others; make it readable by its owner only (chmod 600)"
        );
    }
}

/// Reads a CA bundle into a root store; every certificate must be usable.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    parse_roots(path, &read(path)?)
}

/// `load_roots` on the contents of `path`, already read.
pub fn parse_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let certs = parse_certificates(path, pem)?;
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

    /// A key file's own bytes never reach an error (and so no `check`
    /// output, reload error or log line), however it is malformed.
    #[test]
    fn a_malformed_pem_file_is_described_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.crt");
        let key = dir.path().join("k.key");
        let ca = crate::certs::DevCa::generate().unwrap();
        let issued = ca.issue(&["localhost".into()]).unwrap();
        std::fs::write(&cert, issued.cert_pem).unwrap();
        let secret = "SECRETKEYMATERIAL";
        for text in [
            format!("-----BEGIN PRIVATE KEY {secret}\nabc\n"),
            format!("-----BEGIN PRIVATE KEY-----\n{secret}!!!\n-----END PRIVATE KEY-----\n"),
            format!("-----BEGIN PRIVATE KEY-----\n{secret}\n"),
        ] {
            std::fs::write(&key, &text).unwrap();
            let err = load_certified_key(&cert, &key).unwrap_err().to_string();
            // Neither as text nor as a list of byte values.
            let as_bytes = format!("{:?}", &secret.as_bytes()[..6]);
            let as_bytes = as_bytes.trim_start_matches('[').trim_end_matches(']');
            assert!(!err.contains(secret) && !err.contains(as_bytes), "{err}");
            assert!(err.contains("k.key"), "{err}");
        }
    }

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
            rustls::crypto::aws_lc_rs::default_provider()
                .cipher_suites
                .len()
        );
    }

    fn write_cert(
        dir: &Path,
        from: time::OffsetDateTime,
        to: time::OffsetDateTime,
    ) -> (PathBuf, PathBuf) {
        let mut params = rcgen::CertificateParams::new(vec!["example.test".to_owned()]).unwrap();
        params.not_before = from;
        params.not_after = to;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (crt, key_path) = (dir.join("leaf.crt"), dir.join("leaf.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (crt, key_path)
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);

        let (crt, key) = write_cert(dir.path(), now - 30 * day, now - day);
        let err = load_certified_key(&crt, &key).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("leaf.crt expired at "), "{err}");

        let (crt, key) = write_cert(dir.path(), now + day, now + 30 * day);
        let err = load_certified_key(&crt, &key).unwrap_err();
        assert!(matches!(err, TlsError::NotYetValid { .. }), "{err}");

        let (crt, key) = write_cert(dir.path(), now - day, now + day);
        load_certified_key(&crt, &key).unwrap();
    }

    #[test]
    fn a_key_readable_by_others_is_noticed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "secret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(readable_by_others(&key), Some(0o644));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(readable_by_others(&key), None);
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
