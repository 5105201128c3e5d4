//! The v4l2rtmp binary: parse the command line, start a current-thread tokio runtime, publish,
//! and turn the outcome into a documented exit code (see `--help`).
#![deny(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use v4l2rtmp::config::{load, Command, Config, HELP};
use v4l2rtmp::error::{Error, Result};
use v4l2rtmp::notify::Notifier;
use v4l2rtmp::supervisor::{self, Ending};

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            // Before logging is set up (a bad command line) the log would show nothing.
            if !log::log_enabled!(log::Level::Error) {
                let _ = writeln!(std::io::stderr(), "v4l2rtmp: {error}");
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
            return Ok(());
        }
        Command::Devices => {
            let stdout = std::io::stdout();
            return v4l2rtmp::v4l2::list::report(&mut stdout.lock());
        }
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

/// Logs to stderr; under systemd (JOURNAL_STREAM set) without timestamps, which journald adds.
fn init_logging(config: &Config) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(config.log_level.unwrap_or(log::LevelFilter::Info));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
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
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}
