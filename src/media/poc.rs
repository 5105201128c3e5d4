//! Picture order counts (H.264 8.2.1) and the composition offsets they give a live sender,
//! sans-IO.
//!
//! A decoder shows pictures in order of their picture order count (POC), which B-frames make
//! differ from decoding order. FLV carries one decoding timestamp (DTS) per frame and a
//! composition time, CTS = PTS - DTS. A live sender cannot wait to see the frames that follow, so
//! it places each frame from its POC alone:
//!
//! - [`PocState`] computes each picture's POC from its slice header as 8.2.1 does, for
//!   `pic_order_cnt_type` 0, 1 and 2, fields included. An IDR starts the count again, and so does a
//!   `memory_management_control_operation` 5 (after its picture, as 8.2.1 says).
//! - [`DisplayOrder`] turns POCs into composition offsets counted in frames. A frame's display
//!   position is its POC relative to the picture that started the count (IDR or MMCO 5), divided
//!   by the POC step between consecutive frames; its offset is `display - decode + delay`, where
//!   `delay` is the decoder's reorder depth: the most frames any frame is shown before it is
//!   decoded. Its PTS is then `DTS + offset * frame duration`.
//!
//! Invariants:
//! - A stream that does not reorder gets offset 0 for every frame, as hardware encoders' streams
//!   always did here: `pic_order_cnt_type` 2 cannot reorder (8.2.1.3), and other types are taken
//!   at their word until a frame comes with a lower POC than one before it in its period. POC
//!   gaps in such a stream change nothing.
//! - The delay starts at the VUI's `max_num_reorder_frames` (0 when absent) and only grows, to the
//!   reorder depth actually seen, capped at [`MAX_DELAY`]: so offsets are never negative, and the
//!   PTS of frames sent later never move back. A stream that reorders without saying so in its
//!   VUI shows its first reordered frames once out of order, then plays right.
//! - The POC step is 2 (what x264, FFmpeg's encoders and POC types 1 and 2 use per frame) until
//!   the POCs show otherwise: a POC difference that is not a multiple of it lowers it at once, and
//!   after a whole period the greatest common divisor of every POC offset seen is taken.
//! - Arithmetic is on `i64` and saturating, offsets are clamped to `0..=`[`MAX_OFFSET`]: no
//!   stream, however broken, panics, overflows or gives an absurd composition time.
//! - Nothing here allocates; state is a handful of integers.

use crate::media::slice::SliceHeader;
use crate::media::sps::{PicOrderCntType, Sps};

/// The largest reorder delay, in frames: a decoded picture buffer never holds more than 16
/// frames (A.3.1, MaxDpbFrames).
pub const MAX_DELAY: u32 = 16;

/// The largest composition offset, in frames: a P-frame after a long run of B-frames is shown
/// after all of them, plus the delay. Beyond this a stream is broken, not reordered.
pub const MAX_OFFSET: u32 = 64;

/// A picture's order counts, as 8.2.1 derives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Picture {
    /// TopFieldOrderCnt (for a bottom field, equal to `bottom`).
    pub top: i64,
    /// BottomFieldOrderCnt (for a top field, equal to `top`).
    pub bottom: i64,
    /// PicOrderCnt(): the smaller of the two for a frame, the field's own for a field. For a
    /// picture with MMCO 5, the value after the reset (0 for a frame).
    pub poc: i64,
    /// An IDR or a picture with MMCO 5: counting starts again here, and every picture decoded
    /// before it is shown before it.
    pub starts_period: bool,
}

/// The decoding-process state 8.2.1 keeps between pictures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PocState {
    /// prevPicOrderCntMsb and prevPicOrderCntLsb (type 0): of the previous reference picture.
    prev_msb: i64,
    prev_lsb: i64,
    /// prevFrameNumOffset and prevFrameNum (types 1 and 2): of the previous picture.
    prev_frame_num_offset: i64,
    prev_frame_num: u32,
}

impl PocState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The order counts of the picture `slice` begins, under `sps`; advances the state.
    pub fn picture(&mut self, sps: &Sps, slice: &SliceHeader) -> Picture {
        let reference = slice.nal_ref_idc != 0;
        let (mut top, mut bottom) = match &sps.pic_order_cnt {
            PicOrderCntType::Lsb { log2_max_lsb } => self.type0(*log2_max_lsb, slice),
            PicOrderCntType::Cycle(cycle) => {
                let frame_num_offset = self.frame_num_offset(sps, slice);
                let offsets = cycle.offsets_for_ref_frame.as_slice();
                let cycle_len = offsets.len() as i64;
                let mut abs_frame_num = if cycle_len == 0 {
                    0
                } else {
                    frame_num_offset.saturating_add(i64::from(slice.frame_num))
                };
                if !reference && abs_frame_num > 0 {
                    abs_frame_num -= 1;
                }
                let mut expected: i64 = 0;
                if abs_frame_num > 0 {
                    let per_cycle: i64 = offsets.iter().map(|&o| i64::from(o)).sum();
                    let cycles = (abs_frame_num - 1) / cycle_len;
                    let in_cycle = ((abs_frame_num - 1) % cycle_len) as usize;
                    let partial: i64 = offsets[..=in_cycle].iter().map(|&o| i64::from(o)).sum();
                    expected = cycles.saturating_mul(per_cycle).saturating_add(partial);
                }
                if !reference {
                    expected = expected.saturating_add(i64::from(cycle.offset_for_non_ref_pic));
                }
                let [delta0, delta1] = slice.delta_pic_order_cnt.map(i64::from);
                let top_to_bottom = i64::from(cycle.offset_for_top_to_bottom_field);
                let top = expected.saturating_add(delta0);
                if !slice.field_pic {
                    (
                        top,
                        top.saturating_add(top_to_bottom).saturating_add(delta1),
                    )
                } else if slice.bottom_field {
                    let bottom = expected
                        .saturating_add(top_to_bottom)
                        .saturating_add(delta0);
                    (bottom, bottom)
                } else {
                    (top, top)
                }
            }
            PicOrderCntType::FrameNum => {
                let frame_num_offset = self.frame_num_offset(sps, slice);
                let doubled = frame_num_offset
                    .saturating_add(i64::from(slice.frame_num))
                    .saturating_mul(2);
                let count = if slice.idr {
                    0
                } else if reference {
                    doubled
                } else {
                    doubled - 1
                };
                (count, count)
            }
        };
        let mut poc = if slice.field_pic {
            if slice.bottom_field {
                bottom
            } else {
                top
            }
        } else {
            top.min(bottom)
        };
        if slice.mmco5 {
            // 8.2.1: after decoding, the picture's counts are taken relative to its own.
            top = top.saturating_sub(poc);
            bottom = bottom.saturating_sub(poc);
            poc = 0;
        }
        // What the next picture needs (8.2.1.1, 8.2.1.2).
        if reference {
            if slice.mmco5 {
                self.prev_msb = 0;
                self.prev_lsb = if slice.field_pic && slice.bottom_field {
                    0
                } else {
                    top
                };
            } else if let PicOrderCntType::Lsb { .. } = sps.pic_order_cnt {
                self.prev_lsb = i64::from(slice.pic_order_cnt_lsb);
            }
        }
        if slice.mmco5 {
            self.prev_frame_num_offset = 0;
            self.prev_frame_num = 0;
        } else if !matches!(sps.pic_order_cnt, PicOrderCntType::Lsb { .. }) {
            self.prev_frame_num = slice.frame_num;
        }
        Picture {
            top,
            bottom,
            poc,
            starts_period: slice.idr || slice.mmco5,
        }
    }

    /// 8.2.1.1: TopFieldOrderCnt and BottomFieldOrderCnt from pic_order_cnt_lsb.
    fn type0(&mut self, log2_max_lsb: u8, slice: &SliceHeader) -> (i64, i64) {
        if slice.idr {
            self.prev_msb = 0;
            self.prev_lsb = 0;
        }
        let max_lsb = 1i64 << log2_max_lsb.min(16);
        let lsb = i64::from(slice.pic_order_cnt_lsb);
        let (prev_msb, prev_lsb) = (self.prev_msb, self.prev_lsb);
        let msb = if lsb < prev_lsb && prev_lsb - lsb >= max_lsb / 2 {
            prev_msb.saturating_add(max_lsb)
        } else if lsb > prev_lsb && lsb - prev_lsb > max_lsb / 2 {
            prev_msb.saturating_sub(max_lsb)
        } else {
            prev_msb
        };
        if slice.nal_ref_idc != 0 && !slice.mmco5 {
            self.prev_msb = msb;
        }
        let count = msb.saturating_add(lsb);
        if !slice.field_pic {
            let bottom = count.saturating_add(i64::from(slice.delta_pic_order_cnt_bottom));
            (count, bottom)
        } else {
            (count, count)
        }
    }

    /// 8.2.1.2/8.2.1.3: FrameNumOffset, which counts frame_num's wraps; advances the state.
    fn frame_num_offset(&mut self, sps: &Sps, slice: &SliceHeader) -> i64 {
        let max_frame_num = 1i64 << sps.log2_max_frame_num.min(16);
        let offset = if slice.idr {
            0
        } else if self.prev_frame_num > slice.frame_num {
            self.prev_frame_num_offset.saturating_add(max_frame_num)
        } else {
            self.prev_frame_num_offset
        };
        self.prev_frame_num_offset = offset;
        offset
    }
}

/// Places frames in display order as they are sent: composition offsets in frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisplayOrder {
    /// The reorder delay in frames: the offset of a frame shown in its decoding position.
    delay: u32,
    /// Frames may be reordered: the VUI says so, or a frame came with a lower POC than an earlier
    /// one of its period. Until then every frame is taken to be shown as it is decoded.
    reordering: bool,
    /// pic_order_cnt_type 2: output order is decoding order, whatever else is signalled.
    fixed_order: bool,
    /// A period (from an IDR or MMCO 5) is being counted.
    active: bool,
    /// The POC of the picture that started the period.
    base_poc: i64,
    /// Frames decoded in this period before the next one.
    decoded: u64,
    /// The largest POC offset seen in this period.
    max_offset: i64,
    /// POC units per frame in display order.
    step: u64,
    /// The greatest common divisor of every non-zero POC offset seen, 0 before any.
    lattice: u64,
    /// Frames of this period with a non-zero POC offset.
    offsets_seen: u32,
}

impl DisplayOrder {
    /// For a stream whose VUI gives `max_num_reorder_frames` (None when absent), of
    /// `pic_order_cnt_type` 2 when `fixed_order`.
    pub fn new(max_num_reorder_frames: Option<u32>, fixed_order: bool) -> Self {
        let signalled = max_num_reorder_frames.unwrap_or(0).min(MAX_DELAY);
        DisplayOrder {
            delay: if fixed_order { 0 } else { signalled },
            reordering: !fixed_order && signalled > 0,
            fixed_order,
            active: false,
            base_poc: 0,
            decoded: 0,
            max_offset: 0,
            step: 2,
            lattice: 0,
            offsets_seen: 0,
        }
    }

    /// For the SPS in force.
    pub fn for_sps(sps: &Sps) -> Self {
        Self::new(
            sps.vui.as_ref().and_then(|vui| vui.max_num_reorder_frames),
            sps.pic_order_cnt == PicOrderCntType::FrameNum,
        )
    }

    /// The reorder delay in frames, as it stands.
    pub fn delay(&self) -> u32 {
        self.delay
    }

    /// The POC units per frame, as it stands.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The composition offset, in frames, of the next frame in decoding order, whose picture is
    /// `picture`.
    pub fn next(&mut self, picture: Picture) -> u32 {
        if picture.starts_period {
            if self.offsets_seen >= 2 && self.lattice > 0 {
                // A whole period showed the step: it holds a frame right after its first.
                self.step = self.lattice;
            }
            self.active = true;
            self.base_poc = picture.poc;
            self.decoded = 0;
            self.max_offset = 0;
            self.offsets_seen = 0;
        }
        if !self.active || self.fixed_order {
            return self.unknown(false);
        }
        let index = self.decoded;
        self.decoded += 1;
        let offset = picture.poc.saturating_sub(self.base_poc);
        if offset != 0 {
            self.lattice = gcd(self.lattice, offset.unsigned_abs());
            self.offsets_seen = self.offsets_seen.saturating_add(1);
            if self.lattice % self.step != 0 {
                self.step = gcd(self.step, self.lattice);
            }
        }
        let in_order = index == 0 || offset > self.max_offset;
        self.max_offset = self.max_offset.max(offset);
        if !self.reordering {
            if in_order {
                return self.delay;
            }
            self.reordering = true;
        }
        let step = self.step.max(1) as i64;
        let display = offset.div_euclid(step);
        let decode = i64::try_from(index).unwrap_or(i64::MAX);
        let lead = decode.saturating_sub(display);
        if lead > i64::from(self.delay) {
            self.delay = lead.min(i64::from(MAX_DELAY)) as u32;
        }
        let composition = display
            .saturating_sub(decode)
            .saturating_add(i64::from(self.delay));
        composition.clamp(0, i64::from(MAX_OFFSET)) as u32
    }

    /// The composition offset of a frame whose POC is unknown (its slice header could not be
    /// read): it is taken to be shown in its decoding position. When it is an IDR (`idr`), the
    /// period it starts cannot be counted: frames get that offset until the next IDR or MMCO 5.
    pub fn unknown(&mut self, idr: bool) -> u32 {
        if idr {
            self.active = false;
        }
        self.decoded = self.decoded.saturating_add(1);
        self.delay
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::slice::{SliceHeader, SliceType};
    use crate::media::sps::{Pps, Sps};

    use crate::media::testing::hex;

    /// `ffmpeg -f lavfi -i testsrc2=size=160x96:rate=25 -frames:v 40 -c:v libx264 -bf 3
    /// -pix_fmt yuv420p -f h264` (libx264 164, FFmpeg 5.1): High, pic_order_cnt_type 0 with a
    /// 6-bit lsb (so the count wraps after 32 frames), B-pyramid, max_num_reorder_frames 2,
    /// weighted prediction (P slices carry pred_weight_table), MMCO 1 in some slices.
    const X264_SPS: &str = "6764000bacd9428db011000003000100000300320f142996";
    const X264_PPS: &str = "68ebe3cb22c0";
    /// Each slice NAL unit of that clip, in decoding order, cut after slice_qp_delta's first byte
    /// (the header ends there; the rest is macroblocks).
    const X264_PYRAMID_SLICES: [&str; 40] = [
        "658884017f",
        "419a246c57b3",
        "419e427885bf",
        "019e617442df",
        "019e636a42df",
        "419a6849a84168994c0aff",
        "419e8645112c25",
        "019ea57442df",
        "019ea76a42df",
        "419aac49a8416c994c0aff",
        "419eca45152c2d",
        "019ee97442df",
        "019eeb6a42df",
        "419aef49a8416c994c0aff",
        "419f0d45152c25",
        "019f2e6a42df",
        "419b3349a8416c994c093f",
        "419f5145152c25",
        "019f707442df",
        "019f726a42df",
        "419b7749a8416c994c093f",
        "419f9545152c25",
        "019fb47442df",
        "019fb66a42df",
        "419bb949a8416c994c144cdf",
        "019fd86a42df",
        "419bdd49e10a526530223f",
        "419ffb45344c25",
        "019e1a7442df",
        "019e1c6a42df",
        "419a0149a84168994c08af",
        "419e3f45112c25",
        "019e5e7442df",
        "019e406a42df",
        "419a4549a8416c994c08ef",
        "419e6345152c25",
        "019e827442df",
        "019e846a42df",
        "419a8749a8416c994c144c2d",
        "019ea66a42df",
    ];
    /// The decoding index of each frame of that clip in display order, as
    /// `ffprobe -show_frames -show_entries frame=coded_picture_number` lists them.
    const X264_PYRAMID_DISPLAY: [usize; 40] = [
        0, 3, 2, 4, 1, 7, 6, 8, 5, 11, 10, 12, 9, 14, 15, 13, 18, 17, 19, 16, 22, 21, 23, 20, 25,
        24, 28, 27, 29, 26, 32, 31, 33, 30, 36, 35, 37, 34, 39, 38,
    ];

    /// The same source with `-frames:v 60 -x264-params open-gop=1:keyint=25:min-keyint=25:scenecut=0`:
    /// the first 28 slices. Slice 24 is a non-IDR I picture (a recovery point) and slice 25 a
    /// B-frame shown before it: the count goes on across it.
    const X264_OPEN_GOP_SLICES: [&str; 28] = [
        "658884009f",
        "419a246c49ff",
        "419e427885bf",
        "019e617442df",
        "019e636a42df",
        "419a6849a84168994c093f",
        "419e8645112c25",
        "019ea57442df",
        "019ea76a42df",
        "419aac49a8416c994c093f",
        "419eca45152c2d",
        "019ee97442df",
        "019eeb6a42df",
        "419aef49a8416c994c0aff",
        "419f0d45152c25",
        "019f2e6a42df",
        "419b3349a8416c994c093f",
        "419f5145152c25",
        "019f707442df",
        "019f726a42df",
        "419b7749a8416c994c093f",
        "419f9545152c25",
        "019fb47442df",
        "019fb66a42df",
        "4188ee42ff",
        "019fd8442d",
        "419bdd7c99454d2c9f",
        "419ffb7884bf",
    ];
    /// The decoding index of each of its 60 frames in display order.
    const X264_OPEN_GOP_DISPLAY: [usize; 60] = [
        0, 3, 2, 4, 1, 7, 6, 8, 5, 11, 10, 12, 9, 14, 15, 13, 18, 17, 19, 16, 22, 21, 23, 20, 25,
        24, 28, 27, 29, 26, 32, 31, 33, 30, 36, 35, 37, 34, 39, 38, 41, 42, 40, 43, 46, 45, 47, 44,
        49, 50, 48, 53, 52, 54, 51, 57, 56, 58, 55, 59,
    ];

    /// `-frames:v 10 -bf 2 -flags +ildct+ilme -x264-params b-pyramid=none`: interlaced (MBAFF),
    /// so frame_mbs_only 0 and field_pic_flag in every slice, and the PPS's
    /// bottom_field_pic_order_in_frame_present_flag with delta_pic_order_cnt_bottom -1.
    const X264_INTERLACED_SPS: &str = "67640015acd1029b6022000003000200000300643e285224";
    const X264_INTERLACED_PPS: &str = "68fba3cb22c0";
    const X264_INTERLACED_SLICES: [&str; 10] = [
        "6588821608ff",
        "419a23bc8aff",
        "019e41bf214f",
        "019e42bf214f",
        "419a46ba233f",
        "019e64bd4853",
        "019e65bd4853",
        "419a69b10a7f",
        "019e87bd4853",
        "019e88bd4853",
    ];
    const X264_INTERLACED_DISPLAY: [usize; 10] = [0, 2, 3, 1, 5, 6, 4, 8, 9, 7];

    /// `-frames:v 10 -bf 0`: no B-frames, so x264 uses pic_order_cnt_type 2.
    const X264_NO_B_SPS: &str = "6764000bacb2051b6022000003000200000300641e285490";
    const X264_NO_B_PPS: &str = "68ebc3cb22c0";
    const X264_NO_B_SLICES: [&str; 10] = [
        "65888415ff",
        "419a3b115f",
        "419a4f0864ca6115ff",
        "419a727843c994c08aff",
        "419a927843c994c08cff",
        "419ab27843c994c08cff",
        "419ad27843c994c08eff",
        "419af27843c994c0843f",
        "419b127843c994c084bf",
        "419b327843c994c085bf",
    ];

    /// Pictures and composition offsets of a stream's slices, in decoding order.
    fn run(sps: &Sps, pps: &Pps, slices: &[Vec<u8>]) -> (Vec<Picture>, Vec<u32>) {
        let mut state = PocState::new();
        let mut order = DisplayOrder::for_sps(sps);
        let mut pictures = Vec::new();
        let mut offsets = Vec::new();
        for nal in slices {
            let header = SliceHeader::parse(nal, sps, pps).unwrap();
            let picture = state.picture(sps, &header);
            offsets.push(order.next(picture));
            pictures.push(picture);
        }
        (pictures, offsets)
    }

    fn run_hex(sps: &str, pps: &str, slices: &[&str]) -> (Vec<Picture>, Vec<u32>) {
        let sps = Sps::parse(&hex(sps)).unwrap();
        let pps = Pps::parse(&hex(pps)).unwrap();
        let slices: Vec<Vec<u8>> = slices.iter().map(|s| hex(s)).collect();
        run(&sps, &pps, &slices)
    }

    /// The display position of each frame in decoding order.
    fn positions(display: &[usize]) -> Vec<i64> {
        let mut position = vec![0; display.len()];
        for (shown, &decoded) in display.iter().enumerate() {
            position[decoded] = shown as i64;
        }
        position
    }

    #[test]
    fn x264_b_pyramid_counts_twice_the_display_position_across_the_lsb_wrap() {
        let (pictures, offsets) = run_hex(X264_SPS, X264_PPS, &X264_PYRAMID_SLICES);
        let position = positions(&X264_PYRAMID_DISPLAY);
        let pocs: Vec<i64> = pictures.iter().map(|p| p.poc).collect();
        let expected: Vec<i64> = position.iter().map(|p| 2 * p).collect();
        assert_eq!(pocs, expected);
        // Past 64 the 6-bit lsb wrapped: the last frames count on from the most significant bits.
        assert_eq!(pocs[38], 78);
        assert!(pictures[0].starts_period && !pictures[1].starts_period);
        // Offsets: display - decode + 2 (max_num_reorder_frames), so PTS = (display + 2) frames.
        let expected: Vec<u32> = position
            .iter()
            .enumerate()
            .map(|(decode, shown)| (shown - decode as i64 + 2) as u32)
            .collect();
        assert_eq!(offsets, expected);
        assert_eq!(offsets[..5], [2, 5, 2, 0, 1]);
    }

    #[test]
    fn x264_open_gop_counts_on_across_a_recovery_point() {
        let (pictures, offsets) = run_hex(X264_SPS, X264_PPS, &X264_OPEN_GOP_SLICES);
        let position = &positions(&X264_OPEN_GOP_DISPLAY)[..28];
        let pocs: Vec<i64> = pictures.iter().map(|p| p.poc).collect();
        assert_eq!(pocs, position.iter().map(|p| 2 * p).collect::<Vec<_>>());
        // The recovery-point I picture is not an IDR: nothing starts again there.
        assert!(!pictures[24].starts_period);
        assert_eq!((pocs[24], pocs[25]), (50, 48));
        let shown: Vec<i64> = offsets
            .iter()
            .enumerate()
            .map(|(decode, k)| decode as i64 + i64::from(*k))
            .collect();
        assert_eq!(shown, position.iter().map(|p| p + 2).collect::<Vec<_>>());
    }

    #[test]
    fn x264_interlaced_frames_take_the_smaller_field_count() {
        let (pictures, offsets) = run_hex(
            X264_INTERLACED_SPS,
            X264_INTERLACED_PPS,
            &X264_INTERLACED_SLICES,
        );
        let position = positions(&X264_INTERLACED_DISPLAY);
        // Top field 2n + 1, bottom field 2n (delta_pic_order_cnt_bottom -1): the frame's count is
        // the bottom's, 0 for the IDR as 8.2.1 requires.
        for (picture, shown) in pictures.iter().zip(&position) {
            assert_eq!(
                (picture.top, picture.bottom, picture.poc),
                (2 * shown + 1, 2 * shown, 2 * shown)
            );
        }
        // No pyramid: max_num_reorder_frames 1.
        let expected: Vec<u32> = position
            .iter()
            .enumerate()
            .map(|(decode, shown)| (shown - decode as i64 + 1) as u32)
            .collect();
        assert_eq!(offsets, expected);
        assert_eq!(offsets[..4], [1, 3, 0, 0]);
    }

    #[test]
    fn x264_without_b_frames_is_type_2_and_gets_offset_0() {
        let (pictures, offsets) = run_hex(X264_NO_B_SPS, X264_NO_B_PPS, &X264_NO_B_SLICES);
        let pocs: Vec<i64> = pictures.iter().map(|p| p.poc).collect();
        assert_eq!(pocs, (0..10).map(|n| 2 * n).collect::<Vec<_>>());
        assert_eq!(offsets, [0; 10]);
    }

    use crate::media::testing::escaped_nal as nal;

    /// Main profile, level 3.0, no VUI: sps_id 0, log2_max_frame_num 4, pic_order_cnt_type 1
    /// with offset_for_non_ref_pic -2, offset_for_top_to_bottom_field 0 and a one-entry cycle of
    /// 4, 2 reference frames, 16x16 frames only.
    fn type1_sps() -> Sps {
        Sps::parse(&nal(
            0x67,
            "01001101 00000000 00011110 1 1 010 0 00101 1 010 0001000 011 0 1 1 1 1 0 0",
        ))
        .unwrap()
    }

    /// pps_id 0, sps_id 0, CAVLC, no bottom-field deltas, one slice group, 1 reference each way,
    /// no weighted prediction, qp/qs/chroma offsets 0, deblocking control, no redundant count.
    fn plain_pps() -> Pps {
        Pps::parse(&nal(0x68, "1 1 0 0 1 1 1 0 00 1 1 1 1 0 0")).unwrap()
    }

    /// A frame slice for [`type1_sps`]: I (IDR), P or B, with this frame_num (4 bits) and
    /// delta_pic_order_cnt[0] 0.
    fn type1_slice(kind: char, reference: bool, frame_num: u32) -> Vec<u8> {
        let frame_num = format!("{frame_num:04b}");
        match (kind, reference) {
            ('I', _) => nal(0x65, &format!("1 0001000 1 {frame_num} 1 1 0 0")),
            ('P', true) => nal(0x41, &format!("1 00110 1 {frame_num} 1 0 0 0")),
            ('P', false) => nal(0x01, &format!("1 00110 1 {frame_num} 1 0 0")),
            ('B', true) => nal(0x21, &format!("1 00111 1 {frame_num} 1 1 0 0 0 0")),
            _ => nal(0x01, &format!("1 00111 1 {frame_num} 1 1 0 0 0")),
        }
    }

    #[test]
    fn type_1_counts_from_frame_num_and_the_cycle() {
        let sps = type1_sps();
        let pps = plain_pps();
        // I B P B P in display order, decoded I P B P B P B; B-frames are not references, so the
        // frame_num after a P counts it.
        let stream = [
            type1_slice('I', true, 0),
            type1_slice('P', true, 1),
            type1_slice('B', false, 2),
            type1_slice('P', true, 2),
            type1_slice('B', false, 3),
            type1_slice('P', true, 3),
            type1_slice('B', false, 4),
        ];
        let (pictures, offsets) = run(&sps, &pps, &stream);
        let pocs: Vec<i64> = pictures.iter().map(|p| p.poc).collect();
        // P: 4 per reference frame; B: the expected count of the frame before it, minus 2.
        assert_eq!(pocs, [0, 4, 2, 8, 6, 12, 10]);
        // No VUI, so no reorder delay is known: the first P goes out at once (offset 0), the first
        // B shows reordering and sets the delay to 1; from then on PTS follow display order.
        assert_eq!(offsets, [0, 0, 0, 2, 0, 2, 0]);
    }

    #[test]
    fn type_1_wraps_frame_num_and_handles_fields() {
        let sps = type1_sps();
        let mut state = PocState::new();
        let mut slice = SliceHeader {
            nal_ref_idc: 1,
            idr: true,
            first_mb_in_slice: 0,
            slice_type: SliceType::I,
            pic_parameter_set_id: 0,
            colour_plane_id: 0,
            frame_num: 0,
            field_pic: false,
            bottom_field: false,
            idr_pic_id: 0,
            pic_order_cnt_lsb: 0,
            delta_pic_order_cnt_bottom: 0,
            delta_pic_order_cnt: [0, 0],
            mmco5: false,
        };
        assert_eq!(state.picture(&sps, &slice).poc, 0);
        slice.idr = false;
        slice.slice_type = SliceType::P;
        // frame_num 1..=15, then 0 again: FrameNumOffset becomes 16.
        for frame_num in 1..16 {
            slice.frame_num = frame_num;
            assert_eq!(state.picture(&sps, &slice).poc, 4 * i64::from(frame_num));
        }
        slice.frame_num = 0;
        assert_eq!(state.picture(&sps, &slice).poc, 64);
        // A delta in the slice moves the count; a non-reference picture counts one frame back
        // and adds offset_for_non_ref_pic.
        slice.frame_num = 1;
        slice.delta_pic_order_cnt = [3, 0];
        assert_eq!(state.picture(&sps, &slice).poc, 71);
        slice.nal_ref_idc = 0;
        slice.frame_num = 2;
        slice.delta_pic_order_cnt = [0, 0];
        assert_eq!(state.picture(&sps, &slice).poc, 66);
        // Fields: a bottom field adds offset_for_top_to_bottom_field (0 here) and delta[0].
        slice.nal_ref_idc = 1;
        slice.field_pic = true;
        slice.bottom_field = true;
        slice.delta_pic_order_cnt = [1, 0];
        let bottom = state.picture(&sps, &slice);
        assert_eq!((bottom.top, bottom.bottom, bottom.poc), (73, 73, 73));
    }

    /// Type 0 slice headers for the SPS of [`X264_SPS`]-like streams, built by hand: P frames.
    fn type0_slice(lsb: u32, frame_num: u32, reference: bool, mmco5: bool) -> SliceHeader {
        SliceHeader {
            nal_ref_idc: u8::from(reference) * 2,
            idr: false,
            first_mb_in_slice: 0,
            slice_type: SliceType::P,
            pic_parameter_set_id: 0,
            colour_plane_id: 0,
            frame_num,
            field_pic: false,
            bottom_field: false,
            idr_pic_id: 0,
            pic_order_cnt_lsb: lsb,
            delta_pic_order_cnt_bottom: 0,
            delta_pic_order_cnt: [0, 0],
            mmco5,
        }
    }

    #[test]
    fn type_0_tracks_the_most_significant_bits_both_ways() {
        let sps = Sps::parse(&hex(X264_SPS)).unwrap();
        let mut state = PocState::new();
        let idr = SliceHeader {
            idr: true,
            slice_type: SliceType::I,
            ..type0_slice(0, 0, true, false)
        };
        assert_eq!(state.picture(&sps, &idr).poc, 0);
        // MaxPicOrderCntLsb is 64: 60 then 2 is a wrap forward (66), 62 then back.
        let pocs: Vec<i64> = [(30, true), (60, true), (2, true), (62, false), (6, true)]
            .iter()
            .map(|&(lsb, reference)| {
                state
                    .picture(&sps, &type0_slice(lsb, 1, reference, false))
                    .poc
            })
            .collect();
        assert_eq!(pocs, [30, 60, 66, 62, 70]);
        // Non-reference pictures do not move the reference point: 30 after 6 is forward (94),
        // then 20 is judged against 6 again (84), and 40 is more than half the range away from
        // 6, so it lies behind (40).
        let pocs: Vec<i64> = [30, 20, 40]
            .iter()
            .map(|&lsb| state.picture(&sps, &type0_slice(lsb, 2, false, false)).poc)
            .collect();
        assert_eq!(pocs, [94, 84, 40]);
    }

    #[test]
    fn mmco5_starts_the_count_again_after_its_picture() {
        let sps = Sps::parse(&hex(X264_SPS)).unwrap();
        let mut state = PocState::new();
        let mut order = DisplayOrder::for_sps(&sps);
        let idr = SliceHeader {
            idr: true,
            slice_type: SliceType::I,
            ..type0_slice(0, 0, true, false)
        };
        let mut offsets = vec![order.next(state.picture(&sps, &idr))];
        // Frames 1 and 2 in order, then a P with MMCO 5 at lsb 6: it becomes POC 0 and starts
        // a period; the next frames count from it (lsb 2, 4 relative to 0).
        for (lsb, mmco5) in [(2, false), (4, false), (6, true), (2, false), (4, false)] {
            let picture = state.picture(&sps, &type0_slice(lsb, 1, true, mmco5));
            assert_eq!(picture.starts_period, mmco5);
            if mmco5 {
                assert_eq!((picture.top, picture.bottom, picture.poc), (0, 0, 0));
            }
            offsets.push(order.next(picture));
        }
        // x264's VUI says 2 reorder frames, so every frame shown in decoding order gets 2.
        assert_eq!(offsets, [2; 6]);
        // Type 1 and 2 forget frame_num after MMCO 5: FrameNumOffset starts from 0.
        let sps2 = Sps::parse(&hex(X264_NO_B_SPS)).unwrap();
        let mut state = PocState::new();
        let idr = SliceHeader {
            idr: true,
            slice_type: SliceType::I,
            ..type0_slice(0, 0, true, false)
        };
        state.picture(&sps2, &idr);
        for frame_num in 1..16 {
            state.picture(&sps2, &type0_slice(0, frame_num, true, false));
        }
        assert_eq!(
            state.picture(&sps2, &type0_slice(0, 0, true, false)).poc,
            32
        );
        let reset = state.picture(&sps2, &type0_slice(0, 1, true, true));
        assert_eq!((reset.poc, reset.starts_period), (0, true));
        assert_eq!(state.picture(&sps2, &type0_slice(0, 1, true, false)).poc, 2);
    }

    fn frame(poc: i64, starts_period: bool) -> Picture {
        Picture {
            top: poc,
            bottom: poc,
            poc,
            starts_period,
        }
    }

    #[test]
    fn streams_in_order_get_offset_0_even_with_gaps() {
        // POC type 0, no VUI, counting by 2 with holes (a dropped frame, a step of 4).
        let mut order = DisplayOrder::new(None, false);
        let offsets: Vec<u32> = [(0, true), (2, false), (6, false), (8, false), (16, false)]
            .iter()
            .map(|&(poc, idr)| order.next(frame(poc, idr)))
            .collect();
        assert_eq!(offsets, [0; 5]);
        assert_eq!(order.delay(), 0);
        // VUI max_num_reorder_frames 0 says the same.
        let mut order = DisplayOrder::new(Some(0), false);
        for (index, poc) in [0, 4, 8, 12].into_iter().enumerate() {
            assert_eq!(order.next(frame(poc, index == 0)), 0);
        }
        // Type 2 never reorders, whatever the VUI claims.
        let mut order = DisplayOrder::new(Some(3), true);
        for (index, poc) in [0, 1, 2, 4].into_iter().enumerate() {
            assert_eq!(order.next(frame(poc, index == 0)), 0);
        }
    }

    #[test]
    fn reordering_delay_is_never_negative_and_never_shrinks() {
        // VUI says 1, but the stream is a pyramid needing 2: I0 P8 B4 b2 b6 (POC x2).
        let mut order = DisplayOrder::new(Some(1), false);
        let offsets: Vec<u32> = [(0, true), (8, false), (4, false), (2, false), (6, false)]
            .iter()
            .map(|&(poc, idr)| order.next(frame(poc, idr)))
            .collect();
        // I: 0-0+1, P: 4-1+1, B: 2-2+1, b: display 1 at decode 3 needs 2: delay 2, offset 0;
        // b6: 3-4+2.
        assert_eq!(offsets, [1, 4, 1, 0, 1]);
        assert_eq!(order.delay(), 2);
        // The next IDR keeps the larger delay.
        assert_eq!(order.next(frame(0, true)), 2);
    }

    #[test]
    fn the_step_follows_the_counts() {
        // Counting by 1: the first odd difference drops the step to 1 at once. The P before it
        // was placed with a step of 2, so it shares its PTS with that B (frame 2), once.
        let mut order = DisplayOrder::new(Some(1), false);
        let offsets: Vec<u32> = [(0, true), (2, false), (1, false), (4, false), (3, false)]
            .iter()
            .map(|&(poc, idr)| order.next(frame(poc, idr)))
            .collect();
        assert_eq!(order.step(), 1);
        assert_eq!(offsets, [1, 1, 0, 2, 0]);
        // Counting by 4: taken after a whole period; until then a step of 2 spreads the frames
        // out (offsets grow), which keeps them in order.
        let mut order = DisplayOrder::new(Some(1), false);
        let first: Vec<u32> = [(0, true), (8, false), (4, false), (16, false), (12, false)]
            .iter()
            .map(|&(poc, idr)| order.next(frame(poc, idr)))
            .collect();
        assert_eq!(first, [1, 4, 1, 6, 3]);
        let second: Vec<u32> = [(0, true), (8, false), (4, false), (16, false), (12, false)]
            .iter()
            .map(|&(poc, idr)| order.next(frame(poc, idr)))
            .collect();
        assert_eq!(order.step(), 4);
        assert_eq!(second, [1, 2, 0, 2, 0]);
    }

    #[test]
    fn unknown_pictures_are_shown_in_decoding_order() {
        let mut order = DisplayOrder::new(Some(2), false);
        assert_eq!(order.next(frame(0, true)), 2);
        assert_eq!(order.unknown(false), 2);
        // The frame after it keeps its place: decode index 2, display 3.
        assert_eq!(order.next(frame(6, false)), 3);
        // An IDR that could not be read: nothing is placed by POC until the next one.
        assert_eq!(order.unknown(true), 2);
        assert_eq!(order.next(frame(40, false)), 2);
        assert_eq!(order.next(frame(0, true)), 2);
        assert_eq!(order.next(frame(4, false)), 3);
    }

    #[test]
    fn absurd_counts_give_bounded_offsets() {
        let mut order = DisplayOrder::new(Some(2), false);
        order.next(frame(0, true));
        assert_eq!(order.next(frame(i64::MAX, false)), MAX_OFFSET);
        assert_eq!(order.next(frame(i64::MIN, false)), 0);
        assert_eq!(order.delay(), MAX_DELAY);
        let mut order = DisplayOrder::new(Some(u32::MAX), false);
        assert_eq!(order.delay(), MAX_DELAY);
        assert_eq!(order.next(frame(i64::MIN, true)), MAX_DELAY);
    }
}
