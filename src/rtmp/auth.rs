//! Publisher authentication: the Adobe (`authmod=adobe`) and Limelight (`authmod=llnw`)
//! challenge-response schemes, as FFmpeg implements them (libavformat/rtmpproto.c:
//! `handle_connect_error`, `do_adobe_auth`, `do_llnw_auth`). Sans-IO: no socket, no clock; the
//! client's random value is passed in.
//!
//! The exchange, one TCP connection per step, each step a fresh handshake and `connect`:
//!
//! 1. `connect` with the plain app and tcUrl. A server that wants authentication answers
//!    `_error` with a description such as
//!    `[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : `.
//! 2. `connect` again with `?authmod=adobe&user=USER` appended to both the app and the tcUrl.
//!    The server answers with its challenge:
//!    `[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=needauth&user=USER&salt=SALT&challenge=CHALLENGE&opaque=OPAQUE`
//!    (Limelight: `... [ authmod=llnw ] : ?reason=needauth&user=USER&nonce=NONCE`).
//! 3. `connect` again with the response appended:
//!    `?authmod=adobe&user=USER&challenge=C2&response=RESPONSE[&opaque=OPAQUE]` or
//!    `?authmod=llnw&user=USER&nonce=NONCE&cnonce=CNONCE&nc=00000001&response=RESPONSE`.
//!    The server accepts (`_result`) or answers `?reason=authfailed` (wrong password) or
//!    `?reason=nosuchuser`.
//!
//! As in FFmpeg, the user name and password are used exactly as they appear in the URL: FFmpeg's
//! `rtmp_open` copies them out of `av_url_split`'s authorization part without percent-decoding,
//! and puts the user name into the query unescaped. The user name that enters the hashes and the
//! response query is the one the server sends back in its challenge (`user=`), as in FFmpeg and
//! librtmp.
//!
//! MD5 (RFC 1321) and base64 (RFC 4648, standard alphabet, padded) are written out here: together
//! they are about a hundred lines, are tested against the RFCs' vectors, and spare the crate two
//! dependencies.
//!
//! Secrets: neither `Debug` nor `Display` of [`Authenticator`] shows the password or the response
//! query (the response is derived from the password); [`Authenticator::connect_query_redacted`]
//! is the form to log. [`AuthStep::Fail`] messages never contain the password.

use std::fmt;

/// The two challenge-response schemes FFmpeg speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `authmod=adobe`: Adobe Media Server, Wowza, Nimble, ...
    Adobe,
    /// `authmod=llnw`: Limelight Networks, an HTTP-Digest-like scheme.
    Limelight,
}

impl Scheme {
    /// The `authmod` value.
    pub fn authmod(self) -> &'static str {
        match self {
            Scheme::Adobe => "adobe",
            Scheme::Limelight => "llnw",
        }
    }
}

/// What to do after the server refused `connect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Reconnect at once (new TCP connection, handshake, `connect`) with
    /// [`Authenticator::connect_query`] appended to the app and the tcUrl.
    Retry,
    /// Authentication cannot succeed (wrong credentials, missing credentials, unsupported
    /// scheme, or the server refused the response): stop retrying. The message names the
    /// problem and never contains the password.
    Fail(String),
    /// The rejection is not about authentication: handle it as any other rejection.
    NotAuth,
}

/// Where the exchange is: what the next `connect` carries.
#[derive(Clone, PartialEq, Eq)]
enum Stage {
    /// Nothing learned yet: the next connect is plain.
    Plain,
    /// The server named its scheme (`code=403 need auth`); the next connect carries
    /// `?authmod=..&user=..` to ask for a challenge.
    Announced { scheme: Scheme, query: String },
    /// The challenge was answered (FFmpeg's `auth_tried`); the next connect carries the response.
    Responded { scheme: Scheme, query: String },
}

/// Per-destination authentication state, kept across the reconnects the schemes need.
///
/// Lifecycle: create it with the URL's credentials (empty strings when the URL has none: a
/// server that then asks for authentication gets a clear [`AuthStep::Fail`]). Before each
/// `connect`, append [`connect_query`](Self::connect_query) (if any) to the app and the tcUrl.
/// When the server refuses `connect` with `_error`, pass its `description` to
/// [`on_connect_rejected`](Self::on_connect_rejected). Call [`reset`](Self::reset) when a
/// connection ends for any other reason (transport error, or after a successful connect), so
/// that the next session starts from a plain connect as a new FFmpeg run would, instead of
/// replaying a spent one-time response.
#[derive(Clone)]
pub struct Authenticator {
    user: String,
    password: String,
    app: String,
    stage: Stage,
}

impl Authenticator {
    /// `user` and `password` as they appear in the URL (not percent-decoded, as in FFmpeg);
    /// `app` is the plain application name (`app` or `app/instance`, no query), which the
    /// Limelight response hashes.
    pub fn new(user: String, password: String, app: String) -> Authenticator {
        Authenticator {
            user,
            password,
            app,
            stage: Stage::Plain,
        }
    }

    /// The suffix to append, verbatim, to both the app and the tcUrl of the next `connect`
    /// (FFmpeg's `auth_params`, written with `ff_amf_write_string2(&p, rt->app, rt->auth_params)`).
    /// It starts with `?`. `None` before the server asked for authentication: the first connect
    /// is plain, as in FFmpeg. It contains the response, which is derived from the password:
    /// log [`connect_query_redacted`](Self::connect_query_redacted) instead.
    pub fn connect_query(&self) -> Option<String> {
        match &self.stage {
            Stage::Plain => None,
            Stage::Announced { query, .. } | Stage::Responded { query, .. } => Some(query.clone()),
        }
    }

    /// [`connect_query`](Self::connect_query) with the `response` value hidden, for logs.
    pub fn connect_query_redacted(&self) -> Option<String> {
        self.connect_query().map(|query| {
            query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("response", _)) => "response=<redacted>".to_string(),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    /// The scheme the server named, once it did.
    pub fn scheme(&self) -> Option<Scheme> {
        match &self.stage {
            Stage::Plain => None,
            Stage::Announced { scheme, .. } | Stage::Responded { scheme, .. } => Some(*scheme),
        }
    }

    /// Forget the exchange: the next connect is plain.
    pub fn reset(&mut self) {
        self.stage = Stage::Plain;
    }

    /// The server refused `connect`; `description` is the `description` field of its `_error`
    /// information object. `client_random` is the client's challenge (Adobe) or cnonce
    /// (Limelight), printed as `%08x` as FFmpeg does with `av_get_random_seed()`.
    ///
    /// Follows FFmpeg's `handle_connect_error` step by step, with two deliberate differences:
    /// a server that says `code=403 need auth` again after the `?authmod=` retry gets a
    /// [`AuthStep::Fail`] instead of an endless loop (librtmp's `PublisherAuth` does the same),
    /// and a description with an `authmod=` other than adobe or llnw is a `Fail` (unsupported
    /// scheme) rather than being indistinguishable from other rejections.
    pub fn on_connect_rejected(&mut self, description: &str, client_random: u32) -> AuthStep {
        // FFmpeg: strstr(desc, "authmod=adobe"), then strstr(desc, "authmod=llnw").
        let scheme = if description.contains("authmod=adobe") {
            Scheme::Adobe
        } else if description.contains("authmod=llnw") {
            Scheme::Limelight
        } else if let Some(at) = description.find("authmod=") {
            let name: String = description[at + "authmod=".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .take(14)
                .collect();
            return AuthStep::Fail(format!(
                "the server requires an unsupported authentication method (authmod={name}); \
                 only adobe and llnw are implemented"
            ));
        } else {
            return AuthStep::NotAuth;
        };
        let authmod = scheme.authmod();

        if self.user.is_empty() || self.password.is_empty() {
            return AuthStep::Fail(format!(
                "the server requires authentication (authmod={authmod}): \
                 put the user name and password in the URL, rtmp://user:password@host/app/key"
            ));
        }
        if description.contains("?reason=authfailed") {
            return AuthStep::Fail(format!(
                "authentication failed (authmod={authmod}, reason=authfailed): \
                 incorrect user name or password for user {:?}",
                self.user
            ));
        }
        if description.contains("?reason=nosuchuser") {
            return AuthStep::Fail(format!(
                "authentication failed (authmod={authmod}, reason=nosuchuser): \
                 the server does not know user {:?}",
                self.user
            ));
        }
        if let Stage::Responded { .. } = self.stage {
            return AuthStep::Fail(format!(
                "authentication failed (authmod={authmod}): the server refused the response \
                 to its challenge"
            ));
        }

        if description.contains("code=403 need auth") {
            if let Stage::Announced { .. } = self.stage {
                return AuthStep::Fail(format!(
                    "authentication failed (authmod={authmod}): the server asked for \
                     authentication again instead of sending a challenge for user {:?}",
                    self.user
                ));
            }
            self.stage = Stage::Announced {
                scheme,
                query: format!("?authmod={authmod}&user={}", self.user),
            };
            return AuthStep::Retry;
        }

        let Some(at) = description.find("?reason=needauth") else {
            return AuthStep::Fail(format!(
                "authentication failed (authmod={authmod}): the server's rejection carries no \
                 challenge (no ?reason=needauth)"
            ));
        };
        let challenge = Challenge::parse(&description[at + 1..]);
        let random = format!("{client_random:08x}");
        let query = match scheme {
            Scheme::Adobe => adobe_query(
                challenge.user,
                &self.password,
                challenge.salt,
                challenge.opaque,
                challenge.challenge,
                &random,
            ),
            Scheme::Limelight => llnw_query(
                challenge.user,
                &self.password,
                challenge.nonce.unwrap_or(""),
                &self.app,
                &random,
            ),
        };
        self.stage = Stage::Responded { scheme, query };
        AuthStep::Retry
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("app", &self.app)
            .field("scheme", &self.scheme())
            .field("stage", &self.stage_name())
            .finish()
    }
}

impl fmt::Display for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme() {
            Some(scheme) => write!(
                f,
                "{} authentication as {:?}: {}",
                scheme.authmod(),
                self.user,
                self.stage_name()
            ),
            None => write!(
                f,
                "authentication as {:?}: {}",
                self.user,
                self.stage_name()
            ),
        }
    }
}

impl Authenticator {
    fn stage_name(&self) -> &'static str {
        match self.stage {
            Stage::Plain => "not requested",
            Stage::Announced { .. } => "challenge requested",
            Stage::Responded { .. } => "challenge answered",
        }
    }
}

/// The parameters of `reason=needauth&user=..&salt=..&challenge=..&opaque=..&nonce=..`.
/// As in FFmpeg: `user` and `salt` default to empty, the others to absent; a later occurrence
/// of a key wins; a pair without `=` and unknown keys are ignored; a value runs to the next `&`
/// or the end of the description.
#[derive(Debug, Default, PartialEq, Eq)]
struct Challenge<'a> {
    user: &'a str,
    salt: &'a str,
    opaque: Option<&'a str>,
    challenge: Option<&'a str>,
    nonce: Option<&'a str>,
}

impl<'a> Challenge<'a> {
    fn parse(params: &'a str) -> Challenge<'a> {
        let mut out = Challenge::default();
        for pair in params.split('&') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            match key {
                "user" => out.user = value,
                "salt" => out.salt = value,
                "opaque" => out.opaque = Some(value),
                "challenge" => out.challenge = Some(value),
                "nonce" => out.nonce = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// The Adobe response (FFmpeg `do_adobe_auth`):
/// `hash1 = base64(md5(user + salt + password))`,
/// `response = base64(md5(hash1 + (opaque, else challenge, else nothing) + client_challenge))`.
/// An opaque that is present but empty takes precedence over the challenge, as in FFmpeg
/// (`if (opaque) ... else if (challenge)` tests the pointers).
pub fn adobe_response(
    user: &str,
    password: &str,
    salt: &str,
    opaque: Option<&str>,
    challenge: Option<&str>,
    client_challenge: &str,
) -> String {
    let hash1 = base64(&md5(&[user, salt, password].concat()));
    let middle = opaque.or(challenge).unwrap_or("");
    base64(&md5(&[hash1.as_str(), middle, client_challenge].concat()))
}

/// The Limelight response (FFmpeg `do_llnw_auth`), HTTP-Digest-like with realm `live`, method
/// `publish`, qop `auth` and nc `00000001`:
/// `HA1 = md5hex(user:live:password)`, `HA2 = md5hex(publish:/app)` where `app` gets
/// `/_definst_` appended when it has no `/`,
/// `response = md5hex(HA1:nonce:00000001:cnonce:auth:HA2)`. Hex is lowercase.
pub fn llnw_response(user: &str, password: &str, nonce: &str, app: &str, cnonce: &str) -> String {
    let ha1 = hex(&md5(&[user, ":", LLNW_REALM, ":", password].concat()));
    let instance = if app.contains('/') { "" } else { "/_definst_" };
    let ha2 = hex(&md5(&[LLNW_METHOD, ":/", app, instance].concat()));
    hex(&md5(&[
        &ha1, ":", nonce, ":", LLNW_NC, ":", cnonce, ":", LLNW_QOP, ":", &ha2,
    ]
    .concat()))
}

const LLNW_REALM: &str = "live";
const LLNW_METHOD: &str = "publish";
const LLNW_QOP: &str = "auth";
const LLNW_NC: &str = "00000001";

/// `?authmod=adobe&user=%s&challenge=%s&response=%s` then `&opaque=%s` if the server sent one.
fn adobe_query(
    user: &str,
    password: &str,
    salt: &str,
    opaque: Option<&str>,
    challenge: Option<&str>,
    client_challenge: &str,
) -> String {
    let response = adobe_response(user, password, salt, opaque, challenge, client_challenge);
    let mut query =
        format!("?authmod=adobe&user={user}&challenge={client_challenge}&response={response}");
    if let Some(opaque) = opaque {
        query.push_str("&opaque=");
        query.push_str(opaque);
    }
    query
}

/// `?authmod=llnw&user=%s&nonce=%s&cnonce=%s&nc=%s&response=%s`.
fn llnw_query(user: &str, password: &str, nonce: &str, app: &str, cnonce: &str) -> String {
    let response = llnw_response(user, password, nonce, app, cnonce);
    format!(
        "?authmod=llnw&user={user}&nonce={nonce}&cnonce={cnonce}&nc={LLNW_NC}&response={response}"
    )
}

/// Standard base64 with padding (RFC 4648 section 4), as `av_base64_encode` writes it.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lowercase hex, as `ff_data_to_hex(.., lowercase = 1)`.
fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(data.len() * 2);
    for byte in data {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

/// MD5 (RFC 1321) of a whole message.
fn md5(message: &str) -> [u8; 16] {
    md5_bytes(message.as_bytes())
}

fn md5_bytes(message: &[u8]) -> [u8; 16] {
    const SHIFT: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
        5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
        4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
        6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(abs(sin(i + 1)) * 2^32) (RFC 1321 section 3.4).
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ];
    let mut state: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

    // Padding: 0x80, zeros to 56 mod 64, then the bit length, little-endian.
    let mut data = Vec::with_capacity(message.len() + 72);
    data.extend_from_slice(message);
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&((message.len() as u64).wrapping_mul(8)).to_le_bytes());

    for block in data.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(K[i])
                .wrapping_add(m[g])
                .rotate_left(SHIFT[i]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }

    let mut digest = [0u8; 16];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_le_bytes());
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    // Descriptions as real servers send them; FFmpeg's handle_connect_error matches them with
    // strstr(desc, "authmod=adobe"), "authmod=llnw", "?reason=authfailed", "?reason=nosuchuser",
    // "code=403 need auth" and "?reason=needauth".
    const ADOBE_NEED_AUTH: &str =
        "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : ";
    const ADOBE_CHALLENGE: &str = "[ AccessManager.Reject ] : [ authmod=adobe ] : \
         ?reason=needauth&user=bob&salt=Zs8yYw&challenge=f0Df3w==&opaque=Q4z0AA==";
    const ADOBE_AUTHFAILED: &str =
        "[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=authfailed";
    const ADOBE_NOSUCHUSER: &str =
        "[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=nosuchuser";
    const LLNW_NEED_AUTH: &str =
        "[ AccessManager.Reject ] : [ code=403 need auth; authmod=llnw ] : ";
    const LLNW_CHALLENGE: &str = "[ AccessManager.Reject ] : [ authmod=llnw ] : \
         ?reason=needauth&user=bob&nonce=NzQ3NjA2MDg=";
    const LLNW_AUTHFAILED: &str =
        "[ AccessManager.Reject ] : [ authmod=llnw ] : ?reason=authfailed";

    fn bob() -> Authenticator {
        Authenticator::new("bob".into(), "hunter2".into(), "live".into())
    }

    // RFC 1321 appendix A.5, plus block-boundary lengths checked with
    // python3 -c 'import hashlib; print(hashlib.md5(b"a" * n).hexdigest())'.
    #[test]
    fn md5_rfc1321_vectors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(hex(&md5_bytes(input)), *expected, "{input:?}");
        }
        let boundaries = [
            (55, "ef1772b6dff9a122358552954ad0df65"),
            (56, "3b0c8ac703f828b04c6c197006d17218"),
            (57, "652b906d60af96844ebd21b674f35e93"),
            (63, "b06521f39153d618550606be297466d5"),
            (64, "014842d480b571495a4a0363793f7367"),
            (65, "c743a45e0d2e6a95cb859adae0248435"),
            (119, "8a7bd0732ed6a28ce75f6dabc90e1613"),
            (120, "5f61c0ccad4cac44c75ff505e1f1e537"),
            (128, "e510683b3f5ffe4093d021808bc6ff70"),
        ];
        for (n, expected) in boundaries {
            assert_eq!(hex(&md5_bytes(&vec![b'a'; n])), expected, "a * {n}");
        }
        // python3 -c 'import hashlib; print(hashlib.md5(bytes(range(256)) * 4).hexdigest())'
        let all: Vec<u8> = (0..4).flat_map(|_| 0..=255u8).collect();
        assert_eq!(hex(&md5_bytes(&all)), "b2ea9f7fcea831a4a63b213f41a8855b");
    }

    // RFC 4648 section 10.
    #[test]
    fn base64_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(base64(&[0; 16]).len(), 24);
    }

    // Expected values computed with Python:
    //   md5 = lambda s: hashlib.md5(s.encode()).digest()
    //   b64 = lambda b: base64.b64encode(b).decode()
    //   h1 = b64(md5(user + salt + password))
    //   b64(md5(h1 + (opaque if opaque is not None else challenge or "") + client_challenge))
    #[test]
    fn adobe_response_vectors() {
        // user="bob", password="hunter2", salt="6MnrBnKW", opaque="vbi2V",
        // challenge="7C5OrwQg", client_challenge="0badc0de"
        assert_eq!(
            adobe_response(
                "bob",
                "hunter2",
                "6MnrBnKW",
                Some("vbi2V"),
                Some("7C5OrwQg"),
                "0badc0de"
            ),
            "O2fTRTwtErdksjo8jgvMPg=="
        );
        // opaque=None: the challenge is used.
        assert_eq!(
            adobe_response(
                "bob",
                "hunter2",
                "6MnrBnKW",
                None,
                Some("7C5OrwQg"),
                "0badc0de"
            ),
            "1M2CvITMEenpwNCiISmu4Q=="
        );
        // Neither: b64(md5(h1 + "0badc0de")); an empty opaque wins over the challenge (FFmpeg
        // tests the pointer), giving the same value.
        assert_eq!(
            adobe_response("bob", "hunter2", "6MnrBnKW", None, None, "0badc0de"),
            "g2KH8LwRYVYPqCMK7FJ6zQ=="
        );
        assert_eq!(
            adobe_response(
                "bob",
                "hunter2",
                "6MnrBnKW",
                Some(""),
                Some("7C5OrwQg"),
                "0badc0de"
            ),
            "g2KH8LwRYVYPqCMK7FJ6zQ=="
        );
        // Percent-escapes are hashed verbatim (FFmpeg does not decode the URL's credentials):
        // user="a%40b", password="p%3Ass", salt="s", challenge="c", client_challenge="00000001"
        assert_eq!(
            adobe_response("a%40b", "p%3Ass", "s", None, Some("c"), "00000001"),
            "8lqCq4heE71koqTYvKWSDg=="
        );
    }

    // Expected values computed with Python:
    //   h = lambda s: hashlib.md5(s.encode()).hexdigest()
    //   ha1 = h(f"{user}:live:{password}")
    //   ha2 = h(f"publish:/{app if '/' in app else app + '/_definst_'}")
    //   h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    #[test]
    fn llnw_response_vectors() {
        // user="bob", password="hunter2", nonce="MTIzNDU2Nzg5MA==", app="live", cnonce="deadbeef"
        assert_eq!(
            llnw_response("bob", "hunter2", "MTIzNDU2Nzg5MA==", "live", "deadbeef"),
            "f350648bced4bc34b432191d949c2b20"
        );
        // app="live/cam1": no /_definst_.
        assert_eq!(
            llnw_response(
                "bob",
                "hunter2",
                "MTIzNDU2Nzg5MA==",
                "live/cam1",
                "deadbeef"
            ),
            "45eb5a3525ef2375031cebcee732ef27"
        );
    }

    #[test]
    fn adobe_full_sequence() {
        let mut auth = bob();
        assert_eq!(auth.connect_query(), None, "the first connect is plain");
        assert_eq!(auth.scheme(), None);

        assert_eq!(
            auth.on_connect_rejected(ADOBE_NEED_AUTH, 7),
            AuthStep::Retry
        );
        assert_eq!(auth.scheme(), Some(Scheme::Adobe));
        assert_eq!(
            auth.connect_query().as_deref(),
            Some("?authmod=adobe&user=bob")
        );

        assert_eq!(
            auth.on_connect_rejected(ADOBE_CHALLENGE, 0x1234abcd),
            AuthStep::Retry
        );
        // Python: adobe("bob", "hunter2", salt="Zs8yYw", opaque="Q4z0AA==",
        //               challenge="f0Df3w==", c2="%08x" % 0x1234abcd) == "fiaAn+UCsGe8SvrmWEOTWw=="
        assert_eq!(
            auth.connect_query().as_deref(),
            Some(
                "?authmod=adobe&user=bob&challenge=1234abcd&response=fiaAn+UCsGe8SvrmWEOTWw==\
                 &opaque=Q4z0AA=="
            )
        );
        assert_eq!(
            auth.connect_query_redacted().as_deref(),
            Some("?authmod=adobe&user=bob&challenge=1234abcd&response=<redacted>&opaque=Q4z0AA==")
        );

        // The server refuses the response.
        match auth.on_connect_rejected(ADOBE_AUTHFAILED, 1) {
            AuthStep::Fail(message) => {
                assert!(
                    message.contains("incorrect user name or password"),
                    "{message}"
                );
                assert!(!message.contains("hunter2"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A spent response is never replayed after reset.
        auth.reset();
        assert_eq!(auth.connect_query(), None);
    }

    #[test]
    fn adobe_challenge_without_opaque_and_without_prior_need_auth() {
        let mut auth = bob();
        let description = "[ AccessManager.Reject ] : [ authmod=adobe ] : \
             ?reason=needauth&user=bob&salt=6MnrBnKW&challenge=7C5OrwQg";
        assert_eq!(
            auth.on_connect_rejected(description, 0x0badc0de),
            AuthStep::Retry
        );
        // Same inputs as the second adobe_response vector; no &opaque=.
        assert_eq!(
            auth.connect_query().as_deref(),
            Some("?authmod=adobe&user=bob&challenge=0badc0de&response=1M2CvITMEenpwNCiISmu4Q==")
        );
    }

    #[test]
    fn llnw_full_sequence() {
        let mut auth = bob();
        assert_eq!(auth.on_connect_rejected(LLNW_NEED_AUTH, 7), AuthStep::Retry);
        assert_eq!(auth.scheme(), Some(Scheme::Limelight));
        assert_eq!(
            auth.connect_query().as_deref(),
            Some("?authmod=llnw&user=bob")
        );
        assert_eq!(
            auth.on_connect_rejected(LLNW_CHALLENGE, 0xcafe),
            AuthStep::Retry
        );
        // Python: llnw("bob", "hunter2", nonce="NzQ3NjA2MDg=", app="live", cnonce="%08x" % 0xcafe)
        //   == "7763ac75cbdc4d4f5f95b25e669ee097"
        assert_eq!(
            auth.connect_query().as_deref(),
            Some(
                "?authmod=llnw&user=bob&nonce=NzQ3NjA2MDg=&cnonce=0000cafe&nc=00000001\
                 &response=7763ac75cbdc4d4f5f95b25e669ee097"
            )
        );
        match auth.on_connect_rejected(LLNW_AUTHFAILED, 1) {
            AuthStep::Fail(message) => assert!(message.contains("authfailed"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn authfailed_and_nosuchuser_stop_at_any_stage() {
        for description in [ADOBE_AUTHFAILED, ADOBE_NOSUCHUSER] {
            let mut auth = bob();
            assert!(matches!(
                auth.on_connect_rejected(description, 0),
                AuthStep::Fail(_)
            ));
            // Failing does not advance the state.
            assert_eq!(auth.connect_query(), None);
        }
        let mut auth = bob();
        match auth.on_connect_rejected(ADOBE_NOSUCHUSER, 0) {
            AuthStep::Fail(message) => assert!(message.contains("does not know user"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_challenge_after_answering_fails() {
        // FFmpeg: `if (rt->auth_tried) { "Authentication failed" }`.
        let mut auth = bob();
        auth.on_connect_rejected(ADOBE_NEED_AUTH, 0);
        assert_eq!(
            auth.on_connect_rejected(ADOBE_CHALLENGE, 0),
            AuthStep::Retry
        );
        match auth.on_connect_rejected(ADOBE_CHALLENGE, 0) {
            AuthStep::Fail(message) => {
                assert!(message.contains("refused the response"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn need_auth_twice_fails_instead_of_looping() {
        let mut auth = bob();
        assert_eq!(
            auth.on_connect_rejected(ADOBE_NEED_AUTH, 0),
            AuthStep::Retry
        );
        assert!(matches!(
            auth.on_connect_rejected(ADOBE_NEED_AUTH, 0),
            AuthStep::Fail(_)
        ));
    }

    #[test]
    fn missing_credentials_fail_with_a_hint() {
        for (user, password) in [("", ""), ("bob", ""), ("", "hunter2")] {
            let mut auth = Authenticator::new(user.into(), password.into(), "live".into());
            match auth.on_connect_rejected(ADOBE_NEED_AUTH, 0) {
                AuthStep::Fail(message) => {
                    assert!(message.contains("user:password@"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unrelated_rejections_are_not_auth() {
        let mut auth = bob();
        for description in [
            "",
            "Connection failed: Application rejected connection.",
            "[ Server.Reject ] : Virtual host _defaultVHost_ is not available.",
            "[ AccessManager.Reject ] : [ code=403 need auth ] : ",
            "Bad stream key",
        ] {
            assert_eq!(auth.on_connect_rejected(description, 0), AuthStep::NotAuth);
        }
        assert_eq!(auth.connect_query(), None);
    }

    #[test]
    fn unsupported_authmod_fails() {
        let mut auth = bob();
        match auth.on_connect_rejected(
            "[ AccessManager.Reject ] : [ code=403 need auth; authmod=digest ] : ",
            0,
        ) {
            AuthStep::Fail(message) => assert!(message.contains("authmod=digest"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn challenge_without_parameters_fails() {
        // FFmpeg: "No auth parameters found".
        let mut auth = bob();
        assert!(matches!(
            auth.on_connect_rejected("[ AccessManager.Reject ] : [ authmod=adobe ] : ", 0),
            AuthStep::Fail(_)
        ));
    }

    #[test]
    fn challenge_parameters_parse_like_ffmpeg() {
        let c = Challenge::parse("reason=needauth&user=u&salt=s&challenge=c==&opaque=o&x=y&flag");
        assert_eq!(
            c,
            Challenge {
                user: "u",
                salt: "s",
                opaque: Some("o"),
                challenge: Some("c=="),
                nonce: None,
            }
        );
        // Defaults: user and salt empty, the others absent; the last occurrence wins.
        let c = Challenge::parse("reason=needauth&nonce=a&nonce=b");
        assert_eq!((c.user, c.salt, c.nonce), ("", "", Some("b")));
        // An empty opaque is present.
        assert_eq!(Challenge::parse("reason=needauth&opaque=").opaque, Some(""));
    }

    #[test]
    fn the_servers_user_name_and_verbatim_escapes_enter_the_response() {
        // As in FFmpeg and librtmp, user= from the challenge is what is hashed and sent; the
        // password is hashed as written in the URL (percent-escapes included).
        let mut auth = Authenticator::new("a%40b".into(), "p%3Ass".into(), "live".into());
        let description = "[ AccessManager.Reject ] : [ authmod=adobe ] : \
             ?reason=needauth&user=a%40b&salt=s&challenge=c";
        assert_eq!(auth.on_connect_rejected(description, 1), AuthStep::Retry);
        // Same inputs as the last adobe_response vector.
        assert_eq!(
            auth.connect_query().as_deref(),
            Some("?authmod=adobe&user=a%40b&challenge=00000001&response=8lqCq4heE71koqTYvKWSDg==")
        );
    }

    #[test]
    fn llnw_hashes_the_app_instance() {
        let mut auth = Authenticator::new("bob".into(), "hunter2".into(), "live/cam1".into());
        let description = "[ AccessManager.Reject ] : [ authmod=llnw ] : \
             ?reason=needauth&user=bob&nonce=MTIzNDU2Nzg5MA==";
        assert_eq!(
            auth.on_connect_rejected(description, 0xdeadbeef),
            AuthStep::Retry
        );
        let query = auth.connect_query().unwrap();
        assert!(
            query.ends_with("&response=45eb5a3525ef2375031cebcee732ef27"),
            "{query}"
        );
    }

    #[test]
    fn debug_and_display_never_show_the_password_or_response() {
        let mut auth = Authenticator::new("bob".into(), "s3cr3t-pw".into(), "live".into());
        let shown = |auth: &Authenticator| format!("{auth:?} {auth} {auth:#?}");
        assert!(!shown(&auth).contains("s3cr3t-pw"));
        assert!(shown(&auth).contains("bob"));
        auth.on_connect_rejected(ADOBE_NEED_AUTH, 0);
        auth.on_connect_rejected(ADOBE_CHALLENGE, 0x1234abcd);
        let text = shown(&auth);
        let response = adobe_response(
            "bob",
            "s3cr3t-pw",
            "Zs8yYw",
            Some("Q4z0AA=="),
            Some("f0Df3w=="),
            "1234abcd",
        );
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        assert!(!text.contains(&response), "{text}");
        assert!(text.contains("challenge answered"), "{text}");
        let redacted = auth.connect_query_redacted().unwrap();
        assert!(!redacted.contains(&response), "{redacted}");
        for description in [ADOBE_AUTHFAILED, ADOBE_CHALLENGE, ADOBE_NEED_AUTH] {
            if let AuthStep::Fail(message) = auth.on_connect_rejected(description, 0) {
                assert!(!message.contains("s3cr3t-pw"), "{message}");
            }
        }
    }

    #[test]
    fn truncated_and_mangled_descriptions_never_panic() {
        let descriptions = [
            ADOBE_NEED_AUTH,
            ADOBE_CHALLENGE,
            ADOBE_AUTHFAILED,
            LLNW_NEED_AUTH,
            LLNW_CHALLENGE,
            "authmod=adobe ?reason=needauth&=&&user&salt==&opaque&challenge=é€&nonce",
            "authmod=llnw ?reason=needauth",
            "authmod=",
            "authmod=ß\u{0}",
        ];
        for description in descriptions {
            for end in (0..=description.len()).filter(|&i| description.is_char_boundary(i)) {
                for start_stage in 0..3 {
                    let mut auth = bob();
                    if start_stage >= 1 {
                        auth.on_connect_rejected(ADOBE_NEED_AUTH, 0);
                    }
                    if start_stage >= 2 {
                        auth.on_connect_rejected(ADOBE_CHALLENGE, 0);
                    }
                    let prefix = &description[..end];
                    let _ = auth.on_connect_rejected(prefix, end as u32);
                    let _ = auth.on_connect_rejected(&description[end..], 0);
                    let _ = auth.connect_query();
                    let _ = auth.connect_query_redacted();
                    let _ = format!("{auth:?} {auth}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_descriptions_never_panic(description in ".*", random in proptest::prelude::any::<u32>()) {
            let mut auth = bob();
            let _ = auth.on_connect_rejected(&description, random);
            let prefixed = format!("[ authmod=adobe ] : ?reason=needauth&{description}");
            let _ = auth.on_connect_rejected(&prefixed, random);
            let prefixed = format!("[ authmod=llnw ] : ?reason=needauth&{description}");
            let _ = bob().on_connect_rejected(&prefixed, random);
        }
    }
}
