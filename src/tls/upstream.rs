//! Client-side TLS: re-encryption to targets, and HTTPS health checks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::provider;
use crate::config::UpstreamTls;

/// Re-encryption to a target group: TLS 1.2/1.3, certificates verified
/// against the group's CA bundle (chains remembered: see [`Targets`]).
pub(crate) fn upstream_config(tls: &UpstreamTls) -> Arc<ClientConfig> {
    config_with(Targets::verified_by(tls))
}

/// HTTPS health checks ask only "does the console answer?", as cloud load
/// balancers do: the console's certificate is not verified (its signature
/// over the handshake still is), and no data but the status code is read.
pub(crate) fn health_check_config() -> Arc<ClientConfig> {
    config_with(Targets::any_certificate())
}

fn config_with(verifier: Targets) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the crypto provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // A TLS 1.3 stream protects its records itself once connected.
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// How long a verified chain is taken on trust again.
const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// Chains remembered per target group (a group's brokers, a few
/// certificates each).
const REMEMBERED: usize = 32;

/// How portico verifies the targets it connects to.
///
/// A target group's chains are verified against its CA bundle. A broker
/// presents the same chain on every connection, and checking it costs a
/// signature verification (plus parsing and path building) each time: a
/// chain verified for a server name is taken on trust for
/// [`REMEMBER_FOR`] when the same bytes come again, for the same name.
/// Every handshake still verifies the target's signature over that
/// handshake (CertificateVerify) with the certificate's key, so only the
/// holder of the key gets through; an expired or replaced certificate is
/// noticed within [`REMEMBER_FOR`]. A reload builds a new verifier and
/// forgets every chain.
#[derive(Debug)]
struct Targets {
    /// `None`: any certificate (health checks).
    chains: Option<Chains>,
}

#[derive(Debug)]
struct Chains {
    webpki: Arc<WebPkiServerVerifier>,
    verified: Mutex<Vec<Remembered>>,
}

#[derive(Debug)]
struct Remembered {
    /// The server name, then every certificate, each with its length.
    key: Vec<u8>,
    at: UnixTime,
}

impl Targets {
    fn verified_by(tls: &UpstreamTls) -> Self {
        let webpki = WebPkiServerVerifier::builder_with_provider(tls.roots.clone(), provider())
            .build()
            .expect("a checked CA bundle holds at least one root");
        Self {
            chains: Some(Chains {
                webpki,
                verified: Mutex::new(Vec::new()),
            }),
        }
    }

    fn any_certificate() -> Self {
        Self { chains: None }
    }
}

impl Chains {
    fn knows(&self, key: &[u8], now: UnixTime) -> bool {
        self.remembered()
            .iter()
            .any(|r| r.key == key && within(r.at, now))
    }

    fn remember(&self, key: Vec<u8>, now: UnixTime) {
        let mut remembered = self.remembered();
        remembered.retain(|r| r.key != key && within(r.at, now));
        if remembered.len() >= REMEMBERED {
            remembered.remove(0);
        }
        remembered.push(Remembered { key, at: now });
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Vec<Remembered>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn chain_key(
    server_name: &ServerName<'_>,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Vec<u8> {
    let name = server_name.to_str();
    let certs = std::iter::once(end_entity).chain(intermediates);
    let mut key =
        Vec::with_capacity(8 + name.len() + certs.clone().map(|c| c.len() + 8).sum::<usize>());
    for part in std::iter::once(name.as_bytes()).chain(certs.map(|c| c.as_ref())) {
        key.extend_from_slice(&(part.len() as u64).to_le_bytes());
        key.extend_from_slice(part);
    }
    key
}

fn within(at: UnixTime, now: UnixTime) -> bool {
    now.as_secs() >= at.as_secs() && now.as_secs() - at.as_secs() < REMEMBER_FOR.as_secs()
}

impl ServerCertVerifier for Targets {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chains) = &self.chains else {
            return Ok(ServerCertVerified::assertion());
        };
        let key = chain_key(server_name, end_entity, intermediates);
        if chains.knows(&key, now) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = chains.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        chains.remember(key, now);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::RootCertStore;

    /// A CA, and a certificate for `broker` it signed that expires at
    /// `until` (seconds since the epoch).
    fn chain(
        until: u64,
    ) -> (
        RootCertStore,
        CertificateDer<'static>,
        CertificateDer<'static>,
    ) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["broker".to_owned()]).unwrap();
        leaf.not_before = time::OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        leaf.not_after = time::OffsetDateTime::from_unix_timestamp(until as i64).unwrap();
        let leaf = leaf
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        // Another CA's certificate for the same name.
        let other_key = KeyPair::generate().unwrap();
        let other = CertificateParams::new(vec!["broker".to_owned()])
            .unwrap()
            .self_signed(&other_key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        (roots, leaf.der().clone(), other.der().clone())
    }

    #[test]
    fn a_verified_chain_is_remembered_for_its_name_and_only_for_a_while() {
        let expires = 2_000_000_000;
        let (roots, leaf, stranger) = chain(expires);
        let verifier = Targets::verified_by(&UpstreamTls {
            roots: Arc::new(roots),
            server_name: None,
        });
        let name = ServerName::try_from("broker").unwrap();
        let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let verify = |cert: &CertificateDer<'_>, name: &ServerName<'_>, now| {
            verifier
                .verify_server_cert(cert, &[], name, &[], now)
                .is_ok()
        };

        // Checked against the CA: valid before it expires, not after.
        assert!(!verify(&leaf, &name, at(expires + 5)));
        assert!(verify(&leaf, &name, at(expires - 5)));
        // Remembered: taken again 20 s after it was checked (15 s past its
        // expiry, within REMEMBER_FOR) ...
        assert!(verify(&leaf, &name, at(expires + 15)));
        // ... but only for that name, and never for other bytes.
        let other_name = ServerName::try_from("other").unwrap();
        assert!(!verify(&leaf, &other_name, at(expires - 4)));
        assert!(!verify(&stranger, &name, at(expires - 4)));
        // Past REMEMBER_FOR it is checked again, and is now expired.
        assert!(!verify(
            &leaf,
            &name,
            at(expires - 5 + REMEMBER_FOR.as_secs())
        ));
    }
}
