//! Hostile input for any port: garbage, truncated and oversized streams on
//! many connections at once, and the memory of the process that took them.
//! Shared by the front door's and the broker's tests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a port speaks, for inputs that get past its first bytes.
#[derive(Debug, Clone, Copy)]
pub enum Speaks {
    Tls,
    Http,
    Stomp,
    OpenWire,
    Mqtt,
}

/// An MQTT 3.1.1 CONNECT: clean session, no client id, keep-alive 60 s.
const MQTT_CONNECT: [u8; 14] = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0];

/// An OpenWire WireFormatInfo (version 12, no options) as a frame.
fn openwire_hello() -> Vec<u8> {
    let mut command = vec![1u8];
    command.extend_from_slice(b"ActiveMQ");
    command.extend_from_slice(&12i32.to_be_bytes());
    command.push(0);
    let mut frame = (command.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&command);
    frame
}

/// Connections per kind of input, all at once.
pub const CONNECTIONS: usize = 32;
/// What each oversized connection tries to send.
pub const OVERSIZED: usize = 4 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const DEADLINE: Duration = Duration::from_secs(30);

impl Speaks {
    /// A valid start, cut off.
    fn truncated(self) -> Vec<u8> {
        match self {
            // A handshake record announcing 512 bytes, 6 of them sent.
            Self::Tls => vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
            Self::Http => b"GET /health HTTP/1.1\r\nhost: x\r\nx-cut: abc".to_vec(),
            Self::Stomp => {
                b"CONNECT\naccept-version:1.2\nhost:x\n\n\0SEND\ndestination:/queue/cut\ncontent-length:100\n\nabc"
                    .to_vec()
            }
            // A ConnectionInfo frame announcing 200 bytes, 5 of them sent.
            Self::OpenWire => {
                let mut bytes = openwire_hello();
                bytes.extend_from_slice(&[0, 0, 0, 200, 3, 0, 0, 0, 1]);
                bytes
            }
            // A CONNECT announcing 100 bytes, 6 of them sent.
            Self::Mqtt => vec![0x10, 100, 0, 4, b'M', b'Q', b'T', b'T'],
        }
    }

    /// A start that makes the peer keep reading: what follows is filler
    /// with no end (a handshake message, a header line, a body with no NUL).
    fn oversized_prefix(self) -> Vec<u8> {
        match self {
            Self::Tls => vec![
                0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff, 0x03, 0x03,
            ],
            Self::Http => b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec(),
            Self::Stomp => {
                b"CONNECT\naccept-version:1.2\nhost:x\n\n\0SEND\ndestination:/queue/big\n\n"
                    .to_vec()
            }
            // A frame that claims 64 MiB, then a message body that lies
            // about its length.
            Self::OpenWire => {
                let mut bytes = openwire_hello();
                bytes.extend_from_slice(&(64i32 << 20).to_be_bytes());
                bytes.extend_from_slice(&[28, 0, 0, 0, 1, 1]);
                bytes
            }
            // A CONNECT, then a PUBLISH that claims 64 MiB.
            Self::Mqtt => {
                let mut bytes = MQTT_CONNECT.to_vec();
                bytes.extend_from_slice(&[0x30, 0x80, 0x80, 0x80, 0x20, 0, 1, b't']);
                bytes
            }
        }
    }
}

/// Deterministic bytes that are no protocol at all.
pub fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `bytes` (stopping when the peer closes), half-closes, and waits
/// for the peer to close. `Err` if it is still open at the deadline.
async fn one(addr: SocketAddr, bytes: Vec<u8>) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = tcp.split();
    let write = async {
        for chunk in bytes.chunks(CHUNK) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    let read = async {
        let mut sink = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, async { tokio::join!(write, read) })
        .await
        .map(|_| ())
        .map_err(|_| "still open after 30 s".to_owned())
}

/// Every kind of hostile input, `CONNECTIONS` of each at once; panics
/// unless the port closed every one of them.
pub async fn barrage(addr: SocketAddr, speaks: Speaks) {
    let mut filler = speaks.oversized_prefix();
    filler.extend(std::iter::repeat_n(b'a', OVERSIZED));
    let inputs = [
        ("garbage", garbage(256 * 1024, 7)),
        ("truncated", speaks.truncated()),
        ("oversized", filler),
    ];
    for (kind, bytes) in inputs {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(one(addr, bytes.clone())))
            .collect();
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                panic!("{speaks:?} port {addr}, {kind} input: {e}");
            }
        }
    }
}

/// (resident now, peak resident) of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}
