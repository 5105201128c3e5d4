//! A counting global allocator for the tests that prove a path allocates nothing per frame
//! (`tests/no_allocation.rs`, `tests/v4l2_vm_alloc.rs`). A test installs it with
//! `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator;` and counts a
//! window of frames with [`Window`]. Threads that belong to the test itself (a scripted server)
//! call [`exclude_this_thread`]. `ALLOC_TRACE=1` prints a backtrace of each counted allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static EXCLUDED: Cell<bool> = const { Cell::new(false) };
    /// Inside [`trace`]: its own allocations are neither counted nor traced.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// `ALLOC_TRACE` was set: 0 not looked at yet, 1 no, 2 yes.
static TRACE: AtomicU8 = AtomicU8::new(0);

/// Allocations on the calling thread are not counted from now on.
pub fn exclude_this_thread() {
    EXCLUDED.with(|excluded| excluded.set(true));
}

fn count(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) && !EXCLUDED.with(Cell::get) && !TRACING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        trace(bytes);
    }
}

/// With `ALLOC_TRACE=1` in the environment, prints a backtrace of every counted allocation to
/// stderr: where a test's stray allocation comes from. Allocates (guarded against recursion).
fn trace(bytes: usize) {
    TRACING.with(|t| t.set(true));
    if TRACE.load(Ordering::Relaxed) == 0 {
        let on = std::env::var_os("ALLOC_TRACE").is_some_and(|v| v != "0");
        TRACE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    }
    if TRACE.load(Ordering::Relaxed) == 2 {
        let backtrace = std::backtrace::Backtrace::force_capture();
        let thread = std::thread::current();
        eprintln!(
            "counted allocation of {bytes} bytes on thread {:?}:\n{backtrace}",
            thread.name().unwrap_or("?")
        );
    }
    TRACING.with(|t| t.set(false));
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` came from `System.alloc` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts the allocations made while frames `warm_up + 1 ..= warm_up + counted` are sent (the
/// first frames grow buffers to their final sizes).
pub struct Window {
    warm_up: u64,
    counted: u64,
    /// (allocations, bytes) once the window has closed.
    pub result: Option<(u64, u64)>,
}

impl Window {
    pub fn new(warm_up: u64, counted: u64) -> Window {
        Window {
            warm_up,
            counted,
            result: None,
        }
    }

    /// Call after each frame sent; true when this frame closed the window.
    pub fn on_frame(&mut self, frames_sent: u64) -> bool {
        if frames_sent == self.warm_up {
            ALLOCATIONS.store(0, Ordering::SeqCst);
            BYTES.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
        } else if frames_sent == self.warm_up + self.counted {
            COUNTING.store(false, Ordering::SeqCst);
            self.result = Some((
                ALLOCATIONS.load(Ordering::SeqCst),
                BYTES.load(Ordering::SeqCst),
            ));
            return true;
        }
        false
    }

    /// Stops counting (the run ended before the window closed, or after it).
    pub fn stop(&self) {
        COUNTING.store(false, Ordering::SeqCst);
    }
}
