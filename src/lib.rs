//! portico: a TLS-terminating layer-4 front door for private message
//! brokers. It terminates TLS for a public name, health-checks brokers to
//! find the active node of each active/standby pair, and re-encrypts to it.
//!
//! `Server::start` runs a checked `Config`; `portico serve` is that plus
//! signals.

pub use portico_core::certs;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod metrics;
pub use portico_core::proxy_protocol;
pub mod tls;

mod admin;
mod admission;
mod listener;
mod relay;
mod server;
mod session;
mod snapshot;
mod upstream;
mod workers;

pub use config::{Config, ConfigError};
pub use server::{ReloadError, Server, StartError};
pub use upstream::{TargetView, UpstreamError};
