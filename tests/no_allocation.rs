//! In steady state, publishing a frame allocates nothing: the real driver pushes a 1080p clip to a
//! real nginx in this process, under a counting global allocator, and the allocations made between
//! frame 200 and frame 1300 are counted (the first frames warm up buffers to their final sizes).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use v4l2rtmp::config::Config;
use v4l2rtmp::notify::Notifier;
use v4l2rtmp::supervisor::{run, Ending, Progress};
use v4l2rtmp::url::RtmpUrl;

struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const WARM_UP_FRAMES: u64 = 200;
const COUNTED_FRAMES: u64 = 1100;

#[test]
fn steady_state_publishing_allocates_nothing_per_frame() {
    let clip = clip_1080p30_60s();
    let nginx = Nginx::start();
    let url = RtmpUrl::parse(&nginx.url("live", "alloc")).unwrap();
    let config = Config::new(clip.to_str().unwrap(), url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut counted = None;
    let mut on_frame = |progress: &Progress| {
        if progress.frames_sent == WARM_UP_FRAMES {
            ALLOCATIONS.store(0, Ordering::SeqCst);
            BYTES.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
        } else if progress.frames_sent == WARM_UP_FRAMES + COUNTED_FRAMES {
            COUNTING.store(false, Ordering::SeqCst);
            counted = Some((
                ALLOCATIONS.load(Ordering::SeqCst),
                BYTES.load(Ordering::SeqCst),
            ));
        }
    };
    let notifier = Notifier::disabled();
    let reload = || Ok(config.clone());
    let (ending, progress) = runtime
        .block_on(run(config.clone(), &reload, &notifier, &mut on_frame))
        .unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(ending, Ending::EndOfInput);
    assert_eq!(progress.frames_sent, 1800);
    let (allocations, bytes) = counted.expect("the counted window was reached");
    assert_eq!(
        allocations, 0,
        "{allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} frames"
    );
    drop(runtime);
    let _ = nginx.stop();
}
