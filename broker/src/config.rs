//! The broker's configuration (`broker.toml`): serde mirrors checked into a
//! typed `BrokerConfig`, every error reported with `file:line:column`.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portico_core::diagnostics::{ConfigError, Diagnoser};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::auth::Secret;
use crate::router::Filter;

/// Where `[console]` listens when it names no `bind`: this host only.
pub const DEFAULT_CONSOLE_BIND: &str = "127.0.0.1:8162";

/// A checked broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub path: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    pub transports: Vec<TransportConfig>,
    pub console: Option<SocketAddr>,
    pub users: Vec<UserConfig>,
    pub authorization: Vec<AuthorizationEntry>,
    pub limits: Limits,
    pub ha: crate::ha::HaSettings,
    pub network_connectors: Vec<NetworkConnectorConfig>,
}

/// A network connector: bridges from this broker to others.
#[derive(Debug, Clone)]
pub struct NetworkConnectorConfig {
    pub name: String,
    /// One bridge per address of `static:(…)`.
    pub peers: Vec<crate::client::Endpoint>,
    pub duplex: bool,
    pub message_ttl: u32,
    pub consumer_ttl: u32,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Verifies `ssl://` peers.
    pub ca: Option<Arc<rustls::RootCertStore>>,
    /// Concrete destinations forwarded whether or not there is demand.
    pub statically_included: Vec<crate::router::Destination>,
    pub dynamically_included: Vec<Filter>,
    pub excluded: Vec<Filter>,
}

#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// `None` for plain `stomp`.
    pub tls: Option<Arc<CertifiedKey>>,
    /// Each connection starts with a PROXY protocol v2 header (from the
    /// front door) naming the real client.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    pub secret: Secret,
    pub groups: Vec<String>,
    /// May open network bridges to this broker (another broker's
    /// `[[network_connector]]` logs in as this user).
    pub bridge: bool,
}

#[derive(Debug, Clone)]
pub struct AuthorizationEntry {
    pub destination: Filter,
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub admin: Vec<String>,
}

/// What clients may cost the broker: each one, and all of them together.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame_size: usize,
    pub max_headers: usize,
    pub max_header_length: usize,
    /// Bytes of a frame before CONNECT succeeded (a login is small).
    pub max_login_frame_size: usize,
    /// Bytes of messages a queue holds (waiting, delivered and not yet
    /// acknowledged) before it slows its senders.
    pub queue_memory: usize,
    /// Bytes of messages the broker holds in all (queues and topic
    /// subscribers' backlogs) before it slows every sender.
    pub memory_limit: usize,
    /// Queues and topics in all.
    pub max_destinations: usize,
    /// Connections open at once, on all transports together.
    pub max_connections: usize,
    /// Connections open at once from one source address (0: no limit).
    pub max_connections_per_source: usize,
    /// TLS handshake and CONNECT, together, within this.
    pub connect_timeout: Duration,
    /// The broker's heart-beat preference, both ways.
    pub heart_beat: Duration,
    /// Frames one transaction may buffer.
    pub max_transaction_frames: usize,
    /// Bytes of frames all of a connection's open transactions may buffer.
    pub max_transaction_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// The largest prefetch window (`activemq.prefetchSize`) granted.
    pub max_prefetch: usize,
    /// Bytes of messages delivered to one connection and not yet
    /// acknowledged; more wait until it acknowledges.
    pub max_inflight_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 4 * 1024 * 1024,
            max_headers: 64,
            max_header_length: 8 * 1024,
            max_login_frame_size: 64 * 1024,
            queue_memory: 64 * 1024 * 1024,
            memory_limit: 512 * 1024 * 1024,
            max_destinations: 10_000,
            max_connections: 1000,
            max_connections_per_source: 0,
            connect_timeout: Duration::from_secs(10),
            heart_beat: Duration::from_secs(1),
            max_transaction_frames: 10_000,
            max_transaction_bytes: 16 * 1024 * 1024,
            max_subscriptions_per_connection: 1000,
            max_prefetch: 1000,
            max_inflight_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBroker {
    name: Spanned<String>,
    data_dir: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTransport {
    name: Spanned<String>,
    bind: Spanned<String>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    proxy_protocol: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConsole {
    /// Default: [`DEFAULT_CONSOLE_BIND`], loopback only.
    bind: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUser {
    name: Spanned<String>,
    password_hash: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    bridge: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuthorization {
    destination: Spanned<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    admin: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetworkConnector {
    name: Spanned<String>,
    uri: Spanned<String>,
    #[serde(default)]
    duplex: bool,
    network_ttl: Option<Spanned<i64>>,
    message_ttl: Option<Spanned<i64>>,
    consumer_ttl: Option<Spanned<i64>>,
    user: Option<String>,
    password: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    #[serde(default)]
    statically_included_destinations: Vec<Spanned<String>>,
    dynamically_included_destinations: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    excluded_destinations: Vec<Spanned<String>>,
    conduit_subscriptions: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHa {
    lease_renew: Option<Spanned<String>>,
    takeover_after: Option<Spanned<String>>,
    lease_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_frame_size: Option<Spanned<i64>>,
    max_headers: Option<Spanned<i64>>,
    max_header_length: Option<Spanned<i64>>,
    max_login_frame_size: Option<Spanned<i64>>,
    queue_memory: Option<Spanned<i64>>,
    memory_limit: Option<Spanned<i64>>,
    max_destinations: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_source: Option<Spanned<i64>>,
    connect_timeout: Option<Spanned<String>>,
    heart_beat: Option<Spanned<String>>,
    max_transaction_frames: Option<Spanned<i64>>,
    max_transaction_bytes: Option<Spanned<i64>>,
    max_subscriptions_per_connection: Option<Spanned<i64>>,
    max_prefetch: Option<Spanned<i64>>,
    max_inflight_bytes: Option<Spanned<i64>>,
}

impl BrokerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut d = Diagnoser::new(path, text);
        let base = path.parent().unwrap_or(Path::new("")).to_owned();
        let config = check(&mut d, text, path, &base);
        d.finish()?;
        config.ok_or_else(|| ConfigError::Invalid {
            diagnostics: Vec::new(),
        })
    }
}

fn item<T: for<'de> Deserialize<'de>>(
    d: &mut Diagnoser<'_>,
    value: &Spanned<DeValue<'_>>,
) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error(
                e.span().unwrap_or_else(|| value.span()),
                e.message().trim_end().to_owned(),
            );
            None
        }
    }
}

fn items<T: for<'de> Deserialize<'de>>(
    d: &mut Diagnoser<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Vec<(Range<usize>, T)> {
    let Some(array) = value.get_ref().as_array() else {
        d.error(
            value.span(),
            format!("`{key}` must be an array of tables: write each one as [[{key}]]"),
        );
        return Vec::new();
    };
    array
        .iter()
        .filter_map(|v| item::<T>(d, v).map(|t| (v.span(), t)))
        .collect()
}

fn check(d: &mut Diagnoser<'_>, text: &str, path: &Path, base: &Path) -> Option<BrokerConfig> {
    // A syntax error does not hide the rest: what parses is checked too.
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in &syntax {
        d.toml_error(e);
    }
    let mut broker = None;
    let mut transports = Vec::new();
    let mut console = None;
    let mut users = Vec::new();
    let mut authorization = Vec::new();
    let mut limits = None;
    let mut ha = None;
    let mut connectors = Vec::new();
    let mut broker_seen = false;
    for (key, value) in root.get_ref().iter() {
        match key.get_ref().as_ref() {
            "broker" => {
                broker_seen = true;
                broker = item::<FileBroker>(d, value);
            }
            "transport" => transports = items::<FileTransport>(d, "transport", value),
            "console" => console = item::<FileConsole>(d, value),
            "user" => users = items::<FileUser>(d, "user", value),
            "authorization" => authorization = items::<FileAuthorization>(d, "authorization", value),
            "limits" => limits = item::<FileLimits>(d, value),
            "ha" => ha = item::<FileHa>(d, value),
            "network_connector" => {
                connectors = items::<FileNetworkConnector>(d, "network_connector", value)
            }
            other => d.error(
                key.span(),
                format!("unknown key `{other}`, expected one of `broker`, `transport`, `console`, `user`, `authorization`, `limits`, `ha`, `network_connector`"),
            ),
        }
    }
    if !broker_seen {
        d.error(0..0, "missing [broker] table with `name` and `data_dir`");
    }
    let mut checked_transports = Vec::new();
    for (span, t) in transports {
        let bind = socket_addr(d, &t.bind);
        let tls = match t.name.get_ref().as_str() {
            "stomp" => {
                for extra in [&t.cert, &t.key].into_iter().flatten() {
                    d.error(
                        extra.span(),
                        "`cert` and `key` are only for \"stomp+ssl\" transports",
                    );
                }
                Some(None)
            }
            "stomp+ssl" => match (&t.cert, &t.key) {
                (Some(cert), Some(key)) => {
                    let (cert_path, key_path) =
                        (base.join(cert.get_ref()), base.join(key.get_ref()));
                    match portico_core::tls::load_certified_key(&cert_path, &key_path) {
                        Ok(ck) => Some(Some(ck)),
                        Err(e) => {
                            let at = if e.path() == Some(cert_path.as_path()) {
                                cert.span()
                            } else {
                                key.span()
                            };
                            d.error(at, e.to_string());
                            None
                        }
                    }
                }
                _ => {
                    d.error(span, "a \"stomp+ssl\" transport needs `cert` and `key`");
                    None
                }
            },
            other => {
                d.error(
                    t.name.span(),
                    format!("unknown transport {other:?}: use \"stomp+ssl\" or \"stomp\""),
                );
                None
            }
        };
        if let (Some(bind), Some(tls)) = (bind, tls) {
            checked_transports.push(TransportConfig {
                name: t.name.into_inner(),
                bind,
                tls,
                proxy_protocol: t.proxy_protocol,
            });
        }
    }
    let console = console.and_then(|c| match &c.bind {
        Some(bind) => socket_addr(d, bind),
        None => DEFAULT_CONSOLE_BIND.parse().ok(),
    });
    let mut checked_users = Vec::new();
    for (span, u) in users {
        let sources = [&u.password_hash, &u.password_env, &u.password_file]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if sources != 1 {
            d.error(
                span,
                format!(
                "user {:?} needs exactly one of `password_hash`, `password_env`, `password_file`",
                u.name.get_ref()
            ),
            );
            continue;
        }
        let secret = if let Some(hash) = &u.password_hash {
            Secret::hash(hash.get_ref())
                .map_err(|e| d.error(hash.span(), e))
                .ok()
        } else {
            password_from(d, base, u.password_env.as_ref(), u.password_file.as_ref())
        };
        if let Some(secret) = secret {
            checked_users.push(UserConfig {
                name: u.name.into_inner(),
                secret,
                groups: u.groups,
                bridge: u.bridge,
            });
        }
    }
    let mut checked_authz = Vec::new();
    for (_, a) in authorization {
        match Filter::parse(a.destination.get_ref()) {
            Ok(destination) => checked_authz.push(AuthorizationEntry {
                destination,
                read: a.read,
                write: a.write,
                admin: a.admin,
            }),
            Err(e) => d.error(a.destination.span(), e),
        }
    }
    let limits = check_limits(d, limits.unwrap_or_default());
    let ha = check_ha(d, ha.unwrap_or_default());
    let network_connectors: Vec<_> = connectors
        .into_iter()
        .filter_map(|(span, c)| check_connector(d, base, span, c))
        .collect();
    let broker = broker?;
    if broker.name.get_ref().is_empty() {
        d.error(broker.name.span(), "broker name must not be empty");
    }
    if !d.is_clean() {
        return None;
    }
    Some(BrokerConfig {
        path: path.to_owned(),
        name: broker.name.into_inner(),
        data_dir: base.join(broker.data_dir.get_ref()),
        transports: checked_transports,
        console,
        users: checked_users,
        authorization: checked_authz,
        limits: limits?,
        ha: ha?,
        network_connectors,
    })
}

fn check_connector(
    d: &mut Diagnoser<'_>,
    base: &Path,
    span: Range<usize>,
    c: FileNetworkConnector,
) -> Option<NetworkConnectorConfig> {
    let clean = d.is_clean();
    if let Some(p) = &c.password {
        d.error(
            p.span(),
            "a network connector's password is never written in the config: use password_env or password_file",
        );
    }
    let peers = match parse_static(c.uri.get_ref()) {
        Ok(p) => p,
        Err(e) => {
            d.error(c.uri.span(), e);
            Vec::new()
        }
    };
    let ttl = |d: &mut Diagnoser<'_>, v: &Option<Spanned<i64>>, default: u32| match v {
        None => default,
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n @ 1..=64) => n,
            _ => {
                d.error(v.span(), "a TTL is a number of brokers, 1 to 64");
                default
            }
        },
    };
    let network_ttl = ttl(d, &c.network_ttl, 1);
    let message_ttl = ttl(d, &c.message_ttl, network_ttl);
    let consumer_ttl = ttl(d, &c.consumer_ttl, network_ttl);
    let password = password_from(d, base, c.password_env.as_ref(), c.password_file.as_ref());
    if c.user.is_some() && c.password_env.is_none() && c.password_file.is_none() {
        d.error(
            span.clone(),
            "a connector with a `user` needs `password_env` or `password_file`",
        );
    }
    let ca = match &c.ca {
        Some(ca) => match portico_core::tls::load_roots(&base.join(ca.get_ref())) {
            Ok(roots) => Some(Arc::new(roots)),
            Err(e) => {
                d.error(ca.span(), e.to_string());
                None
            }
        },
        None => {
            if peers.iter().any(|p| p.tls) {
                d.error(span, "an ssl:// network connector needs `ca`, the CA that issued its peers' certificates");
            }
            None
        }
    };
    let mut statically_included = Vec::new();
    for s in &c.statically_included_destinations {
        match crate::router::Destination::parse(s.get_ref()) {
            Ok(dest) if dest.is_wildcard() => d.error(
                s.span(),
                "statically included destinations are concrete names (wildcards are for the dynamic filters)",
            ),
            Ok(dest) => statically_included.push(dest),
            Err(e) => d.error(s.span(), e),
        }
    }
    let mut filters = |list: &[Spanned<String>]| -> Vec<Filter> {
        list.iter()
            .filter_map(|f| {
                Filter::parse(f.get_ref())
                    .map_err(|e| d.error(f.span(), e))
                    .ok()
            })
            .collect()
    };
    let dynamically_included = match &c.dynamically_included_destinations {
        Some(list) => filters(list),
        None => vec![Filter::parse(">").expect("'>' is a filter")],
    };
    let excluded = filters(&c.excluded_destinations);
    if let Some(conduit) = &c.conduit_subscriptions {
        if !*conduit.get_ref() {
            d.error(conduit.span(), "conduit_subscriptions = false is not supported: bridges always collapse remote consumers of a destination into one subscription");
        }
    }
    if !clean || !d.is_clean() {
        return None;
    }
    Some(NetworkConnectorConfig {
        name: c.name.into_inner(),
        peers,
        duplex: c.duplex,
        message_ttl,
        consumer_ttl,
        user: c.user,
        password,
        ca,
        statically_included,
        dynamically_included,
        excluded,
    })
}

/// `static:(ssl://h:p,tcp://h:p)` or `static:ssl://h:p`.
fn parse_static(uri: &str) -> Result<Vec<crate::client::Endpoint>, String> {
    let rest = uri.strip_prefix("static:").ok_or_else(|| {
        format!("invalid network connector uri {uri:?}: expected static:(ssl://host:port,…)")
    })?;
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.split_once(')').map(|(i, _)| i))
        .unwrap_or(rest);
    let mut peers = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let url = crate::client::BrokerUrl::parse(part)?;
        peers.extend(url.endpoints);
    }
    if peers.is_empty() {
        return Err(format!("network connector uri {uri:?} names no broker"));
    }
    Ok(peers)
}

fn check_ha(d: &mut Diagnoser<'_>, f: FileHa) -> Option<crate::ha::HaSettings> {
    let defaults = crate::ha::HaSettings::default();
    let mut ok = true;
    let mut duration = |v: &Option<Spanned<String>>, default: Duration| match v {
        None => default,
        Some(v) => match portico_core::duration::parse(v.get_ref()) {
            Ok(t) if !t.is_zero() => t,
            Ok(_) => {
                d.error(v.span(), "must be greater than zero");
                ok = false;
                default
            }
            Err(e) => {
                d.error(v.span(), e);
                ok = false;
                default
            }
        },
    };
    let settings = crate::ha::HaSettings {
        lease_renew: duration(&f.lease_renew, defaults.lease_renew),
        takeover_after: duration(&f.takeover_after, defaults.takeover_after),
        lease_timeout: duration(&f.lease_timeout, defaults.lease_timeout),
        poll: defaults.poll,
    };
    if ok && settings.takeover_after <= settings.lease_renew {
        if let Some(v) = &f.takeover_after {
            d.error(
                v.span(),
                "`takeover_after` must be longer than `lease_renew`",
            );
        } else if let Some(v) = &f.lease_renew {
            d.error(
                v.span(),
                "`lease_renew` must be shorter than `takeover_after`",
            );
        }
        ok = false;
    }
    ok.then_some(settings)
}

/// A password from an environment variable or a file (one line), for users
/// and network connectors alike; `None` (with an error reported) if it is
/// named but missing.
fn password_from(
    d: &mut Diagnoser<'_>,
    base: &Path,
    env: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
) -> Option<Secret> {
    if let Some(var) = env {
        return match std::env::var(var.get_ref()) {
            Ok(p) if !p.is_empty() => Some(Secret::plain(p)),
            _ => {
                d.error(
                    var.span(),
                    format!("environment variable {:?} is not set", var.get_ref()),
                );
                None
            }
        };
    }
    let file = file?;
    let path = base.join(file.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(p) => Some(Secret::plain(p.trim_end_matches(['\n', '\r']).to_owned())),
        Err(e) => {
            d.error(file.span(), format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

fn socket_addr(d: &mut Diagnoser<'_>, value: &Spanned<String>) -> Option<SocketAddr> {
    value
        .get_ref()
        .parse()
        .map_err(|_| {
            d.error(
                value.span(),
                format!(
                    "invalid address {:?}: expected \"ip:port\"",
                    value.get_ref()
                ),
            )
        })
        .ok()
}

fn check_limits(d: &mut Diagnoser<'_>, f: FileLimits) -> Option<Limits> {
    let defaults = Limits::default();
    let mut ok = true;
    let mut size = |v: &Option<Spanned<i64>>, default: usize, min: i64| -> usize {
        match v {
            None => default,
            Some(v) if *v.get_ref() >= min => *v.get_ref() as usize,
            Some(v) => {
                d.error(v.span(), format!("must be at least {min}"));
                ok = false;
                default
            }
        }
    };
    let max_frame_size = size(&f.max_frame_size, defaults.max_frame_size, 1024);
    let max_headers = size(&f.max_headers, defaults.max_headers, 4);
    let max_header_length = size(&f.max_header_length, defaults.max_header_length, 64);
    let max_login_frame_size = size(&f.max_login_frame_size, defaults.max_login_frame_size, 1024);
    let queue_memory = size(&f.queue_memory, defaults.queue_memory, 1024);
    let memory_limit = size(&f.memory_limit, defaults.memory_limit, 1024);
    let max_destinations = size(&f.max_destinations, defaults.max_destinations, 1);
    let max_connections = size(&f.max_connections, defaults.max_connections, 1);
    let max_connections_per_source = size(
        &f.max_connections_per_source,
        defaults.max_connections_per_source,
        0,
    );
    let max_transaction_frames = size(
        &f.max_transaction_frames,
        defaults.max_transaction_frames,
        1,
    );
    let max_transaction_bytes = size(
        &f.max_transaction_bytes,
        defaults.max_transaction_bytes,
        1024,
    );
    let max_subscriptions_per_connection = size(
        &f.max_subscriptions_per_connection,
        defaults.max_subscriptions_per_connection,
        1,
    );
    let max_prefetch = size(&f.max_prefetch, defaults.max_prefetch, 1);
    let max_inflight_bytes = size(&f.max_inflight_bytes, defaults.max_inflight_bytes, 1024);
    let mut duration = |v: &Option<Spanned<String>>, default: Duration| match v {
        None => default,
        Some(v) => match portico_core::duration::parse(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                d.error(v.span(), e);
                ok = false;
                default
            }
        },
    };
    let connect_timeout = duration(&f.connect_timeout, defaults.connect_timeout);
    let heart_beat = duration(&f.heart_beat, defaults.heart_beat);
    ok.then_some(Limits {
        max_frame_size,
        max_headers,
        max_header_length,
        max_login_frame_size,
        queue_memory,
        memory_limit,
        max_destinations,
        max_connections,
        max_connections_per_source,
        connect_timeout,
        heart_beat,
        max_transaction_frames,
        max_transaction_bytes,
        max_subscriptions_per_connection,
        max_prefetch,
        max_inflight_bytes,
    })
}
