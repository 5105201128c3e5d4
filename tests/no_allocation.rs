//! In steady state, publishing a frame allocates nothing: the real driver pushes a 1080p clip to a
//! real nginx in this process, under a counting global allocator, and the allocations made between
//! frame 200 and frame 1300 are counted (the first frames warm up buffers to their final sizes).
//!
//! The counted frames go through a throttling proxy: the socket then takes only part of most
//! frames, and the driver copies the rest out of the input buffer (`Connection::detach`). That
//! path is what allocates under backpressure if the connection's buffers are not sized for it up
//! front, and without the throttle it is taken only when the machine happens to be loaded, late
//! enough and hard enough: the warm-up must not be what sizes them.

mod common;

use std::time::{Duration, Instant};

use common::alloc::{CountingAllocator, Counts, Window};
use common::proxy::{Mode, Proxy};
use common::*;
use v4l2rtmp::config::Config;
use v4l2rtmp::notify::Notifier;
use v4l2rtmp::supervisor::{run, Ending, Progress};
use v4l2rtmp::url::RtmpUrl;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const WARM_UP_FRAMES: u64 = 200;
const COUNTED_FRAMES: u64 = 1100;
/// Client→server bytes per second while the counted frames are sent: 16 times the clip's
/// 4 Mbit/s (the window takes about 2.5 s), yet the link is full whenever a frame comes.
const THROTTLE: u64 = 8_000_000;
/// What the emulated link holds: small, so that backpressure reaches the socket at once.
const LINK_BUFFER: usize = 64 * 1024;

#[test]
fn steady_state_publishing_allocates_nothing_per_frame() {
    let clip = clip_1080p30_60s();
    let nginx = Nginx::start();
    let proxy = Proxy::to_port_with_link_buffer(nginx.port, LINK_BUFFER);
    let url = RtmpUrl::parse(&proxy.url("live", "alloc")).unwrap();
    let config = Config::new(clip.to_str().unwrap(), url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut window = Window::new(WARM_UP_FRAMES, COUNTED_FRAMES);
    let mut throttled_at = None;
    let mut throttled_for = None;
    let mut on_frame = |progress: &Progress| {
        // Mode::Throttle is a Copy value behind a Mutex: switching allocates nothing.
        if progress.frames_sent == WARM_UP_FRAMES {
            proxy.set_mode(Mode::Throttle(THROTTLE));
            throttled_at = Some(Instant::now());
        }
        if window.on_frame(progress.frames_sent) {
            proxy.set_mode(Mode::Forward);
            throttled_for = throttled_at.map(|at| at.elapsed());
        }
    };
    let notifier = Notifier::disabled();
    let reload = || Ok(config.clone());
    let (ending, progress) = runtime
        .block_on(run(config.clone(), &reload, &notifier, &mut on_frame))
        .unwrap();
    window.stop();
    assert_eq!(ending, Ending::EndOfInput);
    assert_eq!(progress.frames_sent, 1800);
    let Counts {
        allocations,
        allocated: bytes,
        ..
    } = window.result.expect("the counted window was reached");
    let throttled_for = throttled_for.expect("the counted window was throttled");
    eprintln!("counted window: {COUNTED_FRAMES} frames in {throttled_for:?} through the throttle");
    // About 18 MB at 8 MB/s: a window much shorter than that was not held back by the throttle.
    assert!(
        throttled_for >= Duration::from_secs(1),
        "the counted frames took {throttled_for:?}: the throttle did not make the socket push back"
    );
    assert_eq!(
        allocations, 0,
        "{allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} frames sent under backpressure"
    );
    drop(runtime);
    drop(proxy);
    let _ = nginx.stop();
}
