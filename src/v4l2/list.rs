//! `v4l2rtmp devices`: every V4L2 device node with what a user needs to choose a camera and an
//! encoder: driver, card, bus, capabilities, the formats of each queue with their frame sizes and
//! rates, the current format, and the controls (their v4l2-ctl names, types, ranges, menus and
//! current values). A node that cannot be opened or queried is listed with the reason.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::device::{Capabilities, Device};
use super::{BufType, ControlInfo, ControlType, FormatDesc, FourCC, FrameInterval, FrameSize};
use crate::error::{Error, Fault, Result};

/// Most frame sizes listed per format; the rest are counted.
const MAX_SIZES: usize = 32;
/// Most frame rates listed per size.
const MAX_INTERVALS: usize = 16;
/// Most menu items listed per control.
const MAX_MENU_ITEMS: usize = 32;

/// Writes the report for every `/dev/video*`, in numeric order.
pub fn report(out: &mut impl Write) -> Result<()> {
    report_dir(out, Path::new("/dev"))
}

/// Writes the report for the `video*` nodes of `dir` (tests use a directory of their own).
pub fn report_dir(out: &mut impl Write, dir: &Path) -> Result<()> {
    let nodes = video_nodes(dir)?;
    if nodes.is_empty() {
        write_out(
            out,
            &format!(
                "no V4L2 devices: {} has no video* nodes (is the camera connected, its driver \
                 loaded, and is this a container without /dev passed through?)\n",
                dir.display()
            ),
        )?;
        return Ok(());
    }
    let aliases = aliases();
    for (i, node) in nodes.iter().enumerate() {
        let mut text = String::new();
        if i > 0 {
            text.push('\n');
        }
        let own: Vec<&PathBuf> = aliases
            .iter()
            .filter(|(_, target)| target == node)
            .map(|(alias, _)| alias)
            .collect();
        match Device::open(node) {
            Ok(device) => {
                let _ = writeln!(text, "{}", node.display());
                for alias in own {
                    let _ = writeln!(text, "  also {}", alias.display());
                }
                text.push_str(&device_report(&device));
            }
            Err(e) => {
                let _ = writeln!(text, "{}: cannot be used: {e}", node.display());
            }
        }
        write_out(out, &text)?;
    }
    Ok(())
}

fn write_out(out: &mut impl Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(Fault::Input, "cannot write the device report", e))
}

/// The `video*` entries of `dir`, sorted by their number (`video2` before `video10`).
pub fn video_nodes(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(Fault::Input, format!("cannot list {}", dir.display()), e))?;
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = node_number(name.to_str()?)?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();
    Ok(nodes.into_iter().map(|(_, path)| path).collect())
}

/// `video12` -> 12; anything else (`videox`, `video`, `media0`) -> None.
fn node_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("video")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The stable names udev makes (`/dev/v4l/by-id/...`, `/dev/v4l/by-path/...`) and the nodes
/// they point to.
fn aliases() -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    for dir in ["/dev/v4l/by-id", "/dev/v4l/by-path"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            if let Ok(target) = std::fs::canonicalize(entry.path()) {
                found.push((entry.path(), target));
            }
        }
    }
    found.sort();
    found
}

/// The report for one open device (everything after its path line), indented by two spaces.
pub fn device_report(device: &Device) -> String {
    let mut text = String::new();
    let caps = device.capabilities();
    let _ = writeln!(text, "  {}", identity(caps));
    let _ = writeln!(text, "  {}", caps.describe());
    for buf_type in caps.buf_types() {
        queue_report(&mut text, device, buf_type);
    }
    controls_report(&mut text, device);
    text
}

/// `card "vivid webcam", driver vivid, bus platform:vivid-000, kernel 6.1.0`
fn identity(caps: &Capabilities) -> String {
    format!(
        "card \"{}\", driver {}, bus {}, kernel {}",
        caps.card,
        caps.driver,
        caps.bus_info,
        caps.kernel_version()
    )
}

/// Only the reason of an error (its OS error if it has one): the report names the device.
fn reason(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => e.message().to_string(),
    }
}

fn queue_report(text: &mut String, device: &Device, buf_type: BufType) {
    let queue = if device.capabilities().is_m2m() {
        match buf_type.is_output() {
            true => format!("{} queue (frames in)", buf_type.describe()),
            false => format!("{} queue (frames out)", buf_type.describe()),
        }
    } else {
        format!("{} queue", buf_type.describe())
    };
    let formats = match device.formats(buf_type) {
        Ok(formats) => formats,
        Err(e) => {
            let _ = writeln!(text, "  {queue}: formats cannot be listed: {}", reason(&e));
            return;
        }
    };
    let _ = writeln!(text, "  {queue}:");
    if formats.is_empty() {
        let _ = writeln!(text, "    no formats");
    }
    let blocks: Vec<(String, String)> = formats
        .iter()
        .map(|format| (format_header(format), sizes_block(device, format.fourcc)))
        .collect();
    text.push_str(&group_formats(&blocks));
    match device.get_format(buf_type) {
        Ok(current) => {
            let rate = match device.frame_rate(buf_type) {
                Ok(Some(rate)) => format!(", {rate} fps"),
                _ => String::new(),
            };
            let sizes: Vec<String> = current
                .planes
                .iter()
                .map(|p| p.size_image.to_string())
                .collect();
            let _ = writeln!(
                text,
                "    current: {current}{rate}, buffer sizes {} bytes",
                sizes.join("+")
            );
        }
        Err(e) => {
            let _ = writeln!(text, "    current format unknown: {}", reason(&e));
        }
    }
}

/// Lists (format header, sizes block) pairs; formats whose block is the same as the next
/// one's are listed together, with the block once after the group (vivid offers 90 formats
/// with the same sizes and rates).
fn group_formats(blocks: &[(String, String)]) -> String {
    let mut text = String::new();
    let mut group_start = 0;
    for (i, (_, block)) in blocks.iter().enumerate() {
        if blocks.get(i + 1).is_some_and(|(_, next)| next == block) {
            continue;
        }
        for (header, _) in &blocks[group_start..=i] {
            let _ = writeln!(text, "    {header}");
        }
        text.push_str(block);
        group_start = i + 1;
    }
    text
}

/// `YUYV "YUYV 4:2:2"`, `H264 "H.264" (compressed)`
fn format_header(format: &FormatDesc) -> String {
    let mut notes = Vec::new();
    if format.is_compressed() {
        notes.push("compressed");
    }
    if format.is_emulated() {
        notes.push("emulated in software");
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    format!("{} \"{}\"{notes}", format.fourcc, format.description)
}

/// The frame sizes of a format with the frame rates at each, one line each.
fn sizes_block(device: &Device, fourcc: FourCC) -> String {
    let mut text = String::new();
    let sizes = match device.frame_sizes(fourcc) {
        Ok(sizes) => sizes,
        Err(e) => {
            let _ = writeln!(text, "      sizes cannot be listed: {}", reason(&e));
            return text;
        }
    };
    for size in sizes.iter().take(MAX_SIZES) {
        let (width, height) = size.max();
        let rates = device
            .frame_intervals(fourcc, width, height)
            .map(|intervals| rates(&intervals))
            .unwrap_or_else(|e| format!("rates cannot be listed: {}", reason(&e)));
        let at = match size {
            FrameSize::Discrete { .. } => String::new(),
            FrameSize::Stepwise { .. } => format!(" (at {width}x{height})"),
        };
        if rates.is_empty() {
            let _ = writeln!(text, "      {size}");
        } else {
            let _ = writeln!(text, "      {size}{at}: {rates}");
        }
    }
    if sizes.len() > MAX_SIZES {
        let _ = writeln!(text, "      and {} more sizes", sizes.len() - MAX_SIZES);
    }
    text
}

/// `30, 25, 15 fps`, `1 to 30 fps`; empty when the driver lists none.
fn rates(intervals: &[FrameInterval]) -> String {
    let mut discrete = Vec::new();
    let mut ranges = Vec::new();
    for interval in intervals.iter().take(MAX_INTERVALS) {
        match interval {
            FrameInterval::Discrete(i) => discrete.push(i.recip().to_string()),
            range => ranges.push(range.to_string()),
        }
    }
    let mut parts = Vec::new();
    if !discrete.is_empty() {
        parts.push(format!("{} fps", discrete.join(", ")));
    }
    parts.extend(ranges);
    if intervals.len() > MAX_INTERVALS {
        parts.push(format!("and {} more", intervals.len() - MAX_INTERVALS));
    }
    parts.join(", ")
}

fn controls_report(text: &mut String, device: &Device) {
    let controls = match device.controls() {
        Ok(controls) => controls,
        Err(e) => {
            let _ = writeln!(text, "  controls cannot be listed: {}", reason(&e));
            return;
        }
    };
    if controls.is_empty() {
        let _ = writeln!(text, "  no controls");
        return;
    }
    let _ = writeln!(text, "  controls:");
    for control in &controls {
        if control.kind == ControlType::Class {
            let _ = writeln!(text, "    {}", control.name);
            continue;
        }
        let value = if control.is_readable() {
            match device.get_control(control.id) {
                Ok(value) => Some(Ok(value)),
                Err(e) => Some(Err(reason(&e))),
            }
        } else {
            None
        };
        let _ = writeln!(text, "{}", control_line(control, value));
        for item in control.menu.iter().take(MAX_MENU_ITEMS) {
            let _ = writeln!(text, "          {}: {}", item.index, item.label);
        }
        if control.menu.len() > MAX_MENU_ITEMS {
            let _ = writeln!(
                text,
                "          and {} more",
                control.menu.len() - MAX_MENU_ITEMS
            );
        }
    }
}

/// `      video_bitrate 0x009909cf (int): min=25000 max=25000000 step=25000 default=10000000 value=10000000`
/// in v4l2-ctl's style, so names and values can be copied into a configuration.
fn control_line(control: &ControlInfo, value: Option<std::result::Result<i64, String>>) -> String {
    let mut line = format!(
        "      {} 0x{:08x} ({})",
        control_key(&control.name),
        control.id,
        control.kind.name()
    );
    let mut fields = Vec::new();
    match control.kind {
        ControlType::Integer | ControlType::Integer64 => {
            fields.push(format!("min={}", control.min));
            fields.push(format!("max={}", control.max));
            fields.push(format!("step={}", control.step));
            fields.push(format!("default={}", control.default));
        }
        ControlType::Boolean => fields.push(format!("default={}", control.default)),
        ControlType::Menu | ControlType::IntegerMenu => {
            fields.push(format!("min={}", control.min));
            fields.push(format!("max={}", control.max));
            fields.push(format!("default={}", control.default));
        }
        ControlType::Bitmask => {
            fields.push(format!("max=0x{:08x}", control.max));
            fields.push(format!("default=0x{:08x}", control.default));
        }
        _ => {}
    }
    match value {
        Some(Ok(value)) if control.kind == ControlType::Bitmask => {
            fields.push(format!("value=0x{value:08x}"))
        }
        Some(Ok(value)) => match control.menu_label(value) {
            Some(label) => fields.push(format!("value={value} ({label})")),
            None => fields.push(format!("value={value}")),
        },
        Some(Err(reason)) => fields.push(format!("value unreadable ({reason})")),
        None => {}
    }
    let mut flags = Vec::new();
    if control.is_read_only() {
        flags.push("read-only");
    }
    if control.is_write_only() {
        flags.push("write-only");
    }
    if control.is_inactive() {
        flags.push("inactive");
    }
    if control.is_disabled() {
        flags.push("disabled");
    }
    if !flags.is_empty() {
        fields.push(format!("flags={}", flags.join(",")));
    }
    if !fields.is_empty() {
        line.push_str(": ");
        line.push_str(&fields.join(" "));
    }
    line
}

/// A control's name the way v4l2-ctl spells it: `Video Bitrate` -> `video_bitrate`,
/// `H264 I-Frame Period` -> `h264_i_frame_period`.
pub fn control_key(name: &str) -> String {
    let mut key = String::new();
    let mut separator = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if separator {
                key.push('_');
            }
            separator = false;
            key.push(c.to_ascii_lowercase());
        } else if !key.is_empty() {
            separator = true;
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::super::{sys, Fraction, MenuItem};
    use super::*;

    #[test]
    fn nodes_sort_numerically_and_others_are_ignored() {
        assert_eq!(node_number("video0"), Some(0));
        assert_eq!(node_number("video31"), Some(31));
        assert_eq!(node_number("video"), None);
        assert_eq!(node_number("videox"), None);
        assert_eq!(node_number("video1a"), None);
        assert_eq!(node_number("media0"), None);

        let dir = std::env::temp_dir().join(format!("v4l2rtmp-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["video10", "video2", "video0", "videox", "v4l-subdev0"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let nodes = video_nodes(&dir).unwrap();
        let names: Vec<_> = nodes
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["video0", "video2", "video10"]);

        // Regular files are not devices: each is reported with its reason, nothing panics.
        let mut out = Vec::new();
        report_dir(&mut out, &dir).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with(&format!(
            "{}: cannot be used: ",
            dir.join("video0").display()
        )));
        assert!(lines[2].contains("video10: cannot be used: configuration error: "));
        // ENOTTY from a kernel, ENOSYS from qemu-user (the ARM test runs).
        assert!(lines[2].contains("is not a V4L2 device: "), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_devices_is_said_plainly() {
        let dir = std::env::temp_dir().join(format!("v4l2rtmp-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut out = Vec::new();
        report_dir(&mut out, &dir).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("no V4L2 devices: "));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(report_dir(&mut Vec::new(), &dir).is_err());
    }

    #[test]
    fn control_keys_match_v4l2_ctl() {
        assert_eq!(control_key("Video Bitrate"), "video_bitrate");
        assert_eq!(control_key("H264 I-Frame Period"), "h264_i_frame_period");
        assert_eq!(
            control_key("Repeat Sequence Header"),
            "repeat_sequence_header"
        );
        assert_eq!(
            control_key("  Power Line Frequency  "),
            "power_line_frequency"
        );
        assert_eq!(
            control_key("White Balance, Auto & Preset"),
            "white_balance_auto_preset"
        );
    }

    #[test]
    fn control_lines_read_like_v4l2_ctl() {
        let bitrate = ControlInfo {
            id: sys::V4L2_CID_MPEG_VIDEO_BITRATE,
            name: "Video Bitrate".into(),
            kind: ControlType::Integer,
            min: 25_000,
            max: 25_000_000,
            step: 25_000,
            default: 10_000_000,
            flags: 0,
            menu: Vec::new(),
        };
        assert_eq!(
            control_line(&bitrate, Some(Ok(2_000_000))),
            "      video_bitrate 0x009909cf (int): min=25000 max=25000000 step=25000 \
             default=10000000 value=2000000"
        );
        let profile = ControlInfo {
            id: sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            name: "H264 Profile".into(),
            kind: ControlType::Menu,
            min: 0,
            max: 4,
            step: 1,
            default: 4,
            flags: sys::V4L2_CTRL_FLAG_INACTIVE,
            menu: vec![MenuItem {
                index: 4,
                label: "High".into(),
            }],
        };
        assert_eq!(
            control_line(&profile, Some(Ok(4))),
            "      h264_profile 0x00990a6b (menu): min=0 max=4 default=4 value=4 (High) flags=inactive"
        );
        let key_frame = ControlInfo {
            id: sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME,
            name: "Force Key Frame".into(),
            kind: ControlType::Button,
            min: 0,
            max: 0,
            step: 0,
            default: 0,
            flags: sys::V4L2_CTRL_FLAG_WRITE_ONLY,
            menu: Vec::new(),
        };
        assert_eq!(
            control_line(&key_frame, None),
            "      force_key_frame 0x009909e5 (button): flags=write-only"
        );
        assert_eq!(
            control_line(&bitrate, Some(Err("Input/output error".into()))),
            "      video_bitrate 0x009909cf (int): min=25000 max=25000000 step=25000 \
             default=10000000 value unreadable (Input/output error)"
        );
    }

    #[test]
    fn formats_with_the_same_sizes_are_grouped() {
        let block = |s: &str| s.to_string();
        let blocks = [
            (block("YUYV"), block("      640x480: 30 fps\n")),
            (block("UYVY"), block("      640x480: 30 fps\n")),
            (block("MJPG"), block("      1920x1080: 30 fps\n")),
            (block("GREY"), block("")),
            (block("Y10"), block("")),
        ];
        assert_eq!(
            group_formats(&blocks),
            "    YUYV\n    UYVY\n      640x480: 30 fps\n    MJPG\n      1920x1080: 30 fps\n    GREY\n    Y10\n"
        );
        assert_eq!(group_formats(&[]), "");
    }

    #[test]
    fn rates_are_compact() {
        let discrete: Vec<FrameInterval> = [30, 25, 15]
            .iter()
            .map(|&fps| FrameInterval::Discrete(Fraction::new(1, fps)))
            .collect();
        assert_eq!(rates(&discrete), "30, 25, 15 fps");
        assert_eq!(rates(&[]), "");
        let many: Vec<FrameInterval> = (1..=20)
            .map(|fps| FrameInterval::Discrete(Fraction::new(1, fps)))
            .collect();
        assert!(rates(&many).ends_with("16 fps, and 4 more"));
        let range = [FrameInterval::Stepwise {
            min: Fraction::new(1, 30),
            max: Fraction::new(1, 1),
            step: Fraction::new(1, 30),
        }];
        assert_eq!(rates(&range), "1 to 30 fps");
    }

    /// Lists the real devices of this machine: `cargo test --lib v4l2::list -- --ignored
    /// --nocapture` on a board or in the VM (there are none on the build machine).
    #[test]
    #[ignore]
    fn report_of_this_machine() {
        let mut out = Vec::new();
        report(&mut out).unwrap();
        print!("{}", String::from_utf8(out).unwrap());
    }
}
