//! The typed configuration the server runs on: every value checked, every
//! file read.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;

/// A checked front-door configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub admin: Option<AdminConfig>,
    pub resolver: ResolverConfig,
    pub listeners: Vec<ListenerConfig>,
    pub target_groups: Vec<TargetGroupConfig>,
    /// Every certificate, key and CA file it read: a change to one of them
    /// is a reason to reload.
    pub files: Vec<PathBuf>,
    /// Of the configuration text and every file above, as they were read
    /// and parsed: equal fingerprints, nothing to reload.
    pub fingerprint: u64,
}

/// Where `[admin]` listens when it names no `bind`: this host only.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9090";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
}

/// Name servers for hostname targets; empty means the system's resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    pub nameservers: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub target_group: String,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub allow: AllowList,
    pub proxy_protocol: bool,
    /// `None` for a `tcp` listener, which passes bytes through.
    pub tls: Option<ListenerTls>,
    pub limits: ListenerLimits,
}

/// What one listener admits; a connection over a limit is closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open connections on the listener.
    pub max_connections: u32,
    /// Open connections from one source address; 0: no limit.
    pub max_connections_per_source: u32,
    /// New connections per second from one source address (bursts of as
    /// many); 0: no limit.
    pub new_connections_per_source: u32,
    /// TLS handshakes in progress at once (connections not yet past their
    /// handshake).
    pub max_handshakes: u32,
    /// TLS handshakes in progress at once from one source address; 0: no
    /// limit.
    pub max_handshakes_per_source: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_source: 0,
            new_connections_per_source: 0,
            max_handshakes: 4_096,
            max_handshakes_per_source: 64,
        }
    }
}

/// TLS termination settings of a listener.
#[derive(Clone)]
pub struct ListenerTls {
    /// Chosen by SNI; the first is the default.
    pub certificates: Vec<Arc<CertifiedKey>>,
    pub min_version: TlsVersion,
    pub alpn: Vec<Vec<u8>>,
    /// Set: clients must present a certificate issued by one of these.
    pub client_ca: Option<Arc<RootCertStore>>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("certificates", &self.certificates.len())
            .field("min_version", &self.min_version)
            .field("alpn", &self.alpn)
            .field("client_ca", &self.client_ca.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

/// Source networks allowed to connect to a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(pub(super) Vec<IpNet>);

impl AllowList {
    pub fn any() -> Self {
        Self(vec![
            IpNet::V4(Default::default()),
            IpNet::V6(Default::default()),
        ])
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Debug, Clone)]
pub struct TargetGroupConfig {
    pub name: String,
    /// `None` for a `tcp` group, which gets plain bytes.
    pub tls: Option<UpstreamTls>,
    pub algorithm: Algorithm,
    pub connect_timeout: Duration,
    pub deregistration_delay: Duration,
    pub when_all_unhealthy: WhenAllUnhealthy,
    pub targets: Vec<TargetSpec>,
    pub pairs: Vec<[TargetSpec; 2]>,
    pub health_check: HealthCheckConfig,
}

/// Re-encryption settings of a target group.
#[derive(Clone)]
pub struct UpstreamTls {
    pub roots: Arc<RootCertStore>,
    /// SNI and verification name; `None`: the target's own host.
    pub server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConnections,
    FlowHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenAllUnhealthy {
    FailOpen,
    Refuse,
}

/// A target as written: an address, or a hostname resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetSpec {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

impl TargetSpec {
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(addr) => addr.port(),
            Self::Host { port, .. } => *port,
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "target {text:?} has no port: write it as \"ip:port\" or \"hostname:port\""
            ));
        };
        let port: u16 = match port.parse() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("target {text:?}: invalid port {port:?}")),
        };
        if host.contains(':') || host.starts_with('[') {
            return Err(format!(
                "target {text:?}: invalid address (IPv6 targets are written \"[::1]:61617\")"
            ));
        }
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid_host {
            return Err(format!("target {text:?}: invalid hostname {host:?}"));
        }
        Ok(Self::Host {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(addr) => write!(f, "{addr}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub protocol: HealthProtocol,
    /// `None`: the traffic port.
    pub port: Option<u16>,
    pub path: String,
    pub matcher: StatusMatcher,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            protocol: HealthProtocol::Tcp,
            port: None,
            path: "/health".into(),
            matcher: StatusMatcher(vec![200..=399]),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(400),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthProtocol {
    Tcp,
    Http,
    Https,
}

/// HTTP status codes that count as healthy: `"200"`, `"200-399"`, `"200,204"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher(pub(super) Vec<std::ops::RangeInclusive<u16>>);

impl StatusMatcher {
    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }

    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let code = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                _ => Err(format!(
                    "invalid matcher {text:?}: {s:?} is not an HTTP status code (100-599)"
                )),
            }
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let range = match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (code(lo)?, code(hi)?);
                    if lo > hi {
                        return Err(format!("invalid matcher {text:?}: {lo} is above {hi}"));
                    }
                    lo..=hi
                }
                None => {
                    let c = code(part)?;
                    c..=c
                }
            };
            ranges.push(range);
        }
        Ok(Self(ranges))
    }
}
