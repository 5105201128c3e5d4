//! Where the Annex-B byte stream comes from: a regular file, a FIFO, a pipe, stdin, or the stdout
//! of a supervised child process (`exec:`, see [`exec`]).
//!
//! A regular file is read directly (reads from the page cache do not block for long, and epoll
//! refuses regular files). Pipes and FIFOs are switched to non-blocking mode and read when tokio
//! reports them readable, so waiting for input never stops the supervisor from answering the
//! server. When a named FIFO's writer closes it, the supervisor flushes the last frame and opens
//! the FIFO again for the next writer (a camera program restarted), so the stream goes on; the
//! source watchdog notices silence. Pipes (stdin) end when their writer closes them.
//!
//! Invariants: reads go straight into the caller's buffer (the Annex-B reader's), never through an
//! intermediate copy; a read of 0 bytes means end of input.

pub mod exec;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

use tokio::net::unix::pipe;

use crate::error::{Error, Fault, Result};
use exec::{ExecSource, ExitReport};

/// How long a child gets to stop after SIGTERM before SIGKILL.
pub const CHILD_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// An open input.
pub enum Input {
    /// A regular file: read synchronously.
    File { file: File, name: String },
    /// A pipe or FIFO, in non-blocking mode.
    Stream {
        pipe: pipe::Receiver,
        name: String,
        /// A named FIFO, which can be opened again; stdin cannot.
        reopen: bool,
    },
    /// The stdout of a child process (`exec:CMD ARGS`), restarted when it exits.
    Exec {
        /// The running child; `None` between its exit and its restart.
        child: Option<Box<ExecSource>>,
        argv: Vec<String>,
        name: String,
    },
}

impl Input {
    /// Opens `path` (`-` is stdin). Must be called within a tokio runtime.
    pub async fn open(path: &str) -> Result<Input> {
        if let Some(command) = path.strip_prefix("exec:") {
            let argv = ExecSource::parse_command(command)?;
            let child = Box::new(ExecSource::spawn(&argv)?);
            let name = child.name().to_string();
            return Ok(Input::Exec {
                child: Some(child),
                argv,
                name,
            });
        }
        if path != "-" {
            let metadata = std::fs::metadata(path)
                .map_err(|e| Error::io(Fault::Input, format!("cannot open {path}"), e))?;
            if metadata.file_type().is_fifo() {
                // Non-blocking, so opening does not wait for a writer; Linux reports no hang-up on
                // a fresh FIFO until a writer has come and gone, so waiting costs nothing.
                let pipe = pipe::OpenOptions::new().open_receiver(path).map_err(|e| {
                    Error::io(Fault::Input, format!("cannot open the FIFO {path}"), e)
                })?;
                return Ok(Input::Stream {
                    pipe,
                    name: path.to_string(),
                    reopen: true,
                });
            }
        }
        let (file, name) = if path == "-" {
            let fd: OwnedFd = io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io(Fault::Input, "cannot use stdin", e))?;
            (File::from(fd), "stdin".to_string())
        } else {
            let file = File::open(path)
                .map_err(|e| Error::io(Fault::Input, format!("cannot open {path}"), e))?;
            (file, path.to_string())
        };
        let metadata = file
            .metadata()
            .map_err(|e| Error::io(Fault::Input, format!("cannot stat {name}"), e))?;
        if metadata.is_dir() {
            return Err(Error::input(format!("{name} is a directory")));
        }
        if metadata.is_file() {
            return Ok(Input::File { file, name });
        }
        let pipe = pipe::Receiver::from_file(file).map_err(|e| {
            Error::io(
                Fault::Input,
                format!("{name} is neither a regular file nor a pipe or FIFO"),
                e,
            )
        })?;
        Ok(Input::Stream {
            pipe,
            name,
            reopen: false,
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Input::File { name, .. } | Input::Stream { name, .. } | Input::Exec { name, .. } => {
                name
            }
        }
    }

    /// Starts the input again after it went silent: a FIFO is reopened, a child is stopped and
    /// started again. A file or stdin cannot be restarted: that is an input error.
    pub async fn restart(self) -> Result<Input> {
        match self {
            Input::Stream {
                reopen: true, name, ..
            } => Input::open(&name).await,
            Input::Exec { child, argv, .. } => {
                if let Some(child) = child {
                    let name = child.name().to_string();
                    let report = child.stop(CHILD_GRACE).await;
                    log::info!("{name} stopped: {report}");
                }
                let child = Box::new(ExecSource::spawn(&argv)?);
                let name = child.name().to_string();
                Ok(Input::Exec {
                    child: Some(child),
                    argv,
                    name,
                })
            }
            other => Err(Error::input(format!(
                "{} delivered no frame and cannot be restarted",
                other.name()
            ))),
        }
    }

    /// Whether the end of this input is only the end of one writer's session (a named FIFO).
    pub fn reopens(&self) -> bool {
        matches!(self, Input::Stream { reopen: true, .. })
    }

    /// Whether this input is a child process.
    pub fn is_child(&self) -> bool {
        matches!(self, Input::Exec { .. })
    }

    /// Whether a child is running (false between its exit and its restart, and for other inputs).
    pub fn child_running(&self) -> bool {
        matches!(self, Input::Exec { child: Some(_), .. })
    }

    /// After a child's stdout ended: waits (bounded) for it to exit and reports how it ended.
    pub async fn child_exited(&mut self) -> Option<ExitReport> {
        match self {
            Input::Exec { child, .. } => Some(child.take()?.wait(CHILD_GRACE).await),
            _ => None,
        }
    }

    /// Starts the child again after it exited.
    pub fn respawn(&mut self) -> Result<()> {
        if let Input::Exec { child, argv, name } = self {
            let started = Box::new(ExecSource::spawn(argv)?);
            *name = started.name().to_string();
            *child = Some(started);
        }
        Ok(())
    }

    /// Stops a child (SIGTERM to its process group, SIGKILL after the grace period).
    pub async fn shutdown(&mut self) {
        if let Input::Exec { child, .. } = self {
            if let Some(child) = child.take() {
                let name = child.name().to_string();
                let report = child.stop(CHILD_GRACE).await;
                log::info!("{name} stopped: {report}");
            }
        }
    }

    /// Whether this is live input (pipe, FIFO, stdin from a program) rather than a file.
    pub fn is_live(&self) -> bool {
        matches!(self, Input::Stream { .. } | Input::Exec { .. })
    }

    /// Reads into `buf`; 0 means end of input. Waits for a live input to become readable.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        match self {
            Input::File { file, name } => loop {
                match file.read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::io(Fault::Input, format!("cannot read {name}"), e))
                    }
                }
            },
            Input::Stream { pipe, name, .. } => loop {
                pipe.readable()
                    .await
                    .map_err(|e| Error::io(Fault::Input, format!("cannot poll {name}"), e))?;
                match pipe.try_read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => {
                        return Err(Error::io(Fault::Input, format!("cannot read {name}"), e))
                    }
                }
            },
            Input::Exec {
                child: Some(child), ..
            } => child.read(buf).await,
            // Between a child's exit and its restart there is nothing to read.
            Input::Exec { child: None, .. } => std::future::pending().await,
        }
    }
}
