//! The v4l2rtmp binary: parse the command line, start a current-thread tokio runtime, publish,
//! and turn the outcome into a documented exit code (see `--help`).
#![deny(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use v4l2rtmp::config::{load, Command, Config, DEVICES_HELP, HELP};
use v4l2rtmp::error::{Error, Result};
use v4l2rtmp::notify::Notifier;
use v4l2rtmp::supervisor::{self, Ending};

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            // Before logging is set up (a bad command line or configuration file) the log would
            // show nothing: write it here, at error priority for journald too (`-p warning`).
            if !log::log_enabled!(log::Level::Error) {
                let journal = std::env::var_os("JOURNAL_STREAM").is_some();
                let _ = writeln!(std::io::stderr(), "{}", unlogged_error(&error, journal));
            }
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

fn try_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match load(&args)? {
        Command::Help => {
            print!("{HELP}");
            return Ok(());
        }
        Command::Version => {
            println!("v4l2rtmp {}", env!("CARGO_PKG_VERSION"));
            println!("{}", v4l2rtmp::media::aac_encoder::ENCODER_DESCRIPTION);
            return Ok(());
        }
        Command::DevicesHelp => {
            print!("{DEVICES_HELP}");
            return Ok(());
        }
        Command::Devices(paths) if paths.is_empty() => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            v4l2rtmp::v4l2::list::report(&mut out)?;
            out.write_all(b"\nSound capture devices (ALSA):\n")
                .map_err(|e| Error::io(v4l2rtmp::error::Fault::Ours, "cannot write", e))?;
            return v4l2rtmp::alsa::list::report(&mut out);
        }
        Command::Devices(paths) => return report_devices(&paths),
        Command::Publish(config) => *config,
    };
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(v4l2rtmp::error::Fault::Ours, "cannot start the runtime", e))?;
    let notifier = Notifier::from_env();
    let reload = || match load(&args)? {
        Command::Publish(config) => Ok(*config),
        _ => Err(Error::config(
            "the configuration no longer describes a stream",
        )),
    };
    let (ending, _progress) =
        runtime.block_on(supervisor::run(config, &reload, &notifier, &mut |_| {}))?;
    match ending {
        Ending::EndOfInput => log::info!("done"),
        Ending::Signal => log::info!("stopped"),
    }
    Ok(())
}

/// `v4l2rtmp devices DEVICE...`: the report for each device named; the first that cannot be
/// opened as a V4L2 device is the error (after the others are listed).
fn report_devices(paths: &[std::path::PathBuf]) -> Result<()> {
    use v4l2rtmp::v4l2::device::Device;
    let mut first_error = None;
    let mut out = std::io::stdout().lock();
    for (i, path) in paths.iter().enumerate() {
        let device = match Device::open(path) {
            Ok(device) => device,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        let mut text = String::new();
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!("{}\n", path.display()));
        if let Ok(node) = std::fs::canonicalize(path) {
            if &node != path {
                text.push_str(&format!("  is {}\n", node.display()));
            }
        }
        text.push_str(&v4l2rtmp::v4l2::list::device_report(&device));
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| {
                Error::io(
                    v4l2rtmp::error::Fault::Input,
                    "cannot write the device report",
                    e,
                )
            })?;
    }
    first_error.map_or(Ok(()), Err)
}

/// Logs to stderr; under systemd (JOURNAL_STREAM set) without timestamps, which journald adds.
///
/// The level is `log::max_level()`, which a SIGHUP that changes `log-level` moves: the logger's
/// own filter lets everything through, so raising the level shows the new lines at once. With
/// `RUST_LOG` set, its directives are the filter (per-module ones included, the configured level
/// standing in for a missing default), and the level starts at the most verbose of them.
fn init_logging(config: &Config) {
    let mut builder = env_logger::Builder::new();
    let (filter, initial) = logging_filter(config.log_level, std::env::var("RUST_LOG").ok());
    builder.parse_filters(&filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|out, record| {
            writeln!(
                out,
                "<{}>{}",
                syslog_priority(record.level()),
                record.args()
            )
        });
    } else {
        builder
            .format(|out, record| writeln!(out, "v4l2rtmp {:5} {}", record.level(), record.args()));
    }
    builder.init();
    log::set_max_level(initial);
}

/// The logger's filter, as `RUST_LOG` spells it, and the level to start at.
fn logging_filter(
    configured: Option<log::LevelFilter>,
    rust_log: Option<String>,
) -> (String, log::LevelFilter) {
    let configured = configured.unwrap_or(log::LevelFilter::Info);
    match rust_log.filter(|spec| !spec.trim().is_empty()) {
        None => ("trace".to_string(), configured),
        Some(spec) => {
            let filter = format!("{configured},{spec}");
            let most_verbose = env_logger::Builder::new()
                .parse_filters(&filter)
                .build()
                .filter();
            (filter, most_verbose)
        }
    }
}

/// An error written before (or without) the logger: under journald with the error priority prefix,
/// which journald reads and strips (it names the program itself), else with the program's name.
fn unlogged_error(error: &Error, journal: bool) -> String {
    if journal {
        format!("<{}>{error}", syslog_priority(log::Level::Error))
    } else {
        format!("v4l2rtmp: {error}")
    }
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::{logging_filter, unlogged_error};
    use log::LevelFilter;
    use v4l2rtmp::error::Error;

    #[test]
    fn errors_before_logging_carry_the_error_priority_for_journald() {
        let error = Error::config("--bogus is unknown");
        assert_eq!(
            unlogged_error(&error, true),
            "<3>configuration error: --bogus is unknown"
        );
        assert_eq!(
            unlogged_error(&error, false),
            "v4l2rtmp: configuration error: --bogus is unknown"
        );
    }

    #[test]
    fn the_logger_passes_everything_and_the_level_starts_where_configured() {
        assert_eq!(
            logging_filter(Some(LevelFilter::Warn), None),
            ("trace".to_string(), LevelFilter::Warn)
        );
        assert_eq!(logging_filter(None, None).1, LevelFilter::Info);
        assert_eq!(logging_filter(None, Some(" ".into())).1, LevelFilter::Info);
    }

    #[test]
    fn rust_log_directives_stay_and_the_level_is_the_most_verbose_of_them() {
        let (filter, level) = logging_filter(None, Some("v4l2rtmp::rtmp=trace".into()));
        assert_eq!(level, LevelFilter::Trace);
        let logger = env_logger::Builder::new().parse_filters(&filter).build();
        let enabled = |target: &str, level: log::Level| {
            log::Log::enabled(
                &logger,
                &log::Metadata::builder().target(target).level(level).build(),
            )
        };
        assert!(enabled("v4l2rtmp::rtmp::session", log::Level::Trace));
        assert!(enabled("v4l2rtmp::supervisor", log::Level::Info));
        assert!(!enabled("v4l2rtmp::supervisor", log::Level::Debug));
        // A default in RUST_LOG overrides the configured level.
        assert_eq!(
            logging_filter(Some(LevelFilter::Error), Some("debug".into())).1,
            LevelFilter::Debug
        );
    }
}
