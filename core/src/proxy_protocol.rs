//! The PROXY protocol version 2 header, which tells a target the client's
//! real address: written by the front door, read by brokers.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts every v2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A header for a proxied TCP connection: `source` is the client,
/// `destination` the address it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// Why bytes are not a PROXY v2 header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("not a PROXY protocol v2 header")]
    Signature,
    #[error("unsupported PROXY protocol version or command {0:#04x}")]
    VersionCommand(u8),
    #[error("unsupported address family {0:#04x}")]
    Family(u8),
    #[error("address block of {len} bytes is too short for its family")]
    Length { len: usize },
}

/// A header that can be written without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Encoded {
    bytes: [u8; 52],
    len: usize,
}

impl AsRef<[u8]> for Encoded {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl ProxyHeader {
    /// The header as bytes. Mixed families are written as IPv6
    /// (IPv4-mapped), as the format needs one family for both ends.
    pub fn encode(&self) -> Encoded {
        let mut bytes = [0u8; 52];
        bytes[..12].copy_from_slice(&SIGNATURE);
        bytes[12] = 0x21; // version 2, PROXY
        let (src, dst) = (self.source.ip(), self.destination.ip());
        let len = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                bytes[13] = 0x11; // TCP over IPv4
                bytes[14..16].copy_from_slice(&12u16.to_be_bytes());
                bytes[16..20].copy_from_slice(&s.octets());
                bytes[20..24].copy_from_slice(&d.octets());
                bytes[24..26].copy_from_slice(&self.source.port().to_be_bytes());
                bytes[26..28].copy_from_slice(&self.destination.port().to_be_bytes());
                28
            }
            _ => {
                bytes[13] = 0x21; // TCP over IPv6
                bytes[14..16].copy_from_slice(&36u16.to_be_bytes());
                bytes[16..32].copy_from_slice(&v6(src).octets());
                bytes[32..48].copy_from_slice(&v6(dst).octets());
                bytes[48..50].copy_from_slice(&self.source.port().to_be_bytes());
                bytes[50..52].copy_from_slice(&self.destination.port().to_be_bytes());
                52
            }
        };
        Encoded { bytes, len }
    }

    /// Reads a header from the start of `buf`. `Ok(None)`: more bytes are
    /// needed. `Ok(Some((header, n)))`: the header took `n` bytes; a LOCAL
    /// command or an unspecified family yields `header: None`.
    #[allow(clippy::type_complexity)]
    pub fn decode(buf: &[u8]) -> Result<Option<(Option<Self>, usize)>, ProxyHeaderError> {
        let sig_len = buf.len().min(12);
        if buf[..sig_len] != SIGNATURE[..sig_len] {
            return Err(ProxyHeaderError::Signature);
        }
        if buf.len() < 16 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        let Some(block) = buf.get(16..16 + len) else {
            return Ok(None);
        };
        let total = 16 + len;
        match buf[12] {
            0x20 => return Ok(Some((None, total))), // LOCAL: health checks and the like
            0x21 => {}
            other => return Err(ProxyHeaderError::VersionCommand(other)),
        }
        let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
        let header = match buf[13] {
            0x00 => None,
            0x11 | 0x12 => {
                if len < 12 {
                    return Err(ProxyHeaderError::Length { len });
                }
                let ip = |at: usize| {
                    IpAddr::from(<[u8; 4]>::try_from(&block[at..at + 4]).unwrap_or_default())
                };
                Some(Self {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                })
            }
            0x21 | 0x22 => {
                if len < 36 {
                    return Err(ProxyHeaderError::Length { len });
                }
                let ip = |at: usize| {
                    IpAddr::from(<[u8; 16]>::try_from(&block[at..at + 16]).unwrap_or_default())
                };
                Some(Self {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                })
            }
            other => return Err(ProxyHeaderError::Family(other)),
        };
        Ok(Some((header, total)))
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_matches_the_spec_layout() {
        let header = ProxyHeader {
            source: "192.0.2.1:51234".parse().unwrap(),
            destination: "198.51.100.7:61617".parse().unwrap(),
        };
        let encoded = header.encode();
        let bytes = encoded.as_ref();
        assert_eq!(bytes.len(), 28);
        assert_eq!(&bytes[..12], &SIGNATURE);
        assert_eq!(&bytes[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&bytes[16..20], &[192, 0, 2, 1]);
        assert_eq!(&bytes[20..24], &[198, 51, 100, 7]);
        assert_eq!(&bytes[24..26], &51234u16.to_be_bytes());
        assert_eq!(&bytes[26..28], &61617u16.to_be_bytes());
    }

    #[test]
    fn round_trips_v4_v6_and_mixed() {
        let cases = [
            ("127.0.0.1:1000", "127.0.0.2:2000"),
            ("[::1]:1000", "[2001:db8::1]:2000"),
            ("127.0.0.1:1000", "[::1]:2000"),
        ];
        for (src, dst) in cases {
            let header = ProxyHeader {
                source: src.parse().unwrap(),
                destination: dst.parse().unwrap(),
            };
            let encoded = header.encode();
            let mut buf = encoded.as_ref().to_vec();
            buf.extend_from_slice(b"payload");
            let (decoded, used) = ProxyHeader::decode(&buf).unwrap().unwrap();
            assert_eq!(used, encoded.as_ref().len());
            let decoded = decoded.unwrap();
            assert_eq!(decoded.source.port(), header.source.port());
            assert_eq!(v6(decoded.source.ip()), v6(header.source.ip()));
            assert_eq!(v6(decoded.destination.ip()), v6(header.destination.ip()));
            for cut in 0..encoded.as_ref().len() {
                assert_eq!(ProxyHeader::decode(&buf[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn rejects_other_protocols() {
        assert_eq!(
            ProxyHeader::decode(b"CONNECT\n"),
            Err(ProxyHeaderError::Signature)
        );
        let mut bad = SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert_eq!(
            ProxyHeader::decode(&bad),
            Err(ProxyHeaderError::VersionCommand(0x31))
        );
    }
}
