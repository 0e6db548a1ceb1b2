//! Demand: telling the peer where this broker has consumers, and keeping
//! it current as they come and go.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Link, HOPS_HEADER};
use crate::auth::Operation;
use crate::durable;
use crate::router::Destination;
use crate::shared::BrokerCore;
use crate::stomp::{Command, Frame};

/// How demand is said on one kind of bridge: the bytes that tell the peer
/// about it.
pub(super) trait Announce: Send + 'static {
    /// Demand for `destination`, `hops` brokers away from the peer
    /// (`replacing` an earlier announcement of it with other hops).
    fn add(&mut self, destination: &Destination, hops: u32, replacing: bool) -> Vec<u8>;
    /// No more demand for `destination`.
    fn remove(&mut self, destination: &Destination) -> Vec<u8>;
}

/// A STOMP bridge's demand: one SUBSCRIBE per destination, its id the
/// destination, with a hop count.
pub(super) struct StompDemand;

impl Announce for StompDemand {
    fn add(&mut self, dest: &Destination, hops: u32, replacing: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if replacing {
            out = self.remove(dest);
        }
        Frame::new(Command::Subscribe)
            .header("destination", dest.stomp())
            .header("id", dest.stomp())
            .header(HOPS_HEADER, hops.to_string())
            .encode(&mut out);
        out
    }

    fn remove(&mut self, dest: &Destination) -> Vec<u8> {
        Frame::new(Command::Unsubscribe)
            .header("id", dest.stomp())
            .to_bytes()
    }
}

/// Tells the peer where this broker has demand, and keeps it current.
pub(super) async fn advertise(
    core: Arc<BrokerCore>,
    link: Link,
    frames: mpsc::Sender<Vec<u8>>,
    ended: CancellationToken,
    mut announce: impl Announce,
) {
    let mut changes = core.router.demand_changes();
    let mut advertised: BTreeMap<Destination, u32> = BTreeMap::new();
    loop {
        let mut demand = core.router.demand(&link.peer).await;
        // A durable subscription's hidden queue is this broker's own; its
        // topic is demand here whether its subscriber is connected or not.
        demand.retain(|(d, _)| !durable::is_hidden(d));
        demand.extend(core.durables.topics().into_iter().map(|t| (t, 0)));
        let mut wanted: BTreeMap<Destination, u32> = BTreeMap::new();
        for (d, hops) in demand {
            let best = wanted.entry(d).or_insert(hops);
            *best = (*best).min(hops);
        }
        let wanted: BTreeMap<Destination, u32> = wanted
            .into_iter()
            .map(|(d, hops)| (d, hops + 1))
            .filter(|(d, hops)| *hops <= link.consumer_ttl && !d.is_wildcard() && link.admits(d))
            // What the peer would forward for this demand, its user must
            // be allowed to write here.
            .filter(|(d, _)| link.allows(&core, Operation::Write, d))
            .collect();
        let mut out = Vec::new();
        for (dest, hops) in &wanted {
            match advertised.get(dest) {
                Some(h) if h == hops => {}
                Some(_) => out.extend(announce.add(dest, *hops, true)),
                None => out.extend(announce.add(dest, *hops, false)),
            }
        }
        for dest in advertised.keys() {
            if !wanted.contains_key(dest) {
                out.extend(announce.remove(dest));
            }
        }
        if !out.is_empty() && frames.send(out).await.is_err() {
            return;
        }
        advertised = wanted;
        tokio::select! {
            _ = ended.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}
