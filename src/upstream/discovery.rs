//! Discovery: hostname targets resolved (A and AAAA) with hickory, and
//! re-resolved when their records' TTL runs out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;
use tracing::{info, warn};

use super::keeper::Event;
use super::TargetGroup;
use crate::config::{ResolverConfig, TargetSpec};

/// Re-resolution never runs more often than this, whatever the TTL.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Nor less often than this.
const MAX_REFRESH: Duration = Duration::from_secs(300);
/// After a failed lookup (old addresses are kept meanwhile).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("system resolver configuration: {0}")]
    System(#[source] NetError),
    #[error("resolver: {0}")]
    Build(#[source] NetError),
}

/// Builds the resolver: the configured name servers, or the system's.
pub(crate) fn resolver(config: &ResolverConfig) -> Result<TokioResolver, ResolverError> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(ResolverError::System)?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(
            HickoryConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(ResolverError::Build)
}

/// Keeps the group's hostname targets resolved until the group is cancelled.
pub(crate) async fn run(group: Arc<TargetGroup>, resolver: Arc<TokioResolver>) {
    let hosts: Vec<TargetSpec> = group
        .config
        .targets
        .iter()
        .filter(|t| matches!(t, TargetSpec::Host { .. }))
        .cloned()
        .collect();
    loop {
        let mut resolved: HashMap<TargetSpec, Vec<SocketAddr>> = group.resolved().clone();
        let now = Instant::now();
        let mut next = now + MAX_REFRESH;
        for spec in &hosts {
            let TargetSpec::Host { host, port } = spec else {
                continue;
            };
            match resolver.lookup_ip(host.as_str()).await {
                Ok(lookup) => {
                    let mut addrs: Vec<SocketAddr> =
                        lookup.iter().map(|ip| SocketAddr::new(ip, *port)).collect();
                    addrs.sort();
                    addrs.dedup();
                    let valid_until = Instant::from_std(lookup.valid_until());
                    next = next.min(valid_until);
                    if resolved.get(spec) != Some(&addrs) {
                        info!(group = %group.config.name, target = %spec, addresses = ?addrs, "target resolved");
                        resolved.insert(spec.clone(), addrs);
                    }
                }
                Err(e) => {
                    warn!(group = %group.config.name, target = %spec, error = %e, "cannot resolve target; keeping its previous addresses");
                    next = next.min(now + RETRY_AFTER_FAILURE);
                }
            }
        }
        if group.report(Event::Resolved(resolved)).await.is_err() {
            return;
        }
        let next = next.clamp(now + MIN_REFRESH, now + MAX_REFRESH);
        tokio::select! {
            _ = group.cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}
