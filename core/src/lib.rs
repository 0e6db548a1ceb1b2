//! What the portico front door and the portico broker share: loading TLS
//! material, development certificates, durations, and configuration
//! diagnostics with `file:line:column`.

pub mod certs;
pub mod diagnostics;
pub mod duration;
pub mod signals;
pub mod systemd;
pub mod tls;
