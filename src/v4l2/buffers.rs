//! The buffers of one queue: REQBUFS, QUERYBUF and mmap, QBUF/DQBUF, STREAMON/STREAMOFF, EXPBUF.
//!
//! A [`BufferQueue`] allocates its buffers once and hands them back and forth with the driver by
//! index. The memory type is a type parameter: [`Mmap`] buffers are allocated by the driver and
//! mapped here (a camera's frames, an encoder's bitstream, raw frames written into an encoder);
//! [`DmaBuf`] buffers are imported, per QBUF, from file descriptors another device exported
//! ([`BufferQueue::export`]): a camera's frames going into an encoder without a copy.
//!
//! # Ownership of the memory
//!
//! Each buffer is either the driver's (queued) or ours. The mapped memory of a buffer is only
//! readable ([`BufferQueue::plane`], [`BufferQueue::payload`]) or writable
//! ([`BufferQueue::plane_mut`]) while it is ours, and queueing it again takes `&mut self`, so no
//! slice can outlive its buffer's return to the driver: the borrow checker enforces what V4L2
//! documents ("valid until the buffer is queued again"). Dequeuing takes `&mut self` too; a
//! caller that keeps a frame while dequeuing others keeps its [`Dequeued`] (an index and sizes),
//! not the slice, and slices again when it needs the bytes.
//!
//! Nothing here allocates per frame: the plane arrays for QBUF/DQBUF are on the stack and a
//! [`Dequeued`] is a fixed-size value.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::device::Device;
use super::sys::{self, zeroed};
use super::{ioctl_error, timeval_to_duration, BufType};
use crate::error::{Error, Fault, Result};

mod private {
    pub trait Sealed {}
}

/// The memory type of a queue: [`Mmap`] or [`DmaBuf`].
pub trait Memory: private::Sealed {
    /// `V4L2_MEMORY_*`.
    const RAW: u32;
    const NAME: &'static str;
}

/// Buffers the driver allocates and we map (V4L2_MEMORY_MMAP).
#[derive(Debug)]
pub enum Mmap {}

/// Buffers imported from DMABUF file descriptors at each QBUF (V4L2_MEMORY_DMABUF).
#[derive(Debug)]
pub enum DmaBuf {}

impl private::Sealed for Mmap {}
impl private::Sealed for DmaBuf {}

impl Memory for Mmap {
    const RAW: u32 = sys::V4L2_MEMORY_MMAP;
    const NAME: &'static str = "MMAP";
}

impl Memory for DmaBuf {
    const RAW: u32 = sys::V4L2_MEMORY_DMABUF;
    const NAME: &'static str = "DMABUF";
}

/// How much of one plane a dequeued buffer filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanePayload {
    /// Bytes used in the plane, `data_offset` included (as V4L2 counts them).
    pub bytes_used: u32,
    /// Where the data starts in the plane (0 for single-planar buffers).
    pub data_offset: u32,
}

/// A buffer DQBUF returned: ours until it is queued again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dequeued {
    pub index: u32,
    /// `V4L2_BUF_FLAG_*`: see [`Dequeued::is_keyframe`], [`Dequeued::is_error`],
    /// [`Dequeued::is_last`].
    pub flags: u32,
    /// The driver's timestamp: CLOCK_MONOTONIC for a camera (`V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`),
    /// the OUTPUT buffer's timestamp copied for an encoder (`V4L2_BUF_FLAG_TIMESTAMP_COPY`).
    pub timestamp: Duration,
    /// The driver's frame counter; a gap means frames were dropped.
    pub sequence: u32,
    planes: [PlanePayload; sys::VIDEO_MAX_PLANES],
    num_planes: u8,
}

impl Dequeued {
    pub fn planes(&self) -> &[PlanePayload] {
        &self.planes[..usize::from(self.num_planes)]
    }

    /// Bytes of data in all planes (offsets excluded).
    pub fn bytes_used(&self) -> u64 {
        self.planes()
            .iter()
            .map(|p| u64::from(p.bytes_used.saturating_sub(p.data_offset)))
            .sum()
    }

    /// An encoder marked this buffer as a keyframe (an IDR picture for H.264).
    pub fn is_keyframe(&self) -> bool {
        self.flags & sys::V4L2_BUF_FLAG_KEYFRAME != 0
    }

    /// The data may be corrupt (a transfer error): drop the frame, queue the buffer again.
    pub fn is_error(&self) -> bool {
        self.flags & sys::V4L2_BUF_FLAG_ERROR != 0
    }

    /// The last buffer after a drain ([`super::EncoderCmd::Stop`]); it may be empty.
    pub fn is_last(&self) -> bool {
        self.flags & sys::V4L2_BUF_FLAG_LAST != 0
    }

    /// The timestamp comes from CLOCK_MONOTONIC (as `clock_gettime` reads it).
    pub fn is_monotonic(&self) -> bool {
        self.flags & sys::V4L2_BUF_FLAG_TIMESTAMP_MASK == sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
    }
}

/// One mmap'd plane, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, offset: u32, len: u32) -> std::result::Result<Mapping, Errno> {
        let len = usize::try_from(len).map_err(|_| Errno::EOVERFLOW)?;
        let length = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // A V4L2 mmap offset is a 32-bit cookie; with a 32-bit off_t (armv7 glibc) one at or
        // above 2 GiB cannot be passed, which the drivers' cookies never are.
        #[allow(clippy::unnecessary_fallible_conversions)]
        let offset = libc::off_t::try_from(offset).map_err(|_| Errno::EOVERFLOW)?;
        // SAFETY: we ask for a new shared mapping chosen by the kernel (no address hint), so it
        // overlaps no existing Rust object; `fd` is a V4L2 device and `offset`/`len` are what
        // QUERYBUF returned for this plane. The mapping is owned by the returned value and
        // unmapped exactly once, in Drop.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                offset,
            )
        }?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is the start of a live mapping of `len` readable bytes, owned by `self`.
        // The buffer it belongs to is ours (BufferQueue checks that before calling), so the
        // device is not writing it, and the shared borrow of `self` keeps it from being queued
        // (queue takes `&mut BufferQueue`) or unmapped while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the mapping is writable; the exclusive borrow of `self`
        // makes this the only slice over it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made in `Mapping::new` and not yet unmapped;
        // no slice over it can outlive `self` (they borrow it).
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            log::debug!("munmap of a V4L2 buffer failed: {e}");
        }
    }
}

#[derive(Debug)]
struct Buffer {
    /// Queued to the driver (QBUF done, DQBUF not yet).
    queued: bool,
    /// The length of each plane, as QUERYBUF reported.
    lengths: [u32; sys::VIDEO_MAX_PLANES],
    /// The mapping of each plane (MMAP queues only).
    mappings: Vec<Mapping>,
}

/// The buffers of one queue of a device.
#[derive(Debug)]
pub struct BufferQueue<M: Memory = Mmap> {
    /// A duplicate of the device's fd (the same open file, so the same M2M context).
    fd: OwnedFd,
    /// The device's name, for messages.
    name: String,
    buf_type: BufType,
    num_planes: usize,
    buffers: Vec<Buffer>,
    /// REQBUFS succeeded: Drop frees the driver's buffers with REQBUFS 0.
    requested: bool,
    streaming: bool,
    memory: PhantomData<M>,
}

// SAFETY: the raw pointers inside (the mappings) point to memory owned by this value alone,
// which may be used and unmapped from any thread; nothing is tied to the creating thread.
unsafe impl<M: Memory> Send for BufferQueue<M> {}

impl<M: Memory> BufferQueue<M> {
    /// REQBUFS `count` buffers (the driver may give more or fewer) and QUERYBUF each.
    fn allocate(device: &Device, buf_type: BufType, count: u32) -> Result<BufferQueue<M>> {
        let name = device.name().to_string();
        let fd = device.as_fd().try_clone_to_owned().map_err(|e| {
            Error::io(
                Fault::Input,
                format!("{name}: cannot duplicate its descriptor"),
                e,
            )
        })?;
        let mut queue = BufferQueue {
            fd,
            name,
            buf_type,
            num_planes: 0,
            buffers: Vec::new(),
            requested: false,
            streaming: false,
            memory: PhantomData,
        };
        let mut req: sys::v4l2_requestbuffers = zeroed();
        req.count = count;
        req.type_ = buf_type.raw();
        req.memory = M::RAW;
        sys::reqbufs(queue.fd.as_fd(), &mut req).map_err(|errno| match errno {
            Errno::EINVAL => Error::config(format!(
                "{}: the {} queue does not support streaming with {} buffers",
                queue.name,
                buf_type.describe(),
                M::NAME
            )),
            // Another program holds the camera: it may let go, so this is waited for.
            Errno::EBUSY => Error::input(format!(
                "{}: the {} queue's buffers are in use (by another program?)",
                queue.name,
                buf_type.describe()
            )),
            _ => queue.error(&format!("requesting {count} {} buffers", M::NAME), errno),
        })?;
        queue.requested = true;
        if req.count == 0 {
            return Err(Error::input(format!(
                "{}: the driver allocated no {} buffer",
                queue.name,
                buf_type.describe()
            )));
        }
        for index in 0..req.count {
            let mut buf: sys::v4l2_buffer = zeroed();
            buf.index = index;
            buf.type_ = buf_type.raw();
            buf.memory = M::RAW;
            let mut planes: [sys::v4l2_plane; sys::VIDEO_MAX_PLANES] =
                [zeroed(); sys::VIDEO_MAX_PLANES];
            sys::querybuf(queue.fd.as_fd(), &mut buf, &mut planes)
                .map_err(|errno| queue.error(&format!("querying buffer {index}"), errno))?;
            let num_planes = if buf_type.is_mplane() {
                buf.length as usize
            } else {
                1
            };
            if num_planes == 0 || num_planes > sys::VIDEO_MAX_PLANES {
                return Err(Error::input(format!(
                    "{}: buffer {index} has {num_planes} planes",
                    queue.name
                )));
            }
            if index == 0 {
                queue.num_planes = num_planes;
            } else if num_planes != queue.num_planes {
                return Err(Error::input(format!(
                    "{}: buffer {index} has {num_planes} planes, buffer 0 had {}",
                    queue.name, queue.num_planes
                )));
            }
            let mut lengths = [0; sys::VIDEO_MAX_PLANES];
            let mut mappings = Vec::new();
            for plane in 0..num_planes {
                let (length, offset) = if buf_type.is_mplane() {
                    (planes[plane].length, planes[plane].mem_offset())
                } else {
                    (buf.length, buf.offset())
                };
                lengths[plane] = length;
                if M::RAW == sys::V4L2_MEMORY_MMAP {
                    let mapping =
                        Mapping::new(queue.fd.as_fd(), offset, length).map_err(|errno| {
                            queue.error(
                                &format!(
                                    "mapping plane {plane} of buffer {index} ({length} bytes)"
                                ),
                                errno,
                            )
                        })?;
                    mappings.push(mapping);
                }
            }
            queue.buffers.push(Buffer {
                queued: false,
                lengths,
                mappings,
            });
        }
        Ok(queue)
    }

    fn error(&self, what: &str, errno: Errno) -> Error {
        ioctl_error(&self.name, what, errno)
    }

    /// The buffer at `index`, if it is ours (not queued).
    fn owned(&self, index: u32) -> Result<&Buffer> {
        let buffer = self.buffer(index)?;
        if buffer.queued {
            return Err(Error::ours(format!(
                "{}: buffer {index} is queued to the driver",
                self.name
            )));
        }
        Ok(buffer)
    }

    fn buffer(&self, index: u32) -> Result<&Buffer> {
        self.buffers.get(index as usize).ok_or_else(|| {
            Error::ours(format!(
                "{}: no buffer {index} (there are {})",
                self.name,
                self.buffers.len()
            ))
        })
    }

    pub fn buf_type(&self) -> BufType {
        self.buf_type
    }

    /// The number of buffers the driver allocated.
    pub fn len(&self) -> u32 {
        self.buffers.len() as u32
    }

    /// Never true: allocation fails rather than give an empty queue.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    pub fn num_planes(&self) -> usize {
        self.num_planes
    }

    /// The length of a plane of a buffer, as QUERYBUF reported it.
    pub fn plane_length(&self, index: u32, plane: usize) -> Result<u32> {
        let buffer = self.buffer(index)?;
        if plane >= self.num_planes {
            return Err(self.no_plane(plane));
        }
        Ok(buffer.lengths[plane])
    }

    fn no_plane(&self, plane: usize) -> Error {
        Error::ours(format!(
            "{}: no plane {plane} (buffers have {})",
            self.name, self.num_planes
        ))
    }

    pub fn is_queued(&self, index: u32) -> bool {
        self.buffers
            .get(index as usize)
            .is_some_and(|buffer| buffer.queued)
    }

    /// How many buffers the driver holds.
    pub fn queued_count(&self) -> usize {
        self.buffers.iter().filter(|b| b.queued).count()
    }

    /// The index of a buffer that is ours (for an OUTPUT queue: free to fill), if any.
    pub fn free_buffer(&self) -> Option<u32> {
        self.buffers
            .iter()
            .position(|b| !b.queued)
            .map(|index| index as u32)
    }

    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// QBUF with the planes already described in `planes` (bytesused, length, m, data_offset).
    fn qbuf(
        &mut self,
        index: u32,
        planes: &mut [sys::v4l2_plane; sys::VIDEO_MAX_PLANES],
        timestamp: Option<Duration>,
    ) -> Result<()> {
        self.owned(index)?;
        let mut buf: sys::v4l2_buffer = zeroed();
        buf.index = index;
        buf.type_ = self.buf_type.raw();
        buf.memory = M::RAW;
        if self.buf_type.is_output() {
            buf.field = sys::V4L2_FIELD_NONE;
        }
        if let Some(t) = timestamp {
            buf.timestamp.tv_sec = t.as_secs() as _;
            buf.timestamp.tv_usec = t.subsec_micros() as _;
        }
        if !self.buf_type.is_mplane() {
            buf.bytesused = planes[0].bytesused;
            buf.length = planes[0].length;
            if M::RAW == sys::V4L2_MEMORY_DMABUF {
                buf.m.fd = planes[0].fd();
            }
        }
        let num_planes = self.num_planes;
        sys::qbuf(self.fd.as_fd(), &mut buf, &mut planes[..num_planes])
            .map_err(|errno| self.error(&format!("queueing buffer {index}"), errno))?;
        self.buffers[index as usize].queued = true;
        Ok(())
    }

    /// DQBUF: the next buffer the driver is done with, `None` if there is none yet (the device
    /// is non-blocking: wait for readiness first). After the last buffer of a drain, DQBUF
    /// fails with EPIPE, which is an error here.
    pub fn dequeue(&mut self) -> Result<Option<Dequeued>> {
        let mut buf: sys::v4l2_buffer = zeroed();
        buf.type_ = self.buf_type.raw();
        buf.memory = M::RAW;
        let mut planes: [sys::v4l2_plane; sys::VIDEO_MAX_PLANES] =
            [zeroed(); sys::VIDEO_MAX_PLANES];
        let num_planes = self.num_planes;
        match sys::dqbuf(self.fd.as_fd(), &mut buf, &mut planes[..num_planes]) {
            Ok(()) => {}
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::EPIPE) => {
                return Err(Error::input(format!(
                    "{}: the {} queue has ended (its last buffer was dequeued after a stop)",
                    self.name,
                    self.buf_type.describe()
                )))
            }
            Err(errno) => return Err(self.error("dequeuing a buffer", errno)),
        }
        let index = buf.index;
        match self.buffers.get_mut(index as usize) {
            Some(buffer) if buffer.queued => buffer.queued = false,
            _ => {
                return Err(Error::input(format!(
                    "{}: the driver returned buffer {index}, which was not queued",
                    self.name
                )))
            }
        }
        let mut payload = [PlanePayload::default(); sys::VIDEO_MAX_PLANES];
        if self.buf_type.is_mplane() {
            for (slot, plane) in payload.iter_mut().zip(&planes[..num_planes]) {
                *slot = PlanePayload {
                    bytes_used: plane.bytesused,
                    data_offset: plane.data_offset,
                };
            }
        } else {
            payload[0] = PlanePayload {
                bytes_used: buf.bytesused,
                data_offset: 0,
            };
        }
        Ok(Some(Dequeued {
            index,
            flags: buf.flags,
            timestamp: timeval_to_duration(&buf.timestamp),
            sequence: buf.sequence,
            planes: payload,
            num_planes: num_planes as u8,
        }))
    }

    /// STREAMON. Queue CAPTURE buffers first (a camera needs some to start).
    pub fn stream_on(&mut self) -> Result<()> {
        sys::streamon(self.fd.as_fd(), self.buf_type.raw()).map_err(|errno| {
            self.error(
                &format!("starting the {} queue", self.buf_type.describe()),
                errno,
            )
        })?;
        self.streaming = true;
        Ok(())
    }

    /// STREAMOFF: stops the queue and returns every buffer to us, done or not.
    pub fn stream_off(&mut self) -> Result<()> {
        sys::streamoff(self.fd.as_fd(), self.buf_type.raw()).map_err(|errno| {
            self.error(
                &format!("stopping the {} queue", self.buf_type.describe()),
                errno,
            )
        })?;
        self.streaming = false;
        for buffer in &mut self.buffers {
            buffer.queued = false;
        }
        Ok(())
    }
}

impl BufferQueue<Mmap> {
    /// Allocates `count` driver buffers on a queue and maps them. The driver may allocate more
    /// (its minimum) or fewer (its maximum): see [`BufferQueue::len`].
    pub fn new_mmap(device: &Device, buf_type: BufType, count: u32) -> Result<BufferQueue<Mmap>> {
        Self::allocate(device, buf_type, count)
    }

    /// QBUF. For an OUTPUT queue, `bytes_used` gives the bytes written in each plane and
    /// `timestamp` the frame's time (an encoder copies it to the CAPTURE buffer it produces).
    /// For a CAPTURE queue, pass `&[]` and `None`.
    pub fn queue(
        &mut self,
        index: u32,
        bytes_used: &[u32],
        timestamp: Option<Duration>,
    ) -> Result<()> {
        let buffer = self.owned(index)?;
        if self.buf_type.is_output() && bytes_used.len() != self.num_planes {
            return Err(Error::ours(format!(
                "{}: {} plane sizes given for buffers of {} planes",
                self.name,
                bytes_used.len(),
                self.num_planes
            )));
        }
        let mut planes: [sys::v4l2_plane; sys::VIDEO_MAX_PLANES] =
            [zeroed(); sys::VIDEO_MAX_PLANES];
        for (plane, slot) in planes.iter_mut().enumerate().take(self.num_planes) {
            let length = buffer.lengths[plane];
            let used = bytes_used.get(plane).copied().unwrap_or(0);
            if used > length {
                return Err(Error::ours(format!(
                    "{}: {used} bytes do not fit plane {plane} of buffer {index} ({length} bytes)",
                    self.name
                )));
            }
            slot.bytesused = used;
            slot.length = length;
        }
        self.qbuf(index, &mut planes, timestamp)
    }

    /// Queues every buffer that is ours: the CAPTURE side's start (and restart after
    /// [`BufferQueue::stream_off`]).
    pub fn queue_all(&mut self) -> Result<()> {
        for index in 0..self.len() {
            if !self.is_queued(index) {
                self.queue(index, &[], None)?;
            }
        }
        Ok(())
    }

    /// The whole mapped memory of a plane. The buffer must be ours (dequeued, or never queued).
    pub fn plane(&self, index: u32, plane: usize) -> Result<&[u8]> {
        let buffer = self.owned(index)?;
        let mapping = buffer
            .mappings
            .get(plane)
            .ok_or_else(|| self.no_plane(plane))?;
        Ok(mapping.as_slice())
    }

    /// The whole mapped memory of a plane, to write a raw frame into an OUTPUT buffer. The
    /// buffer must be ours.
    pub fn plane_mut(&mut self, index: u32, plane: usize) -> Result<&mut [u8]> {
        if self.owned(index)?.mappings.len() <= plane {
            return Err(self.no_plane(plane));
        }
        Ok(self.buffers[index as usize].mappings[plane].as_mut_slice())
    }

    /// The data of a plane of a dequeued buffer: `data_offset..bytes_used` of its memory.
    pub fn payload(&self, dequeued: &Dequeued, plane: usize) -> Result<&[u8]> {
        let memory = self.plane(dequeued.index, plane)?;
        let p = dequeued
            .planes()
            .get(plane)
            .ok_or_else(|| self.no_plane(plane))?;
        let (start, end) = (p.data_offset as usize, p.bytes_used as usize);
        memory.get(start..end).ok_or_else(|| {
            Error::input(format!(
                "{}: the driver reported data at {start}..{end} in plane {plane} of buffer {} ({} bytes)",
                self.name,
                dequeued.index,
                memory.len()
            ))
        })
    }

    /// EXPBUF: a plane of a buffer as a DMABUF file descriptor (close-on-exec, read-write), to
    /// queue into another device's [`DmaBuf`] queue. The buffer stays allocated while the fd
    /// (or any importer) holds it.
    pub fn export(&self, index: u32, plane: usize) -> Result<OwnedFd> {
        self.buffer(index)?;
        if plane >= self.num_planes {
            return Err(self.no_plane(plane));
        }
        let mut raw: sys::v4l2_exportbuffer = zeroed();
        raw.type_ = self.buf_type.raw();
        raw.index = index;
        raw.plane = plane as u32;
        raw.flags = (libc::O_CLOEXEC | libc::O_RDWR) as u32;
        sys::expbuf(self.fd.as_fd(), &mut raw).map_err(|errno| match errno {
            Errno::ENOTTY | Errno::EINVAL => Error::config(format!(
                "{}: cannot export its {} buffers as DMABUF",
                self.name,
                self.buf_type.describe()
            )),
            _ => self.error(&format!("exporting plane {plane} of buffer {index}"), errno),
        })
    }
}

/// One plane of a DMABUF to queue.
#[derive(Clone, Copy, Debug)]
pub struct DmaBufPlane<'a> {
    pub fd: BorrowedFd<'a>,
    /// Bytes used in the plane, `data_offset` included (for an OUTPUT queue): what the
    /// exporting queue's [`PlanePayload::bytes_used`] says.
    pub bytes_used: u32,
    /// Where the data starts (multi-planar queues only; the exporter's
    /// [`PlanePayload::data_offset`]).
    pub data_offset: u32,
    /// The plane's size; 0 means the whole DMABUF (its size is looked up).
    pub length: u32,
}

/// The size of a DMABUF: dma-buf files answer `lseek(fd, 0, SEEK_END)` with it.
fn dmabuf_size(fd: BorrowedFd<'_>) -> std::result::Result<u32, Errno> {
    // SAFETY: lseek on a borrowed, open descriptor touches no memory of ours; for a dma-buf,
    // seeking to the end only reports the size (its position is not used by anyone).
    let size = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&fd), 0, libc::SEEK_END) };
    let size = Errno::result(size)?;
    u32::try_from(size).map_err(|_| Errno::EOVERFLOW)
}

impl BufferQueue<DmaBuf> {
    /// Sets up `count` buffer slots that take DMABUF file descriptors at each QBUF.
    pub fn new_dmabuf(
        device: &Device,
        buf_type: BufType,
        count: u32,
    ) -> Result<BufferQueue<DmaBuf>> {
        Self::allocate(device, buf_type, count)
    }

    /// QBUF with one DMABUF per plane. The driver takes its own reference to each DMABUF, so
    /// the fds may be closed once this returns.
    pub fn queue_dmabuf(
        &mut self,
        index: u32,
        planes: &[DmaBufPlane<'_>],
        timestamp: Option<Duration>,
    ) -> Result<()> {
        self.owned(index)?;
        if planes.len() != self.num_planes {
            return Err(Error::ours(format!(
                "{}: {} DMABUF planes given for buffers of {} planes",
                self.name,
                planes.len(),
                self.num_planes
            )));
        }
        let mut raw: [sys::v4l2_plane; sys::VIDEO_MAX_PLANES] = [zeroed(); sys::VIDEO_MAX_PLANES];
        for (slot, plane) in raw.iter_mut().zip(planes) {
            // Multi-planar OUTPUT queues check bytes_used against the length given here.
            let length = match plane.length {
                0 => dmabuf_size(plane.fd).map_err(|errno| {
                    self.error(
                        &format!("reading the size of a DMABUF for buffer {index}"),
                        errno,
                    )
                })?,
                length => length,
            };
            slot.bytesused = plane.bytes_used;
            slot.data_offset = plane.data_offset;
            slot.length = length;
            slot.m = sys::v4l2_plane_m {
                fd: std::os::fd::AsRawFd::as_raw_fd(&plane.fd),
            };
        }
        self.qbuf(index, &mut raw, timestamp)
    }
}

impl<M: Memory> Drop for BufferQueue<M> {
    /// STREAMOFF (if streaming), unmap, then REQBUFS 0 to free the driver's buffers.
    fn drop(&mut self) {
        if self.streaming {
            if let Err(errno) = sys::streamoff(self.fd.as_fd(), self.buf_type.raw()) {
                log::debug!("{}: STREAMOFF on drop failed: {errno}", self.name);
            }
        }
        self.buffers.clear(); // unmaps
        if self.requested {
            let mut req: sys::v4l2_requestbuffers = zeroed();
            req.type_ = self.buf_type.raw();
            req.memory = M::RAW;
            if let Err(errno) = sys::reqbufs(self.fd.as_fd(), &mut req) {
                log::debug!("{}: freeing the buffers failed: {errno}", self.name);
            }
        }
    }
}

impl<M: Memory> AsFd for BufferQueue<M> {
    /// The device's fd (a duplicate): poll it for this queue's readiness.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequeued_reports_payload_and_flags() {
        let mut planes = [PlanePayload::default(); sys::VIDEO_MAX_PLANES];
        planes[0] = PlanePayload {
            bytes_used: 1000,
            data_offset: 24,
        };
        planes[1] = PlanePayload {
            bytes_used: 10,
            data_offset: 20, // nonsense from a driver: counts as empty
        };
        let d = Dequeued {
            index: 3,
            flags: sys::V4L2_BUF_FLAG_KEYFRAME | sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC,
            timestamp: Duration::from_millis(5),
            sequence: 7,
            planes,
            num_planes: 2,
        };
        assert_eq!(d.planes().len(), 2);
        assert_eq!(d.bytes_used(), 976);
        assert!(d.is_keyframe() && d.is_monotonic());
        assert!(!d.is_error() && !d.is_last());
    }

    #[test]
    fn mappings_of_real_memory_work_and_unmap() {
        // A file stands in for the device: the mapping code is the same.
        let path = std::env::temp_dir().join(format!("v4l2rtmp-mapping-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.set_len(8192).unwrap();
        let fd = OwnedFd::from(file);
        let mut mapping = Mapping::new(fd.as_fd(), 4096, 4096).unwrap();
        mapping.as_mut_slice()[..5].copy_from_slice(b"hello");
        assert_eq!(&mapping.as_slice()[..5], b"hello");
        assert_eq!(mapping.as_slice().len(), 4096);
        drop(mapping);
        assert_eq!(Mapping::new(fd.as_fd(), 0, 0).unwrap_err(), Errno::EINVAL);
    }
}

/// Tests against real drivers: vivid (a capture device) and vicodec (a stateful M2M encoder with
/// the API of the Raspberry Pi's bcm2835-codec), as the VM harness (tests/vm) loads them. Not in
/// the default run: `cargo test --lib v4l2 -- --ignored --test-threads=1` in the VM or on a
/// machine with `modprobe vivid vicodec`.
#[cfg(test)]
mod hardware_tests {
    use std::path::PathBuf;

    use super::super::{EncoderCmd, Event, EventKind, FourCC, Fraction};
    use super::*;

    /// The node whose /sys/class/video4linux/videoN/name is `name`.
    fn node(name: &str) -> PathBuf {
        for entry in std::fs::read_dir("/sys/class/video4linux").expect("no V4L2 devices") {
            let entry = entry.unwrap();
            let found = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
            if found.trim() == name {
                return PathBuf::from("/dev").join(entry.file_name());
            }
        }
        panic!("no V4L2 node named {name}");
    }

    /// Waits (bounded) for the queue's next buffer.
    fn next<M: Memory>(device: &Device, queue: &mut BufferQueue<M>) -> Dequeued {
        for _ in 0..100 {
            if let Some(d) = queue.dequeue().unwrap() {
                return d;
            }
            device.poll(Some(Duration::from_millis(100))).unwrap();
        }
        panic!("{}: no buffer within 10 s", device.name());
    }

    fn vivid() -> (Device, BufType) {
        let device = Device::open(&node("vivid-000-vid-cap")).unwrap();
        let buf_type = device.capabilities().capture_type().unwrap();
        println!("vivid: {} {:?}", device.capabilities().describe(), buf_type);
        (device, buf_type)
    }

    #[test]
    #[ignore]
    fn vivid_captures_frames() {
        let (device, buf_type) = vivid();
        let err = device
            .negotiate(buf_type, FourCC::H264, 1920, 1080)
            .unwrap_err();
        println!("{err}");
        assert_eq!(err.fault(), Fault::Config);
        assert!(err.message().contains("it offers YUYV at "), "{err}");
        let format = device.negotiate(buf_type, FourCC::YUYV, 640, 480).unwrap();
        println!("format {format} {:?}", format.planes);
        assert!(format.planes[0].size_image >= 640 * 480 * 2);
        let rate = device
            .set_frame_rate(buf_type, Fraction::new(30, 1))
            .unwrap();
        println!("rate {rate:?}");
        assert_eq!(device.frame_rate(buf_type).unwrap(), rate);

        let mut queue = BufferQueue::new_mmap(&device, buf_type, 4).unwrap();
        assert!(queue.len() >= 2);
        assert_eq!(queue.num_planes(), 1);
        queue.queue_all().unwrap();
        assert!(queue.plane(0, 0).is_err(), "a queued buffer is not ours");
        queue.stream_on().unwrap();
        let mut last_sequence = None;
        let mut last_time = Duration::ZERO;
        for _ in 0..6 {
            let d = next(&device, &mut queue);
            let data = queue.payload(&d, 0).unwrap();
            println!(
                "buffer {} seq {} t {:?} {} bytes flags {:#x}",
                d.index,
                d.sequence,
                d.timestamp,
                data.len(),
                d.flags
            );
            // vivid's multi-planar mode puts the data at an offset in the plane.
            assert_eq!(data.len() as u64, d.bytes_used());
            assert!(data.len() as u32 + d.planes()[0].data_offset <= format.planes[0].size_image);
            assert!(data.len() >= 640 * 480 * 2);
            assert!(data.iter().any(|&b| b != 0), "a test pattern, not zeroes");
            assert!(d.is_monotonic() && !d.is_error());
            if let Some(last) = last_sequence {
                assert!(d.sequence > last);
                assert!(d.timestamp > last_time);
            }
            last_sequence = Some(d.sequence);
            last_time = d.timestamp;
            queue.queue(d.index, &[], None).unwrap();
        }
        let fd = queue.export(0, 0).unwrap();
        println!("exported buffer 0 as fd {fd:?}");
        queue.stream_off().unwrap();
        assert_eq!(queue.queued_count(), 0);
        assert!(queue.plane(0, 0).is_ok());
        drop(queue);
        // Buffers are freed: the format can change again.
        device.negotiate(buf_type, FourCC::YU12, 640, 360).unwrap();
    }

    #[test]
    #[ignore]
    fn vivid_controls_read_and_write() {
        let (device, _) = vivid();
        let controls = device.controls().unwrap();
        assert!(controls.len() > 10);
        let brightness = sys::V4L2_CID_BASE;
        let info = device.query_control(brightness).unwrap();
        println!("{info:?}");
        assert_eq!(info.name, "Brightness");
        device.set_control(brightness, info.min + 1).unwrap();
        assert_eq!(device.get_control(brightness).unwrap(), info.min + 1);
        device.set_control(brightness, info.default).unwrap();
        let err = device.set_control(brightness, info.max + 1).unwrap_err();
        println!("{err}");
        assert_eq!(err.fault(), Fault::Config);
        assert!(err.message().contains("Brightness"));
        let missing = device.query_control(0x0abc_0999).unwrap_err();
        assert_eq!(missing.fault(), Fault::Config);
        let menus: Vec<_> = controls.iter().filter(|c| !c.menu.is_empty()).collect();
        assert!(!menus.is_empty(), "vivid has menu controls");
        // The report of this machine, for the log.
        println!("{}", super::super::list::device_report(&device));
    }

    struct Encoder {
        device: Device,
        output: BufType,
        capture: BufType,
    }

    fn vicodec() -> Encoder {
        let device = Device::open(&node("stateful-encoder")).unwrap();
        let caps = device.capabilities();
        println!("vicodec: {}", caps.describe());
        assert!(caps.is_m2m());
        let (output, capture) = (caps.output_type().unwrap(), caps.capture_type().unwrap());
        let raw = device.negotiate(output, FourCC::YU12, 640, 480).unwrap();
        println!("encoder in: {raw} {:?}", raw.planes);
        let coded = device.get_format(capture).unwrap();
        println!("encoder out: {coded} {:?}", coded.planes);
        assert_eq!(coded.fourcc, FourCC::new(b"FWHT"));
        device.set_frame_rate(output, Fraction::new(25, 1)).unwrap();
        device.subscribe_event(EventKind::Eos).unwrap();
        Encoder {
            device,
            output,
            capture,
        }
    }

    /// Drains the encoder: STOP, the LAST buffer, the EOS event, then EPIPE.
    fn drain(enc: &Encoder, coded: &mut BufferQueue<Mmap>) {
        enc.device.encoder_command(EncoderCmd::Stop).unwrap();
        let mut frames = 0;
        loop {
            let d = next(&enc.device, coded);
            frames += 1;
            if d.is_last() {
                break;
            }
            coded.queue(d.index, &[], None).unwrap();
            assert!(frames < 20, "no LAST buffer");
        }
        let mut events = Vec::new();
        while let Some(event) = enc.device.dequeue_event().unwrap() {
            events.push(event);
        }
        assert!(events.contains(&Event::Eos), "{events:?}");
        let err = coded.dequeue().unwrap_err();
        println!("after the last buffer: {err}");
        assert!(err.message().contains("has ended"));
    }

    #[test]
    #[ignore]
    fn vicodec_encodes_and_drains() {
        let enc = vicodec();
        let mut raw = BufferQueue::new_mmap(&enc.device, enc.output, 2).unwrap();
        let mut coded = BufferQueue::new_mmap(&enc.device, enc.capture, 2).unwrap();
        coded.queue_all().unwrap();
        coded.stream_on().unwrap();
        raw.stream_on().unwrap();
        let size = raw.plane_length(0, 0).unwrap();
        for frame in 0..6u32 {
            let index = match raw.free_buffer() {
                Some(index) => index,
                None => next(&enc.device, &mut raw).index,
            };
            let plane = raw.plane_mut(index, 0).unwrap();
            for (i, b) in plane.iter_mut().enumerate() {
                *b = (i as u32 / 640 + frame * 8) as u8;
            }
            let time = Duration::from_millis(40 * u64::from(frame) + 1000);
            raw.queue(index, &[size], Some(time)).unwrap();
            let d = next(&enc.device, &mut coded);
            let data = coded.payload(&d, 0).unwrap();
            println!(
                "frame {frame}: {} bytes, t {:?}, flags {:#x}, keyframe {}",
                data.len(),
                d.timestamp,
                d.flags,
                d.is_keyframe()
            );
            assert!(!data.is_empty());
            assert_eq!(d.timestamp, time, "the OUTPUT timestamp is copied");
            coded.queue(d.index, &[], None).unwrap();
        }
        drain(&enc, &mut coded);
    }

    /// vivid's buffers go into vicodec as DMABUF, without a copy: EXPBUF on one side, a DMABUF
    /// OUTPUT queue on the other.
    #[test]
    #[ignore]
    fn vivid_frames_go_into_vicodec_as_dmabuf() {
        let (camera, cap_type) = vivid();
        camera.negotiate(cap_type, FourCC::YU12, 640, 480).unwrap();
        let enc = vicodec();
        let mut frames = BufferQueue::new_mmap(&camera, cap_type, 4).unwrap();
        let exported: Vec<OwnedFd> = (0..frames.len())
            .map(|index| frames.export(index, 0).unwrap())
            .collect();
        let mut raw = BufferQueue::new_dmabuf(&enc.device, enc.output, frames.len()).unwrap();
        let mut coded = BufferQueue::new_mmap(&enc.device, enc.capture, 2).unwrap();
        frames.queue_all().unwrap();
        frames.stream_on().unwrap();
        coded.queue_all().unwrap();
        coded.stream_on().unwrap();
        raw.stream_on().unwrap();
        for _ in 0..5 {
            let f = next(&camera, &mut frames);
            let used = f.planes()[0].bytes_used;
            let offset = f.planes()[0].data_offset;
            // The encoder's slot with the camera buffer's index holds that buffer.
            if raw.is_queued(f.index) {
                panic!("slot {} still queued", f.index);
            }
            let plane = DmaBufPlane {
                fd: exported[f.index as usize].as_fd(),
                bytes_used: used,
                data_offset: offset,
                length: 0,
            };
            raw.queue_dmabuf(f.index, &[plane], Some(f.timestamp))
                .unwrap();
            let d = next(&enc.device, &mut coded);
            println!(
                "camera buffer {} ({used} bytes) -> {} coded bytes",
                f.index,
                coded.payload(&d, 0).unwrap().len()
            );
            assert_eq!(d.timestamp, f.timestamp);
            coded.queue(d.index, &[], None).unwrap();
            // The encoder is done with the frame once its OUTPUT buffer comes back.
            let done = next(&enc.device, &mut raw);
            assert_eq!(done.index, f.index);
            frames.queue(f.index, &[], None).unwrap();
        }
        drain(&enc, &mut coded);
    }
}
