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

/// Tells the peer where this broker has demand, and keeps it current.
pub(super) async fn advertise(
    core: Arc<BrokerCore>,
    link: Link,
    frames: mpsc::Sender<Vec<u8>>,
    ended: CancellationToken,
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
        for (dest, hops) in &wanted {
            if advertised.get(dest) != Some(hops) {
                let frame = Frame::new(Command::Subscribe)
                    .header("destination", dest.stomp())
                    .header("id", dest.stomp())
                    .header(HOPS_HEADER, hops.to_string());
                if advertised.contains_key(dest) {
                    let un = Frame::new(Command::Unsubscribe).header("id", dest.stomp());
                    let _ = frames.send(un.to_bytes()).await;
                }
                let _ = frames.send(frame.to_bytes()).await;
            }
        }
        for dest in advertised.keys() {
            if !wanted.contains_key(dest) {
                let _ = frames
                    .send(
                        Frame::new(Command::Unsubscribe)
                            .header("id", dest.stomp())
                            .to_bytes(),
                    )
                    .await;
            }
        }
        advertised = wanted;
        tokio::select! {
            _ = ended.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}
