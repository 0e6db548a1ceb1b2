//! What the portico front door and the portico broker share: loading TLS
//! material, development certificates, durations, the PROXY protocol header,
//! and configuration diagnostics with `file:line:column`.

pub mod certs;
pub mod diagnostics;
pub mod duration;
pub mod metrics_text;
pub mod proxy_protocol;
pub mod signals;
pub mod systemd;
pub mod tls;
