//! RTMP chunk stream: INTERFACE STUB, being implemented.
use std::io::IoSlice;

/// Where one gathered piece of outgoing bytes lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// `scratch[start..start + len]` of the [`Gather`]'s own storage.
    Scratch { start: u32, len: u32 },
    /// `external[start..start + len]` of the payload buffer the caller passes to [`Gather::io_slices`].
    External { start: u32, len: u32 },
}

/// Outgoing bytes ready for a vectored write.
pub struct Gather {
    _p: (),
}

impl Gather {
    pub fn with_capacity(scratch_bytes: usize, pieces: usize) -> Self {
        let _ = (scratch_bytes, pieces);
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        todo!()
    }
    pub fn remaining(&self) -> usize {
        todo!()
    }
    pub fn has_external(&self) -> bool {
        todo!()
    }
    pub fn push_scratch(&mut self, bytes: &[u8]) {
        let _ = bytes;
        todo!()
    }
    pub fn push_external(&mut self, start: usize, len: usize) {
        let _ = (start, len);
        todo!()
    }
    pub fn io_slices<'a>(&'a self, external: &'a [u8], out: &mut [IoSlice<'a>]) -> usize {
        let _ = (external, out);
        todo!()
    }
    pub fn advance(&mut self, n: usize) {
        let _ = n;
        todo!()
    }
    pub fn write_to_vec(&self, external: &[u8], out: &mut Vec<u8>) {
        let _ = (external, out);
        todo!()
    }
}

/// The header fields of one RTMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    pub chunk_stream_id: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
}

/// One part of a message body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Inline { bytes: [u8; 8], len: u8 },
    External { start: usize, len: usize },
}

pub struct ChunkWriter {
    _p: (),
}

pub struct ChunkReader {
    _p: (),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub header: MessageHeader,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    Invalid(String),
}
