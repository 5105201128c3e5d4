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

/// The runs share the process's signals (a live input's run is ended by SIGTERM): one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn steady_state_publishing_allocates_nothing_per_frame() {
    let clip = clip_1080p30_60s();
    publish_and_count(clip.to_str().unwrap(), false);
}

/// With a silent audio track: its frames are stored and sent between the video's, and allocate
/// nothing either.
#[test]
fn an_audio_track_allocates_nothing_per_frame() {
    let clip = clip_1080p30_60s();
    publish_and_count_with(
        clip.to_str().unwrap(),
        false,
        Some(v4l2rtmp::config::AudioSource::Silence),
    );
}

/// With a track of its own clock: ADTS from an `exec:` encoder, beside live video from another
/// (both FFmpeg, in real time), interleaved by time through the audio gate. 1,300 frames of
/// video in real time: 43 s.
#[test]
fn an_adts_track_beside_live_video_allocates_nothing_per_frame() {
    require_tool("ffmpeg");
    let clip = clip_1080p30_60s();
    let video = format!(
        "exec:ffmpeg -v error -nostdin -re -i {} -c copy -f h264 -",
        clip.to_str().unwrap()
    );
    let audio =
        "exec:ffmpeg -v error -nostdin -re -f lavfi -i sine=frequency=1000:sample_rate=48000 \
                 -ac 2 -c:a aac -b:a 128k -f adts -";
    publish_and_count_with(
        &video,
        true,
        Some(v4l2rtmp::config::AudioSource::Adts(audio.into())),
    );
}

/// A FIFO (live: read at its own pace into the frame store, frames held for the socket while
/// the throttle holds it back), fed by a thread of this process from memory.
#[test]
fn a_fifo_input_allocates_nothing_per_frame() {
    let clip = std::fs::read(clip_1080p30_60s()).unwrap();
    let dir = TempDir::new("alloc-fifo");
    let fifo = dir.path().join("camera.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        // Opening blocks until v4l2rtmp opens the FIFO for reading.
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Twice: the input must outlast the window (its end, and the FIFO opened again for the
        // next writer, are events that allocate, not frames).
        for piece in clip.chunks(64 * 1024).chain(clip.chunks(64 * 1024)) {
            if file.write_all(piece).is_err() {
                return;
            }
        }
    });
    publish_and_count(fifo.to_str().unwrap(), true);
    let _ = writer.join();
}

/// An `exec:` child's stdout (live, like the FIFO); the clip twice, so that the child outlasts
/// the window (its exit and restart are events that allocate, not frames).
#[test]
fn an_exec_input_allocates_nothing_per_frame() {
    let clip = clip_1080p30_60s();
    let clip = clip.to_str().unwrap();
    publish_and_count(&format!("exec:cat {clip} {clip}"), true);
}

/// Publishes `input` through the throttled link and asserts that the counted frames allocated
/// nothing. A live input is stopped with SIGTERM once the window closed.
fn publish_and_count(input: &str, live: bool) {
    publish_and_count_with(input, live, None)
}

/// [`publish_and_count`], with an audio track from `audio`.
fn publish_and_count_with(input: &str, live: bool, audio: Option<v4l2rtmp::config::AudioSource>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = Nginx::start();
    let proxy = Proxy::to_port_with_link_buffer(nginx.port, LINK_BUFFER);
    let url = RtmpUrl::parse(&proxy.url("live", "alloc")).unwrap();
    let mut config = Config::new(input, url);
    if let Some(source) = audio {
        config.audio = Some(v4l2rtmp::config::AudioOptions {
            source,
            rate: Some(48_000),
            channels: 2,
            bitrate: 128_000,
        });
    }
    if live {
        // Frames come as fast as the input gives them: a full store holds the input back (no
        // frame is late), so none is dropped and the window is reached.
        config.frame_rate = v4l2rtmp::config::parse_frame_rate("30").unwrap();
    }
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
            if live {
                // A FIFO or a child does not end by itself: stop as systemd would.
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
            }
        }
    };
    let notifier = Notifier::disabled();
    let reload = || Ok(config.clone());
    let (ending, progress) = runtime
        .block_on(run(config.clone(), &reload, &notifier, &mut on_frame))
        .unwrap();
    window.stop();
    if live {
        assert_eq!(ending, Ending::Signal);
        assert!(progress.frames_sent >= WARM_UP_FRAMES + COUNTED_FRAMES);
    } else {
        assert_eq!(ending, Ending::EndOfInput);
        assert_eq!(progress.frames_sent, 1800);
    }
    assert_eq!(progress.frames_dropped, 0, "{input}: frames were dropped");
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
        "{input}: {allocations} allocations ({bytes} bytes) in {COUNTED_FRAMES} frames sent under \
         backpressure"
    );
    drop(runtime);
    drop(proxy);
    let _ = nginx.stop();
}
