//! The command line, parsed and validated with no side effects (as ripgrep does): parsing only
//! reads the argument list and returns a [`Config`] or an error naming the option at fault.
//! Opening files and sockets happens later, in the driver.
//!
//! Invariants: every value in a [`Config`] is in range (chunk size, frame rate, sizes), the URL is
//! a valid publish URL, and nothing in a `Config`'s `Debug` output shows the stream key.

use crate::error::{Error, Result};
use crate::url::RtmpUrl;

pub const HELP: &str = "\
v4l2rtmp: push H.264 from a camera, a pipe or a file to an RTMP server

USAGE:
    v4l2rtmp [OPTIONS] --input <PATH|-|exec:CMD|/dev/videoN> <URL>
    v4l2rtmp --config <FILE> [OPTIONS]
    v4l2rtmp devices [DEVICE]...
                              List the video devices (all, or those named): driver, card,
                              bus, capabilities, formats with sizes and frame rates, and
                              controls (v4l2rtmp devices --help)
    v4l2rtmp version          Print the version

URL:
    rtmp://host[:port]/app[/instance]/key[?query]
    rtmps://host[:port]/app[/instance]/key[?query]      RTMP over TLS (default port 443)
    rtmp://user:password@host/...                        Adobe or Limelight authentication
    IPv6 literals go in brackets: rtmp://[::1]:1935/live/key. The default port is 1935.
    A query string is passed to the server with the stream key (nginx-rtmp on_publish, SRS tokens).

INPUT:
    -i, --input <PATH|-|exec:CMD|/dev/videoN>
                              A V4L2 camera: one that gives H.264 (UVC H.264 webcams) is read
                              as it is; one that gives raw frames is encoded by a V4L2 H.264
                              encoder (the Raspberry Pi's /dev/video11, found by itself).
                              Or Annex-B H.264: a file, a FIFO, - for stdin, or exec:CMD ARGS
                              to run an encoder (e.g. rpicam-vid ... -o -) and read its
                              stdout; it is restarted when it exits

CAMERA (a /dev/video input; --fps, below, is the frame rate asked of it):
        --size <WxH>          Picture size, e.g. 1280x720 (default: the camera's current size
                              when it offers it, else its largest)
        --rotate <DEGREES>    0, 90, 180 or 270, where the camera has a rotate control
        --hflip, --vflip      Mirror the picture, where the camera has flip controls
        --encoder <DEVICE>    The V4L2 H.264 encoder for a raw camera (default: the first
                              memory-to-memory device that encodes H.264 from a format the
                              camera gives)
        --pixel-format <FOURCC>
                              Raw format from the camera to the encoder, e.g. NV12, YU12,
                              YUYV (default: the first both accept, NV12 first)
        --bitrate <BITS>      Encoder bitrate in bits/s; k and M suffixes (e.g. 4M)
        --keyframe-interval <SECONDS>
                              Time between keyframes, 0.1..=30 (default 2; YouTube asks for
                              at most 4)
        --profile <NAME>      H.264 profile: baseline, constrained-baseline, main or high
        --level <LEVEL>       H.264 level: 1, 1b, 1.1 ... 4, 4.1, 4.2, 5, 5.1, 5.2

OPTIONS:
        --config <FILE>       Read settings from a TOML file of key = value lines whose keys
                              are these options' long names (input, url, chunk-size, ...);
                              the command line overrides it; SIGHUP reads it again
        --url <URL>           The destination, as an option (for the configuration file)
        --ca-file <PEM>       RTMPS: trust only this CA (a private server) instead of the
                              system's certificate store (/etc/ssl/certs, else bundled roots).
                              A certificate in it that is exactly the server's is pinned:
                              how to trust a self-signed server
        --tls-fingerprint <SHA256>
                              RTMPS: trust only the server certificate with this SHA-256
                              fingerprint (64 hex digits, colons optional: openssl x509 -in
                              CERT -noout -fingerprint -sha256), whatever its names and dates
        --insecure            RTMPS: do NOT verify the server's certificate. Anyone on the
                              path can then read the stream key and the video. For testing.
        --redirect-credentials
                              Let a server's reconnect request (Enhanced RTMP) to another
                              host carry the URL's user:password there (default: not sent)
        --fps <RATE>          Constant frame rate for timestamps: 30, 29.97 or 30000/1001.
                              Default: the SPS timing (VUI) when present; otherwise the arrival
                              time of each frame for pipes and stdin, and 25 fps for files.
                              For a camera: the rate asked of it; timestamps then come
                              from the camera's buffers.
        --realtime            Send a file at its frame rate, like ffmpeg -re (pipes and
                              cameras are paced by their writer and need no pacing)
        --start-timestamp <MS>
                              Stream time of the first frame, in milliseconds (default 0)
        --chunk-size <BYTES>  Outgoing RTMP chunk size, 128..16777215 (default 4096)
        --timeout <SECONDS>   How long to wait for the connection, the handshake and each
                              server reply (default 10)
        --max-frame-size <BYTES>
                              Largest access unit accepted; bounds memory (default 8388608,
                              at most 16711679: RTMP message lengths are 24 bits)
        --log-level <LEVEL>   error, warn, info, debug or trace (default info; RUST_LOG
                              overrides)

AUDIO:
        --audio <SOURCE>      Add an AAC-LC audio track. SOURCE: an ALSA capture device
                              (hw:1,0, hw:CARD=Device,DEV=0 or /dev/snd/pcmC1D0c; `v4l2rtmp
                              devices` lists them); silence, a silent track for ingests that
                              want one (YouTube); or ADTS AAC from a file, a FIFO or exec:CMD,
                              sent as it is
        --audio-rate <HZ>     Sample rate: 48000, 44100, 32000, 22050 or 16000 (default: the
                              device's, 48000 when it takes it; 48000 for silence)
        --audio-channels <N>  1 or 2 (default 1)
        --audio-bitrate <BITS>
                              Announced in onMetaData; k suffix (default 64k mono, 128k stereo)

RELIABILITY:
        --stall-timeout <SECONDS>
                              Reconnect when the socket has accepted no data for this long
                              while data waits to be sent (default 10)
        --source-timeout <SECONDS>
                              Restart a live input (pipe, FIFO, exec:) that has delivered no
                              frame for this long; 0 never (default 10)
        --stats-interval <SECONDS>
                              Log a progress line (frames, fps, current bitrate, drops, queue)
                              this often; 0 never (default 5 on a terminal, else 300)
        --backoff-max <SECONDS>
                              Longest wait between reconnects; a refused key or app waits
                              this long (default 30)
        --backoff-reset <SECONDS>
                              A connection that streamed this long (a keyframe included)
                              proved the server healthy: when it is lost, reconnects come
                              at most 1 s apart for a minute (default 2)
        --max-retries <N>     Give up after N consecutive failed connections; 0 exits at
                              the first failure (default: retry forever)
        --queue-time <MS>     Most stream time held while the network is slow or down;
                              beyond it whole GOPs are dropped (default 2000)
        --queue-size <BYTES>  Most bytes held likewise (default 8388608)
    -h, --help                Print this help
    -V, --version             Print the version

EXIT CODES:
    0   the input ended and the stream was closed cleanly, or SIGINT/SIGTERM stopped it
    64  the command line is wrong
    65  the input is not usable H.264 (no SPS/PPS/IDR, malformed parameter sets), or
        cannot be opened
    69  the server refused the connection or the stream (unknown app, key refused or in use)
    70  internal error (a bug: please report it)
    75  network error (cannot connect, connection lost, timeout)
    76  the server broke the protocol or did not answer in time, or its TLS
        certificate was refused

The stream key never appears in logs or error messages.
";

/// How frame timestamps are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FrameRate {
    /// From the SPS timing when present, else arrival time (live input) or 25 fps (files).
    Auto,
    /// `numerator / denominator` frames per second, exactly.
    Fixed { numerator: u32, denominator: u32 },
}

/// `v4l2rtmp devices --help`.
pub const DEVICES_HELP: &str = "\
v4l2rtmp devices: list the V4L2 devices and what they offer

USAGE:
    v4l2rtmp devices [DEVICE]...

    With no DEVICE, every /dev/video* device; else only those named, e.g. /dev/video0 or
    /dev/v4l/by-id/usb-...-video-index0.

For each: driver, card, bus, capabilities, the formats of each queue with their frame sizes and
rates, the current format, and the controls (named as v4l2-ctl names them, with their ranges,
menus and values). A camera that offers H264 is read as it is; one that offers only raw formats
needs a V4L2 H.264 encoder (a memory-to-memory device, such as the Raspberry Pi's /dev/video11).

With no DEVICE, the sound cards' capture devices follow (as `arecord -l` lists them): each with
its hw:CARD,DEV names, and the sample formats, rates and channels it offers.
";

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Publish(Box<Config>),
    /// `v4l2rtmp devices [DEVICE]...`: list the V4L2 devices (all of them when none is named) and
    /// what they offer.
    Devices(Vec<std::path::PathBuf>),
    /// `v4l2rtmp devices --help`.
    DevicesHelp,
    Help,
    Version,
}

/// `devices`, `version` and `help` as the first argument: commands of their own, which take no
/// URL and read no configuration file.
fn subcommand(args: &[String]) -> Option<Result<Command>> {
    let (first, rest) = args.split_first()?;
    let command = match first.as_str() {
        "devices" => {
            if rest.iter().any(|a| a == "-h" || a == "--help") {
                return Some(Ok(Command::DevicesHelp));
            }
            if let Some(option) = rest.iter().find(|a| a.starts_with('-')) {
                return Some(Err(Error::config(format!(
                    "devices: unknown option {option}: `v4l2rtmp devices [DEVICE]...` takes only \
                     device paths (see v4l2rtmp devices --help)"
                ))));
            }
            Command::Devices(rest.iter().map(Into::into).collect())
        }
        "version" => Command::Version,
        "help" => Command::Help,
        _ => return None,
    };
    if command != Command::Help && command != Command::Version || rest.is_empty() {
        Some(Ok(command))
    } else {
        Some(Err(Error::config(format!(
            "{first} takes no arguments (see --help)"
        ))))
    }
}

/// A validated publish configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub input: String,
    pub url: RtmpUrl,
    pub frame_rate: FrameRate,
    pub realtime: bool,
    pub start_timestamp_ms: u64,
    pub chunk_size: u32,
    pub timeout_ms: u64,
    pub max_frame_size: usize,
    pub log_level: Option<log::LevelFilter>,
    pub stall_timeout_ms: u64,
    /// 0: never.
    pub source_timeout_ms: u64,
    /// How often the progress line is logged; None: 5 s on a terminal, else 5 minutes; 0: never.
    pub stats_interval_ms: Option<u64>,
    pub backoff_max_ms: u64,
    pub backoff_reset_ms: u64,
    /// None: retry forever.
    pub max_retries: Option<u32>,
    pub queue_time_ms: u64,
    pub queue_size: usize,
    /// The file given with --config, read again on SIGHUP.
    pub config_file: Option<String>,
    /// RTMPS: trust only this CA (PEM) instead of the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// RTMPS: do not verify the server's certificate (dangerous).
    pub insecure: bool,
    /// RTMPS: trust the server certificate with this SHA-256 (pinning); alone, nothing else.
    pub tls_fingerprint: Option<crate::tls::Fingerprint>,
    /// A server's redirect to another host may carry the URL's user:password.
    pub redirect_credentials: bool,
    /// What to ask of a V4L2 camera and encoder.
    pub device: DeviceOptions,
    /// The audio track, if any (`--audio`).
    pub audio: Option<AudioOptions>,
}

/// Where the audio track comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioSource {
    /// Silent AAC-LC frames, paced by the video's timeline: no device.
    Silence,
    /// An ALSA capture device, as the user named it: `hw:CARD,DEV`, `hw:CARD=Name,DEV=0` or
    /// `/dev/snd/pcmC1D0c`. Captured, stamped on CLOCK_MONOTONIC and encoded to AAC-LC.
    Device(String),
    /// ADTS AAC from a file, a FIFO, a pipe or `exec:CMD`, sent as it is.
    Adts(String),
}

impl AudioSource {
    /// Whether the track's frames come from a clock of their own (a capture), which the video's
    /// timeline must follow, rather than from the video's timeline.
    pub fn is_captured(&self) -> bool {
        matches!(self, AudioSource::Device(_) | AudioSource::Adts(_))
    }
}

/// The audio track: `--audio` and the options that go with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioOptions {
    pub source: AudioSource,
    /// Samples per second, one of [`AUDIO_RATES`]; `None`: the device's (the first of
    /// [`AUDIO_RATES`] it takes), 48000 for a silent track.
    pub rate: Option<u32>,
    /// 1 or 2.
    pub channels: u8,
    /// Bits per second.
    pub bitrate: u32,
}

impl AudioOptions {
    /// The sample rate the track starts with: the one asked for, else 48000 (a device that
    /// gives another rate changes it when it opens).
    pub fn initial_rate(&self) -> u32 {
        self.rate.unwrap_or(AUDIO_RATES[0])
    }
}

/// The sample rates `--audio-rate` takes: what USB microphones and the AAC-LC encoders offer.
pub const AUDIO_RATES: [u32; 5] = [48_000, 44_100, 32_000, 22_050, 16_000];

/// Options for a `/dev/video` input: the camera, and the encoder behind a raw camera. Menu values
/// are the V4L2 ones (`V4L2_MPEG_VIDEO_H264_PROFILE_*`, `V4L2_MPEG_VIDEO_H264_LEVEL_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceOptions {
    pub size: Option<(u32, u32)>,
    pub rotate: Option<i64>,
    pub hflip: bool,
    pub vflip: bool,
    pub encoder: Option<std::path::PathBuf>,
    /// A FourCC such as NV12, checked when the device is opened.
    pub pixel_format: Option<String>,
    pub bitrate: Option<u32>,
    pub keyframe_interval_ms: u64,
    pub profile: Option<i64>,
    pub level: Option<i64>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            size: None,
            rotate: None,
            hflip: false,
            vflip: false,
            encoder: None,
            pixel_format: None,
            bitrate: None,
            keyframe_interval_ms: 2000,
            profile: None,
            level: None,
        }
    }
}

/// H.264 profile names and their `V4L2_MPEG_VIDEO_H264_PROFILE_*` values.
pub const H264_PROFILES: &[(&str, i64)] = &[
    ("baseline", 0),
    ("constrained-baseline", 1),
    ("main", 2),
    ("high", 4),
];

/// H.264 levels and their `V4L2_MPEG_VIDEO_H264_LEVEL_*` values.
pub const H264_LEVELS: &[(&str, i64)] = &[
    ("1", 0),
    ("1.0", 0),
    ("1b", 1),
    ("1.1", 2),
    ("1.2", 3),
    ("1.3", 4),
    ("2", 5),
    ("2.0", 5),
    ("2.1", 6),
    ("2.2", 7),
    ("3", 8),
    ("3.0", 8),
    ("3.1", 9),
    ("3.2", 10),
    ("4", 11),
    ("4.0", 11),
    ("4.1", 12),
    ("4.2", 13),
    ("5", 14),
    ("5.0", 14),
    ("5.1", 15),
    ("5.2", 16),
];

pub const DEFAULT_CHUNK_SIZE: u32 = 4096;
pub const MIN_CHUNK_SIZE: u32 = 128;
pub const MAX_CHUNK_SIZE: u32 = 16_777_215;
pub const DEFAULT_MAX_FRAME_SIZE: usize = 8 * 1024 * 1024;
/// An RTMP message length is 24 bits; the FLV tag header and length prefixes need a little room.
pub const MAX_FRAME_SIZE: usize = 0xFF_FFFF - 64 * 1024;

impl Config {
    /// A configuration with defaults for everything but input and destination.
    pub fn new(input: impl Into<String>, url: RtmpUrl) -> Config {
        let reliability = Reliability::default();
        Config {
            input: input.into(),
            url,
            frame_rate: FrameRate::Auto,
            realtime: false,
            start_timestamp_ms: 0,
            chunk_size: DEFAULT_CHUNK_SIZE,
            timeout_ms: 10_000,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            log_level: None,
            stall_timeout_ms: reliability.stall_timeout_ms,
            source_timeout_ms: reliability.source_timeout_ms,
            stats_interval_ms: None,
            backoff_max_ms: reliability.backoff_max_ms,
            backoff_reset_ms: reliability.backoff_reset_ms,
            max_retries: reliability.max_retries,
            queue_time_ms: reliability.queue_time_ms,
            queue_size: reliability.queue_size,
            config_file: None,
            ca_file: None,
            insecure: false,
            tls_fingerprint: None,
            redirect_credentials: false,
            device: DeviceOptions::default(),
            audio: None,
        }
    }
}

/// Reads the configuration file named by `--config` (the one side effect of configuration),
/// then parses its settings followed by the command line, which wins.
pub fn load(args: &[String]) -> Result<Command> {
    if let Some(command) = subcommand(args) {
        return command;
    }
    let mut tokens = Vec::new();
    let config_file = config_path(args);
    if let Some(path) = config_file.clone() {
        let text = crate::config_file::read(&path)?;
        let settings =
            crate::config_file::parse(&text).map_err(|e| Error::config(format!("{path}: {e}")))?;
        for setting in settings {
            use crate::config_file::Value;
            let option = format!("--{}", setting.key);
            let token = match (&setting.value, FLAGS.contains(&option.as_str())) {
                (Value::Boolean(true), true) => option,
                // A flag set to false is the default: leave it out.
                (Value::Boolean(false), true) => continue,
                (value, true) => {
                    let shown = match value {
                        Value::String(text) => format!("{text:?}"),
                        other => other.to_arg(),
                    };
                    return Err(Error::config(format!(
                        "{path} line {}: {} is true or false, not {shown}",
                        setting.line, setting.key
                    )));
                }
                // A value, even true or false, for an option that takes one (which says
                // whether it fits).
                (value, false) => format!("{option}={}", value.to_arg()),
            };
            let origin = Some(Origin {
                file: path.clone(),
                line: setting.line,
                key: setting.key,
            });
            tokens.push((token, origin));
        }
    }
    tokens.extend(args.iter().map(|a| (a.clone(), None)));
    parse_tokens(tokens, config_file.as_deref())
}

/// The value of `--config`, if given.
fn config_path(args: &[String]) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--config" {
            return iter.next().cloned();
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_string());
        }
    }
    None
}

/// The options that take no value: on or off. In the file they are `true` or `false`.
const FLAGS: &[&str] = &[
    "--insecure",
    "--redirect-credentials",
    "--realtime",
    "--re",
    "--hflip",
    "--vflip",
];

/// Where a setting came from, for error messages.
#[derive(Clone, Debug)]
struct Origin {
    file: String,
    line: usize,
    key: String,
}

/// Parses the arguments after the program name (no configuration file).
pub fn parse_args<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    if let Some(command) = subcommand(&args) {
        return command;
    }
    parse_tokens(args.into_iter().map(|a| (a, None)).collect(), None)
}

/// The tokens being parsed, remembering where the last one came from.
struct Tokens {
    tokens: std::vec::IntoIter<(String, Option<Origin>)>,
    /// Where the token last returned came from (None: the command line).
    last: Option<Origin>,
    /// Whether all were taken: an error then is about the whole, not the last token.
    done: bool,
}

impl Iterator for Tokens {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        match self.tokens.next() {
            Some((token, origin)) => {
                self.last = origin;
                Some(token)
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

/// Parses the settings of `config_file` (if any), as tokens, then the command line's.
fn parse_tokens(
    tokens: Vec<(String, Option<Origin>)>,
    config_file: Option<&str>,
) -> Result<Command> {
    let mut args = Tokens {
        tokens: tokens.into_iter(),
        last: None,
        done: false,
    };
    let result = parse_token_stream(&mut args, config_file);
    match (&args.last, args.done) {
        (Some(origin), false) => result.map_err(|e| {
            // The message names the option as the command line spells it, which the file
            // line's key already says.
            let message = e.message();
            let message = message
                .strip_prefix(&format!("--{}: ", origin.key))
                .unwrap_or(message)
                // The file's keys have no dashes.
                .replace("did you mean --", "did you mean ");
            Error::config(format!(
                "{} line {}: {}: {message}",
                origin.file, origin.line, origin.key
            ))
        }),
        _ => result,
    }
}

/// `file_read`: the configuration file whose settings are among `args`, for messages.
fn parse_token_stream(
    args: &mut dyn Iterator<Item = String>,
    file_read: Option<&str>,
) -> Result<Command> {
    let mut input = None;
    let mut url = None;
    let mut frame_rate = FrameRate::Auto;
    let mut realtime = false;
    let mut start_timestamp_ms = 0;
    let mut chunk_size = DEFAULT_CHUNK_SIZE;
    let mut timeout_ms = 10_000;
    let mut max_frame_size = DEFAULT_MAX_FRAME_SIZE;
    let mut log_level = None;
    let mut reliability = Reliability::default();
    let mut config_file = None;
    let mut ca_file = None;
    let mut insecure = false;
    let mut tls_fingerprint = None;
    let mut redirect_credentials = false;
    let mut stats_interval_ms = None;
    let mut device = DeviceOptions::default();
    let mut audio_source = None;
    let mut audio_rate = None;
    let mut audio_channels = None;
    let mut audio_bitrate = None;
    let mut only_positional = false;
    // The URL may come from the file (`url = ...`) and be overridden by the command line.
    let mut positional_url = false;

    while let Some(arg) = args.next() {
        if only_positional || !arg.starts_with('-') || arg == "-" {
            if positional_url {
                return Err(Error::config("more than one URL given (see --help)"));
            }
            positional_url = true;
            url = Some(RtmpUrl::parse(&arg)?);
            continue;
        }
        let (name, inline_value) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        if FLAGS.contains(&name.as_str()) && inline_value.is_some() {
            return Err(Error::config(format!(
                "{name} takes no value (leave it out to turn it off)"
            )));
        }
        let mut value = |what: &str| -> Result<String> {
            match inline_value.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(Error::config(format!("{name} needs {what}"))),
            }
        };
        match name.as_str() {
            "--" => only_positional = true,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-i" | "--input" => input = Some(value("a path, or - for stdin")?),
            "--url" => url = Some(RtmpUrl::parse(&value("a URL")?)?),
            "--ca-file" => ca_file = Some(std::path::PathBuf::from(value("a PEM file")?)),
            "--insecure" => insecure = true,
            "--tls-fingerprint" => {
                tls_fingerprint = Some(crate::tls::Fingerprint::parse(&value(
                    "a SHA-256 fingerprint (64 hex digits)",
                )?)?)
            }
            "--redirect-credentials" => redirect_credentials = true,
            "--config" => config_file = Some(value("a file")?),
            "--fps" => frame_rate = parse_frame_rate(&value("a frame rate")?)?,
            "--realtime" | "--re" => realtime = true,
            "--start-timestamp" => {
                start_timestamp_ms = parse_number(&name, &value("milliseconds")?, 0, u64::MAX)?
            }
            "--chunk-size" => {
                chunk_size = parse_number(
                    &name,
                    &value("a size in bytes")?,
                    MIN_CHUNK_SIZE.into(),
                    MAX_CHUNK_SIZE.into(),
                )? as u32
            }
            "--timeout" => timeout_ms = parse_number(&name, &value("seconds")?, 1, 3600)? * 1000,
            "--max-frame-size" => {
                max_frame_size = parse_number(
                    &name,
                    &value("a size in bytes")?,
                    64 * 1024,
                    MAX_FRAME_SIZE as u64,
                )? as usize
            }
            "--log-level" => {
                let text = value("a level")?;
                log_level = Some(text.parse().map_err(|_| {
                    Error::config(format!(
                        "--log-level: {text:?} is not one of error, warn, info, debug, trace"
                    ))
                })?)
            }
            "--stall-timeout" => {
                reliability.stall_timeout_ms =
                    parse_number(&name, &value("seconds")?, 1, 3600)? * 1000
            }
            "--source-timeout" => {
                reliability.source_timeout_ms =
                    parse_number(&name, &value("seconds")?, 0, 3600)? * 1000
            }
            "--stats-interval" => {
                stats_interval_ms = Some(parse_number(&name, &value("seconds")?, 0, 86_400)? * 1000)
            }
            "--backoff-max" => {
                reliability.backoff_max_ms =
                    parse_number(&name, &value("seconds")?, 1, 3600)? * 1000
            }
            "--backoff-reset" => {
                reliability.backoff_reset_ms =
                    parse_number(&name, &value("seconds")?, 1, 86400)? * 1000
            }
            "--max-retries" => {
                reliability.max_retries =
                    Some(parse_number(&name, &value("a count")?, 0, u32::MAX.into())? as u32)
            }
            "--queue-time" => {
                reliability.queue_time_ms =
                    parse_number(&name, &value("milliseconds")?, 100, 60_000)?
            }
            "--queue-size" => {
                reliability.queue_size =
                    parse_number(&name, &value("a size in bytes")?, 64 * 1024, 1 << 30)? as usize
            }
            "--size" => device.size = Some(parse_size(&value("a size like 1280x720")?)?),
            "--rotate" => {
                let degrees = parse_number(&name, &value("degrees")?, 0, 270)?;
                if degrees % 90 != 0 {
                    return Err(Error::config(format!(
                        "--rotate: {degrees} is not one of 0, 90, 180, 270"
                    )));
                }
                device.rotate = Some(degrees as i64);
            }
            "--hflip" => device.hflip = true,
            "--vflip" => device.vflip = true,
            "--encoder" => device.encoder = Some(value("a device such as /dev/video11")?.into()),
            "--pixel-format" => {
                let text = value("a FourCC such as NV12")?;
                if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(Error::config(format!(
                        "--pixel-format: {text:?} is not a FourCC such as NV12, YU12 or YUYV"
                    )));
                }
                device.pixel_format = Some(text);
            }
            "--bitrate" => device.bitrate = Some(parse_bitrate(&name, &value("bits per second")?)?),
            "--audio" => {
                let text = value("a source, such as hw:1,0 or silence")?;
                audio_source = Some(match text.as_str() {
                    "silence" => AudioSource::Silence,
                    _ if text.starts_with("hw:") || text.starts_with("/dev/snd/") => {
                        // Checked now: a typo is an error at start, not a device never found.
                        crate::alsa::PcmName::parse(&text)
                            .map_err(|e| Error::config(format!("--audio: {e}")))?;
                        AudioSource::Device(text)
                    }
                    "" | "-" => {
                        return Err(Error::config(
                            "--audio: an ALSA capture device (hw:1,0, hw:CARD=Device,DEV=0, \
                             /dev/snd/pcmC1D0c; `v4l2rtmp devices` lists them), silence, or ADTS \
                             AAC from a file, a FIFO or exec:CMD (stdin is the video's)",
                        ))
                    }
                    _ => AudioSource::Adts(text),
                })
            }
            "--audio-rate" => {
                let rate = parse_number(&name, &value("a sample rate")?, 1, 1_000_000)? as u32;
                if !AUDIO_RATES.contains(&rate) {
                    return Err(Error::config(format!(
                        "--audio-rate: {rate} is not one of 48000, 44100, 32000, 22050, 16000"
                    )));
                }
                audio_rate = Some(rate);
            }
            "--audio-channels" => {
                audio_channels = Some(parse_number(&name, &value("1 or 2")?, 1, 2)? as u8)
            }
            "--audio-bitrate" => {
                let bits = parse_bitrate(&name, &value("bits per second")?)?;
                if !(8_000..=512_000).contains(&bits) {
                    return Err(Error::config(format!(
                        "--audio-bitrate: {bits} bits/s is outside 8k..512k"
                    )));
                }
                audio_bitrate = Some(bits);
            }
            "--keyframe-interval" => {
                device.keyframe_interval_ms =
                    parse_seconds_ms(&name, &value("seconds")?, 100, 30_000)?
            }
            "--profile" => {
                let text = value("baseline, main or high")?;
                device.profile = Some(lookup(&name, &text, H264_PROFILES)?);
            }
            "--level" => {
                let text = value("a level such as 4.1")?;
                device.level = Some(lookup(&name, &text, H264_LEVELS)?);
            }
            _ => {
                let hint = match did_you_mean(&name) {
                    Some(option) => format!(": did you mean {option}?"),
                    None => String::new(),
                };
                return Err(Error::config(format!(
                    "unknown option {name}{hint} (see --help)"
                )));
            }
        }
    }
    let input = input.ok_or_else(|| match file_read {
        Some(file) => Error::config(format!(
            "{file} has no input, and the command line gives none: add input = \"/dev/video0\" \
             (or a file, a FIFO or \"exec:...\") to it"
        )),
        None => Error::config(
            "--input is required: a camera, a file, a FIFO, exec:CMD or - for stdin (see --help)",
        ),
    })?;
    let url = url.ok_or_else(|| match file_read {
        Some(file) => Error::config(format!(
            "{file} has no url, and the command line gives none: add url = \
             \"rtmp://host/app/key\" to it"
        )),
        None => Error::config("the destination URL is missing (see --help)"),
    })?;
    let audio = match audio_source {
        Some(source) => {
            let channels = audio_channels.unwrap_or(1);
            Some(AudioOptions {
                source,
                rate: audio_rate,
                channels,
                bitrate: audio_bitrate.unwrap_or(64_000 * u32::from(channels)),
            })
        }
        None if audio_rate.is_some() || audio_channels.is_some() || audio_bitrate.is_some() => {
            return Err(Error::config(
                "--audio-rate, --audio-channels and --audio-bitrate need --audio (see --help)",
            ))
        }
        None => None,
    };
    Ok(Command::Publish(Box::new(Config {
        input,
        url,
        frame_rate,
        realtime,
        start_timestamp_ms,
        chunk_size,
        timeout_ms,
        max_frame_size,
        log_level,
        stall_timeout_ms: reliability.stall_timeout_ms,
        source_timeout_ms: reliability.source_timeout_ms,
        stats_interval_ms,
        backoff_max_ms: reliability.backoff_max_ms,
        backoff_reset_ms: reliability.backoff_reset_ms,
        max_retries: reliability.max_retries,
        queue_time_ms: reliability.queue_time_ms,
        queue_size: reliability.queue_size,
        config_file,
        ca_file,
        insecure,
        tls_fingerprint,
        redirect_credentials,
        device,
        audio,
    })))
}

/// The long option closest to `typed`, an unknown one: within a third of its length in edits
/// (a typo, `_` for `-`, a swapped pair), or else the only option it begins. The options are
/// those `--help` lists.
fn did_you_mean(typed: &str) -> Option<String> {
    let wanted = typed.trim_start_matches('-').to_ascii_lowercase();
    if wanted.is_empty() {
        return None;
    }
    let mut options: Vec<&str> = HELP
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|word| word.strip_prefix("--"))
        .filter(|option| !option.is_empty() && !option.starts_with('-'))
        .collect();
    options.sort_unstable();
    options.dedup();
    let limit = (wanted.len() / 3).max(1);
    let closest = options
        .iter()
        .map(|option| (edit_distance(&wanted, option), *option))
        .filter(|&(distance, _)| distance <= limit)
        .min();
    if let Some((_, option)) = closest {
        return Some(format!("--{option}"));
    }
    let mut begun = options
        .iter()
        .filter(|option| wanted.len() >= 3 && option.starts_with(&wanted));
    match (begun.next(), begun.next()) {
        (Some(option), None) => Some(format!("--{option}")),
        _ => None,
    }
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: the distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let same = a[i - 1] == b[j - 1] || (a[i - 1] == '_' && b[j - 1] == '-');
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + usize::from(!same));
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// `1280x720`.
fn parse_size(text: &str) -> Result<(u32, u32)> {
    let bad = || Error::config(format!("--size: {text:?} is not a size like 1280x720"));
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let width: u32 = w.trim().parse().map_err(|_| bad())?;
    let height: u32 = h.trim().parse().map_err(|_| bad())?;
    if !(16..=16384).contains(&width) || !(16..=16384).contains(&height) {
        return Err(bad());
    }
    Ok((width, height))
}

/// `4000000`, `4000k`, `4M`, `2.5M`.
fn parse_bitrate(name: &str, text: &str) -> Result<u32> {
    let bad = || {
        Error::config(format!(
            "{name}: {text:?} is not a bitrate like 4000000, 4000k or 4M (8k..=100M)"
        ))
    };
    let (number, scale) = match text.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1e3),
        None => match text.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => (text, 1.0),
        },
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    let bits = value * scale;
    if !bits.is_finite() || !(8e3..=100e6).contains(&bits) {
        return Err(bad());
    }
    Ok(bits.round() as u32)
}

/// Seconds with up to three decimals, as milliseconds within `min_ms..=max_ms`.
fn parse_seconds_ms(name: &str, text: &str, min_ms: u64, max_ms: u64) -> Result<u64> {
    let bad = || {
        Error::config(format!(
            "{name}: {text:?} is not a number of seconds within {}..={}",
            min_ms as f64 / 1000.0,
            max_ms as f64 / 1000.0
        ))
    };
    let seconds: f64 = text.trim().parse().map_err(|_| bad())?;
    let ms = (seconds * 1000.0).round();
    if !ms.is_finite() || ms < min_ms as f64 || ms > max_ms as f64 {
        return Err(bad());
    }
    Ok(ms as u64)
}

fn lookup(name: &str, text: &str, table: &[(&str, i64)]) -> Result<i64> {
    let wanted = text.trim().to_ascii_lowercase();
    table
        .iter()
        .find(|(key, _)| *key == wanted)
        .map(|&(_, value)| value)
        .ok_or_else(|| {
            let mut names: Vec<&str> = table.iter().map(|(key, _)| *key).collect();
            names.dedup();
            Error::config(format!(
                "{name}: {text:?} is not one of {}",
                names.join(", ")
            ))
        })
}

/// The reliability options, gathered while parsing.
struct Reliability {
    stall_timeout_ms: u64,
    source_timeout_ms: u64,
    backoff_max_ms: u64,
    backoff_reset_ms: u64,
    max_retries: Option<u32>,
    queue_time_ms: u64,
    queue_size: usize,
}

impl Default for Reliability {
    fn default() -> Self {
        Reliability {
            stall_timeout_ms: 10_000,
            source_timeout_ms: 10_000,
            backoff_max_ms: 30_000,
            backoff_reset_ms: 2_000,
            max_retries: None,
            queue_time_ms: 2_000,
            queue_size: 8 * 1024 * 1024,
        }
    }
}

fn parse_number(name: &str, text: &str, min: u64, max: u64) -> Result<u64> {
    let number: u64 = text
        .parse()
        .map_err(|_| Error::config(format!("{name}: {text:?} is not a whole number")))?;
    if !(min..=max).contains(&number) {
        return Err(Error::config(format!(
            "{name}: {number} is outside {min}..={max}"
        )));
    }
    Ok(number)
}

/// `30`, `29.97` or `30000/1001` as an exact fraction.
pub fn parse_frame_rate(text: &str) -> Result<FrameRate> {
    let bad = || {
        Error::config(format!(
            "--fps: {text:?} is not a frame rate like 30, 29.97 or 30000/1001"
        ))
    };
    let (numerator, denominator) = if let Some((n, d)) = text.split_once('/') {
        (
            n.trim().parse::<u32>().map_err(|_| bad())?,
            d.trim().parse::<u32>().map_err(|_| bad())?,
        )
    } else if let Some((whole, fraction)) = text.split_once('.') {
        if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let scale = 10u32.pow(fraction.len() as u32);
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let fraction: u32 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| bad())?
        };
        let numerator = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction))
            .ok_or_else(bad)?;
        // 29.97 and 59.94 mean the NTSC rates, exactly.
        match (numerator, scale) {
            (2997, 100) => (30000, 1001),
            (5994, 100) => (60000, 1001),
            (23976, 1000) => (24000, 1001),
            _ => (numerator, scale),
        }
    } else {
        (text.parse::<u32>().map_err(|_| bad())?, 1)
    };
    if numerator == 0 || denominator == 0 || f64::from(numerator) / f64::from(denominator) > 1000.0
    {
        return Err(bad());
    }
    Ok(FrameRate::Fixed {
        numerator,
        denominator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Fault;

    fn publish(args: &[&str]) -> Config {
        match parse_args(args.iter().copied()).unwrap() {
            Command::Publish(config) => *config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn minimal_command_line_takes_defaults() {
        let config = publish(&["--input", "-", "rtmp://127.0.0.1/live/key"]);
        assert_eq!(config.input, "-");
        assert_eq!(config.url.app, "live");
        assert_eq!(config.chunk_size, 4096);
        assert_eq!(config.frame_rate, FrameRate::Auto);
        assert!(!config.realtime);
        assert_eq!(config.timeout_ms, 10_000);
    }

    #[test]
    fn audio_options_and_their_defaults() {
        let base = ["--input", "-", "rtmp://h/a/k"];
        assert_eq!(publish(&base).audio, None);
        let with = |extra: &[&str]| publish(&[&base[..], extra].concat());
        assert_eq!(
            with(&["--audio", "silence"]).audio,
            Some(AudioOptions {
                source: AudioSource::Silence,
                rate: None,
                channels: 1,
                bitrate: 64_000,
            })
        );
        let stereo = with(&[
            "--audio=silence",
            "--audio-channels",
            "2",
            "--audio-rate=44100",
        ]);
        let audio = stereo.audio.unwrap();
        assert_eq!(
            (audio.rate, audio.channels, audio.bitrate),
            (Some(44_100), 2, 128_000)
        );
        let mic = with(&["--audio", "hw:CARD=Device,DEV=0"]).audio.unwrap();
        assert_eq!(
            mic.source,
            AudioSource::Device("hw:CARD=Device,DEV=0".into())
        );
        assert!(mic.source.is_captured());
        assert_eq!((mic.rate, mic.initial_rate()), (None, 48_000));
        assert_eq!(
            with(&["--audio", "/dev/snd/pcmC1D0c"])
                .audio
                .unwrap()
                .source,
            AudioSource::Device("/dev/snd/pcmC1D0c".into())
        );
        let adts = with(&["--audio", "exec:arecord -f S16_LE | fdkaac -f 2 -"]);
        let adts = adts.audio.unwrap().source;
        assert_eq!(
            adts,
            AudioSource::Adts("exec:arecord -f S16_LE | fdkaac -f 2 -".into())
        );
        assert!(adts.is_captured());
        let rated = with(&["--audio", "silence", "--audio-bitrate", "96k"]);
        assert_eq!(rated.audio.unwrap().bitrate, 96_000);
        for (extra, message) in [
            (&["--audio", "-"][..], "stdin is the video's"),
            (&["--audio", "hw:one,two"], "--audio: "),
            (
                &["--audio", "silence", "--audio-rate", "8000"],
                "is not one of 48000",
            ),
            (
                &["--audio", "silence", "--audio-channels", "3"],
                "--audio-channels",
            ),
            (
                &["--audio", "silence", "--audio-bitrate", "1M"],
                "outside 8k..512k",
            ),
            (&["--audio-rate", "48000"], "need --audio"),
        ] {
            let err = parse_args([&base[..], extra].concat()).unwrap_err();
            assert_eq!(err.fault(), Fault::Config);
            assert!(err.message().contains(message), "{extra:?}: {err}");
        }
    }

    #[test]
    fn every_option() {
        let config = publish(&[
            "rtmp://h/a/k",
            "--input=clip.h264",
            "--fps",
            "30000/1001",
            "--realtime",
            "--start-timestamp",
            "16777000",
            "--chunk-size=65536",
            "--timeout",
            "3",
            "--max-frame-size",
            "1048576",
            "--log-level",
            "debug",
        ]);
        assert_eq!(config.input, "clip.h264");
        assert_eq!(
            config.frame_rate,
            FrameRate::Fixed {
                numerator: 30000,
                denominator: 1001
            }
        );
        assert!(config.realtime);
        assert_eq!(config.start_timestamp_ms, 16_777_000);
        assert_eq!(config.chunk_size, 65536);
        assert_eq!(config.timeout_ms, 3000);
        assert_eq!(config.max_frame_size, 1 << 20);
        assert_eq!(config.log_level, Some(log::LevelFilter::Debug));
    }

    #[test]
    fn frame_rates() {
        assert_eq!(
            parse_frame_rate("30").unwrap(),
            FrameRate::Fixed {
                numerator: 30,
                denominator: 1
            }
        );
        assert_eq!(
            parse_frame_rate("29.97").unwrap(),
            FrameRate::Fixed {
                numerator: 30000,
                denominator: 1001
            }
        );
        assert_eq!(
            parse_frame_rate("12.5").unwrap(),
            FrameRate::Fixed {
                numerator: 125,
                denominator: 10
            }
        );
        assert_eq!(
            parse_frame_rate("25/1").unwrap(),
            FrameRate::Fixed {
                numerator: 25,
                denominator: 1
            }
        );
        for bad in ["0", "x", "30/0", "1.23456", "-5", "5000", "", "1e3"] {
            assert!(parse_frame_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn camera_and_encoder_options() {
        let config = publish(&[
            "-i",
            "/dev/video0",
            "rtmp://h/a/k",
            "--size",
            "1280x720",
            "--rotate=180",
            "--hflip",
            "--vflip",
            "--encoder",
            "/dev/video11",
            "--pixel-format",
            "NV12",
            "--bitrate",
            "2.5M",
            "--keyframe-interval",
            "1.5",
            "--profile",
            "High",
            "--level",
            "4.1",
        ]);
        assert_eq!(
            config.device,
            DeviceOptions {
                size: Some((1280, 720)),
                rotate: Some(180),
                hflip: true,
                vflip: true,
                encoder: Some("/dev/video11".into()),
                pixel_format: Some("NV12".into()),
                bitrate: Some(2_500_000),
                keyframe_interval_ms: 1500,
                profile: Some(4),
                level: Some(12),
            }
        );
        let defaults = publish(&["-i", "/dev/video0", "rtmp://h/a/k"]).device;
        assert_eq!(defaults, DeviceOptions::default());
        assert_eq!(defaults.keyframe_interval_ms, 2000);
        assert_eq!(parse_bitrate("--bitrate", "4000k").unwrap(), 4_000_000);
        assert_eq!(parse_bitrate("--bitrate", "800000").unwrap(), 800_000);
        assert_eq!(parse_size("640X480").unwrap(), (640, 480));
        for (option, bad) in [
            ("--size", "1280"),
            ("--size", "0x0"),
            ("--size", "1280x720x3"),
            ("--rotate", "45"),
            ("--rotate", "360"),
            ("--bitrate", "fast"),
            ("--bitrate", "1"),
            ("--bitrate", "1G"),
            ("--keyframe-interval", "0"),
            ("--keyframe-interval", "31"),
            ("--keyframe-interval", "NaN"),
            ("--profile", "extended"),
            ("--level", "4.3"),
            ("--pixel-format", "NV12X"),
            ("--pixel-format", ""),
        ] {
            let err = parse_args(["-i", "/dev/video0", "rtmp://h/a/k", option, bad]).unwrap_err();
            assert_eq!(err.fault(), Fault::Config);
            assert!(err.message().contains(option), "{option} {bad}: {err}");
        }
    }

    #[test]
    fn flags_set_to_false_in_the_file_stay_off_and_take_no_value_on_the_command_line() {
        let dir = std::env::temp_dir().join(format!("v4l2rtmp-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cam.toml");
        std::fs::write(
            &file,
            "input = \"/dev/video0\"\nurl = \"rtmps://h/a/k\"\ninsecure = false\nhflip = false\n\
             vflip = true\nrealtime = false\n",
        )
        .unwrap();
        let args = vec!["--config".to_string(), file.display().to_string()];
        let Command::Publish(config) = load(&args).unwrap() else {
            panic!("not a publish command")
        };
        assert!(
            !config.insecure,
            "insecure = false must not turn verification off"
        );
        assert!(!config.device.hflip);
        assert!(config.device.vflip);
        assert!(!config.realtime);
        std::fs::remove_dir_all(&dir).unwrap();
        for flag in ["--insecure=false", "--hflip=0", "--realtime=yes"] {
            let err = parse_args(["-i", "-", "rtmp://h/a/k", flag]).unwrap_err();
            assert!(err.message().contains("takes no value"), "{flag}: {err}");
        }
    }

    #[test]
    fn tls_fingerprint_from_the_command_line_or_the_file() {
        let hex = "1CEFE5ABF1DC306429621A3D4F340691F5EE85C3BF156D12E8036BFE99C5B80D";
        let Command::Publish(config) =
            parse_args(["-i", "-", "rtmps://h/a/k", "--tls-fingerprint", hex]).unwrap()
        else {
            panic!("not a publish command")
        };
        let pin = config.tls_fingerprint.expect("a fingerprint");
        assert_eq!(pin.to_string().replace(':', ""), hex);
        let err =
            parse_args(["-i", "-", "rtmps://h/a/k", "--tls-fingerprint", &hex[..40]]).unwrap_err();
        assert!(err.message().contains("SHA-1"), "{err}");

        let dir = std::env::temp_dir().join(format!("v4l2rtmp-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cam.toml");
        std::fs::write(
            &file,
            format!("input = \"-\"\nurl = \"rtmps://h/a/k\"\ntls-fingerprint = \"{pin}\"\n"),
        )
        .unwrap();
        let args = vec!["--config".to_string(), file.display().to_string()];
        let Command::Publish(from_file) = load(&args).unwrap() else {
            panic!("not a publish command")
        };
        assert_eq!(from_file.tls_fingerprint, Some(pin));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_option() {
        for (args, needle) in [
            (
                &["-i", "-", "rtmp://h/a/k", "--chunk-size", "127"][..],
                "--chunk-size",
            ),
            (
                &["-i", "-", "rtmp://h/a/k", "--chunk-size", "16777216"][..],
                "--chunk-size",
            ),
            (&["-i", "-", "rtmp://h/a/k", "--bogus"][..], "--bogus"),
            (&["rtmp://h/a/k"][..], "--input"),
            (&["-i", "-"][..], "URL"),
            (&["-i", "-", "rtmp://h/a/k", "--fps"][..], "--fps"),
            (
                &["-i", "-", "rtmp://h/a/k", "rtmp://h/a/k2"][..],
                "more than one URL",
            ),
        ] {
            let err = parse_args(args.iter().copied()).unwrap_err();
            assert_eq!(err.fault(), Fault::Config);
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        }
    }

    #[test]
    fn unknown_options_get_a_suggestion() {
        for (typed, suggested) in [
            ("--chunksize", Some("--chunk-size")),
            ("--chunk_size", Some("--chunk-size")),
            ("--fsp", Some("--fps")),
            ("--inptu", Some("--input")),
            ("-input", Some("--input")),
            ("--Input", Some("--input")),
            ("--logleve", Some("--log-level")),
            ("--stall", Some("--stall-timeout")),
            ("--keyframe", Some("--keyframe-interval")),
            ("--insecur", Some("--insecure")),
            ("--bogus", None),
            ("--time", Some("--timeout")),
            ("--speed", None),
            ("-x", None),
        ] {
            let err = parse_args(["-i", "-", "rtmp://h/a/k", typed]).unwrap_err();
            let text = err.message();
            assert!(
                text.starts_with(&format!("unknown option {typed}")),
                "{text}"
            );
            match suggested {
                Some(option) => assert!(
                    text.contains(&format!("did you mean {option}?")),
                    "{typed}: {text}"
                ),
                None => assert!(!text.contains("did you mean"), "{typed}: {text}"),
            }
        }
    }

    /// `load` of a configuration file holding `text` (and nothing on the command line).
    fn load_file(text: &str) -> Result<Command> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "v4l2rtmp-load-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cam.toml");
        std::fs::write(&file, text).unwrap();
        let result = load(&["--config".to_string(), file.display().to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn unknown_keys_in_the_file_get_a_suggestion_without_dashes() {
        let err = load_file("input = \"-\"\nchunksize = 4096\n").unwrap_err();
        assert!(
            err.message().ends_with(
                "cam.toml line 2: chunksize: unknown option --chunksize: did you mean \
                 chunk-size? (see --help)"
            ),
            "{err}"
        );
    }

    #[test]
    fn configuration_file_errors_say_it_once_and_name_the_file() {
        for (text, wanted) in [
            (
                "input = \"-\"\nurl = \"rtmp://h/a/k\"\nrealtime = \"yes\"\n",
                "cam.toml line 3: realtime is true or false, not \"yes\"",
            ),
            (
                "input = \"-\"\nurl = \"rtmp://h/a/k\"\nhflip = 1\n",
                "cam.toml line 3: hflip is true or false, not 1",
            ),
            (
                "input = \"-\"\nurl = \"rtmp://h/a/k\"\n\nchunk-size = 100\n",
                "cam.toml line 4: chunk-size: 100 is outside 128..=16777215",
            ),
            (
                "input = \"-\"\nurl = \"rtmp://h/a/k\"\nfps = 0\n",
                "cam.toml line 3: fps: \"0\" is not a frame rate like 30, 29.97 or 30000/1001",
            ),
            (
                "input = \"-\"\nurl = \"rtmp://h/a/k\"\nchunk-size = true\n",
                "cam.toml line 3: chunk-size: \"true\" is not a whole number",
            ),
            (
                "input = \"/dev/video0\"\nfps = 30\n",
                "cam.toml has no url, and the command line gives none: add url = \
                 \"rtmp://host/app/key\" to it",
            ),
            (
                "url = \"rtmp://h/a/k\"\n",
                "cam.toml has no input, and the command line gives none: add input = \
                 \"/dev/video0\" (or a file, a FIFO or \"exec:...\") to it",
            ),
            ("", "cam.toml has no input, and the command line gives none"),
        ] {
            let err = load_file(text).unwrap_err();
            let message = err.message();
            assert!(
                message.contains(wanted),
                "{text:?}: {message}\nshould contain:\n{wanted}"
            );
            assert!(message.contains("/cam.toml"), "{message}");
        }
        // A byte-order mark, as some Windows editors write, is not an error.
        let Command::Publish(config) =
            load_file("\u{feff}input = \"-\"\nurl = \"rtmp://h/a/k\"\n").unwrap()
        else {
            panic!("not a publish command")
        };
        assert_eq!(config.input, "-");
    }

    #[test]
    fn help_describes_each_option_once_and_shows_every_input_in_its_usage() {
        let mut seen = Vec::new();
        for line in HELP.lines().map(str::trim_start) {
            if !line.starts_with('-') {
                continue;
            }
            let entry = line.split("  ").next().unwrap_or(line);
            for name in entry
                .split([',', ' '])
                .filter(|word| word.starts_with("--"))
            {
                assert!(!seen.contains(&name), "--help describes {name} twice");
                seen.push(name);
            }
        }
        assert!(seen.contains(&"--fps"), "{seen:?}");
        assert!(
            HELP.contains("v4l2rtmp [OPTIONS] --input <PATH|-|exec:CMD|/dev/videoN> <URL>"),
            "the usage line shows cameras and exec:"
        );
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_args(["devices"]).unwrap(), Command::Devices(vec![]));
        assert_eq!(
            parse_args(["devices", "/dev/video0", "/dev/video2"]).unwrap(),
            Command::Devices(vec!["/dev/video0".into(), "/dev/video2".into()])
        );
        assert_eq!(
            parse_args(["devices", "--help"]).unwrap(),
            Command::DevicesHelp
        );
        assert_eq!(parse_args(["devices", "-h"]).unwrap(), Command::DevicesHelp);
        assert_eq!(parse_args(["version"]).unwrap(), Command::Version);
        assert_eq!(parse_args(["help"]).unwrap(), Command::Help);
        for (args, needle) in [
            (
                &["devices", "--fps", "30"][..],
                "devices: unknown option --fps",
            ),
            (&["version", "x"][..], "version takes no arguments"),
        ] {
            let err = parse_args(args.iter().copied()).unwrap_err();
            assert!(err.message().contains(needle), "{args:?}: {err}");
        }
        assert_eq!(parse_args(["--help"]).unwrap(), Command::Help);
        assert_eq!(parse_args(["-V"]).unwrap(), Command::Version);
        for option in [
            "--input",
            "--fps",
            "--realtime",
            "--start-timestamp",
            "--chunk-size",
            "--timeout",
            "--max-frame-size",
            "--log-level",
            "--size",
            "--rotate",
            "--hflip",
            "--vflip",
            "--encoder",
            "--pixel-format",
            "--bitrate",
            "--keyframe-interval",
            "--profile",
            "--level",
        ] {
            assert!(HELP.contains(option), "--help documents {option}");
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let config = publish(&["-i", "-", "rtmp://h/live/topsecret?token=alsosecret"]);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("alsosecret"),
            "{shown}"
        );
    }
}
