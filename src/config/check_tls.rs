//! The checks that read files: certificates, keys and CA bundles, each
//! loaded as it will be served and taken into the configuration's
//! fingerprint.

use std::hash::Hash;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use toml::Spanned;

use super::check::Checker;
use super::file::*;
use super::model::*;
use crate::tls::TlsError;

impl Checker<'_> {
    /// Reads the file `value` names (relative to the configuration's
    /// folder), taking it into the fingerprint.
    pub(super) fn read(&mut self, value: &Spanned<String>) -> Result<(PathBuf, Vec<u8>), TlsError> {
        let path = self.base.join(value.get_ref());
        self.files.push(path.clone());
        let bytes = crate::tls::read(&path)?;
        path.hash(&mut self.fingerprint);
        bytes.hash(&mut self.fingerprint);
        Ok((path, bytes))
    }

    pub(super) fn roots(&mut self, ca: &Spanned<String>) -> Result<RootCertStore, TlsError> {
        let (path, pem) = self.read(ca)?;
        crate::tls::parse_roots(&path, &pem)
    }

    /// `Some(Some(tls))` when valid, `None` when an error was reported.
    pub(super) fn listener_tls(
        &mut self,
        span: Range<usize>,
        l: &FileListener,
    ) -> Option<Option<ListenerTls>> {
        if l.certificate.is_empty() {
            self.d.error(
                span,
                format!(
                    "tls listener {:?} needs at least one [[listener.certificate]] with cert and key",
                    l.name.get_ref()
                ),
            );
            return None;
        }
        let mut certificates = Vec::new();
        for c in &l.certificate {
            let c = c.get_ref();
            let loaded = self.read(&c.cert).and_then(|(cert, cert_pem)| {
                let (key, key_pem) = self.read(&c.key)?;
                crate::tls::parse_certified_key((&cert, &cert_pem), (&key, &key_pem))
            });
            match loaded {
                Ok(ck) => certificates.push(ck),
                Err(e) => {
                    let span = match e.path() {
                        Some(p) if p == self.base.join(c.cert.get_ref()) => c.cert.span(),
                        _ => c.key.span(),
                    };
                    self.d.error(span, e.to_string());
                }
            }
        }
        let default_tls = Spanned::new(0..0, FileListenerTls::default());
        let tls = l.tls.as_ref().unwrap_or(&default_tls).get_ref();
        let mut alpn = Vec::new();
        for proto in &tls.alpn {
            let p = proto.get_ref();
            if p.is_empty() || p.len() > 255 {
                self.d
                    .error(proto.span(), "ALPN protocol names are 1 to 255 bytes long");
            } else {
                alpn.push(p.as_bytes().to_vec());
            }
        }
        let client_ca = match &tls.client_ca {
            Some(ca) if !ca.get_ref().is_empty() => match self.roots(ca) {
                Ok(roots) => Some(Arc::new(roots)),
                Err(e) => {
                    self.d.error(ca.span(), e.to_string());
                    None
                }
            },
            _ => None,
        };
        if certificates.len() != l.certificate.len() || alpn.len() != tls.alpn.len() {
            return None;
        }
        Some(Some(ListenerTls {
            certificates,
            min_version: match tls.min_version {
                FileTlsVersion::V12 => TlsVersion::V12,
                FileTlsVersion::V13 => TlsVersion::V13,
            },
            alpn,
            client_ca,
        }))
    }

    pub(super) fn upstream_tls(
        &mut self,
        span: Range<usize>,
        g: &FileTargetGroup,
    ) -> Option<UpstreamTls> {
        let roots = match &g.ca {
            Some(ca) => match self.roots(ca) {
                Ok(roots) => Some(Arc::new(roots)),
                Err(e) => {
                    self.d.error(ca.span(), e.to_string());
                    None
                }
            },
            None => {
                self.d.error(
                    span,
                    format!(
                        "tls target group {:?} needs `ca`, the CA bundle that verifies its targets' certificates",
                        g.name.get_ref()
                    ),
                );
                None
            }
        };
        let server_name = match &g.server_name {
            Some(name) if !name.get_ref().is_empty() => {
                match ServerName::try_from(name.get_ref().clone()) {
                    Ok(n) => Some(Some(n)),
                    Err(_) => {
                        self.d.error(
                            name.span(),
                            format!(
                                "invalid server_name {:?}: expected a DNS name or an IP address",
                                name.get_ref()
                            ),
                        );
                        None
                    }
                }
            }
            _ => Some(None),
        };
        Some(UpstreamTls {
            roots: roots?,
            server_name: server_name?,
        })
    }
}
