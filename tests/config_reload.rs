//! The configuration file and SIGHUP: errors name the file, line and field; the command line
//! overrides the file; a reload reconnects only when the destination changed.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn errors_in_the_file_name_the_file_line_and_field() {
    let dir = TempDir::new("config-errors");
    let path = dir.path().join("cam.toml");
    std::fs::write(
        &path,
        "input = \"-\"\nurl = \"rtmp://127.0.0.1/live/k\"\n\nchunk-size = 100\n",
    )
    .unwrap();
    let output = run_v4l2rtmp(
        &["--config", path.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    let stderr = stderr_of(&output);
    assert_eq!(exit_code(output.status), 64, "{stderr}");
    assert!(stderr.contains("cam.toml line 4: chunk-size:"), "{stderr}");
    // The key once, as the README shows it.
    assert!(
        stderr.contains("cam.toml line 4: chunk-size: 100 is outside 128..=16777215"),
        "{stderr}"
    );

    std::fs::write(&path, "input = \"-\"\nbogus = 1\n").unwrap();
    let output = run_v4l2rtmp(
        &["--config", path.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    assert!(
        stderr_of(&output).contains("cam.toml line 2: bogus: unknown option --bogus"),
        "{}",
        stderr_of(&output)
    );

    std::fs::write(&path, "input = \"-\"\n[camera]\n").unwrap();
    let output = run_v4l2rtmp(
        &["--config", path.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    assert!(
        stderr_of(&output).contains("line 2: tables are not supported"),
        "{}",
        stderr_of(&output)
    );

    let output = run_v4l2rtmp(
        &["--config", "/nonexistent.toml"],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(exit_code(output.status), 64);
    assert!(stderr_of(&output).contains("cannot read the configuration /nonexistent.toml"));
}

#[test]
fn the_command_line_overrides_the_file() {
    let nginx = Nginx::start();
    let dir = TempDir::new("config-override");
    let path = dir.path().join("cam.toml");
    let clip = clip_small();
    std::fs::write(
        &path,
        format!(
            "input = \"{}\"\nurl = \"{}\"\nchunk-size = 128\nfps = 30\nmax-retries = 0\n",
            clip.display(),
            nginx.url("live", "fromfile")
        ),
    )
    .unwrap();
    let url = nginx.url("live", "fromcli");
    let output = run_v4l2rtmp(
        &["--config", path.to_str().unwrap(), &url],
        None,
        Duration::from_secs(60),
    );
    assert_success(&output);
    let from_cli = nginx.recording("fromcli");
    let from_file = nginx.recording("fromfile");
    let _dir = nginx.stop();
    assert!(from_cli.exists() && !from_file.exists());
    assert_eq!(ffprobe(&from_cli, &[]).packets.len(), 120);
}

#[test]
fn sighup_reconnects_only_when_the_destination_changed() {
    let nginx = Nginx::start();
    let dir = TempDir::new("config-reload");
    let path = dir.path().join("cam.toml");
    let clip = clip_small();
    let write_config = |key: &str| {
        std::fs::write(
            &path,
            format!(
                "input = \"{}\"\nurl = \"{}\"\nrealtime = true\nlog-level = \"info\"\n",
                clip.display(),
                nginx.url("live", key)
            ),
        )
        .unwrap()
    };
    write_config("first");
    let mut child = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    wait_for_line(&lines, "publishing to", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));

    // The same destination: reloaded, not reconnected.
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let line = wait_for_line(
        &lines,
        "SIGHUP: configuration reloaded",
        Duration::from_secs(5),
    );
    assert!(!line.contains("reconnecting"), "{line}");

    // A new key: reconnected there.
    write_config("second");
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let line = wait_for_line(
        &lines,
        "SIGHUP: configuration reloaded",
        Duration::from_secs(5),
    );
    assert!(
        line.contains("reconnecting to the new destination"),
        "{line}"
    );
    wait_for_line(&lines, "publishing to", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");

    let first = nginx.recording("first");
    let second = nginx.recording("second");
    let _dir = nginx.stop();
    let first = ffprobe(&first, &[]);
    let second = ffprobe(&second, &[]);
    // The first reload comes half a second into the stream, at 30 fps.
    assert!(
        first.packets.len() >= 10,
        "{} frames to the first key",
        first.packets.len()
    );
    assert!(!second.packets.is_empty());
    assert!(
        second.packets[0].keyframe,
        "the new destination starts at a keyframe"
    );
    assert!(first.packets.len() + second.packets.len() <= 120);
}

#[test]
fn sighup_to_log_level_debug_shows_debug_lines_at_once() {
    let nginx = Nginx::start();
    let dir = TempDir::new("config-log-level");
    let path = dir.path().join("cam.toml");
    let clip = clip_small();
    let write_config = |key: &str, level: &str| {
        std::fs::write(
            &path,
            format!(
                "input = \"{}\"\nurl = \"{}\"\nrealtime = true\nlog-level = \"{level}\"\n",
                clip.display(),
                nginx.url("live", key)
            ),
        )
        .unwrap()
    };
    write_config("first", "info");
    let mut child = Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    let first = wait_for_line(&lines, "publishing to", Duration::from_secs(20));
    assert!(first.starts_with("v4l2rtmp INFO"), "{first}");

    // Debug, and a new key so that the reconnect logs its debug lines.
    write_config("second", "debug");
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_line(
        &lines,
        "SIGHUP: configuration reloaded",
        Duration::from_secs(5),
    );
    let line = wait_for_line(&lines, "v4l2rtmp DEBUG", Duration::from_secs(10));
    assert!(line.contains("connecting to"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
    let _dir = nginx.stop();
}
