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
