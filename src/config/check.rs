//! Checking a file into a [`Config`]: every table, every value, every
//! file it names, and every problem reported with its position.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::file::*;
use super::model::*;
use super::{parse_duration, Diagnoser};

const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(350);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(30);

pub(super) struct Checker<'a> {
    pub(super) d: Diagnoser<'a>,
    pub(super) base: PathBuf,
    pub(super) files: Vec<PathBuf>,
    /// Of the configuration text and of every file as it was read and
    /// parsed: what a reload compares.
    pub(super) fingerprint: DefaultHasher,
}

/// The `name` of every `[[key]]` table, whether or not the rest of it is valid.
fn declared_names(root: &Spanned<DeTable<'_>>, key: &str) -> Vec<String> {
    let Some(array) = root.get_ref().get(key).and_then(|v| v.get_ref().as_array()) else {
        return Vec::new();
    };
    array
        .iter()
        .filter_map(|t| {
            t.get_ref()
                .as_table()?
                .get("name")?
                .get_ref()
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

impl Checker<'_> {
    pub(super) fn config(&mut self, text: &str, path: &Path) -> Option<Config> {
        // A syntax error does not hide the rest: what parses is checked too.
        let (root, syntax) = DeTable::parse_recoverable(text);
        for e in &syntax {
            self.d.toml_error(e);
        }
        let mut admin = None;
        let mut resolver = None;
        let mut listeners = Vec::new();
        let mut groups = Vec::new();
        for (key, value) in root.get_ref().iter() {
            match key.get_ref().as_ref() {
                "admin" => admin = self.item::<FileAdmin>(value),
                "resolver" => resolver = self.item::<FileResolver>(value),
                "listener" => listeners = self.items::<FileListener>("listener", value),
                "target_group" => groups = self.items::<FileTargetGroup>("target_group", value),
                other => self.d.error(
                    key.span(),
                    format!(
                        "unknown key `{other}`, expected one of `admin`, `resolver`, `listener`, `target_group`"
                    ),
                ),
            }
        }

        let admin = admin.and_then(|a| self.admin(a));
        let resolver = resolver.map_or(Some(ResolverConfig::default()), |r| self.resolver(r));
        let mut group_names =
            self.unique_names(groups.iter().map(|(_, g)| &g.name), "target group");
        // A group with a mistake in it is still defined: a listener naming
        // it gets no second error for the first one.
        group_names.extend(declared_names(&root, "target_group"));
        let target_groups: Vec<_> = groups
            .into_iter()
            .filter_map(|(span, g)| self.target_group(span, g))
            .collect();
        self.unique_names(listeners.iter().map(|(_, l)| &l.name), "listener");
        let mut binds = HashMap::new();
        let listeners: Vec<_> = listeners
            .into_iter()
            .filter_map(|(span, l)| self.listener(span, l, &group_names, &mut binds))
            .collect();
        if !self.d.is_clean() {
            return None;
        }
        Some(Config {
            path: path.to_owned(),
            admin,
            resolver: resolver?,
            listeners,
            target_groups,
            files: std::mem::take(&mut self.files),
            fingerprint: self.fingerprint.finish(),
        })
    }

    fn item<T: for<'de> Deserialize<'de>>(&mut self, value: &Spanned<DeValue<'_>>) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(item) => Some(item),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                self.d.error(span, e.message().trim_end().to_owned());
                None
            }
        }
    }

    fn items<T: for<'de> Deserialize<'de>>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Vec<(Range<usize>, T)> {
        let Some(array) = value.get_ref().as_array() else {
            self.d.error(
                value.span(),
                format!("`{key}` must be an array of tables: write each one as [[{key}]]"),
            );
            return Vec::new();
        };
        array
            .iter()
            .filter_map(|v| {
                if !v.get_ref().is_table() {
                    self.d
                        .error(v.span(), format!("each `{key}` must be a table"));
                    return None;
                }
                self.item::<T>(v).map(|item| (v.span(), item))
            })
            .collect()
    }

    fn unique_names<'n>(
        &mut self,
        names: impl Iterator<Item = &'n Spanned<String>>,
        what: &str,
    ) -> HashSet<String> {
        let mut seen = HashSet::new();
        for name in names {
            if name.get_ref().is_empty() {
                self.d
                    .error(name.span(), format!("{what} name must not be empty"));
            } else if !seen.insert(name.get_ref().clone()) {
                self.d.error(
                    name.span(),
                    format!("duplicate {what} name {:?}", name.get_ref()),
                );
            }
        }
        seen
    }

    fn socket_addr(&mut self, value: &Spanned<String>, what: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.d.error(
                    value.span(),
                    format!(
                        "invalid {what} {:?}: expected \"ip:port\" such as \"0.0.0.0:61617\" or \"[::]:61617\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, value: Option<&Spanned<String>>, default: Duration) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.d.error(value.span(), msg);
                None
            }
        }
    }

    fn positive_duration(
        &mut self,
        value: Option<&Spanned<String>>,
        default: Duration,
        key: &str,
    ) -> Option<Duration> {
        let d = self.duration(value, default)?;
        if d.is_zero() {
            if let Some(v) = value {
                self.d
                    .error(v.span(), format!("`{key}` must be greater than zero"));
            }
            return None;
        }
        Some(d)
    }

    fn admin(&mut self, admin: FileAdmin) -> Option<AdminConfig> {
        let bind = match &admin.bind {
            Some(bind) => self.socket_addr(bind, "admin bind address")?,
            None => DEFAULT_ADMIN_BIND.parse().ok()?,
        };
        Some(AdminConfig { bind })
    }

    fn resolver(&mut self, resolver: FileResolver) -> Option<ResolverConfig> {
        let mut nameservers = Vec::new();
        let mut ok = true;
        for ns in &resolver.nameservers {
            let text = ns.get_ref();
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                text.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(addr) => nameservers.push(addr),
                None => {
                    ok = false;
                    self.d.error(
                        ns.span(),
                        format!("invalid name server {text:?}: expected \"ip\" or \"ip:port\""),
                    );
                }
            }
        }
        ok.then_some(ResolverConfig { nameservers })
    }

    fn listener(
        &mut self,
        span: Range<usize>,
        l: FileListener,
        groups: &HashSet<String>,
        binds: &mut HashMap<SocketAddr, String>,
    ) -> Option<ListenerConfig> {
        let clean = self.d.is_clean();
        let bind = self.socket_addr(&l.bind, "bind address");
        // Port 0 asks for any free port: several listeners may.
        if let Some(addr) = bind.filter(|a| a.port() != 0) {
            if let Some(other) = binds.insert(addr, l.name.get_ref().clone()) {
                self.d.error(
                    l.bind.span(),
                    format!("bind address {addr} is already used by listener {other:?}"),
                );
            }
        }
        if !groups.contains(l.target_group.get_ref()) {
            self.d.error(
                l.target_group.span(),
                format!(
                    "listener {:?} names target group {:?}, which is not defined",
                    l.name.get_ref(),
                    l.target_group.get_ref()
                ),
            );
        }
        let idle_timeout = self.positive_duration(
            l.idle_timeout.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
            "idle_timeout",
        );
        let handshake_timeout = self.positive_duration(
            l.handshake_timeout.as_ref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
            "handshake_timeout",
        );
        let allow = match &l.allow {
            None => Some(AllowList::any()),
            Some(list) => self.allow_list(list),
        };
        let limits = self.listener_limits(l.limits.as_ref().map(|s| s.get_ref()));
        let tls = match l.protocol {
            FileProtocol::Tls => self.listener_tls(span, &l),
            FileProtocol::Tcp => {
                if let Some(c) = l.certificate.first() {
                    self.d.error(
                        c.span(),
                        "certificates are only for `protocol = \"tls\"` listeners",
                    );
                }
                if let Some(t) = &l.tls {
                    self.d.error(
                        t.span(),
                        "[listener.tls] is only for `protocol = \"tls\"` listeners",
                    );
                }
                Some(None)
            }
        };
        if !clean || !self.d.is_clean() {
            return None;
        }
        Some(ListenerConfig {
            name: l.name.into_inner(),
            bind: bind?,
            target_group: l.target_group.into_inner(),
            idle_timeout: idle_timeout?,
            handshake_timeout: handshake_timeout?,
            allow: allow?,
            proxy_protocol: l.proxy_protocol,
            tls: tls?,
            limits,
        })
    }

    fn listener_limits(&mut self, file: Option<&FileListenerLimits>) -> ListenerLimits {
        let defaults = ListenerLimits::default();
        let Some(file) = file else {
            return defaults;
        };
        let mut at_least_one = |value: &Option<Spanned<u32>>, default: u32, key: &str| match value {
            Some(v) if *v.get_ref() == 0 => {
                self.d
                    .error(v.span(), format!("`{key}` must be at least 1"));
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        };
        let max_connections = at_least_one(
            &file.max_connections,
            defaults.max_connections,
            "max_connections",
        );
        let max_handshakes = at_least_one(
            &file.max_handshakes,
            defaults.max_handshakes,
            "max_handshakes",
        );
        let value = |v: &Option<Spanned<u32>>| v.as_ref().map_or(0, |v| *v.get_ref());
        ListenerLimits {
            max_connections,
            max_connections_per_source: value(&file.max_connections_per_source),
            new_connections_per_source: value(&file.new_connections_per_source),
            max_handshakes,
            max_handshakes_per_source: file
                .max_handshakes_per_source
                .as_ref()
                .map_or(defaults.max_handshakes_per_source, |v| *v.get_ref()),
        }
    }

    fn allow_list(&mut self, list: &[Spanned<String>]) -> Option<AllowList> {
        let mut nets = Vec::new();
        for entry in list {
            let text = entry.get_ref().trim();
            let net = text
                .parse::<IpNet>()
                .ok()
                .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
            match net {
                Some(net) => nets.push(net),
                None => self.d.error(
                    entry.span(),
                    format!("invalid CIDR {text:?}: expected a network such as \"10.0.0.0/8\" or an address"),
                ),
            }
        }
        (nets.len() == list.len()).then_some(AllowList(nets))
    }

    fn target_group(
        &mut self,
        span: Range<usize>,
        g: FileTargetGroup,
    ) -> Option<TargetGroupConfig> {
        let clean = self.d.is_clean();
        let tls = match g.protocol {
            FileProtocol::Tls => self.upstream_tls(span, &g),
            FileProtocol::Tcp => {
                for key in [&g.ca, &g.server_name].into_iter().flatten() {
                    self.d.error(
                        key.span(),
                        "`ca` and `server_name` are only for `protocol = \"tls\"` target groups",
                    );
                }
                None
            }
        };
        let connect_timeout = self.positive_duration(
            g.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
            "connect_timeout",
        );
        let deregistration_delay = self.duration(
            g.deregistration_delay.as_ref(),
            DEFAULT_DEREGISTRATION_DELAY,
        );
        let mut targets = Vec::new();
        let mut seen = HashSet::new();
        for t in &g.targets {
            match TargetSpec::parse(t.get_ref()) {
                Ok(spec) => {
                    if !seen.insert(spec.clone()) {
                        self.d
                            .error(t.span(), format!("duplicate target {:?}", t.get_ref()));
                    }
                    targets.push(spec);
                }
                Err(msg) => self.d.error(t.span(), msg),
            }
        }
        let pairs = self.pairs(&g.pairs, &seen);
        let health_check = match &g.health_check {
            Some(h) => self.health_check(h.get_ref()),
            None => Some(HealthCheckConfig::default()),
        };
        if !clean || !self.d.is_clean() {
            return None;
        }
        Some(TargetGroupConfig {
            name: g.name.into_inner(),
            tls: match g.protocol {
                FileProtocol::Tls => Some(tls?),
                FileProtocol::Tcp => None,
            },
            algorithm: match g.algorithm {
                FileAlgorithm::RoundRobin => Algorithm::RoundRobin,
                FileAlgorithm::LeastConnections => Algorithm::LeastConnections,
                FileAlgorithm::FlowHash => Algorithm::FlowHash,
            },
            connect_timeout: connect_timeout?,
            deregistration_delay: deregistration_delay?,
            when_all_unhealthy: match g.when_all_unhealthy {
                FileWhenAllUnhealthy::FailOpen => WhenAllUnhealthy::FailOpen,
                FileWhenAllUnhealthy::Refuse => WhenAllUnhealthy::Refuse,
            },
            targets,
            pairs: pairs?,
            health_check: health_check?,
        })
    }

    fn pairs(
        &mut self,
        pairs: &[Spanned<Vec<Spanned<String>>>],
        targets: &HashSet<TargetSpec>,
    ) -> Option<Vec<[TargetSpec; 2]>> {
        let mut out = Vec::new();
        let mut paired = HashSet::new();
        let mut ok = true;
        for pair in pairs {
            let members = pair.get_ref();
            if members.len() != 2 {
                self.d.error(
                    pair.span(),
                    format!(
                        "a pair names exactly two targets, this one names {}",
                        members.len()
                    ),
                );
                ok = false;
                continue;
            }
            let mut specs = Vec::new();
            for m in members {
                match TargetSpec::parse(m.get_ref()) {
                    Ok(spec) if !targets.contains(&spec) => {
                        self.d.error(
                            m.span(),
                            format!(
                                "pair member {:?} is not one of this group's targets",
                                m.get_ref()
                            ),
                        );
                    }
                    Ok(spec) if !paired.insert(spec.clone()) => {
                        self.d.error(
                            m.span(),
                            format!("target {:?} is already in a pair", m.get_ref()),
                        );
                    }
                    Ok(spec) => specs.push(spec),
                    Err(msg) => self.d.error(m.span(), msg),
                }
            }
            match <[TargetSpec; 2]>::try_from(specs) {
                Ok(pair) => out.push(pair),
                Err(_) => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn health_check(&mut self, h: &FileHealthCheck) -> Option<HealthCheckConfig> {
        let defaults = HealthCheckConfig::default();
        let interval = self.positive_duration(h.interval.as_ref(), defaults.interval, "interval");
        let timeout = self.positive_duration(h.timeout.as_ref(), defaults.timeout, "timeout");
        if let (Some(i), Some(t)) = (interval, timeout) {
            if t > i {
                let span = h
                    .timeout
                    .as_ref()
                    .or(h.interval.as_ref())
                    .map(Spanned::span);
                self.d.error(
                    span.unwrap_or(0..0),
                    format!("health check timeout ({t:?}) must not exceed its interval ({i:?})"),
                );
            }
        }
        let healthy_threshold = self.threshold(
            h.healthy_threshold.as_ref(),
            defaults.healthy_threshold,
            "healthy_threshold",
        );
        let unhealthy_threshold = self.threshold(
            h.unhealthy_threshold.as_ref(),
            defaults.unhealthy_threshold,
            "unhealthy_threshold",
        );
        let is_http = h.protocol != FileHealthProtocol::Tcp;
        let path = match &h.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.d.error(
                    p.span(),
                    format!("health check path {:?} must start with '/'", p.get_ref()),
                );
                None
            }
            Some(p) if !is_http => {
                self.d
                    .error(p.span(), "`path` is only for http and https health checks");
                None
            }
            Some(p) => Some(p.get_ref().clone()),
            None => Some(defaults.path),
        };
        let matcher = match &h.matcher {
            Some(m) if !is_http => {
                self.d.error(
                    m.span(),
                    "`matcher` is only for http and https health checks",
                );
                None
            }
            Some(m) => match StatusMatcher::parse(m.get_ref()) {
                Ok(matcher) => Some(matcher),
                Err(msg) => {
                    self.d.error(m.span(), msg);
                    None
                }
            },
            None => Some(defaults.matcher),
        };
        Some(HealthCheckConfig {
            protocol: match h.protocol {
                FileHealthProtocol::Tcp => HealthProtocol::Tcp,
                FileHealthProtocol::Http => HealthProtocol::Http,
                FileHealthProtocol::Https => HealthProtocol::Https,
            },
            port: match h.port {
                FileHealthPort::TrafficPort => None,
                FileHealthPort::Port(p) => Some(p),
            },
            path: path?,
            matcher: matcher?,
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: healthy_threshold?,
            unhealthy_threshold: unhealthy_threshold?,
        })
    }

    fn threshold(&mut self, value: Option<&Spanned<i64>>, default: u32, key: &str) -> Option<u32> {
        let Some(value) = value else {
            return Some(default);
        };
        match u32::try_from(*value.get_ref()) {
            Ok(n @ 1..=100) => Some(n),
            _ => {
                self.d.error(
                    value.span(),
                    format!("`{key}` must be between 1 and 100, not {}", value.get_ref()),
                );
                None
            }
        }
    }
}
