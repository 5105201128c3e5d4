//! The systemd unit (`systemd/v4l2rtmp@.service`) and the example configuration
//! (`systemd/example.toml`), checked with the tool systemd ships:
//!
//! - `systemd-analyze verify` accepts the unit without a single warning (systemd only warns about
//!   a misspelt or unknown setting, and then ignores it: a sandbox could silently lose a line);
//! - `systemd-analyze security --offline=true` rates the sandbox at most 2.0 ("OK");
//! - the settings the service relies on are there (notify, watchdog, restart, device access), and
//!   the example configuration only uses options the binary has.
//!
//! They need `systemd-analyze` (Debian package `systemd`) and `/bin/kill` (package `procps`,
//! which `ExecReload=` names). Without them the tests fail and say what to install: they never
//! skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The highest overall exposure accepted, as systemd-analyze prints it (0.0 to 10.0).
const MAX_EXPOSURE: f64 = 2.0;

/// The instance the template is checked as.
const INSTANCE: &str = "v4l2rtmp@cam.service";

fn source(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = source(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn unit() -> String {
    read("systemd/v4l2rtmp@.service")
}

/// `systemd-analyze` with `args`; fails the test with what to install when it is missing.
fn systemd_analyze(args: &[&str], unit_file: &Path) -> Output {
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(unit_file)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .output();
    match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: install the Debian package `systemd` \
             (apt-get install systemd); these tests check the unit file with it and do not skip"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temporary directory holding the unit under its instance name; removed on drop.
struct UnitDir(PathBuf);

impl UnitDir {
    fn with(contents: &str) -> UnitDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "v4l2rtmp-unit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        std::fs::write(dir.join(INSTANCE), contents).expect("write the unit");
        UnitDir(dir)
    }

    fn unit_file(&self) -> PathBuf {
        self.0.join(INSTANCE)
    }
}

impl Drop for UnitDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `key=value` settings of `section`, in order (continuation lines are not used in the unit).
fn settings<'a>(unit: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let mut current = "";
    let mut found = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            current = line;
            continue;
        }
        if current == section {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting in {section}: {line:?}"));
            found.push((key.trim(), value.trim()));
        }
    }
    found
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    assert!(
        Path::new("/bin/kill").exists(),
        "/bin/kill (ExecReload=) is missing: install the Debian package `procps`"
    );
    // verify insists that ExecStart= names an executable, and /usr/bin/v4l2rtmp is not installed
    // here: check a copy that starts the binary this test was built with, quoted in case its path
    // has spaces (and with systemd's % specifier character escaped).
    let binary = env!("CARGO_BIN_EXE_v4l2rtmp").replace('%', "%%");
    let original = "ExecStart=/usr/bin/v4l2rtmp ";
    let unit = unit();
    assert!(unit.contains(original), "the unit has no {original:?}");
    let dir = UnitDir::with(&unit.replace(original, &format!("ExecStart=\"{binary}\" ")));

    // --recursive-errors=no: only this unit's errors count, not those of units on this machine.
    let output = systemd_analyze(
        &["verify", "--man=no", "--recursive-errors=no"],
        &dir.unit_file(),
    );
    let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
    println!("systemd-analyze verify:\n{report}");
    assert!(output.status.success(), "verify failed:\n{report}");
    assert!(
        report.trim().is_empty(),
        "verify warned (systemd ignores a setting it warns about):\n{report}"
    );
}

#[test]
fn unit_sandbox_exposure_is_at_most_2() {
    let dir = UnitDir::with(&unit());
    // --threshold is on systemd's internal scale, ten times the printed one.
    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32);
    let output = systemd_analyze(
        &["security", "--offline=true", &threshold, "--no-pager"],
        &dir.unit_file(),
    );
    let table = text(&output.stdout);
    let errors = text(&output.stderr);
    println!("systemd-analyze security --offline=true {threshold} {INSTANCE}:\n{table}{errors}");
    let marker = format!("Overall exposure level for {INSTANCE}:");
    let exposure: f64 = table
        .lines()
        .find_map(|line| line.split_once(&marker))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{table}{errors}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "overall exposure {exposure} is over {MAX_EXPOSURE}:\n{table}"
    );
    assert!(
        output.status.success(),
        "systemd-analyze security failed ({}):\n{table}{errors}",
        output.status
    );
}

#[test]
fn unit_keeps_the_settings_the_service_relies_on() {
    let unit = unit();
    let unit_section = settings(&unit, "[Unit]");
    let service = settings(&unit, "[Service]");
    for (section, wanted) in [
        // Restarting must never stop for good.
        (&unit_section, ("StartLimitIntervalSec", "0")),
        (&unit_section, ("After", "network-online.target")),
        (&unit_section, ("Wants", "network-online.target")),
        (
            &service,
            (
                "ExecStart",
                "/usr/bin/v4l2rtmp --config /etc/v4l2rtmp/%i.toml",
            ),
        ),
        // src/notify.rs: READY=1 from the main process, WATCHDOG=1 every WATCHDOG_USEC / 2.
        (&service, ("Type", "notify")),
        (&service, ("NotifyAccess", "main")),
        (&service, ("WatchdogSec", "30s")),
        // SIGHUP re-reads the configuration.
        (&service, ("ExecReload", "/bin/kill -HUP $MAINPID")),
        (&service, ("Restart", "always")),
        (&service, ("RestartSec", "2s")),
        // A configuration error (exit 64) is not restarted for ever.
        (&service, ("RestartPreventExitStatus", "64")),
        (&service, ("TimeoutStopSec", "5s")),
        (&service, ("User", "v4l2rtmp")),
        (&service, ("Group", "v4l2rtmp")),
        (&service, ("SupplementaryGroups", "video audio")),
        // Cameras and microphones are devices: a closed device policy that lets V4L2 and ALSA
        // devices through.
        (&service, ("DevicePolicy", "closed")),
        (&service, ("DeviceAllow", "char-video4linux rw")),
        (&service, ("DeviceAllow", "char-alsa rw")),
    ] {
        assert!(
            section.contains(&wanted),
            "{}={} is missing from the unit",
            wanted.0,
            wanted.1
        );
    }
    for (key, value) in service.iter().chain(&unit_section) {
        // A '#' after a value is not a comment to systemd but part of the value.
        assert!(
            !value.contains(" #"),
            "{key}={value}: comments go on their own line"
        );
        // Cameras are devices: PrivateDevices=yes would hide /dev/video*.
        assert!(
            !(*key == "PrivateDevices" && ["yes", "true", "on", "1"].contains(value)),
            "PrivateDevices=yes hides the cameras"
        );
    }
}

/// The long options `v4l2rtmp --help` lists, without their dashes.
fn options_in_help() -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_v4l2rtmp"))
        .arg("--help")
        .output()
        .expect("run v4l2rtmp --help");
    assert!(output.status.success(), "v4l2rtmp --help failed");
    text(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|option| {
            option
                .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|option| !option.is_empty())
        .collect()
}

#[test]
fn example_configuration_uses_only_existing_options() {
    let example = read("systemd/example.toml");
    let keys: Vec<&str> = example
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a `key = value` line: {line:?}"));
            assert!(!value.trim().is_empty(), "{line:?} has no value");
            key.trim()
        })
        .collect();
    for required in ["input", "url"] {
        assert!(keys.contains(&required), "the example has no {required}");
    }
    let options = options_in_help();
    for key in keys {
        // The URL is the positional argument on the command line.
        if key == "url" {
            continue;
        }
        assert!(
            options.iter().any(|option| option == key),
            "example.toml sets {key:?}, which is not an option of v4l2rtmp (--help lists {options:?})"
        );
    }
}

#[test]
fn unit_restarts_on_every_exit_but_a_configuration_error() {
    let unit = unit();
    let service = settings(&unit, "[Service]");
    let prevented: Vec<&str> = service
        .iter()
        .filter(|(key, _)| *key == "RestartPreventExitStatus")
        .flat_map(|(_, value)| value.split_whitespace())
        .collect();
    assert_eq!(
        prevented,
        ["64"],
        "only exit code 64 (configuration) is one a restart cannot cure"
    );
    // A camera that is not plugged in at start is waited for, not an exit: the unit's comment and
    // the code must agree (the restart would otherwise be what brings it back).
    let mut child = Command::new(env!("CARGO_BIN_EXE_v4l2rtmp"))
        .args([
            "--input",
            "/dev/video-v4l2rtmp-test-absent",
            "rtmp://127.0.0.1:9/live/k",
        ])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start v4l2rtmp");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let exited = child.try_wait().expect("wait");
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    let stderr = text(&output.stderr);
    assert!(
        exited.is_none(),
        "v4l2rtmp exited ({exited:?}) for a missing camera:\n{stderr}"
    );
    assert!(stderr.contains("waiting for the camera"), "{stderr}");
}

/// The mode debian/postinst gives /etc/v4l2rtmp (`chmod MODE /etc/v4l2rtmp`).
fn packaged_directory_mode() -> u32 {
    let postinst = read("debian/postinst");
    let mode = postinst
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("chmod ")?.strip_suffix(" /etc/v4l2rtmp"))
        .unwrap_or_else(|| panic!("debian/postinst sets no mode on /etc/v4l2rtmp"));
    u32::from_str_radix(mode, 8).unwrap_or_else(|_| panic!("not an octal mode: {mode:?}"))
}

/// The package's description, the unit and example.toml tell users to copy the example with `cp`
/// as root: the copy is root:root, mode 0640, unless the directory hands its group down. The
/// directory mode from debian/postinst must do that, and the service user must then read the
/// copy; without it, the error says what to run.
#[test]
fn a_copy_of_the_example_made_by_root_is_readable_by_the_service_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = packaged_directory_mode();
    assert_eq!(
        mode & 0o2070,
        0o2050,
        "/etc/v4l2rtmp ({mode:04o}) must be setgid (new files get its group) and group rx"
    );
    assert_eq!(
        mode & 0o007,
        0,
        "/etc/v4l2rtmp holds stream keys: nothing for others"
    );
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        println!("not root: the copy and the service user are not tried (run as root for that)");
        return;
    }
    // nobody:nogroup (65534) stands in for v4l2rtmp:v4l2rtmp.
    const SERVICE: u32 = 65_534;
    let dir = UnitDir::with("");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let example = dir.0.join("example.toml");
    std::fs::copy(source("systemd/example.toml"), &example).unwrap();
    // As the package installs it (Cargo.toml's [package.metadata.deb] assets).
    std::fs::set_permissions(&example, std::fs::Permissions::from_mode(0o640)).unwrap();
    let binary = dir.0.join("v4l2rtmp");
    std::fs::copy(env!("CARGO_BIN_EXE_v4l2rtmp"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_as_service = |config: &Path| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={SERVICE}"),
                &format!("--regid={SERVICE}"),
                "--clear-groups",
            ])
            .arg(&binary)
            .arg("--config")
            .arg(config)
            .arg("--help")
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap_or_else(|e| panic!("cannot run setpriv (package util-linux): {e}"))
    };
    let copy_into = |conf: &Path| {
        let status = Command::new("cp").arg(&example).arg(conf).status().unwrap();
        assert!(status.success());
        conf.join("example.toml")
    };

    // As the package makes it: root:v4l2rtmp, the mode from postinst.
    let packaged = dir.0.join("packaged");
    std::fs::create_dir(&packaged).unwrap();
    std::os::unix::fs::chown(&packaged, Some(0), Some(SERVICE)).unwrap();
    std::fs::set_permissions(&packaged, std::fs::Permissions::from_mode(mode)).unwrap();
    let copy = copy_into(&packaged);
    let metadata = std::fs::metadata(&copy).unwrap();
    assert_eq!(
        metadata.gid(),
        SERVICE,
        "the copy did not get the directory's group"
    );
    let output = run_as_service(&copy);
    assert!(
        output.status.success(),
        "the service user cannot read a copy in a {mode:04o} directory ({:04o} {}:{}): {}",
        metadata.mode() & 0o7777,
        metadata.uid(),
        metadata.gid(),
        text(&output.stderr)
    );

    // A plain directory: the copy is root:root and the error says what to run.
    let plain = dir.0.join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = copy_into(&plain);
    let output = run_as_service(&copy);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    let user = |id: u32, file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&id.to_string().as_str())).then(|| fields[0].to_string())
            })
            .unwrap_or_else(|| id.to_string())
    };
    let wanted = format!(
        "cannot read {copy} (owner root:root, mode 0640; v4l2rtmp runs as user {}): run `sudo \
         chgrp {} {copy}`",
        user(SERVICE, "/etc/passwd"),
        user(SERVICE, "/etc/group"),
        copy = copy.display()
    );
    assert!(stderr.contains(&wanted), "{stderr}\nshould say:\n{wanted}");
}
