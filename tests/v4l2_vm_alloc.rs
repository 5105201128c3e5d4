//! In steady state, a frame from a V4L2 camera allocates nothing on its way to the socket: the
//! real supervisor reads the VM's v4l2loopback "camera" (fed by v4l2-feeder) and publishes to a
//! scripted RTMP server in this process on 127.0.0.1, under a counting global allocator. The
//! allocations made between frame 60 and frame 210 are counted, on every thread but the server's
//! (the camera's poll thread included).
//!
//! Runs in the VM of tests/vm (`tests/vm/all encoder`, whose guest half starts the feeder first);
//! anywhere else it prints why it skips and passes (it needs `V4L2RTMP_VM_DEVICES=1`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::scripted::ScriptedPeer;
use v4l2rtmp::config::Config;
use v4l2rtmp::notify::Notifier;
use v4l2rtmp::supervisor::{run, Ending, Progress};
use v4l2rtmp::url::RtmpUrl;

struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The scripted server's thread: its allocations are the test's, not v4l2rtmp's.
    static NOT_COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted_here() -> bool {
    COUNTING.load(Ordering::Relaxed) && !NOT_COUNTED.with(Cell::get)
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted_here() {
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
        if counted_here() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const WARM_UP_FRAMES: u64 = 60;
const COUNTED_FRAMES: u64 = 150;

/// The node whose /sys/class/video4linux/videoN/name is `name`.
fn node(name: &str) -> Option<String> {
    for entry in std::fs::read_dir("/sys/class/video4linux").ok()?.flatten() {
        let found = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if found.trim() == name {
            return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    None
}

#[test]
fn camera_frames_reach_the_socket_without_allocating() {
    if std::env::var("V4L2RTMP_VM_DEVICES").as_deref() != Ok("1") {
        eprintln!("skipped: needs the VM's v4l2loopback camera (tests/vm/all encoder)");
        return;
    }
    let camera = node("Loopback").expect("no v4l2loopback node");
    // The guest's loopback interface is down until someone brings it up.
    let _ = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        NOT_COUNTED.with(|c| c.set(true));
        let mut peer = ScriptedPeer::accept(&listener);
        let mut video_messages = 0u64;
        peer.accept_publish(|_, message| {
            video_messages += u64::from(message.header.type_id == 9);
            false
        });
        video_messages
    });

    let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/alloc")).unwrap();
    let config = Config::new(camera.as_str(), url);
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
            // The supervisor stops on SIGTERM as under systemd (its handler is installed).
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        }
    };
    let notifier = Notifier::disabled();
    let reload = || Ok(config.clone());
    let (ending, progress) = runtime
        .block_on(run(config.clone(), &reload, &notifier, &mut on_frame))
        .unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    drop(runtime);
    let video_messages = server.join().unwrap();
    eprintln!(
        "camera {camera}: {} frames sent, {} dropped, {} skipped; the server got {video_messages} \
         video messages (sequence header included)",
        progress.frames_sent, progress.frames_dropped, progress.frames_skipped
    );
    assert_eq!(ending, Ending::Signal);
    assert!(progress.frames_sent >= WARM_UP_FRAMES + COUNTED_FRAMES);
    assert_eq!(
        video_messages,
        progress.frames_sent + 1,
        "every frame reached the server"
    );
    let (allocations, bytes) = counted.expect("the counted window was reached");
    eprintln!("{allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} camera frames");
    assert_eq!(
        allocations, 0,
        "{allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} camera frames"
    );
}
