//! From the file as written to a `BrokerConfig`: every problem reported
//! together, each at its place in the file.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portico_core::diagnostics::Diagnoser;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::file::*;
use super::model::*;
use crate::auth::Secret;
use crate::router::{DeadLetter, Destination, Filter, Kind, Policy};

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

pub(super) fn check(
    d: &mut Diagnoser<'_>,
    text: &str,
    path: &Path,
    base: &Path,
) -> Option<BrokerConfig> {
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
    let mut policies = Vec::new();
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
            "policy" => policies = items::<FilePolicy>(d, "policy", value),
            other => d.error(
                key.span(),
                format!("unknown key `{other}`, expected one of `broker`, `transport`, `console`, `user`, `authorization`, `limits`, `ha`, `network_connector`, `policy`"),
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
            "stomp" | "openwire" | "mqtt" | "stomp+ws" => {
                for extra in [&t.cert, &t.key].into_iter().flatten() {
                    d.error(
                        extra.span(),
                        "`cert` and `key` are only for \"stomp+ssl\", \"openwire+ssl\", \"mqtt+ssl\" and \"stomp+wss\" transports",
                    );
                }
                Some(None)
            }
            "stomp+ssl" | "openwire+ssl" | "mqtt+ssl" | "stomp+wss" => match (&t.cert, &t.key) {
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
                    d.error(
                        span,
                        format!("a {:?} transport needs `cert` and `key`", t.name.get_ref()),
                    );
                    None
                }
            },
            other => {
                d.error(
                    t.name.span(),
                    format!("unknown transport {other:?}: use \"stomp+ssl\", \"stomp\", \"openwire+ssl\", \"openwire\", \"mqtt+ssl\", \"mqtt\", \"stomp+wss\" or \"stomp+ws\""),
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
    let console_websocket_url = console
        .as_ref()
        .and_then(|c| c.websocket_url.as_ref())
        .and_then(|url| {
            let text = url.get_ref();
            let valid = (text.starts_with("ws://") || text.starts_with("wss://"))
                && !text.contains(['"', '<', '>', ' ']);
            if valid {
                Some(text.clone())
            } else {
                d.error(
                    url.span(),
                    "`websocket_url` is a ws:// or wss:// URL, e.g. \"wss://mq.example.com:61619/\"",
                );
                None
            }
        });
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
    let policies: Vec<Policy> = policies
        .into_iter()
        .filter_map(|(_, p)| check_policy(d, p))
        .collect();
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
        console_websocket_url,
        users: checked_users,
        authorization: checked_authz,
        limits: limits?,
        ha: ha?,
        network_connectors,
        policies,
    })
}

fn check_policy(d: &mut Diagnoser<'_>, f: FilePolicy) -> Option<Policy> {
    let defaults = Policy::defaults();
    let errors_before = d.error_count();
    let destination = match Filter::parse(f.destination.get_ref()) {
        Ok(filter) => filter,
        Err(e) => {
            d.error(f.destination.span(), e);
            defaults.destination.clone()
        }
    };
    let max_redeliveries = match &f.max_redeliveries {
        None => defaults.max_redeliveries,
        Some(v) => u32::try_from(*v.get_ref()).unwrap_or_else(|_| {
            d.error(v.span(), "`max_redeliveries` must be a whole number from 0");
            defaults.max_redeliveries
        }),
    };
    let mut duration = |v: &Option<Spanned<String>>| {
        v.as_ref()
            .and_then(|v| match portico_core::duration::parse(v.get_ref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    d.error(v.span(), e);
                    None
                }
            })
    };
    let redelivery_delay = duration(&f.redelivery_delay).unwrap_or(defaults.redelivery_delay);
    let max_redelivery_delay = duration(&f.max_redelivery_delay);
    let redelivery_backoff = match &f.redelivery_backoff {
        None => defaults.redelivery_backoff,
        Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 1.0 => *v.get_ref(),
        Some(v) => {
            d.error(
                v.span(),
                "`redelivery_backoff` is a multiplier of 1 or more",
            );
            defaults.redelivery_backoff
        }
    };
    let dead_letter = match &f.dead_letter {
        None => defaults.dead_letter.clone(),
        Some(v) if v.get_ref() == "individual" => DeadLetter::Individual,
        Some(v) => match Destination::parse(v.get_ref()) {
            Ok(queue) if queue.kind == Kind::Queue && !queue.is_wildcard() => {
                DeadLetter::Shared(queue)
            }
            _ => {
                d.error(
                    v.span(),
                    "`dead_letter` is a queue (\"queue://ActiveMQ.DLQ\") or \"individual\"",
                );
                defaults.dead_letter.clone()
            }
        },
    };
    if d.error_count() > errors_before {
        return None;
    }
    Some(Policy {
        destination,
        max_redeliveries,
        redelivery_delay,
        redelivery_backoff,
        max_redelivery_delay,
        dead_letter,
        expired_to_dead_letter: f
            .expired_to_dead_letter
            .unwrap_or(defaults.expired_to_dead_letter),
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
    let protocol = match c
        .protocol
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("stomp", _)) => BridgeProtocol::Stomp,
        Some(("openwire", _)) => BridgeProtocol::OpenWire,
        Some((other, span)) => {
            d.error(
                span,
                format!("unknown protocol `{other}`, expected `stomp` (portico-broker peers) or `openwire` (ActiveMQ peers)"),
            );
            BridgeProtocol::Stomp
        }
    };
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
        protocol,
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
