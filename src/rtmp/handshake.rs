//! The client side of the plain ("simple") RTMP handshake, RTMP 1.0 specification section 5.2.
//!
//! ```text
//! client                         server
//!   C0 (version 3) + C1 (1536) ──▶
//!                              ◀── S0 (version) + S1 (1536)
//!   C2 (echo of S1, 1536)      ──▶
//!                              ◀── S2 (1536)
//!   handshake done: chunks flow both ways
//! ```
//!
//! [`Handshake::start`] writes C0 and C1 at once. [`Handshake::receive`] takes the server's bytes
//! in pieces of any size and writes C2 as soon as S0 and S1 are complete: S1's time, then the time
//! we read S1 (`time2`), then S1's 1528 random bytes.
//!
//! S0 must be version 3. Anything else, including 6 (encrypted RTMPE), ends the handshake with
//! [`HandshakeError::UnsupportedVersion`]. S2's content is not checked against C1: servers that
//! speak the Flash "complex" (digest) handshake answer with something other than an echo, and
//! FFmpeg does not check it either; we only wait for its 1536 bytes.
//!
//! # Invariants
//!
//! - C2 is appended exactly once, and only after the last byte of S1 arrived.
//! - `receive` never consumes more than what remains of S0+S1+S2, so bytes after S2 (the server's
//!   first chunks) stay with the caller.
//! - S1 is kept in fixed-size storage inside [`Handshake`]; S0 and S2 are only counted. Nothing
//!   is allocated except what `out` needs to grow.
//! - After an error the handshake stays failed: every later `receive` returns the same error and
//!   consumes nothing.

use std::fmt;

/// Size of C1, S1, C2 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// Size of the random part of C1/S1 (and of the random echo in C2/S2).
pub const RANDOM_SIZE: usize = 1528;

/// The RTMP version this client speaks and requires.
const RTMP_VERSION: u8 = 3;
/// Length of S0.
const S0_SIZE: usize = 1;
/// Offset of S2's first byte in the server's stream (after S0 and S1).
const S2_START: usize = S0_SIZE + HANDSHAKE_SIZE;
/// Length of everything the server sends in the handshake: S0, S1 and S2.
const SERVER_TOTAL: usize = S2_START + HANDSHAKE_SIZE;

/// The client side of the plain RTMP handshake. See the module documentation.
pub struct Handshake {
    /// Bytes of S0+S1+S2 received so far, `0..=SERVER_TOTAL`.
    received: usize,
    /// S1 as it arrives; complete once `received >= S2_START`.
    s1: [u8; HANDSHAKE_SIZE],
    /// The version the server asked for in S0, if it was not 3.
    rejected_version: Option<u8>,
}

impl Handshake {
    /// Begins the handshake: appends C0 and C1 to `out`. `epoch_ms` is C1's time field; `random`
    /// fills C1's random part.
    pub fn start(epoch_ms: u32, random: &[u8; RANDOM_SIZE], out: &mut Vec<u8>) -> Self {
        out.reserve(S0_SIZE + HANDSHAKE_SIZE);
        out.push(RTMP_VERSION);
        out.extend_from_slice(&epoch_ms.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(random);
        Handshake {
            received: 0,
            s1: [0; HANDSHAKE_SIZE],
            rejected_version: None,
        }
    }

    /// Feeds bytes from the server. Returns how many bytes of `input` it consumed: never more
    /// than the rest of S0+S1+S2, so bytes after S2 (the server's first chunks) are left for the
    /// caller. Appends C2 to `out` exactly once, as soon as S0 and S1 are complete. `now_ms` is
    /// C2's time2 field (the time S1 was read).
    ///
    /// Fails if S0 asks for a version other than 3; the handshake then stays failed.
    pub fn receive(
        &mut self,
        input: &[u8],
        now_ms: u32,
        out: &mut Vec<u8>,
    ) -> Result<usize, HandshakeError> {
        if let Some(version) = self.rejected_version {
            return Err(HandshakeError::UnsupportedVersion(version));
        }
        let wanted = SERVER_TOTAL - self.received;
        let input = input.get(..wanted).unwrap_or(input);
        let mut consumed = 0;

        // S0: the version byte.
        if self.received == 0 {
            let Some(&version) = input.first() else {
                return Ok(0);
            };
            if version != RTMP_VERSION {
                self.rejected_version = Some(version);
                return Err(HandshakeError::UnsupportedVersion(version));
            }
            self.received = S0_SIZE;
            consumed = S0_SIZE;
        }

        // S1: kept for the echo in C2.
        if self.received < S2_START {
            let rest = input.get(consumed..).unwrap_or_default();
            let s1_offset = self.received - S0_SIZE;
            let take = rest.len().min(HANDSHAKE_SIZE - s1_offset);
            if let (Some(target), Some(source)) = (
                self.s1.get_mut(s1_offset..s1_offset + take),
                rest.get(..take),
            ) {
                target.copy_from_slice(source);
            }
            self.received += take;
            consumed += take;
            if self.received == S2_START {
                self.write_c2(now_ms, out);
            }
        }

        // S2: only counted; `input` was already cut to what remains of it.
        if self.received >= S2_START {
            let take = input.len() - consumed;
            self.received += take;
            consumed += take;
        }
        Ok(consumed)
    }

    /// True once S2 has been received in full.
    pub fn is_done(&self) -> bool {
        self.received == SERVER_TOTAL
    }

    /// Appends C2: S1's time, `time2`, then S1's random bytes.
    fn write_c2(&self, time2: u32, out: &mut Vec<u8>) {
        let (s1_time, s1_rest) = self.s1.split_at(4);
        let s1_random = s1_rest.get(4..).unwrap_or_default();
        out.reserve(HANDSHAKE_SIZE);
        out.extend_from_slice(s1_time);
        out.extend_from_slice(&time2.to_be_bytes());
        out.extend_from_slice(s1_random);
    }
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("received", &self.received)
            .field("of", &SERVER_TOTAL)
            .field("rejected_version", &self.rejected_version)
            .finish_non_exhaustive()
    }
}

/// Why the handshake failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// S0 asked for an RTMP version other than 3 (6 means encrypted RTMPE).
    UnsupportedVersion(u8),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::UnsupportedVersion(6) => f.write_str(
                "the server answered the RTMP handshake with version 6 (encrypted RTMPE), \
                 which is not supported; use a plain rtmp:// or rtmps:// endpoint",
            ),
            HandshakeError::UnsupportedVersion(version) => write!(
                f,
                "the server answered the RTMP handshake with version {version}, but only \
                 version 3 is supported; is this an RTMP server?"
            ),
        }
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn c1_random() -> [u8; RANDOM_SIZE] {
        let mut random = [0u8; RANDOM_SIZE];
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = (i * 7 + 3) as u8;
        }
        random
    }

    /// S0 (version 3) and an S1 with time 0x01020304, a non-zero "zero" field and patterned random.
    fn s0_s1() -> Vec<u8> {
        let mut bytes = vec![3, 0x01, 0x02, 0x03, 0x04, 0xAA, 0xBB, 0xCC, 0xDD];
        bytes.extend((0..RANDOM_SIZE).map(|i| (i * 13 + 1) as u8));
        assert_eq!(bytes.len(), 1 + HANDSHAKE_SIZE);
        bytes
    }

    fn s2() -> Vec<u8> {
        (0..HANDSHAKE_SIZE).map(|i| (i * 5) as u8).collect()
    }

    fn expected_c2(time2: u32) -> Vec<u8> {
        let s1 = s0_s1();
        let mut c2 = vec![0x01, 0x02, 0x03, 0x04];
        c2.extend_from_slice(&time2.to_be_bytes());
        c2.extend_from_slice(&s1[9..]);
        c2
    }

    #[test]
    fn start_writes_c0_and_c1() {
        let random = c1_random();
        let mut out = Vec::new();
        let handshake = Handshake::start(0x1122_3344, &random, &mut out);
        let mut expected = vec![0x03, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00];
        expected.extend_from_slice(&random);
        assert_eq!(out, expected);
        assert_eq!(out.len(), 1 + HANDSHAKE_SIZE);
        assert!(!handshake.is_done());
    }

    #[test]
    fn c2_echoes_s1_with_time2() {
        let mut out = Vec::new();
        let mut handshake = Handshake::start(0, &c1_random(), &mut out);
        out.clear();
        let s0_s1 = s0_s1();
        assert_eq!(
            handshake.receive(&s0_s1, 0x0A0B_0C0D, &mut out),
            Ok(s0_s1.len())
        );
        assert_eq!(out, expected_c2(0x0A0B_0C0D));
        assert_eq!(out.len(), HANDSHAKE_SIZE);
        assert!(!handshake.is_done());

        let s2 = s2();
        assert_eq!(handshake.receive(&s2, 99, &mut out), Ok(HANDSHAKE_SIZE));
        assert!(handshake.is_done());
        assert_eq!(out.len(), HANDSHAKE_SIZE, "C2 is written exactly once");
    }

    #[test]
    fn byte_by_byte_and_in_one_piece_give_the_same_output() {
        let server: Vec<u8> = [s0_s1(), s2()].concat();

        let mut whole_out = Vec::new();
        let mut whole = Handshake::start(5, &c1_random(), &mut whole_out);
        assert_eq!(whole.receive(&server, 77, &mut whole_out), Ok(server.len()));
        assert!(whole.is_done());

        let mut piece_out = Vec::new();
        let mut pieces = Handshake::start(5, &c1_random(), &mut piece_out);
        for (i, byte) in server.iter().enumerate() {
            assert!(!pieces.is_done());
            let before = piece_out.len();
            assert_eq!(pieces.receive(&[*byte], 77, &mut piece_out), Ok(1));
            // C2 appears exactly when the last byte of S1 arrives, never earlier.
            if i + 1 == 1 + HANDSHAKE_SIZE {
                assert_eq!(piece_out.len(), before + HANDSHAKE_SIZE);
            } else {
                assert_eq!(piece_out.len(), before, "output after byte {i}");
            }
        }
        assert!(pieces.is_done());
        assert_eq!(piece_out, whole_out);
    }

    #[test]
    fn uneven_pieces_give_the_same_output() {
        let server: Vec<u8> = [s0_s1(), s2()].concat();
        let mut whole_out = Vec::new();
        let mut whole = Handshake::start(5, &c1_random(), &mut whole_out);
        whole.receive(&server, 77, &mut whole_out).unwrap();

        for piece_size in [2, 3, 100, 1000, 1537, 2000] {
            let mut out = Vec::new();
            let mut handshake = Handshake::start(5, &c1_random(), &mut out);
            for piece in server.chunks(piece_size) {
                assert_eq!(handshake.receive(piece, 77, &mut out), Ok(piece.len()));
            }
            assert!(handshake.is_done());
            assert_eq!(out, whole_out, "pieces of {piece_size}");
        }
    }

    #[test]
    fn c2_waits_for_all_of_s1() {
        let mut out = Vec::new();
        let mut handshake = Handshake::start(0, &c1_random(), &mut out);
        out.clear();
        let s0_s1 = s0_s1();
        let (most, last) = s0_s1.split_at(s0_s1.len() - 1);
        assert_eq!(handshake.receive(most, 1, &mut out), Ok(most.len()));
        assert!(out.is_empty());
        assert_eq!(handshake.receive(&[], 2, &mut out), Ok(0));
        assert!(out.is_empty());
        // time2 is the time of the call that completed S1.
        assert_eq!(handshake.receive(last, 3, &mut out), Ok(1));
        assert_eq!(out, expected_c2(3));
    }

    #[test]
    fn bytes_after_s2_are_not_consumed() {
        let first_chunk = [0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01];
        let server: Vec<u8> = [s0_s1(), s2(), first_chunk.to_vec()].concat();
        let mut out = Vec::new();
        let mut handshake = Handshake::start(0, &c1_random(), &mut out);
        let consumed = handshake.receive(&server, 0, &mut out).unwrap();
        assert_eq!(consumed, 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(&server[consumed..], &first_chunk);
        assert!(handshake.is_done());

        // Once done, nothing more is taken and nothing is written.
        let before = out.len();
        assert_eq!(handshake.receive(&first_chunk, 0, &mut out), Ok(0));
        assert_eq!(out.len(), before);

        // Same with the tail of S2 arriving together with the chunks.
        let mut out = Vec::new();
        let mut handshake = Handshake::start(0, &c1_random(), &mut out);
        let split = 1 + HANDSHAKE_SIZE + 100;
        assert_eq!(handshake.receive(&server[..split], 0, &mut out), Ok(split));
        assert_eq!(
            handshake.receive(&server[split..], 0, &mut out),
            Ok(HANDSHAKE_SIZE - 100)
        );
        assert!(handshake.is_done());
    }

    #[test]
    fn s2_content_is_not_checked() {
        let server: Vec<u8> = [s0_s1(), vec![0xEE; HANDSHAKE_SIZE]].concat();
        let mut out = Vec::new();
        let mut handshake = Handshake::start(0, &c1_random(), &mut out);
        assert_eq!(handshake.receive(&server, 0, &mut out), Ok(server.len()));
        assert!(handshake.is_done());
    }

    #[test]
    fn wrong_version_is_rejected() {
        for version in [0u8, 6, 31, b'H'] {
            let mut out = Vec::new();
            let mut handshake = Handshake::start(0, &c1_random(), &mut out);
            out.clear();
            let mut server = s0_s1();
            server[0] = version;
            assert_eq!(
                handshake.receive(&server, 0, &mut out),
                Err(HandshakeError::UnsupportedVersion(version))
            );
            assert!(out.is_empty(), "no C2 after a rejected S0");
            // It stays failed.
            assert_eq!(
                handshake.receive(&server[1..], 0, &mut out),
                Err(HandshakeError::UnsupportedVersion(version))
            );
            assert!(!handshake.is_done());
        }
    }

    #[test]
    fn errors_name_the_version() {
        let message = HandshakeError::UnsupportedVersion(6).to_string();
        assert!(
            message.contains('6') && message.contains("RTMPE"),
            "{message}"
        );
        let message = HandshakeError::UnsupportedVersion(72).to_string();
        assert!(message.contains("72") && message.contains('3'), "{message}");
    }

    #[test]
    fn empty_input_consumes_nothing() {
        let mut out = Vec::new();
        let mut handshake = Handshake::start(0, &c1_random(), &mut out);
        out.clear();
        assert_eq!(handshake.receive(&[], 0, &mut out), Ok(0));
        assert!(out.is_empty());
        assert!(!handshake.is_done());
    }
}
