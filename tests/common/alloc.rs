//! The counting global allocator of every test that counts allocations. A test binary installs it
//! with `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator;` and counts in
//! one of two modes:
//!
//! - On every thread: [`Window`] counts the frames `warm_up + 1 ..= warm_up + counted` of a run
//!   (`tests/no_allocation.rs`, `tests/v4l2_vm_alloc.rs`), [`count_all_threads`] what happens while
//!   a closure runs (`tests/tls_no_allocation.rs`). Threads that belong to the test itself (a
//!   scripted server) call [`exclude_this_thread`]. One such count at a time per binary: the
//!   counters are shared.
//! - On the calling thread only: [`count_this_thread`] (`tests/chunk_roundtrip.rs`), so tests
//!   running in parallel in the same binary do not disturb each other. Exclusion does not apply,
//!   and these counts nest.
//!
//! Each count is a [`Counts`]: allocations (`alloc`, `alloc_zeroed` and `realloc` calls), bytes
//! allocated, and bytes freed (a `realloc` frees the old size and allocates the new one).
//! `ALLOC_TRACE=1` prints a backtrace of each counted allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::{Add, AddAssign};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

pub struct CountingAllocator;

/// What was counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `alloc`, `alloc_zeroed` and `realloc` calls.
    pub allocations: u64,
    /// Bytes asked for by those calls (a `realloc` counts its new size).
    pub allocated: u64,
    /// Bytes given back by `dealloc`, and by `realloc` (its old size).
    pub freed: u64,
}

impl Counts {
    const NONE: Counts = Counts {
        allocations: 0,
        allocated: 0,
        freed: 0,
    };
}

impl Add for Counts {
    type Output = Counts;

    fn add(self, other: Counts) -> Counts {
        Counts {
            allocations: self.allocations + other.allocations,
            allocated: self.allocated + other.allocated,
            freed: self.freed + other.freed,
        }
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        *self = *self + other;
    }
}

/// Counting on every thread not excluded, into the three counters below.
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);

// Const-initialised and without destructors: accessible for the whole life of a thread, its
// teardown included, so `with` cannot fail inside the allocator.
thread_local! {
    static EXCLUDED: Cell<bool> = const { Cell::new(false) };
    /// Inside [`trace`]: its own allocations are neither counted nor traced.
    static TRACING: Cell<bool> = const { Cell::new(false) };
    /// Inside [`count_this_thread`]: what this thread has done so far.
    static THIS_THREAD: Cell<Option<Counts>> = const { Cell::new(None) };
}

/// `ALLOC_TRACE` was set: 0 not looked at yet, 1 no, 2 yes.
static TRACE: AtomicU8 = AtomicU8::new(0);

/// Allocations on the calling thread are not counted on every thread from now on.
pub fn exclude_this_thread() {
    EXCLUDED.with(|excluded| excluded.set(true));
}

/// Counts, on every thread not excluded, what happens while `f` runs.
pub fn count_all_threads<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    start_all_threads();
    let value = f();
    (value, stop_all_threads())
}

/// Counts what the calling thread does while `f` runs (other threads are not counted).
pub fn count_this_thread<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    /// Restores the enclosing count, with this one added to it, even if `f` panics.
    struct Restore(Option<Counts>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0;
            THIS_THREAD.with(|this| {
                let inner = this.get().unwrap_or_default();
                this.set(outer.map(|outer| outer + inner));
            });
        }
    }
    let restore = Restore(THIS_THREAD.with(|this| this.replace(Some(Counts::NONE))));
    let value = f();
    let counts = THIS_THREAD.with(Cell::get).unwrap_or_default();
    drop(restore);
    (value, counts)
}

fn start_all_threads() {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    ALLOCATED.store(0, Ordering::SeqCst);
    FREED.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
}

fn stop_all_threads() -> Counts {
    COUNTING.store(false, Ordering::SeqCst);
    Counts {
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
        allocated: ALLOCATED.load(Ordering::SeqCst),
        freed: FREED.load(Ordering::SeqCst),
    }
}

/// Adds one allocator call to the counts that are on; traces it if it allocated.
fn record(call: Counts) {
    if TRACING.with(Cell::get) {
        return;
    }
    let mut counted = false;
    if COUNTING.load(Ordering::Relaxed) && !EXCLUDED.with(Cell::get) {
        ALLOCATIONS.fetch_add(call.allocations, Ordering::Relaxed);
        ALLOCATED.fetch_add(call.allocated, Ordering::Relaxed);
        FREED.fetch_add(call.freed, Ordering::Relaxed);
        counted = true;
    }
    THIS_THREAD.with(|this| {
        if let Some(counts) = this.get() {
            this.set(Some(counts + call));
            counted = true;
        }
    });
    if counted && call.allocations > 0 {
        trace(call.allocated);
    }
}

fn allocation(bytes: usize) -> Counts {
    Counts {
        allocations: 1,
        allocated: bytes as u64,
        freed: 0,
    }
}

/// With `ALLOC_TRACE` set (and not `0`), prints a backtrace of every counted allocation to
/// stderr: where a test's stray allocation comes from. Allocates (guarded against recursion).
fn trace(bytes: u64) {
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

// SAFETY: forwards every call unchanged to the system allocator; only counts (counting neither
// allocates nor panics, and tracing's own allocations are not counted, so there is no recursion).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(allocation(layout.size()));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(allocation(layout.size()));
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(Counts {
            freed: layout.size() as u64,
            ..Counts::NONE
        });
        // SAFETY: `ptr` came from `System` (every method above forwards to it) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(Counts {
            freed: layout.size() as u64,
            ..allocation(new_size)
        });
        // SAFETY: `ptr` came from `System` with `layout`; the caller's contract for `realloc`
        // (`new_size` valid for `layout.align()`) is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts, on every thread not excluded, what happens while frames
/// `warm_up + 1 ..= warm_up + counted` are sent (the first frames grow buffers to their final
/// sizes).
pub struct Window {
    warm_up: u64,
    counted: u64,
    /// The counts once the window has closed.
    pub result: Option<Counts>,
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
            start_all_threads();
        } else if frames_sent == self.warm_up + self.counted {
            self.result = Some(stop_all_threads());
            return true;
        }
        false
    }

    /// Stops counting (the run ended before the window closed, or after it).
    pub fn stop(&self) {
        COUNTING.store(false, Ordering::SeqCst);
    }
}
