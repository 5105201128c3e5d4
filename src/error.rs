//! The one error type of v4l2rtmp, sorted by whose fault a failure is.
//!
//! Every failure carries a [`Fault`]. The supervisor (and `main`, for exit codes) decides from the
//! fault alone: a network fault is retried quickly, a peer fault is retried with backoff, a rejection
//! by the server backs off to the cap, and configuration or input faults end the program with a
//! message that tells the user what to fix. Messages never contain the stream key: callers redact
//! URLs before they are put into an error.

use std::fmt;

/// Whose fault a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The command line, configuration file or environment is wrong: exit, the user must fix it.
    Config,
    /// The video input is unusable (no SPS, garbage, device gone): exit or reopen the source.
    Input,
    /// The network failed (refused, reset, timed out, DNS): retry soon.
    Network,
    /// The server broke the protocol or sent something we cannot handle: retry with backoff.
    Peer,
    /// The server understood us and said no (bad key, bad app): back off to the cap.
    Rejected,
    /// A bug in v4l2rtmp.
    Ours,
}

/// An error with its fault and a message meant for the person reading the log.
#[derive(Debug)]
pub struct Error {
    fault: Fault,
    message: String,
    source: Option<std::io::Error>,
    /// The server's own description of a refused connect, verbatim: the authentication schemes
    /// read their challenge from it. Never displayed (it may quote the key).
    server_description: Option<String>,
}

impl Error {
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        Self {
            fault,
            message: message.into(),
            source: None,
            server_description: None,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(Fault::Config, message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Fault::Input, message)
    }

    pub fn network(message: impl Into<String>) -> Self {
        Self::new(Fault::Network, message)
    }

    pub fn peer(message: impl Into<String>) -> Self {
        Self::new(Fault::Peer, message)
    }

    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(Fault::Rejected, message)
    }

    pub fn ours(message: impl Into<String>) -> Self {
        Self::new(Fault::Ours, message)
    }

    /// An I/O error, with what we were doing when it happened.
    pub fn io(fault: Fault, context: impl Into<String>, err: std::io::Error) -> Self {
        Self {
            fault,
            message: context.into(),
            source: Some(err),
            server_description: None,
        }
    }

    /// Attaches the server's verbatim description of a refusal (not displayed).
    pub fn with_server_description(mut self, description: impl Into<String>) -> Self {
        self.server_description = Some(description.into());
        self
    }

    /// The server's verbatim description of a refused connect, if this is one.
    pub fn server_description(&self) -> Option<&str> {
        self.server_description.as_deref()
    }

    pub fn fault(&self) -> Fault {
        self.fault
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The exit code `main` uses for this error (documented in `--help` and the README).
    pub fn exit_code(&self) -> i32 {
        match self.fault {
            Fault::Config => 64,   // EX_USAGE
            Fault::Input => 65,    // EX_DATAERR
            Fault::Rejected => 69, // EX_UNAVAILABLE
            Fault::Network => 75,  // EX_TEMPFAIL
            Fault::Peer => 76,     // EX_PROTOCOL
            Fault::Ours => 70,     // EX_SOFTWARE
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whose = match self.fault {
            Fault::Config => "configuration error",
            Fault::Input => "input error",
            Fault::Network => "network error",
            Fault::Peer => "server protocol error",
            Fault::Rejected => "rejected by the server",
            Fault::Ours => "internal error (please report)",
        };
        write!(f, "{whose}: {}", self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
