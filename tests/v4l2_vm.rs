//! The raw camera → M2M encoder source against real kernel drivers: vivid (raw capture) into
//! vicodec's stateful encoder (FWHT), in the VM of tests/vm (`tests/vm/all encoder`, whose guest
//! half runs this binary once with single-planar and once with multi-planar drivers).
//!
//! On any other machine every test prints why it skips and passes: the tests need
//! `V4L2RTMP_VM_DEVICES=1` and run as root (they unbind and bind drivers through sysfs).
//! `V4L2RTMP_VM_PLANES=single|multi` says which planar mode the guest loaded, and is checked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l2rtmp::error::{Error, Fault};
use v4l2rtmp::source::encoder::{EncoderSettings, EncoderSource};
use v4l2rtmp::v4l2::{sys, Device, FourCC, Fraction};

const FWHT: FourCC = FourCC::new(b"FWHT");
/// The start of every FWHT frame: magic1 0x4f4f4f4f, magic2 0xffffffff (codec-fwht.h).
const FWHT_MAGIC: [u8; 8] = [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
const FPS: u32 = 15;
const GOP: u32 = 5;

fn in_vm() -> bool {
    if std::env::var("V4L2RTMP_VM_DEVICES").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: needs the VM's vivid and vicodec (tests/vm/all encoder sets V4L2RTMP_VM_DEVICES=1)");
    false
}

/// The node whose /sys/class/video4linux/videoN/name is `name`.
fn node(name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/video4linux").ok()?;
    for entry in entries.flatten() {
        let found = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if found.trim() == name {
            return Some(PathBuf::from("/dev").join(entry.file_name()));
        }
    }
    None
}

fn vivid() -> PathBuf {
    node("vivid-000-vid-cap").expect("no vivid capture node")
}

fn vicodec() -> PathBuf {
    node("stateful-encoder").expect("no vicodec stateful-encoder node")
}

fn settings() -> EncoderSettings {
    EncoderSettings {
        camera: vivid(),
        encoder: None,
        codec: FWHT,
        size: Some((640, 360)),
        fps: Some(Fraction::new(FPS, 1)),
        keyframe_interval_frames: Some(GOP),
        ..EncoderSettings::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    let _ = env_logger::builder().is_test(true).try_init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Clone, Debug)]
struct Frame {
    bytes: usize,
    timestamp: Duration,
    keyframe: bool,
    /// When next_frame returned it.
    at: Instant,
}

/// `count` coded frames, within `limit`.
async fn collect(
    source: &mut EncoderSource,
    count: usize,
    limit: Duration,
) -> Result<Vec<Frame>, Error> {
    let deadline = Instant::now() + limit;
    let mut frames = Vec::new();
    let mut wakeups = 0u32;
    while frames.len() < count {
        if let Some(frame) = source.next_frame()? {
            assert!(
                frame.data.starts_with(&FWHT_MAGIC),
                "not an FWHT frame: {:02x?}",
                &frame.data[..frame.data.len().min(16)]
            );
            frames.push(Frame {
                bytes: frame.data.len(),
                timestamp: frame.timestamp,
                keyframe: frame.keyframe,
                at: Instant::now(),
            });
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{}: {} of {count} frames within {limit:?}",
            source.name(),
            frames.len()
        );
        let _ = tokio::time::timeout(left, source.wait()).await;
        wakeups += 1;
    }
    // No busy loop: at most a few wakeups per frame (camera frame, encoder input done, coded
    // frame done, and the 1 s cap).
    assert!(
        wakeups as usize <= count * 6 + 10,
        "{wakeups} wakeups for {count} frames"
    );
    Ok(frames)
}

/// Positions of the keyframes.
fn keyframes(frames: &[Frame]) -> Vec<usize> {
    frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.keyframe)
        .map(|(i, _)| i)
        .collect()
}

fn check_planes(device: &Path) {
    let expected = std::env::var("V4L2RTMP_VM_PLANES").unwrap_or_default();
    let mplane = Device::open(device).unwrap().capabilities().is_mplane();
    match expected.as_str() {
        "single" => assert!(!mplane, "{} is multi-planar", device.display()),
        "multi" => assert!(mplane, "{} is single-planar", device.display()),
        _ => {}
    }
}

fn report(frames: &[Frame]) -> String {
    let bytes: usize = frames.iter().map(|f| f.bytes).sum();
    format!(
        "{} frames, {} bytes, keyframes at {:?}",
        frames.len(),
        bytes,
        keyframes(frames)
    )
}

#[test]
fn frames_keyframes_controls_drain_and_resume() {
    if !in_vm() {
        return;
    }
    check_planes(&vivid());
    check_planes(&vicodec());
    runtime().block_on(async {
        let started = Instant::now();
        let mut source = EncoderSource::open(&settings()).unwrap();
        println!("opened in {:?}: {}", started.elapsed(), source.describe());
        assert!(
            source.name().contains(&vicodec().display().to_string()),
            "{}",
            source.name()
        );
        assert!(
            source.is_zero_copy(),
            "vivid → vicodec should go by DMABUF: {}",
            source.describe()
        );

        // Controls: the keyframe interval is vicodec's GOP size, read back.
        let controls = source.controls_read_back();
        println!("controls read back: {controls:?}");
        assert!(
            controls.contains(&("video_gop_size".to_string(), i64::from(GOP))),
            "{controls:?}"
        );

        let before = collect(&mut source, 30, Duration::from_secs(30))
            .await
            .unwrap();
        println!("before the drain: {}", report(&before));

        // Timestamps are the capture's: increasing, at the camera's rate (or slower, when the
        // emulated machine drops frames), spanning what the wall clock did.
        for pair in before.windows(2) {
            assert!(pair[1].timestamp > pair[0].timestamp, "{pair:?}");
        }
        let first = &before[0];
        let last = &before[before.len() - 1];
        let span = last.timestamp - first.timestamp;
        let mean = span / (before.len() as u32 - 1);
        let wall = last.at - first.at;
        println!("timestamps span {span:?} (mean {mean:?}), the wall clock {wall:?}");
        assert!(
            mean >= Duration::from_secs(1) / FPS * 9 / 10,
            "faster than {FPS} fps: {mean:?}"
        );
        assert!(mean <= Duration::from_millis(500), "{mean:?}");
        let skew = span.abs_diff(wall);
        assert!(
            skew < Duration::from_millis(1500),
            "timestamps {span:?}, wall {wall:?}"
        );

        // Keyframes every GOP frames from the first.
        let keys = keyframes(&before);
        assert_eq!(keys.first(), Some(&0), "{}", report(&before));
        for pair in keys.windows(2) {
            assert_eq!(pair[1] - pair[0], GOP as usize, "{}", report(&before));
        }
        assert!(keys.len() >= 30 / GOP as usize, "{}", report(&before));

        // FORCE_KEY_FRAME: vicodec has none; then force_keyframe says so.
        let has_force = Device::open(&vicodec())
            .unwrap()
            .query_control(sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)
            .is_ok();
        let forced = source.force_keyframe().unwrap();
        assert_eq!(forced, has_force);
        if forced {
            let after = collect(&mut source, 3, Duration::from_secs(10))
                .await
                .unwrap();
            assert!(
                after.iter().any(|f| f.keyframe),
                "no keyframe after a forced one"
            );
        } else {
            println!("vicodec has no FORCE_KEY_FRAME control: force_keyframe() = Ok(false)");
        }

        // Drain: every frame up to the LAST buffer; then nothing flows until resume.
        let t = Instant::now();
        let drained = source.drain(Duration::from_secs(10)).await.unwrap();
        println!(
            "drained {} frames in {:?} (keyframes {:?})",
            drained.len(),
            t.elapsed(),
            drained.iter().map(|f| f.keyframe).collect::<Vec<_>>()
        );
        for f in &drained {
            assert!(f.data.starts_with(&FWHT_MAGIC));
            assert!(f.timestamp > last.timestamp);
        }
        let quiet = Instant::now() + Duration::from_millis(800);
        while Instant::now() < quiet {
            assert!(
                source.next_frame().unwrap().is_none(),
                "a frame after the drain"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), source.wait()).await;
        }
        // Draining again is a no-op.
        assert!(source
            .drain(Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty());

        source.resume().unwrap();
        let after = collect(&mut source, 12, Duration::from_secs(30))
            .await
            .unwrap();
        println!("after resume: {}", report(&after));
        let newest = drained.last().map_or(last.timestamp, |f| f.timestamp);
        assert!(after[0].timestamp > newest);
        for pair in after.windows(2) {
            assert!(pair[1].timestamp > pair[0].timestamp, "{pair:?}");
        }
        let keys = keyframes(&after);
        assert!(
            !keys.is_empty(),
            "no keyframe after resume: {}",
            report(&after)
        );
        for pair in keys.windows(2) {
            assert_eq!(pair[1] - pair[0], GOP as usize, "{}", report(&after));
        }
        println!("dropped camera frames: {}", source.dropped());
        println!("total {:?}", started.elapsed());
    });
}

#[test]
fn the_copy_path_encodes_too() {
    if !in_vm() {
        return;
    }
    runtime().block_on(async {
        let settings = EncoderSettings {
            encoder: Some(vicodec()),
            dmabuf: false,
            keyframe_interval_frames: Some(3),
            pixel_format: Some(FourCC::NV12),
            size: Some((640, 480)),
            ..settings()
        };
        let mut source = EncoderSource::open(&settings).unwrap();
        println!("{}", source.describe());
        assert!(!source.is_zero_copy());
        assert!(
            source.describe().contains("NV12 640x480"),
            "{}",
            source.describe()
        );
        let frames = collect(&mut source, 10, Duration::from_secs(30))
            .await
            .unwrap();
        println!("copy path: {}", report(&frames));
        let keys = keyframes(&frames);
        assert_eq!(keys.first(), Some(&0));
        for pair in keys.windows(2) {
            assert_eq!(pair[1] - pair[0], 3);
        }
    });
}

/// `--hflip --vflip` land on the camera (vivid has both controls), read back from the camera
/// through a second handle while the source streams.
#[test]
fn flips_are_set_on_the_camera() {
    if !in_vm() {
        return;
    }
    runtime().block_on(async {
        let settings = EncoderSettings {
            hflip: true,
            vflip: true,
            ..settings()
        };
        let mut source = EncoderSource::open(&settings).unwrap();
        let read_back = source.controls_read_back();
        println!("controls read back: {read_back:?}");
        for key in ["horizontal_flip", "vertical_flip"] {
            assert!(
                read_back.contains(&(key.to_string(), 1)),
                "{key}=1 not in {read_back:?}"
            );
        }
        let camera = Device::open(&vivid()).unwrap();
        assert_eq!(camera.get_control(0x0098_0900 + 20).unwrap(), 1, "HFLIP");
        assert_eq!(camera.get_control(0x0098_0900 + 21).unwrap(), 1, "VFLIP");
        let frames = collect(&mut source, 5, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(frames.len(), 5);
        drop(source);
        // Flips are the camera's state: put them back for the other tests.
        camera.set_control(0x0098_0900 + 20, 0).unwrap();
        camera.set_control(0x0098_0900 + 21, 0).unwrap();
    });
}

#[test]
fn errors_name_the_device_and_what_it_offers() {
    if !in_vm() {
        return;
    }
    let _rt = runtime();
    let _guard = _rt.enter();
    let encoder = vicodec();
    let h264 = EncoderSource::open(&EncoderSettings {
        encoder: Some(encoder.clone()),
        codec: FourCC::H264,
        ..settings()
    })
    .unwrap_err();
    println!("{h264}");
    assert_eq!(h264.fault(), Fault::Config);
    assert!(
        h264.message().contains(&encoder.display().to_string()),
        "{h264}"
    );
    assert!(
        h264.message()
            .contains("does not encode H264; it produces FWHT"),
        "{h264}"
    );

    let none = EncoderSource::open(&EncoderSettings {
        codec: FourCC::H264,
        ..settings()
    })
    .unwrap_err();
    println!("{none}");
    assert_eq!(none.fault(), Fault::Config);
    assert!(
        none.message().contains("no V4L2 encoder produces H264"),
        "{none}"
    );
    assert!(none.message().contains("(produces FWHT)"), "{none}");

    // Bayer: vivid offers it, vicodec does not take it.
    let bayer = EncoderSource::open(&EncoderSettings {
        pixel_format: Some(FourCC::new(b"BA81")),
        ..settings()
    })
    .unwrap_err();
    println!("{bayer}");
    assert_eq!(bayer.fault(), Fault::Config);
    assert!(
        bayer
            .message()
            .contains("BA81 is not offered by the encoder's raw input"),
        "{bayer}"
    );
    assert!(
        bayer.message().contains("the encoder accepts YU12"),
        "{bayer}"
    );

    let size = EncoderSource::open(&EncoderSettings {
        size: Some((1000, 1000)),
        ..settings()
    })
    .unwrap_err();
    println!("{size}");
    assert_eq!(size.fault(), Fault::Config);
    assert!(
        size.message().contains("not offered at 1000x1000"),
        "{size}"
    );

    let gone = EncoderSource::open(&EncoderSettings {
        camera: PathBuf::from("/dev/video-none"),
        ..settings()
    })
    .unwrap_err();
    assert_eq!(gone.fault(), Fault::Config);
}

/// The platform device a driver is bound to (`vicodec.0`).
fn bound_device(driver: &str) -> String {
    let dir = format!("/sys/bus/platform/drivers/{driver}");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(driver))
        .unwrap_or_else(|| panic!("nothing bound to {driver}"))
}

fn sysfs_write(path: &str, value: &str) {
    std::fs::write(path, value).unwrap_or_else(|e| panic!("echo {value} > {path}: {e}"));
}

/// Streams, unbinds `driver` mid-stream, expects an input error naming `device`, binds it
/// again and streams again.
fn survive_unbind(driver: &str, device: fn() -> PathBuf) {
    let runtime = runtime();
    runtime.block_on(async {
        let mut source = EncoderSource::open(&settings()).unwrap();
        let path = device().display().to_string();
        collect(&mut source, 5, Duration::from_secs(30))
            .await
            .unwrap();
        let platform = bound_device(driver);
        println!("unbinding {platform} from {driver} ({path}) mid-stream");
        let t = Instant::now();
        sysfs_write(
            &format!("/sys/bus/platform/drivers/{driver}/unbind"),
            &platform,
        );
        let err = loop {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no error 10 s after the unbind"
            );
            match source.next_frame() {
                Ok(_) => {}
                Err(e) => break e,
            }
            if let Err(e) = tokio::time::timeout(Duration::from_secs(2), source.wait())
                .await
                .unwrap_or(Ok(()))
            {
                break e;
            }
        };
        println!("after {:?}: {err}", t.elapsed());
        assert_eq!(err.fault(), Fault::Input, "{err}");
        assert!(err.message().contains(&path), "{err} does not name {path}");
        // The source stays an error, not a panic or a hang.
        assert!(source.next_frame().is_err());
        drop(source);

        sysfs_write(
            &format!("/sys/bus/platform/drivers/{driver}/bind"),
            &platform,
        );
        let t = Instant::now();
        while node("stateful-encoder").is_none() || node("vivid-000-vid-cap").is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{driver} did not come back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut source = EncoderSource::open(&settings()).unwrap();
        println!("reopened after the bind: {}", source.name());
        let frames = collect(&mut source, 5, Duration::from_secs(30))
            .await
            .unwrap();
        println!("after the bind: {}", report(&frames));
    });
}

#[test]
fn unbinding_the_encoder_mid_stream_is_an_input_error() {
    if !in_vm() {
        return;
    }
    survive_unbind("vicodec", vicodec);
}

#[test]
fn unbinding_the_camera_mid_stream_is_an_input_error() {
    if !in_vm() {
        return;
    }
    survive_unbind("vivid", vivid);
}
