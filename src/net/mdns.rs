//! One-shot Multicast DNS (RFC 6762 §5.1) as a plain state machine over bytes: the query for the
//! A and AAAA records of a `.local` name, and the parser of the responses. No socket, no clock:
//! [`crate::net`] sends and receives, this module decides what the bytes say.
//!
//! The query is a standard DNS query with ID 0 and the QU bit (unicast response requested) in each
//! question's class. Sent from an ephemeral port, it is a "legacy unicast" query too (§6.7):
//! responders answer it by unicast to that port, echoing the ID and the question.
//!
//! Invariants: no input makes the parser panic, loop or allocate more than its output; names are
//! read with compression pointers that must point strictly backwards (so every name ends) and are
//! at most 255 bytes; a record counts only if its name equals the asked name (ASCII
//! case-insensitively), its class is IN (the top bit, cache-flush, aside) and its data has the
//! size of its type, in the answer or additional section (the authority section holds probes'
//! proposals, not answers).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The mDNS port: responders listen here and answer from here.
pub const PORT: u16 = 5353;
/// The IPv4 mDNS group.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// When the query is sent, in milliseconds from the start of a lookup, as long as it is within
/// the lookup's budget: once, and again after a second (§5.2: at least a second apart, doubling).
pub const SEND_AT_MS: [u64; 2] = [0, 1000];
/// How long a lookup waits for an answer, at most (the connection timeout may cut it shorter):
/// a second after the first query, two after the second.
pub const BUDGET_MS: u64 = 3000;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// The top bit of a question's class: a unicast response is requested (§5.4).
const QU: u16 = 0x8000;
/// The top bit of a record's class: cache-flush (§10.2), this packet holds the whole set.
const CACHE_FLUSH: u16 = 0x8000;
const HEADER_SIZE: usize = 12;
/// The largest name in wire form, the root label included (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;

/// Whether `host` is a `.local` name, which only mDNS resolves: it ends in `.local` (any case,
/// with or without a trailing dot) after at least one label.
pub fn is_local_name(host: &str) -> bool {
    let host = host.as_bytes();
    let host = host.strip_suffix(b".").unwrap_or(host);
    host.len() > b".local".len() && host[host.len() - 6..].eq_ignore_ascii_case(b".local")
}

/// Why a host name cannot be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// An empty label (`a..local`, a leading dot).
    EmptyLabel,
    /// A label longer than 63 bytes.
    LongLabel,
    /// More than 255 bytes in wire form.
    LongName,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::EmptyLabel => "it has an empty label",
            NameError::LongLabel => "a label is longer than 63 bytes",
            NameError::LongName => "it is longer than 255 bytes",
        })
    }
}

/// Why a received packet was ignored as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// It ends inside the header, a name or a record.
    Truncated,
    /// It is a query (QR clear), not a response.
    NotAResponse,
    /// Its opcode is not a standard query, or its response code is not 0 (§18.3, §18.11: ignored).
    Unexpected,
    /// A label type other than a label or a pointer, a pointer that does not point backwards, or a
    /// name longer than 255 bytes.
    BadName,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "truncated",
            ParseError::NotAResponse => "a query, not a response",
            ParseError::Unexpected => "an unexpected opcode or response code",
            ParseError::BadName => "a malformed name",
        })
    }
}

/// An A or AAAA record for the asked name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub address: IpAddr,
    /// Seconds; 0 is a goodbye: the address is no longer valid (§10.1).
    pub ttl: u32,
    /// The cache-flush bit: the records of this type in this packet are the whole set (§10.2).
    pub cache_flush: bool,
}

/// `host` in wire form: length-prefixed labels and the root label. One trailing dot is allowed.
pub fn encode_name(host: &str) -> Result<Vec<u8>, NameError> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut wire = Vec::with_capacity(host.len() + 2);
    for label in host.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(NameError::LongLabel);
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    if wire.len() > MAX_NAME {
        return Err(NameError::LongName);
    }
    Ok(wire)
}

/// The one-shot query for the A and AAAA records of the name `wire_name` (from [`encode_name`]):
/// ID 0, no flags, two questions with the QU bit, the second naming the first by a pointer.
pub fn build_query(wire_name: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_SIZE + wire_name.len() + 10);
    // ID 0, flags 0 (a standard query), 2 questions, no records.
    packet.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
    packet.extend_from_slice(wire_name);
    packet.extend_from_slice(&TYPE_A.to_be_bytes());
    packet.extend_from_slice(&(CLASS_IN | QU).to_be_bytes());
    // A pointer to the name at offset 12.
    packet.extend_from_slice(&[0xc0, HEADER_SIZE as u8]);
    packet.extend_from_slice(&TYPE_AAAA.to_be_bytes());
    packet.extend_from_slice(&(CLASS_IN | QU).to_be_bytes());
    packet
}

/// Reads the name that starts at `start` into `out` in wire form (uncompressed), and returns the
/// offset just past it where it starts (past its first pointer, if any) and its length in `out`.
fn read_name(
    packet: &[u8],
    start: usize,
    out: &mut [u8; MAX_NAME],
) -> Result<(usize, usize), ParseError> {
    let mut pos = start;
    let mut end = None;
    let mut len = 0;
    // Pointers must point before this: it falls with every pointer, so a name ends.
    let mut limit = start;
    loop {
        let first = *packet.get(pos).ok_or(ParseError::Truncated)?;
        match first & 0xc0 {
            0x00 => {
                let size = first as usize;
                // Room for this label and the root label that must still follow.
                if len + 1 + size + 1 > MAX_NAME {
                    return Err(ParseError::BadName);
                }
                let label = packet
                    .get(pos + 1..pos + 1 + size)
                    .ok_or(ParseError::Truncated)?;
                out[len] = first;
                out[len + 1..len + 1 + size].copy_from_slice(label);
                len += 1 + size;
                pos += 1 + size;
                if size == 0 {
                    return Ok((end.unwrap_or(pos), len));
                }
            }
            0xc0 => {
                let second = *packet.get(pos + 1).ok_or(ParseError::Truncated)?;
                let target = (usize::from(first & 0x3f) << 8) | usize::from(second);
                if target >= limit {
                    return Err(ParseError::BadName);
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            _ => return Err(ParseError::BadName),
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The A and AAAA records for `wire_name` in a response, in packet order; `Err` when the packet
/// is not a well-formed response and is to be ignored whole.
pub fn parse_response(packet: &[u8], wire_name: &[u8]) -> Result<Vec<Record>, ParseError> {
    let header = packet.get(..HEADER_SIZE).ok_or(ParseError::Truncated)?;
    let flags = u16_at(header, 2);
    if flags & 0x8000 == 0 {
        return Err(ParseError::NotAResponse);
    }
    if (flags >> 11) & 0xf != 0 || flags & 0xf != 0 {
        return Err(ParseError::Unexpected);
    }
    let questions = u16_at(header, 4);
    let answers = usize::from(u16_at(header, 6));
    let authorities = usize::from(u16_at(header, 8));
    let additionals = usize::from(u16_at(header, 10));
    let mut name = [0u8; MAX_NAME];
    let mut pos = HEADER_SIZE;
    // Each question and record takes at least 5 bytes, so a false count runs out of bytes.
    for _ in 0..questions {
        let (after, _) = read_name(packet, pos, &mut name)?;
        pos = after + 4;
        if pos > packet.len() {
            return Err(ParseError::Truncated);
        }
    }
    let mut records = Vec::new();
    for index in 0..answers + authorities + additionals {
        let (after, name_len) = read_name(packet, pos, &mut name)?;
        let fixed = packet.get(after..after + 10).ok_or(ParseError::Truncated)?;
        let rtype = u16_at(fixed, 0);
        let class = u16_at(fixed, 2);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let data_len = usize::from(u16_at(fixed, 8));
        let data = packet
            .get(after + 10..after + 10 + data_len)
            .ok_or(ParseError::Truncated)?;
        pos = after + 10 + data_len;
        let in_authority = (answers..answers + authorities).contains(&index);
        if in_authority
            || class & !CACHE_FLUSH != CLASS_IN
            || !name[..name_len].eq_ignore_ascii_case(wire_name)
        {
            continue;
        }
        let address = match (rtype, data) {
            (TYPE_A, &[a, b, c, d]) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            (TYPE_AAAA, data) if data.len() == 16 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(data);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => continue,
        };
        records.push(Record {
            address,
            ttl,
            cache_flush: class & CACHE_FLUSH != 0,
        });
    }
    Ok(records)
}

/// One lookup of one name: the query to send, and the addresses learnt from the responses so far.
#[derive(Clone, Debug)]
pub struct Lookup {
    wire_name: Vec<u8>,
    query: Vec<u8>,
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

impl Lookup {
    pub fn new(host: &str) -> Result<Lookup, NameError> {
        let wire_name = encode_name(host)?;
        let query = build_query(&wire_name);
        Ok(Lookup {
            wire_name,
            query,
            v4: Vec::new(),
            v6: Vec::new(),
        })
    }

    /// The query packet, the same for every send.
    pub fn query(&self) -> &[u8] {
        &self.query
    }

    /// Takes one received packet: its records for the name update the addresses (a cache-flush
    /// record replaces the earlier addresses of its family, a TTL of 0 removes one). Returns how
    /// many records for the name it held; `Err` when it was ignored.
    pub fn handle(&mut self, packet: &[u8]) -> Result<usize, ParseError> {
        let records = parse_response(packet, &self.wire_name)?;
        if records.iter().any(|r| r.cache_flush && r.address.is_ipv4()) {
            self.v4.clear();
        }
        if records.iter().any(|r| r.cache_flush && r.address.is_ipv6()) {
            self.v6.clear();
        }
        for record in &records {
            match record.address {
                IpAddr::V4(address) => update(&mut self.v4, address, record.ttl),
                IpAddr::V6(address) => update(&mut self.v6, address, record.ttl),
            }
        }
        Ok(records.len())
    }

    /// The addresses known now, IPv4 first, each family in the order the responses gave them.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.v4.iter().copied().map(IpAddr::V4);
        v4.chain(self.v6.iter().copied().map(IpAddr::V6)).collect()
    }
}

fn update<T: PartialEq>(addresses: &mut Vec<T>, address: T, ttl: u32) {
    let known = addresses.iter().position(|a| *a == address);
    match (known, ttl) {
        (Some(at), 0) => {
            addresses.remove(at);
        }
        (None, 1..) => addresses.push(address),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NVR: &[u8] = b"\x03nvr\x05local\x00";

    /// A response header: ID, flags (QR and AA), and the four counts.
    fn header(id: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut packet = id.to_be_bytes().to_vec();
        packet.extend_from_slice(&0x8400u16.to_be_bytes());
        for count in counts {
            packet.extend_from_slice(&count.to_be_bytes());
        }
        packet
    }

    fn record(name: &[u8], rtype: u16, class: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
        let mut bytes = name.to_vec();
        bytes.extend_from_slice(&rtype.to_be_bytes());
        bytes.extend_from_slice(&class.to_be_bytes());
        bytes.extend_from_slice(&ttl.to_be_bytes());
        bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn local_names() {
        for name in ["nvr.local", "NVR.LOCAL", "nvr.Local.", "a.b.local"] {
            assert!(is_local_name(name), "{name}");
        }
        for name in [
            "local",
            ".local",
            "nvr.local..",
            "nvr.locals",
            "nvrlocal",
            "192.168.1.2",
            "nvr.example",
            "é.local.é",
        ] {
            assert!(!is_local_name(name), "{name}");
        }
        assert!(is_local_name("é.local"));
    }

    #[test]
    fn encodes_names() {
        assert_eq!(encode_name("nvr.local").unwrap(), NVR);
        assert_eq!(encode_name("nvr.local.").unwrap(), NVR);
        assert_eq!(encode_name("a..local"), Err(NameError::EmptyLabel));
        assert_eq!(encode_name(".local"), Err(NameError::EmptyLabel));
        assert_eq!(encode_name("nvr.local.."), Err(NameError::EmptyLabel));
        let long = format!("{}.local", "a".repeat(64));
        assert_eq!(encode_name(&long), Err(NameError::LongLabel));
        let label = "a".repeat(63);
        // 4 labels of 63 and `local`: 4 * 64 + 6 + 1 bytes.
        let name = format!("{label}.{label}.{label}.{label}.local");
        assert_eq!(encode_name(&name), Err(NameError::LongName));
        let name = format!("{label}.{label}.{label}.local");
        assert_eq!(encode_name(&name).unwrap().len(), 3 * 64 + 7);
    }

    #[test]
    fn query_is_byte_exact() {
        let lookup = Lookup::new("nvr.local").unwrap();
        let expected: &[u8] = b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\
            \x03nvr\x05local\x00\x00\x01\x80\x01\
            \xc0\x0c\x00\x1c\x80\x01";
        assert_eq!(lookup.query(), expected);
    }

    fn from_hex(hex: &str) -> Vec<u8> {
        let hex: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
        hex.chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// avahi-daemon 0.8 (Debian 12), host name `testnvr`, on a network namespace's loopback,
    /// answering our query for `testnvr.local` from an ephemeral port: a legacy unicast response
    /// (§6.7): the ID and questions echoed, TTL 10, no cache-flush.
    const AVAHI_LEGACY_UNICAST: &str = "0000 8400 0002 0002 0000 0000
        07746573746e7672 056c6f63616c 00 0001 8001  c00c 001c 8001
        c00c 001c 0001 0000000a 0010 00000000000000000000000000000001
        c00c 0001 0001 0000000a 0004 7f000001";

    /// The same avahi answering our query for `TestNVR.local` sent from port 5353 (a QU query):
    /// no questions, its own spelling of the name, TTL 120, cache-flush set.
    const AVAHI_QU_RESPONSE: &str = "0000 8400 0000 0002 0000 0000
        07746573746e7672 056c6f63616c 00 001c 8001 00000078 0010 00000000000000000000000000000001
        c00c 0001 8001 00000078 0004 7f000001";

    #[test]
    fn reads_avahi_responses() {
        let loopback = || [Ipv6Addr::LOCALHOST.into(), IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let mut lookup = Lookup::new("testnvr.local").unwrap();
        assert_eq!(lookup.handle(&from_hex(AVAHI_LEGACY_UNICAST)), Ok(2));
        let records = parse_response(&from_hex(AVAHI_LEGACY_UNICAST), lookup.wire_name.as_slice());
        let addresses: Vec<IpAddr> = records.unwrap().iter().map(|r| r.address).collect();
        assert_eq!(addresses, loopback());
        assert_eq!(
            lookup.addresses(),
            [IpAddr::V4(Ipv4Addr::LOCALHOST), Ipv6Addr::LOCALHOST.into()]
        );

        let mut lookup = Lookup::new("TestNVR.local").unwrap();
        let records = parse_response(&from_hex(AVAHI_QU_RESPONSE), &lookup.wire_name).unwrap();
        assert!(records.iter().all(|r| r.cache_flush && r.ttl == 120));
        assert_eq!(
            records.iter().map(|r| r.address).collect::<Vec<_>>(),
            loopback()
        );
        assert_eq!(lookup.handle(&from_hex(AVAHI_QU_RESPONSE)), Ok(2));
        assert_eq!(lookup.addresses().len(), 2);

        // Not an answer for another name.
        let mut other = Lookup::new("nvr.local").unwrap();
        assert_eq!(other.handle(&from_hex(AVAHI_LEGACY_UNICAST)), Ok(0));
        assert!(other.addresses().is_empty());
    }

    #[test]
    fn reads_answers_and_additionals() {
        // The legacy unicast answer to our query (ID echoed, the questions repeated, no
        // cache-flush), the AAAA in the additional section.
        let mut packet = header(0, [1, 1, 0, 1]);
        packet.extend_from_slice(NVR);
        packet.extend_from_slice(&[0, 1, 0x80, 1]);
        packet.extend(record(b"\xc0\x0c", 1, 1, 10, &[192, 168, 1, 20]));
        let v6: Ipv6Addr = "2001:db8::20".parse().unwrap();
        packet.extend(record(b"\xc0\x0c", 28, 1, 10, &v6.octets()));
        let records = parse_response(&packet, NVR).unwrap();
        assert_eq!(
            records,
            [
                Record {
                    address: v4(192, 168, 1, 20),
                    ttl: 10,
                    cache_flush: false
                },
                Record {
                    address: IpAddr::V6(v6),
                    ttl: 10,
                    cache_flush: false
                },
            ]
        );
    }

    #[test]
    fn matches_names_case_insensitively_through_pointers() {
        // The answer's name is `NVR` and a pointer to `Local` inside another record's name.
        let mut packet = header(0, [0, 3, 0, 0]);
        let other = b"\x07printer\x05Local\x00";
        packet.extend(record(other, 1, 1, 120, &[10, 0, 0, 9]));
        let local_at = HEADER_SIZE + 8;
        packet.extend(record(
            &[3, b'N', b'V', b'R', 0xc0, local_at as u8],
            1,
            0x8001,
            120,
            &[10, 0, 0, 1],
        ));
        // `nvr.local.local` is not `nvr.local`.
        packet.extend(record(
            &[
                3,
                b'n',
                b'v',
                b'r',
                5,
                b'l',
                b'o',
                b'c',
                b'a',
                b'l',
                0xc0,
                local_at as u8,
            ],
            1,
            1,
            120,
            &[10, 0, 0, 2],
        ));
        let records = parse_response(&packet, NVR).unwrap();
        assert_eq!(
            records,
            [Record {
                address: v4(10, 0, 0, 1),
                ttl: 120,
                cache_flush: true
            }]
        );
    }

    #[test]
    fn ignores_other_records() {
        let mut packet = header(0, [0, 5, 1, 1]);
        // Wrong class (CH), wrong size for an A, a PTR, an A in the authority section.
        packet.extend(record(NVR, 1, 3, 120, &[10, 0, 0, 1]));
        packet.extend(record(NVR, 1, 1, 120, &[10, 0, 0, 1, 0]));
        packet.extend(record(NVR, 28, 1, 120, &[10, 0, 0, 1]));
        packet.extend(record(NVR, 12, 1, 120, NVR));
        packet.extend(record(NVR, 16, 0x8001, 120, b"\x05hello"));
        packet.extend(record(NVR, 1, 1, 120, &[10, 0, 0, 3]));
        packet.extend(record(NVR, 1, 1, 120, &[10, 0, 0, 4]));
        let records = parse_response(&packet, NVR).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].address, v4(10, 0, 0, 4));
    }

    #[test]
    fn ignores_queries_errors_and_malformed_packets() {
        let answer = record(NVR, 1, 1, 120, &[10, 0, 0, 1]);
        let with_flags = |flags: u16| {
            let mut packet = header(0, [0, 1, 0, 0]);
            packet[2..4].copy_from_slice(&flags.to_be_bytes());
            packet.extend_from_slice(&answer);
            parse_response(&packet, NVR)
        };
        assert_eq!(with_flags(0x0000), Err(ParseError::NotAResponse));
        assert_eq!(with_flags(0x8403), Err(ParseError::Unexpected));
        assert_eq!(with_flags(0xac00), Err(ParseError::Unexpected));
        assert_eq!(
            with_flags(0x8600).unwrap().len(),
            1,
            "TC is no reason to ignore it"
        );
        assert_eq!(parse_response(&[0x84; 11], NVR), Err(ParseError::Truncated));

        // Every strict prefix of a good response is truncated.
        let mut packet = header(0, [1, 1, 0, 0]);
        packet.extend_from_slice(NVR);
        packet.extend_from_slice(&[0, 1, 0, 1]);
        packet.extend(record(b"\xc0\x0c", 1, 1, 120, &[10, 0, 0, 1]));
        assert_eq!(parse_response(&packet, NVR).unwrap().len(), 1);
        for end in HEADER_SIZE..packet.len() {
            assert_eq!(
                parse_response(&packet[..end], NVR),
                Err(ParseError::Truncated),
                "{end}"
            );
        }

        // A count larger than the records.
        let mut packet = header(0, [0, 0xffff, 0xffff, 0xffff]);
        packet.extend_from_slice(&answer);
        assert_eq!(parse_response(&packet, NVR), Err(ParseError::Truncated));
    }

    #[test]
    fn pointers_must_point_backwards() {
        let try_name = |name: &[u8]| {
            let mut packet = header(0, [0, 1, 0, 0]);
            packet.extend(record(name, 1, 1, 120, &[10, 0, 0, 1]));
            parse_response(&packet, NVR)
        };
        // To itself, forwards, in a loop of two (the second points forward).
        assert_eq!(try_name(b"\xc0\x0c"), Err(ParseError::BadName));
        assert_eq!(try_name(b"\xc0\x0e"), Err(ParseError::BadName));
        assert_eq!(try_name(b"\x01a\xc0\x0c"), Err(ParseError::BadName));
        // Extended label types.
        assert_eq!(try_name(b"\x41a\x00"), Err(ParseError::BadName));
        assert_eq!(try_name(b"\x81a\x00"), Err(ParseError::BadName));
        // A pointer back into the header reads it as a name (here a good one: `\x00`, the root).
        assert_eq!(try_name(b"\xc0\x03").map(|r| r.len()), Ok(0));
        assert_eq!(try_name(b"\xc0\x02"), Err(ParseError::BadName));
    }

    #[test]
    fn names_longer_than_255_bytes_are_malformed() {
        // Four labels of 63, then a pointer to a `local` label: 256 + 7 bytes.
        let mut packet = header(0, [0, 2, 0, 0]);
        packet.extend(record(NVR, 1, 1, 120, &[10, 0, 0, 1]));
        let mut name = Vec::new();
        for _ in 0..4 {
            name.push(63);
            name.extend_from_slice(&[b'a'; 63]);
        }
        name.extend_from_slice(&[0xc0, 16]);
        packet.extend(record(&name, 1, 1, 120, &[10, 0, 0, 2]));
        assert_eq!(parse_response(&packet, NVR), Err(ParseError::BadName));
        // Three are fine, and another name.
        let mut packet = header(0, [0, 2, 0, 0]);
        packet.extend(record(NVR, 1, 1, 120, &[10, 0, 0, 1]));
        packet.extend(record(&name[64..], 1, 1, 120, &[10, 0, 0, 2]));
        assert_eq!(parse_response(&packet, NVR).unwrap().len(), 1);
    }

    #[test]
    fn lookup_honours_cache_flush_and_goodbyes() {
        let mut lookup = Lookup::new("nvr.LOCAL.").unwrap();
        let packet = |records: &[(u8, u16, u32)]| {
            let mut packet = header(0, [0, records.len() as u16, 0, 0]);
            for &(last, class, ttl) in records {
                packet.extend(record(
                    b"\x03Nvr\x05local\x00",
                    1,
                    class,
                    ttl,
                    &[10, 0, 0, last],
                ));
            }
            packet
        };
        let v6 = "fd00::1".parse::<Ipv6Addr>().unwrap();
        let mut aaaa = header(0, [0, 0, 0, 1]);
        aaaa.extend(record(NVR, 28, 0x8001, 120, &v6.octets()));

        assert_eq!(lookup.handle(&packet(&[(1, 1, 120), (2, 1, 120)])), Ok(2));
        assert_eq!(lookup.handle(&aaaa), Ok(1));
        assert_eq!(lookup.handle(&packet(&[(3, 1, 120), (1, 1, 120)])), Ok(2));
        assert_eq!(
            lookup.addresses(),
            [
                v4(10, 0, 0, 1),
                v4(10, 0, 0, 2),
                v4(10, 0, 0, 3),
                IpAddr::V6(v6)
            ]
        );
        // A goodbye for .2; a goodbye for an unknown address changes nothing.
        lookup.handle(&packet(&[(2, 1, 0), (9, 1, 0)])).unwrap();
        assert_eq!(
            lookup.addresses(),
            [v4(10, 0, 0, 1), v4(10, 0, 0, 3), IpAddr::V6(v6)]
        );
        // Cache-flush: this packet's A records are all there are; the AAAA stays.
        lookup
            .handle(&packet(&[(4, 0x8001, 120), (5, 1, 120)]))
            .unwrap();
        assert_eq!(
            lookup.addresses(),
            [v4(10, 0, 0, 4), v4(10, 0, 0, 5), IpAddr::V6(v6)]
        );
        // An ignored packet changes nothing.
        assert_eq!(lookup.handle(&[0; 12]), Err(ParseError::NotAResponse));
        assert_eq!(lookup.addresses().len(), 3);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_response(&bytes, NVR);
        }

        #[test]
        fn never_panics_on_mutated_responses(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut packet = header(0, [1, 2, 0, 1]);
            packet.extend_from_slice(NVR);
            packet.extend_from_slice(&[0, 1, 0x80, 1]);
            packet.extend(record(b"\xc0\x0c", 1, 0x8001, 120, &[10, 0, 0, 1]));
            packet.extend(record(b"\x03NVR\xc0\x10", 1, 1, 120, &[10, 0, 0, 2]));
            packet.extend(record(b"\xc0\x0c", 28, 1, 120, &[0xfd; 16]));
            for (at, value) in flips {
                let len = packet.len();
                packet[at % len] = value;
            }
            packet.truncate(cut % (packet.len() + 1));
            let mut lookup = Lookup::new("nvr.local").unwrap();
            if let Ok(count) = lookup.handle(&packet) {
                prop_assert!(lookup.addresses().len() <= count);
            }
        }
    }
}
