//! Why a bridge could not connect, or why a connected one ended.

use std::io;
use std::time::Duration;

use crate::router::RouterError;
use crate::stomp::{Command, StompError};
use crate::store::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no CA for an ssl:// peer")]
    NoCa,
    #[error("{0}")]
    PeerName(#[from] rustls::pki_types::InvalidDnsNameError),
    #[error("TLS: {0}")]
    Tls(#[source] io::Error),
    #[error("no CONNECTED in time")]
    NoConnected,
    #[error("the peer is not a portico broker (no bridge header in CONNECTED)")]
    NotABroker,
    #[error("refused by the peer: {0:?}")]
    Refused(String),
    #[error("expected CONNECTED, got {0}")]
    Unexpected(Command),
    #[error("bad frame from the peer: {0}")]
    BadFrame(#[from] StompError),
    #[error("the peer went silent (no heart-beat for {0:?})")]
    Silent(Duration),
    #[error("the peer closed the bridge")]
    Closed,
    #[error("the peer sent ERROR: {0:?}")]
    PeerError(String),
    #[error("bridge SUBSCRIBE without destination or id")]
    IncompleteSubscribe,
    #[error("{0}")]
    Destination(String),
    #[error("the peer forwarded to a wildcard {0}")]
    Wildcard(String),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the bridge is closing")]
    Closing,
    #[error("the bridge's writer stopped")]
    WriterStopped,
    #[error("the broker is stopping")]
    Stopping,
    #[error("bad OpenWire from the peer: {0}")]
    BadCommand(String),
    #[error("the peer speaks OpenWire {0}; 12 or later is needed")]
    OldOpenWire(i32),
    #[error("the peer refused a forwarded message: {0}")]
    NotTaken(String),
    #[error("the peer shut down")]
    ShutDown,
}
