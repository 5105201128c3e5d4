//! The pure part of setting up an encoder: decisions made from what the devices offer, with no
//! device touched, so every one of them is tested without hardware. [`choose_pixel_format`]
//! picks the raw format, [`plan_controls`] the controls and the device that takes each, and
//! [`layouts_match`] says whether the encoder can read the camera's buffers in place;
//! [`PlaneLayout`] describes how a raw frame sits in a buffer plane.
//!
//! # Invariants
//!
//! - Nothing here does I/O or panics: a request that cannot be met is an `Err` saying what was
//!   asked and what the devices offer; `setup.rs` makes it a configuration error (or, for
//!   [`layouts_match`], takes the copying path).
//! - The plan is deterministic: the same settings and offers give the same choices, in the same
//!   order (the order controls are set in).

use super::EncoderSettings;
use crate::v4l2::{sys, Format, FourCC};

/// The raw formats chosen first, in this order, when both sides offer them.
pub const PREFERRED_RAW: [FourCC; 3] = [FourCC::NV12, FourCC::YU12, FourCC::YUYV];

/// Which device a control goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Camera,
    Encoder,
}

/// A control to set, as [`plan_controls`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedControl {
    pub id: u32,
    pub value: i64,
    pub target: Target,
}

/// The controls to set for `settings`, given which controls each device has. Asked-for
/// settings that neither device can take are an error naming what is missing.
pub fn plan_controls(
    settings: &EncoderSettings,
    camera_has: impl Fn(u32) -> bool,
    encoder_has: impl Fn(u32) -> bool,
) -> std::result::Result<Vec<PlannedControl>, String> {
    let mut plan = Vec::new();
    let enc = |id, value| PlannedControl {
        id,
        value,
        target: Target::Encoder,
    };
    // Late joiners and reconnects need SPS/PPS before every IDR.
    for id in [
        sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
        sys::V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR,
    ] {
        if encoder_has(id) {
            plan.push(enc(id, 1));
        }
    }
    if let Some(bitrate) = settings.bitrate {
        if !encoder_has(sys::V4L2_CID_MPEG_VIDEO_BITRATE) {
            return Err(format!(
                "a bitrate ({bitrate} bit/s) was asked for, but the encoder has no bitrate control"
            ));
        }
        plan.push(enc(sys::V4L2_CID_MPEG_VIDEO_BITRATE, i64::from(bitrate)));
    }
    if let Some(frames) = settings.keyframe_interval_frames {
        let ids: Vec<u32> = [
            sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
        ]
        .into_iter()
        .filter(|&id| encoder_has(id))
        .collect();
        if ids.is_empty() {
            return Err(format!("a keyframe interval ({frames} frames) was asked for, but the encoder has neither an H.264 I-frame period nor a GOP size control"));
        }
        plan.extend(ids.into_iter().map(|id| enc(id, i64::from(frames))));
    }
    for (value, id, what) in [
        (
            settings.profile,
            sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            "an H.264 profile",
        ),
        (
            settings.level,
            sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL,
            "an H.264 level",
        ),
    ] {
        if let Some(value) = value {
            if !encoder_has(id) {
                return Err(format!(
                    "{what} ({value}) was asked for, but the encoder has no such control"
                ));
            }
            plan.push(enc(id, value));
        }
    }
    let picture = [
        (settings.rotate, sys::V4L2_CID_ROTATE, "rotation"),
        (settings.hflip.then_some(1), sys::V4L2_CID_HFLIP, "hflip"),
        (settings.vflip.then_some(1), sys::V4L2_CID_VFLIP, "vflip"),
    ];
    for (value, id, what) in picture {
        let Some(value) = value else { continue };
        let target = if camera_has(id) {
            Target::Camera
        } else if encoder_has(id) {
            Target::Encoder
        } else {
            return Err(format!(
                "{what} was asked for, but neither the camera nor the encoder has that control"
            ));
        };
        plan.push(PlannedControl { id, value, target });
    }
    Ok(plan)
}

/// The raw format to use: `requested` if both sides offer it, else the first of
/// [`PREFERRED_RAW`] both offer, else the first camera format the encoder accepts; among those,
/// the first the encoder takes at exactly the asked size (`fits`: encoders align sizes per
/// format, vicodec 4:2:0 heights to 8), else the first.
pub fn choose_pixel_format(
    requested: Option<FourCC>,
    camera: &[FourCC],
    encoder: &[FourCC],
    fits: impl Fn(FourCC) -> bool,
) -> std::result::Result<FourCC, String> {
    let both = |f: &FourCC| camera.contains(f) && encoder.contains(f);
    let list = |formats: &[FourCC]| {
        if formats.is_empty() {
            "nothing".to_string()
        } else {
            formats
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if let Some(fourcc) = requested {
        if both(&fourcc) {
            return Ok(fourcc);
        }
        let side = if camera.contains(&fourcc) {
            "the encoder's raw input"
        } else {
            "the camera"
        };
        return Err(format!(
            "pixel format {fourcc} is not offered by {side}; the camera offers {}, the encoder accepts {}",
            list(camera),
            list(encoder)
        ));
    }
    let mut candidates = PREFERRED_RAW.iter().chain(camera).copied().filter(both);
    let first = candidates.clone().next();
    candidates
        .find(|&f| fits(f))
        .or(first)
        .ok_or_else(|| {
            format!(
                "the camera and the encoder share no raw format; the camera offers {}, the encoder accepts {}",
                list(camera),
                list(encoder)
            )
        })
}

/// Whether camera buffers of `camera` layout (with `lengths` bytes per plane) can be read by
/// the encoder as its `encoder` layout: the same planes and strides, and each camera plane at
/// least as large as the encoder's image size for it. `Err` says why not.
pub fn layouts_match(
    camera: &Format,
    lengths: &[u32],
    encoder: &Format,
) -> std::result::Result<(), String> {
    if camera.planes.len() != encoder.planes.len() || lengths.len() != camera.planes.len() {
        return Err(format!(
            "the camera's buffers have {} planes, the encoder's {}",
            camera.planes.len(),
            encoder.planes.len()
        ));
    }
    for (p, ((cam, enc), &length)) in camera
        .planes
        .iter()
        .zip(&encoder.planes)
        .zip(lengths)
        .enumerate()
    {
        if cam.bytes_per_line != enc.bytes_per_line {
            return Err(format!(
                "plane {p}: the camera's lines are {} bytes apart, the encoder's {}",
                cam.bytes_per_line, enc.bytes_per_line
            ));
        }
        // In a single-plane 4:2:0 buffer the chroma starts after `rows` luma rows: the rows
        // must agree too, or the encoder reads the chroma from the wrong place.
        let cam_rows = PlaneLayout::of(camera.fourcc, camera.height, cam).rows;
        let enc_rows = PlaneLayout::of(encoder.fourcc, encoder.height, enc).rows;
        if cam_rows != enc_rows {
            return Err(format!(
                "plane {p}: the camera lays out {cam_rows} rows, the encoder {enc_rows}"
            ));
        }
        if length < enc.size_image {
            return Err(format!(
                "plane {p}: the camera's buffers hold {length} bytes, the encoder needs {}",
                enc.size_image
            ));
        }
    }
    Ok(())
}

/// The rows of the sub-planes of a frame in one buffer plane, as (rows per frame row count
/// divisor, bytes-per-line divisor): how a raw frame is laid out, for copying between buffers
/// whose strides or plane heights differ. `None` for formats not described here.
pub(super) fn sub_planes(fourcc: FourCC) -> Option<&'static [(u32, u32)]> {
    const PACKED: &[(u32, u32)] = &[(1, 1)];
    const SEMI_420: &[(u32, u32)] = &[(1, 1), (2, 1)];
    const PLANAR_420: &[(u32, u32)] = &[(1, 1), (2, 2), (2, 2)];
    const SEMI_422: &[(u32, u32)] = &[(1, 1), (1, 1)];
    match &fourcc.0.to_le_bytes() {
        b"YUYV" | b"YVYU" | b"UYVY" | b"VYUY" | b"GREY" | b"RGB3" | b"BGR3" | b"RGB4" | b"BGR4"
        | b"XR24" | b"AR24" | b"BX24" | b"BA24" | b"RX24" | b"RA24" | b"XB24" | b"AB24" => {
            Some(PACKED)
        }
        b"NV12" | b"NV21" => Some(SEMI_420),
        b"NV16" | b"NV61" => Some(SEMI_422),
        b"YU12" | b"YV12" => Some(PLANAR_420),
        _ => None,
    }
}

/// How one plane of a raw frame sits in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneLayout {
    pub bytes_per_line: u32,
    /// Luma rows the buffer reserves before the chroma (the height, or more when the driver
    /// aligns it: bcm2835-codec reserves 1088 rows for 1080).
    pub rows: u32,
}

impl PlaneLayout {
    /// The layout a driver's format describes: the rows follow from its image size.
    pub fn of(fourcc: FourCC, height: u32, plane: &crate::v4l2::PlaneFormat) -> PlaneLayout {
        let rows = sub_planes(fourcc)
            .and_then(|subs| {
                // Bytes per luma row over all sub-planes, times 2 (4:2:0 chroma rows are halves).
                let per_row2: u64 = subs
                    .iter()
                    .map(|&(row_div, bpl_div)| {
                        2 * u64::from(plane.bytes_per_line / bpl_div) / u64::from(row_div)
                    })
                    .sum();
                let rows = u64::from(plane.size_image) * 2 / per_row2.max(1);
                u32::try_from(rows).ok()
            })
            .unwrap_or(height)
            .max(height);
        PlaneLayout {
            bytes_per_line: plane.bytes_per_line,
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v4l2::PlaneFormat;

    #[test]
    fn the_pixel_format_prefers_nv12_yu12_yuyv() {
        let camera = [FourCC::YUYV, FourCC::UYVY, FourCC::YU12, FourCC::NV12];
        let encoder = [FourCC::YU12, FourCC::NV12, FourCC::UYVY];
        assert_eq!(
            choose_pixel_format(None, &camera, &encoder, |_| true),
            Ok(FourCC::NV12)
        );
        assert_eq!(
            choose_pixel_format(None, &camera, &[FourCC::UYVY, FourCC::YUYV], |_| true),
            Ok(FourCC::YUYV)
        );
        // None of the preferred: the camera's order.
        assert_eq!(
            choose_pixel_format(
                None,
                &[FourCC::RGB3, FourCC::UYVY],
                &[FourCC::UYVY, FourCC::RGB3],
                |_| true
            ),
            Ok(FourCC::RGB3)
        );
        assert_eq!(
            choose_pixel_format(Some(FourCC::UYVY), &camera, &encoder, |_| false),
            Ok(FourCC::UYVY)
        );
    }

    #[test]
    fn a_pixel_format_nobody_shares_is_explained() {
        let err = choose_pixel_format(Some(FourCC::RGB3), &[FourCC::YUYV], &[FourCC::NV12], |_| {
            true
        })
        .unwrap_err();
        assert_eq!(
            err,
            "pixel format RGB3 is not offered by the camera; the camera offers YUYV, the encoder accepts NV12"
        );
        let err = choose_pixel_format(Some(FourCC::YUYV), &[FourCC::YUYV], &[FourCC::NV12], |_| {
            true
        })
        .unwrap_err();
        assert!(
            err.contains("not offered by the encoder's raw input"),
            "{err}"
        );
        let err = choose_pixel_format(None, &[FourCC::YUYV], &[], |_| true).unwrap_err();
        assert_eq!(
            err,
            "the camera and the encoder share no raw format; the camera offers YUYV, the encoder accepts nothing"
        );
    }

    #[test]
    fn a_format_the_encoder_takes_at_the_exact_size_wins() {
        let camera = [FourCC::YUYV, FourCC::YU12, FourCC::NV12];
        let encoder = [FourCC::YU12, FourCC::NV12, FourCC::YUYV];
        // vicodec aligns 4:2:0 heights to 8 (640x360 becomes 640x368): YUYV fits.
        assert_eq!(
            choose_pixel_format(None, &camera, &encoder, |f| f == FourCC::YUYV),
            Ok(FourCC::YUYV)
        );
        // Nothing fits exactly: the preferred one (negotiation then says what the driver chose).
        assert_eq!(
            choose_pixel_format(None, &camera, &encoder, |_| false),
            Ok(FourCC::NV12)
        );
    }

    fn settings() -> EncoderSettings {
        EncoderSettings::default()
    }

    #[test]
    fn controls_map_to_what_the_encoder_has() {
        let bcm2835 = [
            sys::V4L2_CID_MPEG_VIDEO_BITRATE,
            sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL,
            sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
            sys::V4L2_CID_ROTATE,
            sys::V4L2_CID_HFLIP,
        ];
        let s = EncoderSettings {
            bitrate: Some(2_000_000),
            keyframe_interval_frames: Some(60),
            profile: Some(4),
            level: Some(11),
            rotate: Some(180),
            hflip: true,
            ..settings()
        };
        let camera = [sys::V4L2_CID_HFLIP];
        let plan =
            plan_controls(&s, |id| camera.contains(&id), |id| bcm2835.contains(&id)).unwrap();
        let enc = |id, value| PlannedControl {
            id,
            value,
            target: Target::Encoder,
        };
        assert_eq!(
            plan,
            vec![
                enc(sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1),
                enc(sys::V4L2_CID_MPEG_VIDEO_BITRATE, 2_000_000),
                enc(sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD, 60),
                enc(sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE, 4),
                enc(sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL, 11),
                // The camera lacks rotation: the encoder rotates.
                enc(sys::V4L2_CID_ROTATE, 180),
                PlannedControl {
                    id: sys::V4L2_CID_HFLIP,
                    value: 1,
                    target: Target::Camera
                },
            ]
        );
        // Nothing asked: only what late joiners need, and only if the encoder has it.
        assert_eq!(plan_controls(&settings(), |_| false, |_| false), Ok(vec![]));
    }

    #[test]
    fn vicodec_takes_the_keyframe_interval_as_gop_size() {
        let vicodec = [sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE];
        let s = EncoderSettings {
            keyframe_interval_frames: Some(5),
            ..settings()
        };
        assert_eq!(
            plan_controls(&s, |_| false, |id| vicodec.contains(&id)),
            Ok(vec![PlannedControl {
                id: sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
                value: 5,
                target: Target::Encoder
            }])
        );
        let both = [
            sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
            sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
        ];
        assert_eq!(
            plan_controls(&s, |_| false, |id| both.contains(&id))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn settings_no_device_can_take_are_refused() {
        let err = plan_controls(
            &EncoderSettings {
                bitrate: Some(1_000_000),
                ..settings()
            },
            |_| true,
            |_| false,
        )
        .unwrap_err();
        assert!(err.contains("no bitrate control"), "{err}");
        let err = plan_controls(
            &EncoderSettings {
                keyframe_interval_frames: Some(30),
                ..settings()
            },
            |_| false,
            |_| false,
        )
        .unwrap_err();
        assert!(
            err.contains("neither an H.264 I-frame period nor a GOP size"),
            "{err}"
        );
        let err = plan_controls(
            &EncoderSettings {
                profile: Some(4),
                ..settings()
            },
            |_| false,
            |_| false,
        )
        .unwrap_err();
        assert!(err.starts_with("an H.264 profile (4)"), "{err}");
        let err = plan_controls(
            &EncoderSettings {
                vflip: true,
                ..settings()
            },
            |_| false,
            |_| false,
        )
        .unwrap_err();
        assert!(err.starts_with("vflip was asked for"), "{err}");
    }

    fn format(planes: &[(u32, u32)]) -> Format {
        Format {
            planes: planes
                .iter()
                .map(|&(bytes_per_line, size_image)| PlaneFormat {
                    bytes_per_line,
                    size_image,
                })
                .collect(),
            ..Format::new(FourCC::YU12, 640, 480)
        }
    }

    #[test]
    fn zero_copy_needs_the_same_layout() {
        let vivid = format(&[(640, 460_800)]);
        let vicodec = format(&[(640, 460_800)]);
        assert_eq!(layouts_match(&vivid, &[460_800], &vicodec), Ok(()));
        // bcm2835-codec aligns the height to 16: 1920x1088 lines for 1080p. A 1080-row camera
        // frame has its chroma 8 rows earlier, whatever the size of its buffers.
        let size = |w, h| Format {
            planes: vec![PlaneFormat {
                bytes_per_line: w,
                size_image: w * h * 3 / 2,
            }],
            ..Format::new(FourCC::NV12, 1920, 1080)
        };
        let (camera, pi) = (size(1920, 1080), size(1920, 1088));
        assert_eq!(
            layouts_match(&camera, &[1920 * 1080 * 3 / 2], &pi).unwrap_err(),
            "plane 0: the camera lays out 1080 rows, the encoder 1088"
        );
        assert_eq!(
            layouts_match(&camera, &[3_133_440], &pi).unwrap_err(),
            "plane 0: the camera lays out 1080 rows, the encoder 1088"
        );
        // A camera that pads to 1088 rows too shares its buffers.
        let padded = size(1920, 1088);
        assert_eq!(layouts_match(&padded, &[3_133_440], &pi), Ok(()));
        assert_eq!(
            layouts_match(&padded, &[3_000_000], &pi).unwrap_err(),
            "plane 0: the camera's buffers hold 3000000 bytes, the encoder needs 3133440"
        );
        let strided = format(&[(704, 704 * 480 * 3 / 2)]);
        assert!(layouts_match(&vivid, &[460_800], &strided)
            .unwrap_err()
            .contains("640 bytes apart, the encoder's 704"));
        let two = format(&[(640, 307_200), (640, 153_600)]);
        assert!(layouts_match(&vivid, &[460_800], &two)
            .unwrap_err()
            .contains("1 planes, the encoder's 2"));
    }
}
