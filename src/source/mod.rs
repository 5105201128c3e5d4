//! Where the Annex-B byte stream comes from: a regular file, a FIFO, a pipe or stdin.
//!
//! A regular file is read directly (reads from the page cache do not block for long, and epoll
//! refuses regular files). Pipes and FIFOs are switched to non-blocking mode and read when tokio
//! reports them readable, so waiting for input never stops the driver from answering the server.
//!
//! Invariants: reads go straight into the caller's buffer (the Annex-B reader's), never through an
//! intermediate copy; a read of 0 bytes means end of input.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use tokio::net::unix::pipe;

use crate::error::{Error, Fault, Result};

/// An open input.
pub enum Input {
    /// A regular file: read synchronously.
    File { file: File, name: String },
    /// A pipe or FIFO, in non-blocking mode.
    Stream { pipe: pipe::Receiver, name: String },
}

impl Input {
    /// Opens `path` (`-` is stdin). A FIFO blocks here until a writer opens it. Must be called
    /// within a tokio runtime.
    pub fn open(path: &str) -> Result<Input> {
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
        Ok(Input::Stream { pipe, name })
    }

    pub fn name(&self) -> &str {
        match self {
            Input::File { name, .. } | Input::Stream { name, .. } => name,
        }
    }

    /// Whether this is live input (pipe, FIFO, stdin from a program) rather than a file.
    pub fn is_live(&self) -> bool {
        matches!(self, Input::Stream { .. })
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
            Input::Stream { pipe, name } => loop {
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
        }
    }
}
