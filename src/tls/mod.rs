//! TLS configurations of the front door: the listener's (terminating)
//! server configuration and the upstream (re-encryption) client
//! configuration. Loading PEM material lives in `portico_core::tls`.

mod records;
mod server;
mod stream;
mod upstream;

pub use portico_core::tls::*;
pub(crate) use server::{server_config, ServerTls, SessionState};
pub(crate) use stream::{Bytes, TlsStream};
pub(crate) use upstream::{health_check_config, upstream_config};
