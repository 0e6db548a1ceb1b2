//! The checked broker configuration, as the broker runs on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use crate::auth::Secret;
use crate::router::{Filter, Policy};

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
    /// `[console] websocket_url`: the STOMP-over-WebSocket URL the live
    /// page connects to (a front door's, say); by default the broker's own.
    pub console_websocket_url: Option<String>,
    pub users: Vec<UserConfig>,
    pub authorization: Vec<AuthorizationEntry>,
    pub limits: Limits,
    pub ha: crate::ha::HaSettings,
    pub network_connectors: Vec<NetworkConnectorConfig>,
    /// `[[policy]]`: redelivery, dead letters and expiry by destination,
    /// first match wins (then ActiveMQ's defaults).
    pub policies: Vec<Policy>,
}

/// A network connector: bridges from this broker to others.
#[derive(Debug, Clone)]
pub struct NetworkConnectorConfig {
    pub name: String,
    /// What the peers speak: portico-broker's STOMP bridges, or OpenWire
    /// (an ActiveMQ broker).
    pub protocol: BridgeProtocol,
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

/// The protocol of a network connector's bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeProtocol {
    Stomp,
    OpenWire,
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
