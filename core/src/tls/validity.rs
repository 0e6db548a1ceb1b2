//! A certificate's validity period, read from its DER: just enough of
//! X.509's structure to reach `tbsCertificate.validity`.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl Validity {
    /// `None` when the DER is not a certificate this walk understands.
    pub(crate) fn of(der: &[u8]) -> Option<Self> {
        let (certificate, _) = element(der, SEQUENCE)?;
        let (tbs, _) = element(certificate, SEQUENCE)?;
        let mut rest = tbs;
        // [0] EXPLICIT version, when present.
        if rest.first() == Some(&0xa0) {
            rest = skip(rest)?;
        }
        rest = skip(rest)?; // serialNumber
        rest = skip(rest)?; // signature AlgorithmIdentifier
        rest = skip(rest)?; // issuer
        let (validity, _) = element(rest, SEQUENCE)?;
        let (not_before, after) = time_element(validity)?;
        let (not_after, _) = time_element(after)?;
        Some(Self {
            not_before,
            not_after,
        })
    }
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The contents of the element at the front of `der` (which must carry
/// `tag`), and what follows it.
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = tlv(der)?;
    (found == tag).then_some((contents, rest))
}

fn skip(der: &[u8]) -> Option<&[u8]> {
    tlv(der).map(|(_, _, rest)| rest)
}

/// Tag, contents and rest; definite lengths only (DER).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || der.len() < octets {
            return None;
        }
        let (bytes, rest) = der.split_at(octets);
        der = rest;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if der.len() < len {
        return None;
    }
    let (contents, rest) = der.split_at(len);
    Some((tag, contents, rest))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time_element(der: &[u8]) -> Option<(OffsetDateTime, &[u8])> {
    let (tag, contents, rest) = tlv(der)?;
    let text = std::str::from_utf8(contents).ok()?.strip_suffix('Z')?;
    let (year, text) = match tag {
        UTC_TIME if text.len() == 12 => {
            // RFC 5280: 50–99 are 1950–1999, 00–49 are 2000–2049.
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let two = |i: usize| text[i..i + 2].parse::<u8>().ok();
    let date = Date::from_calendar_date(year, Month::try_from(two(0)?).ok()?, two(2)?).ok()?;
    let time = Time::from_hms(two(4)?, two(6)?, two(8)?).ok()?;
    Some((PrimitiveDateTime::new(date, time).assume_utc(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn at(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: u8) -> OffsetDateTime {
        let date = Date::from_calendar_date(y, Month::try_from(mo).unwrap(), d).unwrap();
        PrimitiveDateTime::new(date, Time::from_hms(h, mi, s).unwrap()).assume_utc()
    }

    fn cert_valid(from: OffsetDateTime, to: OffsetDateTime) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["example.test".to_owned()]).unwrap();
        params.not_before = from;
        params.not_after = to;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        let from = at(2024, 2, 29, 12, 34, 56);
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050.
        let to = at(2061, 1, 2, 3, 4, 5);
        let validity = Validity::of(&cert_valid(from, to)).unwrap();
        assert_eq!(validity.not_before, from);
        assert_eq!(validity.not_after, to);
    }

    #[test]
    fn anything_else_is_none() {
        let good = cert_valid(at(2024, 1, 1, 0, 0, 0), at(2025, 1, 1, 0, 0, 0));
        for cut in [0, 1, 2, 10, 40, good.len() / 2] {
            assert_eq!(Validity::of(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Validity::of(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(Validity::of(b"not DER at all"), None);
    }
}
