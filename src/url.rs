//! RTMP destination URLs: `rtmp[s]://[user:pass@]host[:port]/app[/instance]/key[?query]`.
//!
//! The split between application and stream name follows FFmpeg's, which every server is tested
//! against: with two path segments the first is the app and the second the key; with three or more,
//! the first two are the app (`app/instance`) and the rest is the key. A query string belongs to the
//! stream name (`publish("key?token=…")`), where nginx-rtmp's `on_publish` and SRS read it; the tcUrl
//! carries no query.
//!
//! Invariants: a parsed [`RtmpUrl`] has a non-empty host, app and stream name; `Display` never shows
//! the key, query values or a password ([`RtmpUrl::redacted`] is what logs and errors print).

use std::fmt;

use crate::error::{Error, Result};

/// `rtmp` or `rtmps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Rtmp,
    Rtmps,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        }
    }
}

/// A validated publish destination.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets (IPv6 literals are bracketed again when printed).
    pub host: String,
    pub port: u16,
    /// Whether the URL named the port; tcUrl keeps the user's form.
    pub explicit_port: bool,
    /// The application, possibly `app/instance`.
    pub app: String,
    /// The stream key, without the query.
    pub key: String,
    /// The query string without `?`, if any; it travels with the stream name.
    pub query: Option<String>,
    /// `user:password` from the URL, for the servers' authentication schemes.
    pub credentials: Option<(String, String)>,
}

impl RtmpUrl {
    pub fn parse(text: &str) -> Result<RtmpUrl> {
        let bad =
            |why: &str| Error::config(format!("invalid RTMP URL {}: {why}", redact_text(text)));
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "rtmp://") {
            (Scheme::Rtmp, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "rtmps://") {
            (Scheme::Rtmps, rest)
        } else {
            let must = "it must start with rtmp:// or rtmps://";
            return Err(match split_scheme(text) {
                Some((typed, _)) if ["rtmp", "rtmps"].contains(&&*typed.to_ascii_lowercase()) => {
                    bad(&format!("{must} (two slashes after {typed}:)"))
                }
                Some((typed, rest)) if rest.starts_with("//") => {
                    bad(&format!("{must}, not {typed}://"))
                }
                _ => bad(must),
            });
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash + 1..]),
            None => (rest, ""),
        };
        let (credentials, host_port) = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                if user.is_empty() {
                    return Err(bad("the user name before '@' is empty"));
                }
                (
                    Some((user.to_string(), pass.to_string())),
                    &authority[at + 1..],
                )
            }
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port).map_err(|why| {
            if credentials.is_none() && path.split('?').next().unwrap_or("").contains('@') {
                // rtmp://user:pa/ss@host/...: what looks like the port is part of the password.
                bad("the user name or password before '@' holds a '/', which a URL cannot carry there")
            } else {
                bad(&why)
            }
        })?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (path, None),
        };
        let path = path.trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let server = format!("{}://{host_port}", scheme.as_str());
        if path.is_empty() {
            return Err(bad(&format!(
                "the app and stream key are missing: expected {server}/APP/KEY"
            )));
        }
        if segments[0].is_empty() {
            return Err(bad("the app is empty (two slashes in a row)"));
        }
        if segments.iter().any(|s| s.is_empty()) {
            return Err(bad("an empty part in the path (two slashes in a row)"));
        }
        if segments.len() < 2 {
            let app = segments[0];
            return Err(bad(&if shows_as_app(app) {
                format!(
                    "the stream key is missing after the app {app:?}: expected {server}/{app}/KEY"
                )
            } else {
                format!(
                    "the stream key is missing: expected {server}/APP/KEY (the one part of the \
                     path is hidden: it may be a key)"
                )
            }));
        }
        let (app, key) = if segments.len() == 2 {
            (segments[0].to_string(), segments[1].to_string())
        } else {
            (segments[..2].join("/"), segments[2..].join("/"))
        };
        Ok(RtmpUrl {
            scheme,
            host: host.to_string(),
            port: port.unwrap_or(scheme.default_port()),
            explicit_port: port.is_some(),
            app,
            key,
            query: query.filter(|q| !q.is_empty()),
            credentials,
        })
    }

    /// `host` as it appears in a URL: IPv6 literals in brackets.
    pub fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The tcUrl of the connect command: `rtmp://host[:port]/app`.
    pub fn tc_url(&self) -> String {
        let port = if self.explicit_port {
            format!(":{}", self.port)
        } else {
            String::new()
        };
        format!(
            "{}://{}{}/{}",
            self.scheme.as_str(),
            self.host_for_url(),
            port,
            self.app
        )
    }

    /// The name given to `publish`, `releaseStream` and `FCPublish`: the key and the query.
    pub fn stream_name(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{}", self.key, query),
            None => self.key.clone(),
        }
    }

    /// The destination an Enhanced RTMP ReconnectRequest points to: its `tcUrl` may be absolute
    /// (`rtmp://host:port/app`), scheme-relative (`//host/app`) or path-relative (`/app`), and is
    /// resolved against this URL; the stream key, query and credentials stay.
    pub fn with_tc_url(&self, tc_url: &str) -> Result<RtmpUrl> {
        let absolute = if tc_url.contains("://") {
            tc_url.to_string()
        } else if let Some(rest) = tc_url.strip_prefix("//") {
            format!("{}://{rest}", self.scheme.as_str())
        } else if tc_url.starts_with('/') {
            format!(
                "{}://{}:{}{tc_url}",
                self.scheme.as_str(),
                self.host_for_url(),
                self.port
            )
        } else {
            return Err(Error::peer(format!(
                "the server asked to reconnect to an unusable tcUrl {tc_url:?}"
            )));
        };
        let mut text = format!("{}/{}", absolute.trim_end_matches('/'), self.key);
        if let Some(query) = &self.query {
            text.push('?');
            text.push_str(query);
        }
        let mut url = RtmpUrl::parse(&text).map_err(|e| {
            Error::peer(format!(
                "the server asked to reconnect to an unusable tcUrl: {}",
                e.message()
            ))
        })?;
        url.credentials = self.credentials.clone();
        Ok(url)
    }

    /// The URL with the key, query values and password hidden: safe for logs, STATUS and errors.
    pub fn redacted(&self) -> String {
        let user = match &self.credentials {
            Some((user, _)) => format!("{user}:<redacted>@"),
            None => String::new(),
        };
        let port = if self.explicit_port {
            format!(":{}", self.port)
        } else {
            String::new()
        };
        let query = match &self.query {
            Some(query) => format!("?{}", redact_query(query)),
            None => String::new(),
        };
        format!(
            "{}://{user}{}{port}/{}/<key redacted>{query}",
            self.scheme.as_str(),
            self.host_for_url(),
            self.app
        )
    }
}

impl fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtmpUrl({})", self.redacted())
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Splits `host[:port]` or `[v6]:port`; says what is wrong when it is malformed.
fn split_host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("the IPv6 address has no closing ]")?;
        if !host.contains(':') {
            return Err(format!("[{host}] is not an IPv6 address"));
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(parse_port(port)?))),
                None => Err(format!("expected :PORT after ], not {after}")),
            },
        };
    }
    match text.split_once(':') {
        Some((host, port)) if port.contains(':') => Err(format!(
            "an IPv6 address goes in brackets: rtmp://[{host}:{port}]:1935/..."
        )),
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((text, None)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("the port after ':' is empty".into());
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {text} is not a number"));
    }
    text.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("port {text} is out of range 1..65535"))
}

/// Query string with every value replaced: `token=<redacted>&x=<redacted>`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=<redacted>"),
            None => "<redacted>".to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether the one part of a path with no key is shown as the app it should be (`live`, `app`,
/// `live2`) rather than hidden as the key it may be (`rtmp://host/KEY`, the app forgotten):
/// stream keys are long (YouTube's 24 characters, Twitch's 40 and more), apps are short words.
fn shows_as_app(part: &str) -> bool {
    part.len() <= 16
}

/// `scheme:` at the start of `text` (`rtmp:`, `http:`, a misspelt `rtmp:/`): the scheme as typed
/// and what follows the colon. `host:1935/...` is not a scheme: a scheme is followed by a slash,
/// unless it is rtmp or rtmps.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let rtmp = ["rtmp", "rtmps"].contains(&&*scheme.to_ascii_lowercase());
    (well_formed && (rest.starts_with('/') || rtmp)).then_some((scheme, rest))
}

/// Best-effort redaction of a URL that did not parse, for its error: the scheme, user, host and
/// port as typed, and the app (the first part of the path); the rest of the path (the key), the
/// password and the query's values are hidden.
pub fn redact_text(text: &str) -> String {
    let mut shown = String::new();
    let mut rest = text;
    if let Some((scheme, after)) = split_scheme(text) {
        let slashes = after.len() - after.trim_start_matches('/').len();
        // rtmp:///app/key: the host is what is missing, not the app.
        let slashes = slashes.min(2);
        shown.push_str(&text[..scheme.len() + 1 + slashes]);
        rest = &after[slashes..];
    }
    let (mut rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    // Userinfo ends at the last '@', even past a '/' (a password may hold one).
    if let Some(at) = rest.rfind('@') {
        let userinfo = &rest[..at];
        match userinfo.split_once(':') {
            Some((user, _)) if !user.contains('/') => {
                shown.push_str(user);
                shown.push_str(":<redacted>@");
            }
            None if !userinfo.contains('/') => {
                shown.push_str(userinfo);
                shown.push('@');
            }
            _ => shown.push_str("<redacted>@"),
        }
        rest = &rest[at + 1..];
    }
    let (host_port, path) = match rest.split_once('/') {
        Some((host_port, path)) => (host_port, Some(path.trim_end_matches('/'))),
        None => (rest, None),
    };
    shown.push_str(host_port);
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        shown.push('/');
        match path.split_once('/') {
            Some((app, _key)) => {
                shown.push_str(app);
                shown.push_str("/<redacted>");
            }
            None if shows_as_app(path) => shown.push_str(path),
            None => shown.push_str("<redacted>"),
        }
    }
    if let Some(query) = query {
        shown.push('?');
        shown.push_str(&redact_query(query));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_and_key() {
        let url = RtmpUrl::parse("rtmp://example.com/live/abc123").unwrap();
        assert_eq!(url.scheme, Scheme::Rtmp);
        assert_eq!(url.host, "example.com");
        assert_eq!(url.port, 1935);
        assert_eq!(url.app, "live");
        assert_eq!(url.key, "abc123");
        assert_eq!(url.tc_url(), "rtmp://example.com/live");
        assert_eq!(url.stream_name(), "abc123");
    }

    #[test]
    fn app_instance_key_and_query() {
        let url = RtmpUrl::parse("rtmp://10.1.2.3:1936/live/cam1/stream?token=s3cret&x=1").unwrap();
        assert_eq!(url.port, 1936);
        assert_eq!(url.app, "live/cam1");
        assert_eq!(url.key, "stream");
        assert_eq!(url.stream_name(), "stream?token=s3cret&x=1");
        assert_eq!(url.tc_url(), "rtmp://10.1.2.3:1936/live/cam1");
        assert_eq!(
            url.redacted(),
            "rtmp://10.1.2.3:1936/live/cam1/<key redacted>?token=<redacted>&x=<redacted>"
        );
    }

    #[test]
    fn deeper_paths_keep_the_rest_in_the_key_like_ffmpeg() {
        let url = RtmpUrl::parse("rtmp://h/a/b/c/d").unwrap();
        assert_eq!((url.app.as_str(), url.key.as_str()), ("a/b", "c/d"));
    }

    #[test]
    fn ipv6_literals() {
        let url = RtmpUrl::parse("rtmp://[::1]:1935/app/key").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.tc_url(), "rtmp://[::1]:1935/app");
        let url = RtmpUrl::parse("rtmps://[2001:db8::2]/app/key").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("2001:db8::2", 443));
        assert!(RtmpUrl::parse("rtmp://[::1/app/key").is_err());
        assert!(RtmpUrl::parse("rtmp://[::1]x/app/key").is_err());
    }

    #[test]
    fn credentials_are_parsed_and_never_shown() {
        let url = RtmpUrl::parse("rtmp://bob:hunter2@h/app/key").unwrap();
        assert_eq!(url.credentials, Some(("bob".into(), "hunter2".into())));
        assert_eq!(url.redacted(), "rtmp://bob:<redacted>@h/app/<key redacted>");
        assert!(!format!("{url} {url:?}").contains("hunter2"));
        assert!(!format!("{url} {url:?}").contains("key redacted>x"));
    }

    #[test]
    fn rejects_what_is_not_a_publish_url() {
        for bad in [
            "http://h/app/key",
            "rtmp://h",
            "rtmp://h/app",
            "rtmp://h/app/",
            "rtmp:///app/key",
            "rtmp://h:0/app/key",
            "rtmp://h:99999/app/key",
            "rtmp://h:12a/app/key",
            "rtmp://h//key",
            "rtmp://:pw@h/app/key",
        ] {
            let err = RtmpUrl::parse(bad).unwrap_err();
            assert_eq!(err.fault(), crate::error::Fault::Config, "{bad}");
        }
    }

    fn message(url: &str) -> String {
        RtmpUrl::parse(url).unwrap_err().to_string()
    }

    #[test]
    fn errors_say_what_is_wrong_and_show_what_is_not_secret() {
        for (url, wanted) in [
            (
                "rtmp:/127.0.0.1/live/secretkey",
                "invalid RTMP URL rtmp:/127.0.0.1/live/<redacted>: it must start with rtmp:// or \
                 rtmps:// (two slashes after rtmp:)",
            ),
            (
                "rtmp:127.0.0.1/live/secretkey",
                "invalid RTMP URL rtmp:127.0.0.1/live/<redacted>: it must start with rtmp:// or \
                 rtmps:// (two slashes after rtmp:)",
            ),
            (
                "http://h/live/secretkey?token=secret2",
                "invalid RTMP URL http://h/live/<redacted>?token=<redacted>: it must start with \
                 rtmp:// or rtmps://, not http://",
            ),
            (
                "nvr.local/live/secretkey",
                "invalid RTMP URL nvr.local/live/<redacted>: it must start with rtmp:// or rtmps://",
            ),
            (
                "rtmp://host/live",
                "invalid RTMP URL rtmp://host/live: the stream key is missing after the app \
                 \"live\": expected rtmp://host/live/KEY",
            ),
            (
                "rtmps://bob:secretpw@host:443/live/?token=secret2",
                "invalid RTMP URL rtmps://bob:<redacted>@host:443/live?token=<redacted>: the \
                 stream key is missing after the app \"live\": expected \
                 rtmps://host:443/live/KEY",
            ),
            (
                "rtmp://host",
                "invalid RTMP URL rtmp://host: the app and stream key are missing: expected \
                 rtmp://host/APP/KEY",
            ),
            (
                "rtmp://h//secretkey",
                "invalid RTMP URL rtmp://h//<redacted>: the app is empty (two slashes in a row)",
            ),
            (
                "rtmp://h/live//secretkey",
                "invalid RTMP URL rtmp://h/live/<redacted>: an empty part in the path (two \
                 slashes in a row)",
            ),
        ] {
            let text = message(url);
            assert_eq!(text, format!("configuration error: {wanted}"), "{url}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn port_and_host_errors_name_the_problem() {
        for (url, why) in [
            (
                "rtmp://h:99999/live/k",
                "port 99999 is out of range 1..65535",
            ),
            ("rtmp://h:0/live/k", "port 0 is out of range 1..65535"),
            ("rtmp://h:-1/live/k", "port -1 is out of range 1..65535"),
            (
                "rtmp://h:65536/live/k",
                "port 65536 is out of range 1..65535",
            ),
            (
                "rtmp://h:99999999999999999999/live/k",
                "port 99999999999999999999 is out of range 1..65535",
            ),
            ("rtmp://h:12a/live/k", "port 12a is not a number"),
            ("rtmp://h:/live/k", "the port after ':' is empty"),
            ("rtmp://[::1]:0/live/k", "port 0 is out of range 1..65535"),
            ("rtmp://[::1/live/k", "the IPv6 address has no closing ]"),
            ("rtmp://[::1]x/live/k", "expected :PORT after ], not x"),
            ("rtmp://[host]/live/k", "[host] is not an IPv6 address"),
            (
                "rtmp://::1/live/k",
                "an IPv6 address goes in brackets: rtmp://[::1]:1935/...",
            ),
        ] {
            let text = message(url);
            assert!(text.ends_with(&format!(": {why}")), "{url}: {text}");
        }
        assert!(message("rtmp://u:pa/ss@h/a/k")
            .ends_with("holds a '/', which a URL cannot carry there"));
        assert_eq!(
            RtmpUrl::parse("rtmp://h/a/cam@home").unwrap().key,
            "cam@home"
        );
        assert_eq!(RtmpUrl::parse("rtmp://h:65535/a/k").unwrap().port, 65535);
        assert_eq!(RtmpUrl::parse("rtmp://h:1/a/k").unwrap().port, 1);
    }

    #[test]
    fn errors_do_not_leak_the_key() {
        let err = RtmpUrl::parse("rtmp://h:12a/app/supersecretkey").unwrap_err();
        assert!(!err.to_string().contains("supersecretkey"), "{err}");
        // Whatever is wrong, neither the key, nor the password, nor a query value shows.
        for scheme in ["rtmp://", "rtmp:/", "rtmp:", "RTMPS://", "http://", ""] {
            for auth in ["", "u:secretpw@", "u:secret/pw@", "secretuser@"] {
                for host in ["h", "h:12a", "h:99999", "[::1", ""] {
                    for path in [
                        "/a/secretkey-0123456789",
                        "/secretkey-0123456789",
                        "/a/b/secretkey",
                        "//secretkey",
                        "/a//secretkey",
                    ] {
                        for query in ["", "?t=secretq", "?secretq"] {
                            let short = scheme.ends_with(':') || scheme.ends_with(":/");
                            if short && auth.is_empty() && host.is_empty() {
                                // rtmp:/ + /key is rtmp://key: the "key" is the host.
                                continue;
                            }
                            let url = format!("{scheme}{auth}{host}{path}{query}");
                            if let Err(err) = RtmpUrl::parse(&url) {
                                // A user name is shown; nothing else that is secret.
                                let text = err.to_string().replace("secretuser", "");
                                assert!(!text.contains("secret"), "{url}: {text}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reconnect_tc_urls_resolve_against_the_current_url() {
        let url = RtmpUrl::parse("rtmp://old.example:1936/live/cam1?token=t").unwrap();
        let moved = url
            .with_tc_url("rtmp://new.example:1935/realtimeapp")
            .unwrap();
        assert_eq!(
            (moved.host.as_str(), moved.port, moved.app.as_str()),
            ("new.example", 1935, "realtimeapp")
        );
        assert_eq!(moved.stream_name(), "cam1?token=t");
        let moved = url.with_tc_url("//192.0.2.0/realtimeapp").unwrap();
        assert_eq!((moved.host.as_str(), moved.port), ("192.0.2.0", 1935));
        let moved = url.with_tc_url("/otherapp").unwrap();
        assert_eq!(
            (moved.host.as_str(), moved.port, moved.app.as_str()),
            ("old.example", 1936, "otherapp")
        );
        assert_eq!(moved.key, "cam1");
        for bad in ["relative", "http://h/app", "rtmp://"] {
            assert_eq!(
                url.with_tc_url(bad).unwrap_err().fault(),
                crate::error::Fault::Peer,
                "{bad}"
            );
        }
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(RtmpUrl::parse("RTMP://h/a/k").unwrap().scheme, Scheme::Rtmp);
    }
}
