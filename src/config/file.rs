//! The configuration file as written: serde mirrors of the TOML tables.
//!
//! Every table denies unknown keys. Values that need checking beyond their
//! TOML type keep their span, so `Config` can point at them.

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAdmin {
    /// Default: [`crate::config::DEFAULT_ADMIN_BIND`], loopback only.
    pub(crate) bind: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileResolver {
    #[serde(default)]
    pub(crate) nameservers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileListener {
    pub(crate) name: Spanned<String>,
    pub(crate) bind: Spanned<String>,
    #[serde(default)]
    pub(crate) protocol: FileProtocol,
    pub(crate) target_group: Spanned<String>,
    pub(crate) idle_timeout: Option<Spanned<String>>,
    pub(crate) handshake_timeout: Option<Spanned<String>>,
    pub(crate) allow: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(crate) proxy_protocol: bool,
    #[serde(default)]
    pub(crate) certificate: Vec<Spanned<FileCertificate>>,
    pub(crate) tls: Option<Spanned<FileListenerTls>>,
    pub(crate) limits: Option<Spanned<FileListenerLimits>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileListenerLimits {
    pub(crate) max_connections: Option<Spanned<u32>>,
    pub(crate) max_connections_per_source: Option<Spanned<u32>>,
    pub(crate) new_connections_per_source: Option<Spanned<u32>>,
    pub(crate) max_handshakes: Option<Spanned<u32>>,
    pub(crate) max_handshakes_per_source: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCertificate {
    pub(crate) cert: Spanned<String>,
    pub(crate) key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileListenerTls {
    #[serde(default)]
    pub(crate) min_version: FileTlsVersion,
    #[serde(default)]
    pub(crate) alpn: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) client_ca: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileProtocol {
    #[default]
    Tls,
    Tcp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum FileTlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V12,
    #[serde(rename = "1.3")]
    V13,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTargetGroup {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    pub(crate) protocol: FileProtocol,
    pub(crate) ca: Option<Spanned<String>>,
    pub(crate) server_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) algorithm: FileAlgorithm,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) deregistration_delay: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) when_all_unhealthy: FileWhenAllUnhealthy,
    #[serde(default)]
    pub(crate) targets: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) pairs: Vec<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(crate) health_check: Option<Spanned<FileHealthCheck>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileAlgorithm {
    #[default]
    RoundRobin,
    LeastConnections,
    FlowHash,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileWhenAllUnhealthy {
    #[default]
    FailOpen,
    Refuse,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHealthCheck {
    #[serde(default)]
    pub(crate) protocol: FileHealthProtocol,
    #[serde(default)]
    pub(crate) port: FileHealthPort,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) matcher: Option<Spanned<String>>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) healthy_threshold: Option<Spanned<i64>>,
    pub(crate) unhealthy_threshold: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileHealthProtocol {
    #[default]
    Tcp,
    Http,
    Https,
}

/// `port = 8162` or `port = "traffic-port"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum FileHealthPort {
    #[default]
    TrafficPort,
    Port(u16),
}

impl<'de> Deserialize<'de> for FileHealthPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = FileHealthPort;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number from 1 to 65535 or \"traffic-port\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u16::try_from(v) {
                    Ok(port) if port > 0 => Ok(FileHealthPort::Port(port)),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                match u16::try_from(v) {
                    Ok(port) if port > 0 => Ok(FileHealthPort::Port(port)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "traffic-port" => Ok(FileHealthPort::TrafficPort),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}
