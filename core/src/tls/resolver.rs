//! Chooses the downstream certificate by SNI.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{DnsName, ServerName};

/// Serves a listener's certificates: the first whose names cover the
/// client's SNI, else the first one. Its certificates can be replaced while
/// it serves, so a reload keeps the listener's session-ticket key and cache.
#[derive(Debug)]
pub struct CertResolver {
    certificates: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// `certificates` must not be empty: the first is the default.
    pub fn new(certificates: Vec<Arc<CertifiedKey>>) -> Self {
        Self {
            certificates: ArcSwap::from_pointee(certificates),
        }
    }

    pub fn replace(&self, certificates: Vec<Arc<CertifiedKey>>) {
        self.certificates.store(Arc::new(certificates));
    }

    /// The certificate that a client asking for `sni` gets.
    pub fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certificates = self.certificates.load();
        let by_name = sni
            .and_then(|name| DnsName::try_from(name).ok())
            .and_then(|name| {
                let name = ServerName::DnsName(name.to_owned());
                certificates.iter().find(|ck| covers(ck, &name))
            });
        by_name.or_else(|| certificates.first()).cloned()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(client_hello.server_name())
    }
}

fn covers(ck: &CertifiedKey, name: &ServerName<'_>) -> bool {
    let Some(leaf) = ck.cert.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .map(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
        .unwrap_or(false)
}
