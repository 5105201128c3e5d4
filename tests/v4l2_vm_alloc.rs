//! In steady state, a frame from a V4L2 camera allocates nothing on its way to the socket: the
//! real supervisor reads the VM's v4l2loopback "camera" (fed by v4l2-feeder) and publishes to a
//! scripted RTMP server in this process on 127.0.0.1, under a counting global allocator. The
//! allocations made between frame 60 and frame 210 are counted, on every thread but the server's
//! (the camera's poll thread included).
//!
//! Runs in the VM of tests/vm (`tests/vm/all encoder`, whose guest half starts the feeder first);
//! anywhere else it prints why it skips and passes (it needs `V4L2RTMP_VM_DEVICES=1`).

mod common;

use std::net::TcpListener;

use common::alloc::{exclude_this_thread, CountingAllocator, Counts, Window};
use common::scripted::ScriptedPeer;
use v4l2rtmp::config::Config;
use v4l2rtmp::notify::Notifier;
use v4l2rtmp::supervisor::{run, Ending, Progress};
use v4l2rtmp::url::RtmpUrl;

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
        exclude_this_thread();
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
    let mut window = Window::new(WARM_UP_FRAMES, COUNTED_FRAMES);
    let mut on_frame = |progress: &Progress| {
        if window.on_frame(progress.frames_sent) {
            // The supervisor stops on SIGTERM as under systemd (its handler is installed).
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        }
    };
    let notifier = Notifier::disabled();
    let reload = || Ok(config.clone());
    let (ending, progress) = runtime
        .block_on(run(config.clone(), &reload, &notifier, &mut on_frame))
        .unwrap();
    window.stop();
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
    let Counts {
        allocations,
        allocated: bytes,
        ..
    } = window.result.expect("the counted window was reached");
    eprintln!("{allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} camera frames");
    assert_eq!(
        allocations, 0,
        "{allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} camera frames"
    );
}
