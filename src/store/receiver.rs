//! A test helper for the frame store's model tests: the receiving end of one destination, which
//! checks that what it gets decodes. It knows nothing of the store.

/// The receiving end of one destination, as a decoder sees it: frames come over a series of
/// connections; each connection must start at a keyframe, and every later frame on it must be
/// a keyframe or the direct successor (by sequence number) of the frame before it on that
/// connection. It knows nothing of the store, so a frame store with per-destination cursors
/// can drive one of these per destination.
#[derive(Debug, Default)]
pub(crate) struct Receiver {
    /// Connections so far (the current one is the last).
    pub connections: u32,
    connected: bool,
    /// The frame received last on the current connection.
    last: Option<u64>,
    /// Frames received on all connections.
    pub frames: u64,
}

impl Receiver {
    pub fn connect(&mut self) {
        self.connections += 1;
        self.connected = true;
        self.last = None;
    }

    /// The connection failed (whatever it was sending is lost with it).
    pub fn disconnect(&mut self) {
        self.connected = false;
    }

    /// Frame `seq` was handed to the connection for sending.
    pub fn receive(&mut self, seq: u64, keyframe: bool) -> Result<(), String> {
        if !self.connected {
            return Err(format!("frame {seq} sent with no connection"));
        }
        match self.last {
            None if !keyframe => {
                return Err(format!(
                    "connection {} starts with inter frame {seq}",
                    self.connections
                ))
            }
            Some(last) if !keyframe && seq != last + 1 => {
                return Err(format!(
                    "connection {}: inter frame {seq} after frame {last}",
                    self.connections
                ))
            }
            _ => {}
        }
        self.last = Some(seq);
        self.frames += 1;
        Ok(())
    }
}
