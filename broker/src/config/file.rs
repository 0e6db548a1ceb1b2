//! `broker.toml` as written: serde mirrors with spans, checked in `check`.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBroker {
    pub(super) name: Spanned<String>,
    pub(super) data_dir: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTransport {
    pub(super) name: Spanned<String>,
    pub(super) bind: Spanned<String>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) proxy_protocol: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConsole {
    /// Default: [`DEFAULT_CONSOLE_BIND`], loopback only.
    pub(super) bind: Option<Spanned<String>>,
    /// Where the live page's browser connects (`ws://…` or `wss://…`).
    pub(super) websocket_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUser {
    pub(super) name: Spanned<String>,
    pub(super) password_hash: Option<Spanned<String>>,
    pub(super) password_env: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) bridge: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuthorization {
    pub(super) destination: Spanned<String>,
    #[serde(default)]
    pub(super) read: Vec<String>,
    #[serde(default)]
    pub(super) write: Vec<String>,
    #[serde(default)]
    pub(super) admin: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNetworkConnector {
    pub(super) name: Spanned<String>,
    pub(super) uri: Spanned<String>,
    pub(super) protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) duplex: bool,
    pub(super) network_ttl: Option<Spanned<i64>>,
    pub(super) message_ttl: Option<Spanned<i64>>,
    pub(super) consumer_ttl: Option<Spanned<i64>>,
    pub(super) user: Option<String>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_env: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) ca: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) statically_included_destinations: Vec<Spanned<String>>,
    pub(super) dynamically_included_destinations: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) excluded_destinations: Vec<Spanned<String>>,
    pub(super) conduit_subscriptions: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHa {
    pub(super) lease_renew: Option<Spanned<String>>,
    pub(super) takeover_after: Option<Spanned<String>>,
    pub(super) lease_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) max_frame_size: Option<Spanned<i64>>,
    pub(super) max_headers: Option<Spanned<i64>>,
    pub(super) max_header_length: Option<Spanned<i64>>,
    pub(super) max_login_frame_size: Option<Spanned<i64>>,
    pub(super) queue_memory: Option<Spanned<i64>>,
    pub(super) memory_limit: Option<Spanned<i64>>,
    pub(super) max_destinations: Option<Spanned<i64>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_connections_per_source: Option<Spanned<i64>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) heart_beat: Option<Spanned<String>>,
    pub(super) max_transaction_frames: Option<Spanned<i64>>,
    pub(super) max_transaction_bytes: Option<Spanned<i64>>,
    pub(super) max_subscriptions_per_connection: Option<Spanned<i64>>,
    pub(super) max_prefetch: Option<Spanned<i64>>,
    pub(super) max_inflight_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePolicy {
    pub(super) destination: Spanned<String>,
    pub(super) max_redeliveries: Option<Spanned<i64>>,
    pub(super) redelivery_delay: Option<Spanned<String>>,
    pub(super) redelivery_backoff: Option<Spanned<f64>>,
    pub(super) max_redelivery_delay: Option<Spanned<String>>,
    pub(super) dead_letter: Option<Spanned<String>>,
    pub(super) expired_to_dead_letter: Option<bool>,
}
