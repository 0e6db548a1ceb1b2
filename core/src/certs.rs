//! Development certificates: a CA, front-door certificates per domain and
//! broker certificates per broker name, all ECDSA P-256, written as PEM.
//!
//! Not for production: use certificates from your own CA or a public one
//! (see certs/README.md).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate for {name:?}: {source}")]
    Generate {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot use the existing CA in {path}: {source}")]
    ExistingCa {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its private key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A development certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Self, CertError> {
        let err = |source| CertError::Generate {
            name: "portico dev CA".into(),
            source,
        };
        let mut params = ca_params();
        set_validity(&mut params, 10);
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA this module made earlier, from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str, path: &Path) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| CertError::ExistingCa {
            path: path.to_owned(),
            source,
        })?;
        // The subject and key identifier of certificates it issues come from
        // these parameters, which are those `generate` used.
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate for `names` (DNS names or IP addresses), usable
    /// by servers and, for mutual TLS, by clients.
    pub fn issue(&self, names: &[String]) -> Result<Issued, CertError> {
        let label = names.first().cloned().unwrap_or_default();
        let err = |source| CertError::Generate {
            name: label.clone(),
            source,
        };
        let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, label.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        set_validity(&mut params, 2);
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The dev CA's subject and usages.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "portico dev CA");
    dn.push(DnType::OrganizationName, "portico");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Valid from yesterday for `years` years.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let from = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_before = from;
    params.not_after = from.replace_year(from.year() + years).unwrap_or(from);
}

/// What `portico certs` writes.
#[derive(Debug, Clone, Default)]
pub struct CertRequest {
    pub domains: Vec<String>,
    pub brokers: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Writes `ca.crt`/`ca.key` (kept if present, so earlier certificates stay
/// valid), then `DOMAIN.crt`/`.key` per domain and `NAME.crt`/`.key` per
/// broker (for its name and `localhost`); every certificate also covers the
/// `ips`. Returns the files written.
pub fn write_dev_certs(out: &Path, request: &CertRequest) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let (ca_crt, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
    let ca = if ca_crt.is_file() && ca_key.is_file() {
        let cert = read(&ca_crt)?;
        let key = read(&ca_key)?;
        DevCa::from_pem(&cert, &key, &ca_crt)?
    } else {
        let ca = DevCa::generate()?;
        write_file(&ca_crt, ca.cert_pem(), false)?;
        write_file(&ca_key, &ca.key_pem(), true)?;
        written.extend([ca_crt, ca_key]);
        ca
    };
    let mut issue = |file_stem: &str, names: Vec<String>| -> Result<(), CertError> {
        let issued = ca.issue(&names)?;
        let crt = out.join(format!("{file_stem}.crt"));
        let key = out.join(format!("{file_stem}.key"));
        write_file(&crt, &issued.cert_pem, false)?;
        write_file(&key, &issued.key_pem, true)?;
        written.extend([crt, key]);
        Ok(())
    };
    let ips: Vec<String> = request.ips.iter().map(IpAddr::to_string).collect();
    for domain in &request.domains {
        // The addresses too, so a client can connect by address where the
        // name does not resolve.
        let mut names = vec![domain.clone()];
        names.extend(ips.iter().cloned());
        issue(domain, names)?;
    }
    for broker in &request.brokers {
        let mut names = vec![broker.clone(), "localhost".to_owned()];
        names.extend(ips.iter().cloned());
        issue(broker, names)?;
    }
    Ok(written)
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}
