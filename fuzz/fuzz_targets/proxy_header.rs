//! PROXY v2 headers: reading arbitrary bytes never panics or claims more
//! bytes than it was given, and every header written reads back as itself.
#![no_main]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use portico::proxy_protocol::ProxyHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, used))) = ProxyHeader::decode(data) {
        assert!(used <= data.len());
        if let Some(header) = header {
            written_reads_back(header);
        }
    }
    // The same bytes as two addresses, written and read back.
    if data.len() >= 36 {
        let v6 = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&data[at..at + 16]).unwrap());
        let port = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
        let v4_source = data[0] & 1 == 1;
        let source = if v4_source {
            IpAddr::from(<[u8; 4]>::try_from(&data[0..4]).unwrap())
        } else {
            v6(0)
        };
        written_reads_back(ProxyHeader {
            source: SocketAddr::new(source, port(32)),
            destination: SocketAddr::new(v6(16), port(34)),
        });
    }
});

fn written_reads_back(header: ProxyHeader) {
    let encoded = header.encode();
    let bytes = encoded.as_ref();
    let (read, used) = ProxyHeader::decode(bytes)
        .unwrap_or_else(|e| panic!("{header:?} written as {bytes:?}: {e}"))
        .unwrap_or_else(|| panic!("{header:?} written as {bytes:?}: incomplete"));
    assert_eq!(used, bytes.len());
    let read = read.expect("a PROXY command with an address");
    // Mixed families are written as IPv6, IPv4 ones mapped.
    let both_v4 = header.source.is_ipv4() && header.destination.is_ipv4();
    let expect = |a: SocketAddr| {
        if both_v4 {
            a
        } else {
            SocketAddr::new(IpAddr::V6(mapped(a.ip())), a.port())
        }
    };
    assert_eq!(read.source, expect(header.source));
    assert_eq!(read.destination, expect(header.destination));
}

fn mapped(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
