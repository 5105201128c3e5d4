//! The configuration file: TOML restricted to `key = value` lines, one camera per file
//! (/etc/v4l2rtmp/NAME.toml for the `v4l2rtmp@NAME` service).
//!
//! Keys are the long command-line options without their dashes (`chunk-size = 4096`,
//! `input = "/dev/video0"`, `url = "rtmp://..."`); values are TOML strings (basic and literal),
//! integers, floats and booleans. Each setting becomes a command-line option, so the file and the
//! command line share one validator; the command line comes after the file and wins.
//!
//! Invariants: parsing is pure (the caller reads the file); every error names the line; a key
//! appears at most once; tables, arrays and inline tables are refused with a clear error rather
//! than half understood.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Fault};

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub key: String,
    pub value: Value,
    /// 1-based line number, for error messages.
    pub line: usize,
}

/// A scalar TOML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl Value {
    /// The value as a command-line argument would spell it.
    pub fn to_arg(&self) -> String {
        match self {
            Value::String(s) => s.clone(),
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Boolean(b) => b.to_string(),
        }
    }
}

/// A syntax error at a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Parses the whole file.
pub fn parse(text: &str) -> Result<Vec<Setting>, SyntaxError> {
    // A UTF-8 byte-order mark, which some editors (Windows Notepad) put first.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut settings: Vec<Setting> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let err = |message: String| SyntaxError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('[') {
            return Err(err(
                "tables are not supported: the configuration is a flat list of key = value lines"
                    .into(),
            ));
        }
        let (key, rest) = parse_key(trimmed).map_err(&err)?;
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            return Err(err(format!("expected '=' after the key {key:?}")));
        };
        let (value, rest) = parse_value(rest.trim_start()).map_err(&err)?;
        let rest = rest.trim_start();
        if !rest.is_empty() && !rest.starts_with('#') {
            return Err(err(format!(
                "unexpected text after the value of {key:?}: {rest:?}"
            )));
        }
        if let Some(previous) = settings.iter().find(|s| s.key == key) {
            return Err(err(format!(
                "{key:?} is already set on line {}",
                previous.line
            )));
        }
        settings.push(Setting { key, value, line });
    }
    Ok(settings)
}

fn parse_key(text: &str) -> Result<(String, &str), String> {
    if let Some(rest) = text.strip_prefix('"') {
        let (key, rest) = parse_basic_string(rest)?;
        return Ok((key, rest));
    }
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(text.len());
    if end == 0 {
        return Err(format!("expected a key at {text:?}"));
    }
    if text[end..].trim_start().starts_with('.') {
        return Err("dotted keys are not supported".into());
    }
    Ok((text[..end].to_string(), &text[end..]))
}

fn parse_value(text: &str) -> Result<(Value, &str), String> {
    if let Some(rest) = text
        .strip_prefix("\"\"\"")
        .or_else(|| text.strip_prefix("'''"))
    {
        let _ = rest;
        return Err("multi-line strings are not supported".into());
    }
    if let Some(rest) = text.strip_prefix('"') {
        let (s, rest) = parse_basic_string(rest)?;
        return Ok((Value::String(s), rest));
    }
    if let Some(rest) = text.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("a literal string is not closed")?;
        return Ok((Value::String(rest[..end].to_string()), &rest[end + 1..]));
    }
    if text.starts_with('[') || text.starts_with('{') {
        return Err("arrays and inline tables are not supported".into());
    }
    let end = text
        .find(|c: char| c.is_whitespace() || c == '#')
        .unwrap_or(text.len());
    let token = &text[..end];
    let rest = &text[end..];
    match token {
        "true" => return Ok((Value::Boolean(true), rest)),
        "false" => return Ok((Value::Boolean(false), rest)),
        "" => return Err("a value is missing".into()),
        _ => {}
    }
    let digits = token.replace('_', "");
    if token.starts_with('_') || token.ends_with('_') || token.contains("__") {
        return Err(format!("{token:?} is not a number"));
    }
    if let Ok(i) = digits.parse::<i64>() {
        return Ok((Value::Integer(i), rest));
    }
    let looks_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float {
        if let Ok(f) = digits.parse::<f64>() {
            return Ok((Value::Float(f), rest));
        }
    }
    Err(format!(
        "{token:?} is not a value: strings need quotes (\"...\")"
    ))
}

/// Parses the rest of a basic string after its opening quote; returns it and what follows it.
fn parse_basic_string(text: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &text[i + 1..])),
            '\\' => {
                let (_, escape) = chars.next().ok_or("a string ends inside an escape")?;
                match escape {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'u' | 'U' => {
                        let count = if escape == 'u' { 4 } else { 8 };
                        let hex: String = (0..count)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == count)
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("\\{escape}{hex} is not a valid escape"))?;
                        out.push(code);
                    }
                    other => return Err(format!("\\{other} is not a valid escape")),
                }
            }
            c if c.is_control() && c != '\t' => {
                return Err("a control character inside a string".into())
            }
            c => out.push(c),
        }
    }
    Err("a string is not closed".into())
}

/// Reads the configuration file. A file the process may not read is explained: whose it is, its
/// mode, who v4l2rtmp runs as, and the command that lets it in.
pub fn read(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            if let Some(me) = Identity::of_this_process() {
                let names = Names::from_system();
                return Error::config(unreadable(path, &access_along(path), &me, &names));
            }
        }
        Error::io(
            Fault::Config,
            format!("cannot read the configuration {path}"),
            e,
        )
    })
}

/// Who owns a file or directory and its permission bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub uid: u32,
    pub gid: u32,
    /// The permission bits, setgid and the like included (`0o2750`).
    pub mode: u32,
}

impl Access {
    fn of(path: &Path) -> Option<Access> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(Access {
            uid: metadata.uid(),
            gid: metadata.gid(),
            mode: metadata.mode() & 0o7777,
        })
    }

    /// Whether `me` has `bit` (4 read, 1 search) in the class that applies to it.
    fn allows(&self, me: &Identity, bit: u32) -> bool {
        let shift = if self.uid == me.uid {
            6
        } else if me.in_group(self.gid) {
            3
        } else {
            0
        };
        me.uid == 0 || self.mode >> shift & bit != 0
    }
}

/// The user and groups file access is checked against (the filesystem ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    /// From `/proc/self/status` (no libc calls; the sandbox leaves a process its own entry).
    pub fn of_this_process() -> Option<Identity> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<Vec<u32>> {
            let line = status.lines().find_map(|l| l.strip_prefix(name))?;
            line.split_whitespace().map(|n| n.parse().ok()).collect()
        };
        // Real, effective, saved, filesystem: access is checked with the filesystem ids.
        Some(Identity {
            uid: *field("Uid:")?.get(3)?,
            gid: *field("Gid:")?.get(3)?,
            groups: field("Groups:").unwrap_or_default(),
        })
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// User and group names, for messages; a number stands in for an unknown id.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub users: Vec<(u32, String)>,
    pub groups: Vec<(u32, String)>,
}

impl Names {
    /// From `/etc/passwd` and `/etc/group` (system users such as v4l2rtmp live there).
    pub fn from_system() -> Names {
        let table = |file: &str| -> Vec<(u32, String)> {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    let id = fields.nth(1)?.parse().ok()?;
                    Some((id, name.to_string()))
                })
                .collect()
        };
        Names {
            users: table("/etc/passwd"),
            groups: table("/etc/group"),
        }
    }

    fn user(&self, uid: u32) -> String {
        Self::name(&self.users, uid)
    }

    fn group(&self, gid: u32) -> String {
        Self::name(&self.groups, gid)
    }

    fn name(table: &[(u32, String)], id: u32) -> String {
        table
            .iter()
            .find(|(known, _)| *known == id)
            .map_or_else(|| id.to_string(), |(_, name)| name.clone())
    }
}

/// The directories leading to `path`, outermost first, then the file, with what `stat` says of
/// each (None where it cannot look).
fn access_along(path: &str) -> Vec<(String, Option<Access>)> {
    let path = Path::new(path);
    let mut along: Vec<(String, Option<Access>)> = path
        .ancestors()
        .skip(1)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| (dir.display().to_string(), Access::of(dir)))
        .collect();
    along.reverse();
    along.push((path.display().to_string(), Access::of(path)));
    along
}

/// Why `path` cannot be read and what to run: `along` is each directory leading to it, then the
/// file itself (see [`access_along`]).
pub fn unreadable(
    path: &str,
    along: &[(String, Option<Access>)],
    me: &Identity,
    names: &Names,
) -> String {
    let user = names.user(me.uid);
    let group = names.group(me.gid);
    let who = |access: &Access| {
        format!(
            "owner {}:{}, mode {:04o}; v4l2rtmp runs as user {user}",
            names.user(access.uid),
            names.group(access.gid),
            access.mode
        )
    };
    let (file, dirs) = along.split_last().unzip();
    for (dir, access) in dirs.unwrap_or_default() {
        let Some(access) = access else { continue };
        if !access.allows(me, 1) {
            let fix = fix(dir, access, me, &group, 5, "2750");
            return format!(
                "cannot read {path}: its directory {dir} is closed to v4l2rtmp ({}): run `{fix}`",
                who(access)
            );
        }
    }
    match file {
        Some((_, Some(access))) => {
            let fix = fix(path, access, me, &group, 4, "0640");
            format!("cannot read {path} ({}): run `{fix}`", who(access))
        }
        _ => format!("cannot read {path}: permission denied to user {user}"),
    }
}

/// The command that gives `me` the `bits` (5 for a directory, 4 for a file) on `path`: through
/// its group, which is `group` (`me`'s own) unless `me` is already in the file's.
fn fix(path: &str, access: &Access, me: &Identity, group: &str, bits: u32, mode: &str) -> String {
    let what = if bits == 5 { "rx" } else { "r" };
    if access.uid == me.uid {
        return format!("sudo chmod u+{what} {path}");
    }
    if me.in_group(access.gid) {
        return format!("sudo chmod g+{what} {path}");
    }
    if access.mode >> 3 & bits == bits {
        format!("sudo chgrp {group} {path}")
    } else {
        format!("sudo chgrp {group} {path} && sudo chmod {mode} {path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_lines_with_comments() {
        let text = r#"
# front door camera
input = "/dev/video0"          # the UVC camera
url = 'rtmp://nvr.local/live/front?token=a"b'
chunk-size = 4_096
fps = 29.97
realtime = false
"quoted-key" = "tab\there \u00e9"
"#;
        let settings = parse(text).unwrap();
        let pairs: Vec<(&str, &Value, usize)> = settings
            .iter()
            .map(|s| (s.key.as_str(), &s.value, s.line))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("input", &Value::String("/dev/video0".into()), 3),
                (
                    "url",
                    &Value::String("rtmp://nvr.local/live/front?token=a\"b".into()),
                    4
                ),
                ("chunk-size", &Value::Integer(4096), 5),
                ("fps", &Value::Float(29.97), 6),
                ("realtime", &Value::Boolean(false), 7),
                ("quoted-key", &Value::String("tab\there é".into()), 8),
            ]
        );
        assert_eq!(settings[3].value.to_arg(), "29.97");
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let settings = parse("\u{feff}input = \"-\"\n# c\nfps = 30\n").unwrap();
        assert_eq!(settings[0].key, "input");
        assert_eq!(settings[1].line, 3);
        // Only at the start of the file.
        assert!(parse("input = \"-\"\n\u{feff}fps = 30\n").is_err());
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, needle) in [
            ("a = 1\n[camera]\n", 2, "tables"),
            ("a = [1, 2]", 1, "arrays"),
            ("a = {x = 1}", 1, "inline tables"),
            ("\n\na = \"open", 3, "not closed"),
            ("a = 1\na = 2", 2, "already set on line 1"),
            ("a 1", 1, "expected '='"),
            ("a = hello", 1, "need quotes"),
            ("a = 1 2", 1, "unexpected text"),
            ("a.b = 1", 1, "dotted"),
            ("a = \"\\q\"", 1, "escape"),
            ("a = \"\"\"x\"\"\"", 1, "multi-line"),
            ("= 1", 1, "expected a key"),
            ("a =", 1, "missing"),
            ("a = 1__0", 1, "not a number"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }

    /// The service's identity: user v4l2rtmp (999), groups v4l2rtmp (998) and video (44).
    fn service() -> (Identity, Names) {
        (
            Identity {
                uid: 999,
                gid: 998,
                groups: vec![998, 44],
            },
            Names {
                users: vec![(0, "root".into()), (999, "v4l2rtmp".into())],
                groups: vec![
                    (0, "root".into()),
                    (44, "video".into()),
                    (998, "v4l2rtmp".into()),
                ],
            },
        )
    }

    fn along(dir: Access, file: Access) -> Vec<(String, Option<Access>)> {
        let root = Access {
            uid: 0,
            gid: 0,
            mode: 0o755,
        };
        vec![
            ("/".into(), Some(root)),
            ("/etc".into(), Some(root)),
            ("/etc/v4l2rtmp".into(), Some(dir)),
            ("/etc/v4l2rtmp/x.toml".into(), Some(file)),
        ]
    }

    #[test]
    fn an_unreadable_file_says_whose_it_is_and_what_to_run() {
        let (me, names) = service();
        let dir = Access {
            uid: 0,
            gid: 998,
            mode: 0o2750,
        };
        let path = "/etc/v4l2rtmp/x.toml";
        let message = |file: Access| unreadable(path, &along(dir, file), &me, &names);
        // A copy made by root where the directory did not give it the group.
        assert_eq!(
            message(Access {
                uid: 0,
                gid: 0,
                mode: 0o640
            }),
            "cannot read /etc/v4l2rtmp/x.toml (owner root:root, mode 0640; v4l2rtmp runs as user \
             v4l2rtmp): run `sudo chgrp v4l2rtmp /etc/v4l2rtmp/x.toml`"
        );
        assert!(message(Access {
            uid: 0,
            gid: 0,
            mode: 0o600
        })
        .ends_with(
            "run `sudo chgrp v4l2rtmp /etc/v4l2rtmp/x.toml && sudo chmod 0640 /etc/v4l2rtmp/x.toml`"
        ));
        // The right group (a supplementary one counts too) but no group read bit.
        for gid in [998, 44] {
            let text = message(Access {
                uid: 0,
                gid,
                mode: 0o600,
            });
            assert!(
                text.ends_with("run `sudo chmod g+r /etc/v4l2rtmp/x.toml`"),
                "{text}"
            );
        }
        // An unknown owner is shown by number.
        let text = message(Access {
            uid: 1234,
            gid: 4321,
            mode: 0o600,
        });
        assert!(text.contains("(owner 1234:4321, mode 0600;"), "{text}");
    }

    #[test]
    fn a_closed_directory_is_named_instead_of_the_file() {
        let (me, names) = service();
        let file = Access {
            uid: 0,
            gid: 998,
            mode: 0o640,
        };
        let closed = Access {
            uid: 0,
            gid: 0,
            mode: 0o750,
        };
        let mut path = along(closed, file);
        // Inside a directory it cannot enter, v4l2rtmp cannot see the file either.
        path[3].1 = None;
        assert_eq!(
            unreadable("/etc/v4l2rtmp/x.toml", &path, &me, &names),
            "cannot read /etc/v4l2rtmp/x.toml: its directory /etc/v4l2rtmp is closed to v4l2rtmp \
             (owner root:root, mode 0750; v4l2rtmp runs as user v4l2rtmp): run `sudo chgrp \
             v4l2rtmp /etc/v4l2rtmp`"
        );
        let text = unreadable(
            "/etc/v4l2rtmp/x.toml",
            &along(
                Access {
                    uid: 0,
                    gid: 0,
                    mode: 0o700,
                },
                file,
            ),
            &me,
            &names,
        );
        assert!(
            text.ends_with(
                "run `sudo chgrp v4l2rtmp /etc/v4l2rtmp && sudo chmod 2750 /etc/v4l2rtmp`"
            ),
            "{text}"
        );
    }

    #[test]
    fn this_process_has_an_identity() {
        let me = Identity::of_this_process().expect("/proc/self/status");
        use std::os::unix::fs::MetadataExt;
        let proc_self = std::fs::metadata("/proc/self").unwrap();
        assert_eq!((me.uid, me.gid), (proc_self.uid(), proc_self.gid()));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "\"",
            "'",
            "a = '",
            "a = \"\\u12\"",
            "a = \"\\U0011FFFF\"",
            "= =",
            "a = -",
            "a = +.e",
            "\u{0}",
        ] {
            let _ = parse(text);
        }
    }
}
