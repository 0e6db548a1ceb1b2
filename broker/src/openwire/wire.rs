//! The primitives of OpenWire's loose encoding: big-endian integers,
//! one-byte booleans, Java's modified UTF-8 strings behind a presence flag,
//! and length-prefixed byte arrays — read from a slice that every read
//! checks, so a lying length is an error, never an allocation.

use std::fmt;

/// Why bytes are not a valid OpenWire command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The command ends before one of its fields.
    Truncated { wanted: usize, at: usize },
    /// A length or count that is negative or larger than what follows.
    BadLength { what: &'static str, length: i64 },
    /// A size prefix larger than the broker takes.
    TooLarge { size: i64, max: usize },
    /// A data structure type this broker does not know.
    UnknownType(u8),
    /// A data structure where another kind was expected.
    Unexpected { expected: &'static str, found: u8 },
    /// Bytes after the command's last field.
    Trailing(usize),
    /// A string that is not modified UTF-8.
    BadString,
    /// Nested structures deeper than the broker follows.
    TooDeep,
    /// A WireFormatInfo whose magic is not `ActiveMQ`.
    BadMagic,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { wanted, at } => {
                write!(f, "the command ends at byte {at}, {wanted} more expected")
            }
            Self::BadLength { what, length } => {
                write!(f, "{what} has an impossible length {length}")
            }
            Self::TooLarge { size, max } => {
                write!(
                    f,
                    "a command of {size} bytes is larger than the {max} allowed"
                )
            }
            Self::UnknownType(t) => write!(f, "unknown data structure type {t}"),
            Self::Unexpected { expected, found } => {
                write!(f, "expected {expected}, found data structure type {found}")
            }
            Self::Trailing(n) => write!(f, "{n} bytes after the end of the command"),
            Self::BadString => f.write_str("a string is not valid modified UTF-8"),
            Self::TooDeep => f.write_str("data structures nested too deeply"),
            Self::BadMagic => {
                f.write_str("not an OpenWire client: the WireFormatInfo magic is wrong")
            }
        }
    }
}

impl std::error::Error for WireError {}

pub(crate) type Result<T> = std::result::Result<T, WireError>;

/// Reads the fields of one command.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// How deep in nested structures the reader is.
    pub(crate) depth: u8,
}

/// Nested data structures followed at most (a message in a dispatch in a
/// response is three).
pub(crate) const MAX_DEPTH: u8 = 8;

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            depth: 0,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(WireError::Truncated {
                wanted: n - self.remaining(),
                at: self.bytes.len(),
            });
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }

    pub(crate) fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(crate) fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_be_bytes(self.array()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }

    /// A length or count, checked against what is left (each counted item
    /// takes at least `unit` bytes).
    pub(crate) fn length(&mut self, what: &'static str, length: i64, unit: usize) -> Result<usize> {
        let fits = usize::try_from(length)
            .ok()
            .filter(|n| n.saturating_mul(unit.max(1)) <= self.remaining());
        fits.ok_or(WireError::BadLength { what, length })
    }

    /// `writeUTF`: a u16 length and modified UTF-8.
    pub(crate) fn utf(&mut self) -> Result<String> {
        let n = usize::from(self.u16()?);
        decode_modified_utf8(self.take(n)?)
    }

    /// A string behind a presence flag.
    pub(crate) fn string(&mut self) -> Result<Option<String>> {
        if self.bool()? {
            Ok(Some(self.utf()?))
        } else {
            Ok(None)
        }
    }

    /// A byte array behind a presence flag: an i32 length and the bytes.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Option<Vec<u8>>> {
        if !self.bool()? {
            return Ok(None);
        }
        let length = self.i32()?;
        let n = self.length(what, i64::from(length), 1)?;
        Ok(Some(self.take(n)?.to_vec()))
    }
}

/// Writes the fields of one command.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) out: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    pub(crate) fn i16(&mut self, v: i16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn f32(&mut self, v: f32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn f64(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// `writeUTF`; a string whose encoding is longer than 65,535 bytes is
    /// cut at a character boundary (Java would throw).
    pub(crate) fn utf(&mut self, s: &str) {
        let mut encoded = encode_modified_utf8(s);
        if encoded.len() > usize::from(u16::MAX) {
            let mut end = usize::from(u16::MAX);
            while end > 0 && encoded[end] & 0xC0 == 0x80 {
                end -= 1;
            }
            encoded.truncate(end);
        }
        self.i16(encoded.len() as u16 as i16);
        self.out.extend_from_slice(&encoded);
    }

    pub(crate) fn string(&mut self, s: Option<&str>) {
        self.bool(s.is_some());
        if let Some(s) = s {
            self.utf(s);
        }
    }

    pub(crate) fn bytes(&mut self, b: Option<&[u8]>) {
        self.bool(b.is_some());
        if let Some(b) = b {
            self.i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
            self.out.extend_from_slice(b);
        }
    }
}

/// Java's modified UTF-8 to a string: U+0000 is two bytes, characters
/// beyond the BMP are surrogate pairs of three bytes each.
pub(crate) fn decode_modified_utf8(bytes: &[u8]) -> Result<String> {
    // The common case: plain ASCII (or UTF-8 without NULs or pairs).
    if bytes.iter().all(|b| *b != 0 && *b < 0x80) {
        return String::from_utf8(bytes.to_vec()).map_err(|_| WireError::BadString);
    }
    let mut units: Vec<u16> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let a = u16::from(bytes[i]);
        let cont = |j: usize| -> Result<u16> {
            match bytes.get(j) {
                Some(b) if b & 0xC0 == 0x80 => Ok(u16::from(b & 0x3F)),
                _ => Err(WireError::BadString),
            }
        };
        if a < 0x80 {
            units.push(a);
            i += 1;
        } else if a & 0xE0 == 0xC0 {
            units.push(((a & 0x1F) << 6) | cont(i + 1)?);
            i += 2;
        } else if a & 0xF0 == 0xE0 {
            units.push(((a & 0x0F) << 12) | (cont(i + 1)? << 6) | cont(i + 2)?);
            i += 3;
        } else {
            return Err(WireError::BadString);
        }
    }
    // Unpaired surrogates (Java allows them) become U+FFFD.
    Ok(char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect())
}

/// A string as Java's `writeUTF` encodes it (without the length).
pub(crate) fn encode_modified_utf8(s: &str) -> Vec<u8> {
    if s.bytes().all(|b| b != 0 && b < 0x80) {
        return s.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(s.len() + 8);
    for unit in s.encode_utf16() {
        match unit {
            1..=0x7F => out.push(unit as u8),
            0 | 0x80..=0x7FF => {
                out.push(0xC0 | ((unit >> 6) as u8 & 0x1F));
                out.push(0x80 | (unit as u8 & 0x3F));
            }
            _ => {
                out.push(0xE0 | ((unit >> 12) as u8 & 0x0F));
                out.push(0x80 | ((unit >> 6) as u8 & 0x3F));
                out.push(0x80 | (unit as u8 & 0x3F));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf8_round_trips_nul_and_supplementary_characters() {
        for s in ["plain", "", "naïve ☕", "a\0b", "clef 𝄞 here"] {
            let encoded = encode_modified_utf8(s);
            assert!(!encoded.contains(&0), "{s:?}");
            assert_eq!(decode_modified_utf8(&encoded).unwrap(), s);
        }
        // U+1D11E is a surrogate pair: six bytes, not four.
        assert_eq!(encode_modified_utf8("𝄞").len(), 6);
        assert!(decode_modified_utf8(&[0xE2, 0x82]).is_err());
        assert!(decode_modified_utf8(&[0xFF]).is_err());
    }

    #[test]
    fn lying_lengths_are_errors_not_allocations() {
        let mut w = Writer::default();
        w.bool(true);
        w.i32(i32::MAX);
        w.raw(b"abc");
        let mut r = Reader::new(&w.out);
        assert!(matches!(
            r.bytes("content"),
            Err(WireError::BadLength { .. })
        ));
        let mut r = Reader::new(&[1, 0xFF, 0xFF, b'a']);
        assert!(matches!(r.string(), Err(WireError::Truncated { .. })));
    }
}
