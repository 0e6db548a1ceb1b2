//! What the console shows of each bridge: its peer, its state, what it carried.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// What the console shows of a bridge.
#[derive(Debug, Serialize)]
pub struct BridgeInfo {
    pub name: String,
    pub remote_broker: String,
    pub remote_address: String,
    pub direction: &'static str,
    pub duplex: bool,
    pub state: &'static str,
    pub messages_forwarded: u64,
    pub messages_received: u64,
}

#[derive(Debug)]
pub(crate) struct BridgeState {
    pub(super) name: String,
    pub(super) remote_address: String,
    pub(super) outbound: bool,
    pub(super) duplex: bool,
    pub(super) remote_broker: Mutex<String>,
    pub(super) connected: AtomicBool,
    pub(super) forwarded: AtomicU64,
    pub(super) received: AtomicU64,
}

impl BridgeState {
    fn info(&self) -> BridgeInfo {
        BridgeInfo {
            name: self.name.clone(),
            remote_broker: self
                .remote_broker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            remote_address: self.remote_address.clone(),
            direction: if self.outbound { "outbound" } else { "inbound" },
            duplex: self.duplex,
            state: if self.connected.load(Ordering::Acquire) {
                "connected"
            } else {
                "connecting"
            },
            messages_forwarded: self.forwarded.load(Ordering::Relaxed),
            messages_received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// Every bridge of this broker, for the console.
#[derive(Debug, Default)]
pub(crate) struct Bridges(Mutex<Vec<Arc<BridgeState>>>);

impl Bridges {
    pub(super) fn add(&self, state: Arc<BridgeState>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(state);
    }

    pub(super) fn remove(&self, state: &Arc<BridgeState>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !Arc::ptr_eq(s, state));
    }

    pub(crate) fn info(&self) -> Vec<BridgeInfo> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| s.info())
            .collect()
    }
}
