//! Plain old data for ioctl arguments, shared by the kernel-interface layers (`v4l2`, `alsa`):
//! the marker trait that says all-zero bytes are a valid value, the all-zero constructor that
//! stands for C's `memset` before an ioctl, and the macro that marks each uapi struct.
//!
//! Invariant: `Pod` is implemented only (through [`pod!`](crate::pod!)) for `#[repr(C)]` types
//! made of integers, arrays of them, raw pointers, `timeval`/`timespec` and unions of those.
#![allow(unsafe_code)]

/// Plain old data: every bit pattern, in particular all zeroes, is a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers, arrays of them, raw pointers,
/// `timeval`/`timespec` and unions of those.
pub unsafe trait Pod: Copy {}

/// An all-zero value, the way C code `memset`s an ioctl argument before filling it in.
pub fn zeroed<T: Pod>() -> T {
    // SAFETY: `T: Pod` promises that all-zero bytes are a valid `T`.
    unsafe { std::mem::zeroed() }
}

/// Marks uapi structs as [`Pod`].
#[macro_export]
#[doc(hidden)]
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        // SAFETY: each of these is a #[repr(C)] struct or union of integers, integer arrays,
        // raw pointers, `timeval`/`timespec` (integers) and unions of those: no references,
        // no niches, no invalid bit patterns.
        $(unsafe impl $crate::pod::Pod for $t {})*
    };
}
