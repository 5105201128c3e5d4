//! AMF0 (Action Message Format 0): the value encoding of RTMP command and data messages.
//!
//! Follows Adobe's "AMF 0 File Format Specification". All multi-byte numbers are big-endian.
//!
//! # Encoding
//!
//! [`Value::encode`] writes any value; the free functions ([`encode_number`], [`encode_string`],
//! [`encode_object_start`], [`encode_property_name`], ...) write the same bytes piece by piece
//! straight into a buffer, so commands and metadata can be built without building a [`Value`].
//! Encoding never panics and never fails:
//!
//! - A string longer than 65535 bytes is written with the long-string marker (0x0C).
//! - A property name longer than 65535 bytes cannot be represented; it is truncated to the longest
//!   prefix of at most 65535 bytes that ends on a character boundary. Names we write are short
//!   protocol constants, so this never happens in practice.
//! - Likewise a long string over `u32::MAX` bytes is truncated, and a strict array with more than
//!   `u32::MAX` elements is cut to `u32::MAX` elements, so the output always decodes.
//!
//! # Decoding
//!
//! [`decode`] and [`decode_all`] accept everything a server may send and never panic:
//!
//! - number, boolean, string, long string and XML document (both decode to [`Value::String`]),
//!   object, typed object (decodes to [`Value::Object`], the class name is dropped), null,
//!   undefined, ECMA array, strict array and date.
//! - The "unsupported" marker (0x0D) decodes to [`Value::Undefined`]: it stands for a value the
//!   sender could not serialize, and failing the whole command over it would help no one.
//! - Reference (0x07), movieclip (0x04), recordset (0x0E) and the AVM+ switch to AMF3 (0x11) are
//!   [`DecodeError::Unsupported`]; any other marker, and an object-end marker (0x09) where a value
//!   should start, is [`DecodeError::UnknownMarker`].
//! - Invalid UTF-8 in strings and property names is decoded lossily (U+FFFD), because servers put
//!   odd bytes in descriptions and a command should not fail for that.
//! - An ECMA array's element count is only a hint: it is ignored and properties are read up to the
//!   object-end marker, as every real implementation does.
//! - A property with an empty name is accepted when what follows is a value rather than the
//!   object-end marker 0x09 (which is never a value marker, so this is unambiguous). This is
//!   what SRS does and it makes every encodable object decode back to itself.
//! - Objects and ECMA arrays must end with the object-end marker. If the input ends at a property
//!   boundary without it, the result is [`DecodeError::MissingObjectEnd`]. nginx-rtmp, which is a
//!   server, tolerates that for one encoder (Envivio) that sends unterminated arrays; we are a
//!   client and every server we talk to (nginx-rtmp, SRS, MediaMTX, FFmpeg, Wowza-based ingest)
//!   terminates its objects, so we keep the simpler, stricter rule: every strict prefix of a valid
//!   encoding is an error.
//!
//! # Invariants
//!
//! - Nesting deeper than [`MAX_DEPTH`] containers is [`DecodeError::TooDeep`], so recursion is
//!   bounded.
//! - No allocation is sized by a length read from the input before the bytes it announces are
//!   known to be present; a strict array's capacity is bounded by the bytes that remain (every
//!   element takes at least one byte).
//! - Decoding then encoding is a fixpoint after one round: `encode(decode(encode(decode(x))))`
//!   equals `encode(decode(x))` byte for byte (the fuzz target checks this).

use std::fmt;

/// Marker bytes of the AMF0 types.
mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const MOVIECLIP: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const UNSUPPORTED: u8 = 0x0D;
    pub const RECORDSET: u8 = 0x0E;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// How many containers (objects, ECMA arrays, strict arrays) may enclose one another when
/// decoding. The 65th level is [`DecodeError::TooDeep`].
pub const MAX_DEPTH: usize = 64;

/// Longest string that fits the 16-bit length of a plain string or a property name.
const SHORT_STRING_MAX: usize = u16::MAX as usize;

/// An AMF0 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number (IEEE 754 double).
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// A string. String, long string and XML document all decode to this.
    String(String),
    /// An anonymous object: properties in the order they were sent. Typed objects decode to
    /// this too; their class name is dropped.
    Object(Vec<(String, Value)>),
    /// Null.
    Null,
    /// Undefined. The "unsupported" marker decodes to this too.
    Undefined,
    /// An ECMA (associative) array: properties in the order they were sent.
    EcmaArray(Vec<(String, Value)>),
    /// A strict (dense) array.
    StrictArray(Vec<Value>),
    /// A date: milliseconds since the Unix epoch (UTC) and a time zone field that the
    /// specification says is reserved and should be 0.
    Date {
        /// Milliseconds since 1970-01-01T00:00:00Z.
        millis: f64,
        /// Reserved time zone offset; sent as 0.
        timezone: i16,
    },
}

impl Value {
    /// Appends this value's AMF0 encoding to `out`. Strings over 65535 bytes use the
    /// long-string marker; see the module documentation for the limits of the format.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Number(n) => encode_number(out, *n),
            Value::Boolean(b) => encode_bool(out, *b),
            Value::String(s) => encode_string(out, s),
            Value::Object(properties) => {
                encode_object_start(out);
                encode_properties(out, properties);
                encode_object_end(out);
            }
            Value::Null => encode_null(out),
            Value::Undefined => out.push(marker::UNDEFINED),
            Value::EcmaArray(properties) => {
                let count = u32::try_from(properties.len()).unwrap_or(u32::MAX);
                encode_ecma_array_start(out, count);
                encode_properties(out, properties);
                encode_object_end(out);
            }
            Value::StrictArray(items) => {
                let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
                out.push(marker::STRICT_ARRAY);
                out.extend_from_slice(&count.to_be_bytes());
                for item in items.iter().take(count as usize) {
                    item.encode(out);
                }
            }
            Value::Date { millis, timezone } => {
                out.push(marker::DATE);
                out.extend_from_slice(&millis.to_be_bytes());
                out.extend_from_slice(&timezone.to_be_bytes());
            }
        }
    }

    /// The string, if this is a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a [`Value::Number`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is a [`Value::Boolean`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// Property lookup on [`Value::Object`] and [`Value::EcmaArray`]: the value of the first
    /// property named `key` (as FFmpeg does), or `None` if there is none or this is not an
    /// object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(properties) | Value::EcmaArray(properties) => properties
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }
}

fn encode_properties(out: &mut Vec<u8>, properties: &[(String, Value)]) {
    for (name, value) in properties {
        encode_property_name(out, name);
        value.encode(out);
    }
}

/// Appends a number: marker 0x00 and the IEEE 754 double, big-endian.
pub fn encode_number(out: &mut Vec<u8>, n: f64) {
    out.push(marker::NUMBER);
    out.extend_from_slice(&n.to_be_bytes());
}

/// Appends a boolean: marker 0x01 and one byte, 1 for true, 0 for false.
pub fn encode_bool(out: &mut Vec<u8>, b: bool) {
    out.push(marker::BOOLEAN);
    out.push(u8::from(b));
}

/// Appends a string: marker 0x02, a 16-bit length and the UTF-8 bytes; a string over 65535
/// bytes gets marker 0x0C and a 32-bit length instead (truncated at `u32::MAX` bytes).
pub fn encode_string(out: &mut Vec<u8>, s: &str) {
    if s.len() <= SHORT_STRING_MAX {
        out.push(marker::STRING);
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    } else {
        let s = truncate_to_char_boundary(s, u32::MAX as usize);
        out.push(marker::LONG_STRING);
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends null: marker 0x05.
pub fn encode_null(out: &mut Vec<u8>) {
    out.push(marker::NULL);
}

/// Appends the start of an anonymous object: marker 0x03. Follow it with
/// [`encode_property_name`] and a value for each property, then [`encode_object_end`].
pub fn encode_object_start(out: &mut Vec<u8>) {
    out.push(marker::OBJECT);
}

/// Appends the start of an ECMA array: marker 0x08 and the element count, which readers treat
/// as a hint. Follow it with properties as for an object, then [`encode_object_end`].
pub fn encode_ecma_array_start(out: &mut Vec<u8>, count: u32) {
    out.push(marker::ECMA_ARRAY);
    out.extend_from_slice(&count.to_be_bytes());
}

/// Appends a property name: a 16-bit length and the UTF-8 bytes, no marker. A name over 65535
/// bytes, which the format cannot carry, is truncated to the longest prefix of at most 65535
/// bytes that ends on a character boundary. An empty name is written as is; followed by a value
/// it is still decodable, but it must not be followed by [`encode_object_end`]'s 0x09 alone.
pub fn encode_property_name(out: &mut Vec<u8>, name: &str) {
    let name = truncate_to_char_boundary(name, SHORT_STRING_MAX);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Appends the end of an object or ECMA array: an empty name and marker 0x09 (`00 00 09`).
pub fn encode_object_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x00, marker::OBJECT_END]);
}

/// The longest prefix of `s` that is at most `max` bytes long and ends on a character boundary.
fn truncate_to_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Why AMF0 bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    Truncated,
    /// A type marker that is not AMF0, or an object-end marker (0x09) where a value should be.
    UnknownMarker(u8),
    /// A valid AMF0 type this decoder does not handle (reference, movieclip, recordset, AMF3).
    Unsupported(&'static str),
    /// Containers nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An object or ECMA array was not closed by the object-end marker before the input ended.
    MissingObjectEnd,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str(
                "AMF0 data ends in the middle of a value: the message is truncated or corrupt",
            ),
            DecodeError::UnknownMarker(m) => write!(
                f,
                "unknown or misplaced AMF0 type marker 0x{m:02x}: the message is corrupt or not AMF0"
            ),
            DecodeError::Unsupported(what) => write!(
                f,
                "the AMF0 data holds a {what}, which this client does not support"
            ),
            DecodeError::TooDeep => write!(
                f,
                "AMF0 values nested more than {MAX_DEPTH} levels deep: refusing to decode"
            ),
            DecodeError::MissingObjectEnd => f.write_str(
                "AMF0 object or ECMA array is missing its end marker (00 00 09): the message is truncated or corrupt",
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one value at the start of `input`; returns it and the number of bytes it took.
pub fn decode(input: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.value(0)?;
    Ok((value, reader.pos))
}

/// Decodes values until `input` is used up (an RTMP command body is a sequence of values).
/// Empty input gives an empty list.
pub fn decode_all(input: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut reader = Reader { input, pos: 0 };
    let mut values = Vec::new();
    while reader.remaining() > 0 {
        values.push(reader.value(0)?);
    }
    Ok(values)
}

/// A cursor over the input. Every read checks the length first and fails with `Truncated`.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let bytes = self
            .input
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_be_bytes(self.take_array()?))
    }

    /// UTF-8 of `len` bytes, decoded lossily. Allocates only once the bytes are known present.
    fn utf8(&mut self, len: usize) -> Result<String, DecodeError> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn short_string(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()?;
        self.utf8(usize::from(len))
    }

    fn long_string(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.utf8(len)
    }

    /// One value. `depth` is the number of containers that enclose it.
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let marker = self.u8()?;
        match marker {
            marker::NUMBER => Ok(Value::Number(self.f64()?)),
            marker::BOOLEAN => Ok(Value::Boolean(self.u8()? != 0)),
            marker::STRING => Ok(Value::String(self.short_string()?)),
            marker::LONG_STRING | marker::XML_DOCUMENT => Ok(Value::String(self.long_string()?)),
            marker::NULL => Ok(Value::Null),
            marker::UNDEFINED | marker::UNSUPPORTED => Ok(Value::Undefined),
            marker::OBJECT => Ok(Value::Object(self.properties(depth)?)),
            marker::TYPED_OBJECT => {
                let class_name_len = usize::from(self.u16()?);
                let _class_name = self.take(class_name_len)?;
                Ok(Value::Object(self.properties(depth)?))
            }
            marker::ECMA_ARRAY => {
                let _count_hint = self.u32()?;
                Ok(Value::EcmaArray(self.properties(depth)?))
            }
            marker::STRICT_ARRAY => self.strict_array(depth),
            marker::DATE => {
                let millis = self.f64()?;
                let timezone = i16::from_be_bytes(self.take_array()?);
                Ok(Value::Date { millis, timezone })
            }
            marker::REFERENCE => Err(DecodeError::Unsupported("reference (type 0x07)")),
            marker::MOVIECLIP => Err(DecodeError::Unsupported("movieclip (type 0x04)")),
            marker::RECORDSET => Err(DecodeError::Unsupported("recordset (type 0x0e)")),
            marker::AVMPLUS => Err(DecodeError::Unsupported(
                "switch to AMF3 (type 0x11); only AMF0 is supported",
            )),
            other => Err(DecodeError::UnknownMarker(other)),
        }
    }

    /// Properties of an object, typed object or ECMA array, up to and including the end marker.
    /// `depth` is the number of containers enclosing the container itself.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, DecodeError> {
        let inner_depth = depth + 1;
        if inner_depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let mut properties = Vec::new();
        loop {
            if self.remaining() == 0 {
                return Err(DecodeError::MissingObjectEnd);
            }
            let name_len = usize::from(self.u16()?);
            if name_len == 0 && self.peek() == Some(marker::OBJECT_END) {
                self.pos += 1;
                return Ok(properties);
            }
            let name = self.utf8(name_len)?;
            let value = self.value(inner_depth)?;
            properties.push((name, value));
        }
    }

    fn strict_array(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let inner_depth = depth + 1;
        if inner_depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let count = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        // Every element takes at least its marker byte, so a count beyond what remains is a lie.
        if count > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.value(inner_depth)?);
        }
        Ok(Value::StrictArray(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        value.encode(&mut out);
        out
    }

    /// Encodes `value`, checks the bytes are `expected`, and checks they decode back to `value`.
    fn check_both_ways(value: Value, expected: &[u8]) {
        assert_eq!(encoded(&value), expected, "encoding of {value:?}");
        assert_eq!(
            decode(expected),
            Ok((value, expected.len())),
            "decoding {expected:02x?}"
        );
    }

    fn object(properties: &[(&str, Value)]) -> Vec<(String, Value)> {
        properties
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    fn string(s: &str) -> Value {
        Value::String(s.to_string())
    }

    #[test]
    fn number_vectors() {
        check_both_ways(Value::Number(1.0), &[0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
        check_both_ways(Value::Number(0.0), &[0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
        check_both_ways(Value::Number(-2.5), &[0x00, 0xC0, 0x04, 0, 0, 0, 0, 0, 0]);
        check_both_ways(
            Value::Number(f64::INFINITY),
            &[0x00, 0x7F, 0xF0, 0, 0, 0, 0, 0, 0],
        );
        let mut out = Vec::new();
        encode_number(&mut out, 1.0);
        assert_eq!(out, encoded(&Value::Number(1.0)));
    }

    #[test]
    fn nan_keeps_its_bit_pattern() {
        let bytes = [0x00, 0x7F, 0xF8, 0, 0, 0, 0, 0, 0x01];
        let (value, used) = decode(&bytes).unwrap();
        assert_eq!(used, 9);
        assert!(value.as_f64().unwrap().is_nan());
        assert_eq!(encoded(&value), bytes);
    }

    #[test]
    fn boolean_vectors() {
        check_both_ways(Value::Boolean(true), &[0x01, 0x01]);
        check_both_ways(Value::Boolean(false), &[0x01, 0x00]);
        // Any non-zero byte is true.
        assert_eq!(decode(&[0x01, 0x02]), Ok((Value::Boolean(true), 2)));
        let mut out = Vec::new();
        encode_bool(&mut out, true);
        encode_bool(&mut out, false);
        assert_eq!(out, [0x01, 0x01, 0x01, 0x00]);
    }

    #[test]
    fn string_vectors() {
        check_both_ways(string("hi"), &[0x02, 0x00, 0x02, b'h', b'i']);
        check_both_ways(string(""), &[0x02, 0x00, 0x00]);
        check_both_ways(string("é"), &[0x02, 0x00, 0x02, 0xC3, 0xA9]);
        let mut out = Vec::new();
        encode_string(&mut out, "hi");
        assert_eq!(out, [0x02, 0x00, 0x02, b'h', b'i']);
    }

    #[test]
    fn string_of_65535_bytes_is_a_short_string() {
        let s = "x".repeat(65535);
        let mut expected = vec![0x02, 0xFF, 0xFF];
        expected.extend_from_slice(s.as_bytes());
        check_both_ways(Value::String(s), &expected);
    }

    #[test]
    fn string_over_65535_bytes_is_a_long_string() {
        let s = "y".repeat(65536);
        let mut expected = vec![0x0C, 0x00, 0x01, 0x00, 0x00];
        expected.extend_from_slice(s.as_bytes());
        check_both_ways(Value::String(s.clone()), &expected);
        let mut out = Vec::new();
        encode_string(&mut out, &s);
        assert_eq!(out, expected);
    }

    #[test]
    fn short_long_string_and_xml_document_decode_to_string() {
        assert_eq!(
            decode(&[0x0C, 0, 0, 0, 2, b'o', b'k']),
            Ok((string("ok"), 7))
        );
        assert_eq!(
            decode(&[0x0F, 0, 0, 0, 4, b'<', b'a', b'/', b'>']),
            Ok((string("<a/>"), 9))
        );
    }

    #[test]
    fn invalid_utf8_decodes_lossily() {
        assert_eq!(
            decode(&[0x02, 0x00, 0x03, b'a', 0xFF, b'b']),
            Ok((string("a\u{FFFD}b"), 6))
        );
        let bytes = [0x03, 0x00, 0x02, 0xC3, b'k', 0x05, 0x00, 0x00, 0x09];
        assert_eq!(
            decode(&bytes),
            Ok((Value::Object(object(&[("\u{FFFD}k", Value::Null)])), 9))
        );
    }

    #[test]
    fn null_undefined_and_unsupported() {
        check_both_ways(Value::Null, &[0x05]);
        check_both_ways(Value::Undefined, &[0x06]);
        assert_eq!(decode(&[0x0D]), Ok((Value::Undefined, 1)));
        let mut out = Vec::new();
        encode_null(&mut out);
        assert_eq!(out, [0x05]);
    }

    #[test]
    fn object_vectors() {
        check_both_ways(Value::Object(Vec::new()), &[0x03, 0x00, 0x00, 0x09]);
        let expected = [
            0x03, 0x00, 0x01, b'a', 0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, b'b', 0x01,
            0x01, 0x00, 0x00, 0x09,
        ];
        check_both_ways(
            Value::Object(object(&[
                ("a", Value::Number(1.0)),
                ("b", Value::Boolean(true)),
            ])),
            &expected,
        );
        // The same bytes from the allocation-free encoders.
        let mut out = Vec::new();
        encode_object_start(&mut out);
        encode_property_name(&mut out, "a");
        encode_number(&mut out, 1.0);
        encode_property_name(&mut out, "b");
        encode_bool(&mut out, true);
        encode_object_end(&mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_property_name_followed_by_a_value_is_a_property() {
        check_both_ways(
            Value::Object(object(&[("", Value::Null)])),
            &[0x03, 0x00, 0x00, 0x05, 0x00, 0x00, 0x09],
        );
    }

    #[test]
    fn typed_object_decodes_to_object_without_class_name() {
        let bytes = [
            0x10, 0x00, 0x03, b'F', b'o', b'o', 0x00, 0x01, b'x', 0x05, 0x00, 0x00, 0x09,
        ];
        assert_eq!(
            decode(&bytes),
            Ok((Value::Object(object(&[("x", Value::Null)])), bytes.len()))
        );
    }

    #[test]
    fn ecma_array_vectors() {
        let expected = [
            0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, b'k', 0x02, 0x00, 0x01, b'v', 0x00, 0x00,
            0x09,
        ];
        check_both_ways(Value::EcmaArray(object(&[("k", string("v"))])), &expected);
        let mut out = Vec::new();
        encode_ecma_array_start(&mut out, 1);
        encode_property_name(&mut out, "k");
        encode_string(&mut out, "v");
        encode_object_end(&mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn ecma_array_count_is_only_a_hint() {
        for hint in [[0u8, 0, 0, 0], [0, 0, 0, 99], [0xFF, 0xFF, 0xFF, 0xFF]] {
            let mut bytes = vec![0x08];
            bytes.extend_from_slice(&hint);
            bytes.extend_from_slice(&[0x00, 0x01, b'k', 0x05, 0x00, 0x01, b'j', 0x06, 0, 0, 9]);
            assert_eq!(
                decode(&bytes),
                Ok((
                    Value::EcmaArray(object(&[("k", Value::Null), ("j", Value::Undefined)])),
                    bytes.len()
                ))
            );
        }
    }

    #[test]
    fn strict_array_vectors() {
        check_both_ways(Value::StrictArray(Vec::new()), &[0x0A, 0, 0, 0, 0]);
        check_both_ways(
            Value::StrictArray(vec![Value::Null, Value::Boolean(false)]),
            &[0x0A, 0, 0, 0, 2, 0x05, 0x01, 0x00],
        );
    }

    #[test]
    fn strict_array_count_beyond_input_fails_before_allocating() {
        assert_eq!(
            decode(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x05]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[0x0A, 0, 0, 0, 3, 0x05, 0x05]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn huge_string_lengths_fail_without_allocating() {
        assert_eq!(
            decode(&[0x0C, 0xFF, 0xFF, 0xFF, 0xFF, b'a']),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[0x0F, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[0x02, 0xFF, 0xFF, b'a']),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn date_vectors() {
        check_both_ways(
            Value::Date {
                millis: 1.0,
                timezone: 0,
            },
            &[0x0B, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 0x00, 0x00],
        );
        check_both_ways(
            Value::Date {
                millis: 0.0,
                timezone: -60,
            },
            &[0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xC4],
        );
    }

    #[test]
    fn unsupported_and_unknown_markers_are_errors() {
        for marker in [0x04, 0x07, 0x0E, 0x11] {
            let result = decode(&[marker, 0, 0, 0, 0]);
            assert!(
                matches!(result, Err(DecodeError::Unsupported(_))),
                "marker {marker:#04x}: {result:?}"
            );
        }
        for marker in [0x09, 0x12, 0x80, 0xFF] {
            assert_eq!(
                decode(&[marker, 0, 0, 0, 0]),
                Err(DecodeError::UnknownMarker(marker))
            );
        }
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn missing_object_end() {
        assert_eq!(decode(&[0x03]), Err(DecodeError::MissingObjectEnd));
        assert_eq!(
            decode(&[0x03, 0x00, 0x01, b'a', 0x05]),
            Err(DecodeError::MissingObjectEnd)
        );
        assert_eq!(
            decode(&[0x08, 0, 0, 0, 1, 0x00, 0x01, b'a', 0x05]),
            Err(DecodeError::MissingObjectEnd)
        );
        // An end marker that is not 0x09 after an empty name: 0x0A starts a strict array value.
        assert_eq!(
            decode(&[0x03, 0x00, 0x00, 0x0A]),
            Err(DecodeError::Truncated)
        );
    }

    /// `connect` as FFmpeg (libavformat/rtmpproto.c, gen_connect) sends it when publishing to
    /// rtmp://localhost:1935/live: name, transaction id 1, and the command object.
    fn ffmpeg_connect_bytes() -> Vec<u8> {
        [
            &[0x02, 0x00, 0x07][..],
            b"connect",
            &[0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0],
            &[0x03],
            &[0x00, 0x03],
            b"app",
            &[0x02, 0x00, 0x04],
            b"live",
            &[0x00, 0x04],
            b"type",
            &[0x02, 0x00, 0x0A],
            b"nonprivate",
            &[0x00, 0x08],
            b"flashVer",
            &[0x02, 0x00, 0x24],
            b"FMLE/3.0 (compatible; Lavf60.16.100)",
            &[0x00, 0x05],
            b"tcUrl",
            &[0x02, 0x00, 0x1A],
            b"rtmp://localhost:1935/live",
            &[0x00, 0x00, 0x09],
        ]
        .concat()
    }

    #[test]
    fn ffmpeg_connect_command_both_ways() {
        let bytes = ffmpeg_connect_bytes();
        let command_object = Value::Object(object(&[
            ("app", string("live")),
            ("type", string("nonprivate")),
            ("flashVer", string("FMLE/3.0 (compatible; Lavf60.16.100)")),
            ("tcUrl", string("rtmp://localhost:1935/live")),
        ]));
        let values = vec![string("connect"), Value::Number(1.0), command_object];
        assert_eq!(decode_all(&bytes), Ok(values.clone()));

        let mut out = Vec::new();
        for value in &values {
            value.encode(&mut out);
        }
        assert_eq!(out, bytes);

        // And with the allocation-free encoders, as the session builds it.
        let mut out = Vec::new();
        encode_string(&mut out, "connect");
        encode_number(&mut out, 1.0);
        encode_object_start(&mut out);
        for (name, value) in [
            ("app", "live"),
            ("type", "nonprivate"),
            ("flashVer", "FMLE/3.0 (compatible; Lavf60.16.100)"),
            ("tcUrl", "rtmp://localhost:1935/live"),
        ] {
            encode_property_name(&mut out, name);
            encode_string(&mut out, value);
        }
        encode_object_end(&mut out);
        assert_eq!(out, bytes);
    }

    /// onStatus NetStream.Publish.Start as nginx-rtmp (ngx_rtmp_send_status) sends it.
    fn nginx_publish_start_bytes() -> Vec<u8> {
        [
            &[0x02, 0x00, 0x08][..],
            b"onStatus",
            &[0x00, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x05],
            &[0x03],
            &[0x00, 0x05],
            b"level",
            &[0x02, 0x00, 0x06],
            b"status",
            &[0x00, 0x04],
            b"code",
            &[0x02, 0x00, 0x17],
            b"NetStream.Publish.Start",
            &[0x00, 0x0B],
            b"description",
            &[0x02, 0x00, 0x10],
            b"Start publishing",
            &[0x00, 0x00, 0x09],
        ]
        .concat()
    }

    #[test]
    fn nginx_rtmp_publish_start_on_status() {
        let values = decode_all(&nginx_publish_start_bytes()).unwrap();
        assert_eq!(values.len(), 4);
        assert_eq!(values[0].as_str(), Some("onStatus"));
        assert_eq!(values[1].as_f64(), Some(0.0));
        assert_eq!(values[2], Value::Null);
        let info = &values[3];
        assert_eq!(info.get("level").and_then(Value::as_str), Some("status"));
        assert_eq!(
            info.get("code").and_then(Value::as_str),
            Some("NetStream.Publish.Start")
        );
        assert_eq!(
            info.get("description").and_then(Value::as_str),
            Some("Start publishing")
        );
        assert_eq!(info.get("missing"), None);
    }

    #[test]
    fn decode_reports_bytes_used_and_ignores_what_follows() {
        assert_eq!(
            decode(&[0x05, 0x06, 0xFF]),
            Ok((Value::Null, 1)),
            "trailing bytes are the caller's"
        );
        assert_eq!(decode_all(&[]), Ok(Vec::new()));
        assert_eq!(
            decode_all(&[0x05, 0x06]),
            Ok(vec![Value::Null, Value::Undefined])
        );
        assert!(matches!(
            decode_all(&[0x05, 0x07]),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn accessors() {
        assert_eq!(string("a").as_str(), Some("a"));
        assert_eq!(Value::Null.as_str(), None);
        assert_eq!(Value::Number(2.0).as_f64(), Some(2.0));
        assert_eq!(string("2").as_f64(), None);
        assert_eq!(Value::Boolean(true).as_bool(), Some(true));
        assert_eq!(Value::Number(1.0).as_bool(), None);
        let array = Value::EcmaArray(object(&[("k", Value::Null), ("k", Value::Undefined)]));
        assert_eq!(array.get("k"), Some(&Value::Null), "first match wins");
        assert_eq!(Value::StrictArray(vec![Value::Null]).get("0"), None);
    }

    #[test]
    fn long_property_names_are_truncated_on_a_char_boundary() {
        let mut out = Vec::new();
        encode_property_name(&mut out, &"n".repeat(70_000));
        assert_eq!(&out[..2], &[0xFF, 0xFF]);
        assert_eq!(out.len(), 2 + 65535);

        // 'é' is two bytes; 65535 is odd, so the last whole character ends at 65534.
        let mut out = Vec::new();
        encode_property_name(&mut out, &"é".repeat(40_000));
        assert_eq!(&out[..2], &65534u16.to_be_bytes());
        assert_eq!(out.len(), 2 + 65534);
        assert!(std::str::from_utf8(&out[2..]).is_ok());
    }

    /// One value of every encodable type, nested.
    fn every_type() -> Value {
        Value::Object(object(&[
            ("n", Value::Number(-0.5)),
            ("b", Value::Boolean(true)),
            ("s", string("text")),
            ("null", Value::Null),
            ("undef", Value::Undefined),
            (
                "ecma",
                Value::EcmaArray(object(&[
                    (
                        "d",
                        Value::Date {
                            millis: 1e12,
                            timezone: 0,
                        },
                    ),
                    ("o", Value::Object(Vec::new())),
                ])),
            ),
            (
                "strict",
                Value::StrictArray(vec![Value::Number(1.0), string(""), Value::Null]),
            ),
        ]))
    }

    #[test]
    fn every_strict_prefix_is_an_error() {
        for bytes in [
            encoded(&every_type()),
            encoded(&string(&"z".repeat(70_000))),
            [
                0x10, 0x00, 0x01, b'C', 0x00, 0x01, b'x', 0x05, 0x00, 0x00, 0x09,
            ]
            .to_vec(),
            [0x0F, 0, 0, 0, 1, b'x'].to_vec(),
        ] {
            assert!(decode(&bytes).is_ok());
            for end in 0..bytes.len() {
                let result = decode(&bytes[..end]);
                assert!(
                    matches!(
                        result,
                        Err(DecodeError::Truncated | DecodeError::MissingObjectEnd)
                    ),
                    "prefix of {end} bytes: {result:?}"
                );
            }
        }
        // A command is a sequence: a prefix that cuts a value is an error for decode_all too.
        let bytes = ffmpeg_connect_bytes();
        for end in 1..bytes.len() {
            let prefix = &bytes[..end];
            if end == 10 || end == 19 {
                // Value boundaries: "connect" and "connect", 1.0 are complete sequences.
                assert!(decode_all(prefix).is_ok());
            } else {
                assert!(decode_all(prefix).is_err(), "prefix of {end} bytes");
            }
        }
    }

    fn nested(depth: usize, open: &[u8], close: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..depth {
            bytes.extend_from_slice(open);
        }
        bytes.push(0x05);
        for _ in 0..depth {
            bytes.extend_from_slice(close);
        }
        bytes
    }

    #[test]
    fn nesting_up_to_the_limit_decodes() {
        // Objects holding one property "a" each, and strict arrays of one element.
        let objects = nested(MAX_DEPTH, &[0x03, 0x00, 0x01, b'a'], &[0x00, 0x00, 0x09]);
        assert_eq!(decode(&objects).map(|(_, used)| used), Ok(objects.len()));
        let arrays = nested(MAX_DEPTH, &[0x0A, 0, 0, 0, 1], &[]);
        assert_eq!(decode(&arrays).map(|(_, used)| used), Ok(arrays.len()));
    }

    #[test]
    fn nesting_beyond_the_limit_is_too_deep() {
        let objects = nested(
            MAX_DEPTH + 1,
            &[0x03, 0x00, 0x01, b'a'],
            &[0x00, 0x00, 0x09],
        );
        assert_eq!(decode(&objects), Err(DecodeError::TooDeep));
        let arrays = nested(MAX_DEPTH + 1, &[0x0A, 0, 0, 0, 1], &[]);
        assert_eq!(decode(&arrays), Err(DecodeError::TooDeep));
        let ecma = nested(
            MAX_DEPTH + 1,
            &[0x08, 0, 0, 0, 1, 0x00, 0x01, b'a'],
            &[0x00, 0x00, 0x09],
        );
        assert_eq!(decode(&ecma), Err(DecodeError::TooDeep));
        // A hostile message: a million nested arrays, no stack overflow.
        let hostile = [0x0A, 0, 0, 0, 1].repeat(1_000_000);
        assert_eq!(decode(&hostile), Err(DecodeError::TooDeep));
        let value_too_deep = Value::StrictArray(vec![Value::Null]);
        let mut deep = value_too_deep;
        for _ in 0..MAX_DEPTH {
            deep = Value::StrictArray(vec![deep]);
        }
        assert_eq!(decode(&encoded(&deep)), Err(DecodeError::TooDeep));
    }

    #[test]
    fn errors_display_something_actionable() {
        for error in [
            DecodeError::Truncated,
            DecodeError::UnknownMarker(0x42),
            DecodeError::Unsupported("reference (type 0x07)"),
            DecodeError::TooDeep,
            DecodeError::MissingObjectEnd,
        ] {
            let message = error.to_string();
            assert!(message.contains("AMF0"), "{message}");
        }
        assert!(DecodeError::UnknownMarker(0x42)
            .to_string()
            .contains("0x42"));
    }

    fn any_number() -> impl Strategy<Value = f64> {
        use proptest::num::f64;
        f64::POSITIVE | f64::NEGATIVE | f64::NORMAL | f64::SUBNORMAL | f64::ZERO | f64::INFINITE
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any_number().prop_map(Value::Number),
            any::<bool>().prop_map(Value::Boolean),
            any::<String>().prop_map(Value::String),
            Just(Value::Null),
            Just(Value::Undefined),
            (any_number(), any::<i16>())
                .prop_map(|(millis, timezone)| Value::Date { millis, timezone }),
        ];
        leaf.prop_recursive(8, 128, 8, |inner| {
            let properties = prop::collection::vec((any::<String>(), inner.clone()), 0..8);
            prop_oneof![
                properties.clone().prop_map(Value::Object),
                properties.prop_map(Value::EcmaArray),
                prop::collection::vec(inner, 0..8).prop_map(Value::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(value in any_value()) {
            let bytes = encoded(&value);
            prop_assert_eq!(decode(&bytes), Ok((value.clone(), bytes.len())));
            prop_assert_eq!(decode_all(&bytes), Ok(vec![value]));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_reencode_to_a_fixpoint(
            bytes in prop::collection::vec(any::<u8>(), 0..256)
        ) {
            if let Ok((value, used)) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
                let once = encoded(&value);
                let (again, used_again) = decode(&once).expect("re-encoding decodes");
                prop_assert_eq!(used_again, once.len());
                prop_assert_eq!(encoded(&again), once);
            }
            let _ = decode_all(&bytes);
        }

        #[test]
        fn strict_prefixes_of_any_encoding_are_errors(value in any_value()) {
            let bytes = encoded(&value);
            for end in 0..bytes.len() {
                prop_assert!(decode(&bytes[..end]).is_err());
            }
        }
    }
}
