//! In steady state, publishing a frame allocates nothing: the real driver pushes a 1080p clip to a
//! real nginx in this process, under a counting global allocator, and the allocations made between
//! frame 200 and frame 1300 are counted (the first frames warm up buffers to their final sizes).

mod common;

use common::alloc::{CountingAllocator, Window};
use common::*;
use v4l2rtmp::config::Config;
use v4l2rtmp::notify::Notifier;
use v4l2rtmp::supervisor::{run, Ending, Progress};
use v4l2rtmp::url::RtmpUrl;

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
    let mut window = Window::new(WARM_UP_FRAMES, COUNTED_FRAMES);
    let mut on_frame = |progress: &Progress| {
        window.on_frame(progress.frames_sent);
    };
    let notifier = Notifier::disabled();
    let reload = || Ok(config.clone());
    let (ending, progress) = runtime
        .block_on(run(config.clone(), &reload, &notifier, &mut on_frame))
        .unwrap();
    window.stop();
    assert_eq!(ending, Ending::EndOfInput);
    assert_eq!(progress.frames_sent, 1800);
    let (allocations, bytes) = window.result.expect("the counted window was reached");
    assert_eq!(
        allocations, 0,
        "{allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} frames"
    );
    drop(runtime);
    let _ = nginx.stop();
}
