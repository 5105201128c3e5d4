//! Sequence parameter set parser (ITU-T H.264 7.3.2.1.1 and Annex E VUI): profile, level, chroma
//! format, coded and cropped picture size, sample aspect ratio, timing and reorder depth.
//!
//! Invariants:
//! - The input is the escaped NAL unit as it appears in the stream; the bit reader drops
//!   emulation-prevention bytes (`00 00 03`) as it goes, so parsing never copies or allocates.
//! - Every syntax element is read, in order, up to the end of the VUI, including the ones nobody
//!   needs (scaling lists, HRD parameters), because later fields sit behind them.
//! - Every value is range-checked against the limits H.264 gives before it is used in arithmetic;
//!   loops are bounded by those limits, so no input can panic, overflow or loop for long.
//!   Out-of-range values give [`SpsError::Invalid`], running out of bits [`SpsError::Truncated`].
//! - Values a decoder refuses are refused here too, so that random bytes that happen to follow a
//!   start code are not taken for a stream (7.4.2.1.1, and the checks of FFmpeg's
//!   `ff_h264_decode_seq_parameter_set`): unknown profile_idc or level_idc, out-of-range fields,
//!   a picture larger than level 6.2 allows, cropping of the whole picture, VUI timing with a
//!   zero, and anything but `rbsp_trailing_bits` (a stop bit, then zero bits) after the last field.
//! - One leniency: a truncated `bitstream_restriction` block (a known encoder bug) leaves
//!   [`Vui::max_num_reorder_frames`] unknown instead of failing the whole SPS.
//! - [`Pps::parse`] refuses a PPS only for its two ids (7.3.2.2), which tell the SPS it belongs to.
//!   It then reads on to `redundant_pic_cnt_present_flag`, the fields a slice header's layout
//!   depends on ([`PpsSliceFields`]); a PPS that ends or goes out of range there is still accepted,
//!   without them (composition times are then 0, as before they were computed).
//! - What picture order counts need (8.2.1: `log2_max_frame_num`, the `pic_order_cnt_type` and its
//!   parameters, `frame_mbs_only_flag`, `separate_colour_plane_flag`) is kept in [`Sps`], in fixed
//!   storage: even a 255-entry `offset_for_ref_frame` cycle is not allocated.

use std::fmt;

/// Largest picture dimension in macroblocks: H.264 A.3.1 limits PicWidthInMbs and FrameHeightInMbs
/// to Sqrt(MaxFS * 8), and the largest MaxFS of any level (6.2) is 139264 macroblocks.
const MAX_DIMENSION_IN_MBS: u32 = 1055;

/// Largest frame size in macroblocks, MaxFS of level 6.2 (Table A-1).
const MAX_FRAME_SIZE_IN_MBS: u32 = 139_264;

/// The profile_idc values H.264 defines (A.2, G.10, H.10; 144 see [`HIGH_PROFILES`]).
const KNOWN_PROFILES: [u8; 17] = [
    66, 77, 88, 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144,
];

/// The level_idc values of Table A-1: 9 is level 1b (11 with constraint_set3_flag is 1b too in
/// Baseline, Main and Extended).
const KNOWN_LEVELS: [u8; 20] = [
    9, 10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52, 60, 61, 62,
];

/// profile_idc values whose SPS carries chroma_format_idc, bit depths and scaling matrices. 144 is
/// the High 4:4:4 profile of the 2005 edition (since removed), which FFmpeg also still accepts.
const HIGH_PROFILES: [u8; 14] = [
    100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144,
];

/// A parsed sequence parameter set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sps {
    /// profile_idc: 66 Baseline, 77 Main, 100 High, ...; goes into the avcC record.
    pub profile_idc: u8,
    /// The whole byte after profile_idc (constraint_set0..5 flags and two reserved bits), the avcC
    /// record's profile_compatibility.
    pub constraint_flags: u8,
    /// level_idc: ten times the level number (41 for level 4.1).
    pub level_idc: u8,
    /// seq_parameter_set_id, 0..=31; slices refer to it through their PPS.
    pub seq_parameter_set_id: u32,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 (1 when the profile does not signal it).
    pub chroma_format_idc: u32,
    /// Luma sample bit depth, 8..=14.
    pub bit_depth_luma: u8,
    /// Chroma sample bit depth, 8..=14.
    pub bit_depth_chroma: u8,
    /// 4:4:4 coded as three separate colour planes: slice headers then carry colour_plane_id, and
    /// ChromaArrayType is 0.
    pub separate_colour_plane: bool,
    /// false for streams that may code fields (interlaced); doubles the height of a map unit, and
    /// slice headers then carry field_pic_flag.
    pub frame_mbs_only: bool,
    /// log2_max_frame_num_minus4 + 4, 4..=16: the width of frame_num in slice headers.
    pub log2_max_frame_num: u8,
    /// pic_order_cnt_type and its parameters: how slices give their picture order count.
    pub pic_order_cnt: PicOrderCntType,
    /// max_num_ref_frames, 0..=16.
    pub max_num_ref_frames: u32,
    /// Width in luma samples from the macroblock count, before cropping.
    pub coded_width: u32,
    /// Height in luma samples from the macroblock count, before cropping.
    pub coded_height: u32,
    /// Displayed width in luma samples, after frame cropping.
    pub width: u32,
    /// Displayed height in luma samples, after frame cropping.
    pub height: u32,
    /// The video usability information, when present.
    pub vui: Option<Vui>,
}

/// The parts of the VUI (H.264 Annex E) a publisher uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vui {
    /// Sample (pixel) aspect ratio as width:height, when signalled and not "unspecified".
    pub sample_aspect_ratio: Option<(u16, u16)>,
    /// Timing information, when signalled.
    pub timing: Option<Timing>,
    /// Frames the decoder may have to hold back for reordering (0 means no B-frame delay), from
    /// bitstream_restriction, when signalled.
    pub max_num_reorder_frames: Option<u32>,
    /// The decoded picture buffer size the stream needs, in frames, from bitstream_restriction,
    /// when signalled (with [`max_num_reorder_frames`](Self::max_num_reorder_frames)).
    pub max_dec_frame_buffering: Option<u32>,
}

/// How slices signal their picture order count (7.4.2.1.1, 8.2.1).
// Type 1's cycle is about 1 KiB held inline, so that parsing allocates nothing; an SPS is parsed
// only when it changes, and the muxer keeps one.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PicOrderCntType {
    /// Type 0: each slice carries pic_order_cnt_lsb (and maybe delta_pic_order_cnt_bottom); the
    /// decoder tracks the most significant bits. What x264 and most B-frame encoders use.
    Lsb {
        /// log2_max_pic_order_cnt_lsb_minus4 + 4, 4..=16.
        log2_max_lsb: u8,
    },
    /// Type 1: expected from frame_num through a cycle of offsets, plus deltas in the slice.
    Cycle(PocCycle),
    /// Type 2: from frame_num alone; output order is decoding order (no B-frame reordering).
    FrameNum,
}

/// The parameters of pic_order_cnt_type 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PocCycle {
    /// Slices carry no delta_pic_order_cnt.
    pub delta_pic_order_always_zero: bool,
    pub offset_for_non_ref_pic: i32,
    pub offset_for_top_to_bottom_field: i32,
    /// offset_for_ref_frame[0..num_ref_frames_in_pic_order_cnt_cycle].
    pub offsets_for_ref_frame: RefFrameOffsets,
}

/// offset_for_ref_frame[], at most 255 entries, in fixed storage.
#[derive(Clone, Copy)]
pub struct RefFrameOffsets {
    len: u8,
    values: [i32; 255],
}

impl RefFrameOffsets {
    /// The offsets, num_ref_frames_in_pic_order_cnt_cycle of them.
    pub fn as_slice(&self) -> &[i32] {
        &self.values[..usize::from(self.len)]
    }

    /// An empty cycle; [`push`](Self::push) adds to it.
    pub fn new() -> Self {
        RefFrameOffsets {
            len: 0,
            values: [0; 255],
        }
    }

    /// Appends an offset; false (and nothing kept) when 255 are already there.
    pub fn push(&mut self, offset: i32) -> bool {
        match self.values.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = offset;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

impl Default for RefFrameOffsets {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for RefFrameOffsets {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for RefFrameOffsets {}

impl fmt::Debug for RefFrameOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// VUI timing: one clock tick is `num_units_in_tick / time_scale` seconds, a frame two ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Clock units per tick.
    pub num_units_in_tick: u32,
    /// Clock units per second.
    pub time_scale: u32,
    /// Whether the frame rate is constant.
    pub fixed_frame_rate: bool,
}

/// Why an SPS could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpsError {
    /// The NAL unit is empty or its nal_unit_type is not 7.
    NotAnSps,
    /// The NAL unit ended in the middle of a syntax element.
    Truncated,
    /// A syntax element has a value H.264 does not allow; the text names it.
    Invalid(&'static str),
}

impl fmt::Display for SpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpsError::NotAnSps => f.write_str("not an H.264 sequence parameter set NAL unit"),
            SpsError::Truncated => f.write_str("H.264 sequence parameter set is truncated"),
            SpsError::Invalid(what) => write!(f, "invalid H.264 sequence parameter set: {what}"),
        }
    }
}

impl std::error::Error for SpsError {}

/// Reads the RBSP bits of an escaped NAL unit payload, most significant bit first, skipping
/// emulation-prevention bytes on the fly. Shared with the slice header parser.
pub(crate) struct BitReader<'a> {
    /// The escaped bytes (without the NAL header).
    data: &'a [u8],
    /// Index of the next byte to load.
    pos: usize,
    /// Consecutive 0x00 bytes just loaded (0..=2): after two, a 0x03 is emulation prevention.
    zeros: u8,
    /// The byte being consumed.
    current: u8,
    /// Bits of `current` not yet consumed.
    bits_left: u8,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            zeros: 0,
            current: 0,
            bits_left: 0,
        }
    }

    fn next_byte(&mut self) -> Result<u8, SpsError> {
        let mut byte = *self.data.get(self.pos).ok_or(SpsError::Truncated)?;
        self.pos += 1;
        if self.zeros >= 2 && byte == 0x03 {
            byte = *self.data.get(self.pos).ok_or(SpsError::Truncated)?;
            self.pos += 1;
            self.zeros = 0;
        }
        self.zeros = if byte == 0 {
            (self.zeros + 1).min(2)
        } else {
            0
        };
        Ok(byte)
    }

    pub(crate) fn flag(&mut self) -> Result<bool, SpsError> {
        if self.bits_left == 0 {
            self.current = self.next_byte()?;
            self.bits_left = 8;
        }
        self.bits_left -= 1;
        Ok((self.current >> self.bits_left) & 1 == 1)
    }

    /// u(n) for n <= 32.
    pub(crate) fn bits(&mut self, count: u32) -> Result<u32, SpsError> {
        debug_assert!(count <= 32);
        let mut value = 0u32;
        for _ in 0..count.min(32) {
            value = (value << 1) | u32::from(self.flag()?);
        }
        Ok(value)
    }

    fn u8_bits(&mut self, count: u32) -> Result<u8, SpsError> {
        debug_assert!(count <= 8);
        Ok(self.bits(count.min(8))? as u8)
    }

    /// ue(v): Exp-Golomb, at most 32 leading zeros, value at most u32::MAX.
    pub(crate) fn ue(&mut self) -> Result<u32, SpsError> {
        let mut leading_zeros = 0u32;
        while !self.flag()? {
            leading_zeros += 1;
            if leading_zeros > 32 {
                return Err(SpsError::Invalid("Exp-Golomb code longer than 32 bits"));
            }
        }
        if leading_zeros == 0 {
            return Ok(0);
        }
        let suffix = u64::from(self.bits(leading_zeros)?);
        let value = (1u64 << leading_zeros) - 1 + suffix;
        u32::try_from(value).map_err(|_| SpsError::Invalid("Exp-Golomb value exceeds 32 bits"))
    }

    /// rbsp_trailing_bits() (7.3.2.11): a stop bit 1, then zero bits to the end of the NAL unit
    /// (trailing zero bytes, as cabac_zero_words or stray stuffing, are zero bits too).
    fn rbsp_trailing_bits(&mut self) -> Result<(), SpsError> {
        if !self.flag()? {
            return Err(SpsError::Invalid(
                "data where rbsp_trailing_bits should be (no stop bit)",
            ));
        }
        let mask = (1u16 << self.bits_left) as u8;
        if self.current & mask.wrapping_sub(1) != 0 {
            return Err(SpsError::Invalid(
                "non-zero bits after the rbsp_stop_one_bit",
            ));
        }
        self.bits_left = 0;
        while self.pos < self.data.len() {
            if self.next_byte()? != 0 {
                return Err(SpsError::Invalid("data after the rbsp_stop_one_bit"));
            }
        }
        Ok(())
    }

    /// ue(v) that must not exceed `max`.
    pub(crate) fn ue_max(&mut self, max: u32, what: &'static str) -> Result<u32, SpsError> {
        let value = self.ue()?;
        if value > max {
            return Err(SpsError::Invalid(what));
        }
        Ok(value)
    }

    /// se(v), range -(2^31 - 1)..=2^31 - 1 as H.264 allows for every se(v) in an SPS.
    pub(crate) fn se(&mut self) -> Result<i32, SpsError> {
        let code = i64::from(self.ue()?);
        let value = if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        };
        i32::try_from(value).map_err(|_| SpsError::Invalid("signed Exp-Golomb value out of range"))
    }
}

impl Sps {
    /// `nal` is the whole SPS NAL unit including its one-byte header (type 7), still escaped.
    pub fn parse(nal: &[u8]) -> Result<Sps, SpsError> {
        let (&header, payload) = nal.split_first().ok_or(SpsError::NotAnSps)?;
        if header & 0x1f != 7 {
            return Err(SpsError::NotAnSps);
        }
        if header & 0x80 != 0 {
            return Err(SpsError::Invalid("forbidden_zero_bit is set"));
        }
        let mut bits = BitReader::new(payload);
        let profile_idc = bits.u8_bits(8)?;
        let constraint_flags = bits.u8_bits(8)?;
        let level_idc = bits.u8_bits(8)?;
        if !KNOWN_PROFILES.contains(&profile_idc) {
            return Err(SpsError::Invalid("unknown profile_idc"));
        }
        if !KNOWN_LEVELS.contains(&level_idc) {
            return Err(SpsError::Invalid("unknown level_idc"));
        }
        let seq_parameter_set_id = bits.ue_max(31, "seq_parameter_set_id above 31")?;

        let mut chroma_format_idc = 1;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma = 8;
        let mut bit_depth_chroma = 8;
        if HIGH_PROFILES.contains(&profile_idc) {
            chroma_format_idc = bits.ue_max(3, "chroma_format_idc above 3")?;
            if chroma_format_idc == 3 {
                separate_colour_plane = bits.flag()?;
            }
            bit_depth_luma = 8 + bits.ue_max(6, "bit_depth_luma_minus8 above 6")? as u8;
            bit_depth_chroma = 8 + bits.ue_max(6, "bit_depth_chroma_minus8 above 6")? as u8;
            let _qpprime_y_zero_transform_bypass = bits.flag()?;
            if bits.flag()? {
                let list_count = if chroma_format_idc == 3 { 12 } else { 8 };
                for index in 0..list_count {
                    if bits.flag()? {
                        skip_scaling_list(&mut bits, if index < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }

        let log2_max_frame_num = 4 + bits.ue_max(12, "log2_max_frame_num_minus4 above 12")? as u8;
        let pic_order_cnt = match bits.ue_max(2, "pic_order_cnt_type above 2")? {
            0 => PicOrderCntType::Lsb {
                log2_max_lsb: 4 + bits.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4 above 12")?
                    as u8,
            },
            1 => {
                let delta_pic_order_always_zero = bits.flag()?;
                let offset_for_non_ref_pic = bits.se()?;
                let offset_for_top_to_bottom_field = bits.se()?;
                let cycle_length =
                    bits.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle above 255")?;
                let mut offsets_for_ref_frame = RefFrameOffsets::new();
                for _ in 0..cycle_length {
                    // At most 255 by the check above, so every push fits.
                    offsets_for_ref_frame.push(bits.se()?);
                }
                PicOrderCntType::Cycle(PocCycle {
                    delta_pic_order_always_zero,
                    offset_for_non_ref_pic,
                    offset_for_top_to_bottom_field,
                    offsets_for_ref_frame,
                })
            }
            _ => PicOrderCntType::FrameNum,
        };
        let max_num_ref_frames = bits.ue_max(16, "max_num_ref_frames above 16")?;
        let _gaps_in_frame_num_value_allowed = bits.flag()?;
        let width_in_mbs = bits.ue_max(MAX_DIMENSION_IN_MBS - 1, "picture too wide")? + 1;
        let height_in_map_units = bits.ue_max(MAX_DIMENSION_IN_MBS - 1, "picture too tall")? + 1;
        let frame_mbs_only = bits.flag()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = bits.flag()?;
        }
        let direct_8x8_inference = bits.flag()?;
        if !frame_mbs_only && !direct_8x8_inference {
            return Err(SpsError::Invalid(
                "direct_8x8_inference_flag is 0 with frame_mbs_only_flag 0",
            ));
        }

        // Bounded above, so these products fit easily in u32.
        let height_in_mbs = height_in_map_units * if frame_mbs_only { 1 } else { 2 };
        if height_in_mbs > MAX_DIMENSION_IN_MBS {
            return Err(SpsError::Invalid("picture too tall"));
        }
        if width_in_mbs * height_in_mbs > MAX_FRAME_SIZE_IN_MBS {
            return Err(SpsError::Invalid("picture larger than level 6.2 allows"));
        }
        let coded_width = width_in_mbs * 16;
        let coded_height = height_in_mbs * 16;

        let (mut width, mut height) = (coded_width, coded_height);
        if bits.flag()? {
            let left = bits.ue()?;
            let right = bits.ue()?;
            let top = bits.ue()?;
            let bottom = bits.ue()?;
            // Crop units, H.264 7.4.2.1.1 (equations 7-19 to 7-22).
            let (sub_width, sub_height): (u64, u64) =
                match (separate_colour_plane, chroma_format_idc) {
                    (false, 1) => (2, 2),
                    (false, 2) => (2, 1),
                    // Monochrome, 4:4:4 and separate colour planes (ChromaArrayType 0 or 3).
                    _ => (1, 1),
                };
            let crop_unit_x = sub_width;
            let crop_unit_y = sub_height * if frame_mbs_only { 1 } else { 2 };
            let crop_x = (u64::from(left) + u64::from(right)) * crop_unit_x;
            let crop_y = (u64::from(top) + u64::from(bottom)) * crop_unit_y;
            if crop_x >= u64::from(coded_width) || crop_y >= u64::from(coded_height) {
                return Err(SpsError::Invalid(
                    "frame cropping removes the whole picture",
                ));
            }
            // Strictly smaller than a u32 value, so the differences fit.
            width = coded_width - crop_x as u32;
            height = coded_height - crop_y as u32;
        }

        let (vui, cut_short) = if bits.flag()? {
            let (vui, cut_short) = parse_vui(&mut bits)?;
            (Some(vui), cut_short)
        } else {
            (None, false)
        };
        // A VUI cut short inside bitstream_restriction has no trailing bits left to check.
        if !cut_short {
            bits.rbsp_trailing_bits()?;
        }

        Ok(Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            seq_parameter_set_id,
            chroma_format_idc,
            bit_depth_luma,
            bit_depth_chroma,
            separate_colour_plane,
            frame_mbs_only,
            log2_max_frame_num,
            pic_order_cnt,
            max_num_ref_frames,
            coded_width,
            coded_height,
            width,
            height,
            vui,
        })
    }

    /// Frames per second as a reduced fraction (time_scale, 2 * num_units_in_tick), None without timing or with zeros.
    pub fn frame_rate(&self) -> Option<(u32, u32)> {
        let timing = self.vui.as_ref()?.timing?;
        if timing.num_units_in_tick == 0 || timing.time_scale == 0 {
            return None;
        }
        let numerator = u64::from(timing.time_scale);
        let denominator = 2 * u64::from(timing.num_units_in_tick);
        let divisor = gcd(numerator, denominator);
        let numerator = u32::try_from(numerator / divisor).ok()?;
        let denominator = u32::try_from(denominator / divisor).ok()?;
        Some((numerator, denominator))
    }
}

/// A picture parameter set (7.3.2.2): which SPS it belongs to, and the fields that shape slice
/// headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pps {
    /// pic_parameter_set_id, 0..=255; slices refer to it.
    pub pic_parameter_set_id: u32,
    /// seq_parameter_set_id, 0..=31: the SPS this PPS goes with.
    pub seq_parameter_set_id: u32,
    /// What a slice header parser needs, when the PPS held it in range. None leaves the PPS
    /// usable for the sequence header (the ids are all that needs), not for picture order counts.
    pub slice_fields: Option<PpsSliceFields>,
}

/// The PPS fields that decide which syntax elements a slice header carries, up to
/// `dec_ref_pic_marking()` (7.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PpsSliceFields {
    /// bottom_field_pic_order_in_frame_present_flag: frame slices carry
    /// delta_pic_order_cnt_bottom (type 0) or delta_pic_order_cnt[1] (type 1).
    pub bottom_field_pic_order_in_frame_present: bool,
    /// num_ref_idx_l0_default_active_minus1 and num_ref_idx_l1_default_active_minus1, 0..=31.
    pub num_ref_idx_default_active_minus1: [u8; 2],
    /// weighted_pred_flag: P and SP slices carry pred_weight_table().
    pub weighted_pred: bool,
    /// weighted_bipred_idc, 0..=2: 1 means B slices carry pred_weight_table().
    pub weighted_bipred_idc: u8,
    /// redundant_pic_cnt_present_flag: slices carry redundant_pic_cnt.
    pub redundant_pic_cnt_present: bool,
}

/// Why a PPS could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PpsError {
    /// The NAL unit is empty or its nal_unit_type is not 8.
    NotAPps,
    /// The NAL unit ended in the middle of a syntax element.
    Truncated,
    /// A syntax element has a value H.264 does not allow; the text names it.
    Invalid(&'static str),
}

impl fmt::Display for PpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PpsError::NotAPps => f.write_str("not an H.264 picture parameter set NAL unit"),
            PpsError::Truncated => f.write_str("H.264 picture parameter set is truncated"),
            PpsError::Invalid(what) => write!(f, "invalid H.264 picture parameter set: {what}"),
        }
    }
}

impl std::error::Error for PpsError {}

/// Largest num_slice_groups_minus1 (A.2.1: Baseline and Extended allow 8 slice groups).
const MAX_SLICE_GROUPS_MINUS1: u32 = 7;

impl Pps {
    /// `nal` is the whole PPS NAL unit including its one-byte header (type 8), still escaped.
    /// Only the two ids can make it fail; the fields after them are read when they are there and
    /// in range ([`Pps::slice_fields`]). The rest (quantisation, transform, scaling) is the
    /// decoder's business.
    pub fn parse(nal: &[u8]) -> Result<Pps, PpsError> {
        let (&header, payload) = nal.split_first().ok_or(PpsError::NotAPps)?;
        if header & 0x1f != 8 {
            return Err(PpsError::NotAPps);
        }
        if header & 0x80 != 0 {
            return Err(PpsError::Invalid("forbidden_zero_bit is set"));
        }
        let convert = |error| match error {
            SpsError::Invalid(what) => PpsError::Invalid(what),
            SpsError::Truncated | SpsError::NotAnSps => PpsError::Truncated,
        };
        let mut bits = BitReader::new(payload);
        let pic_parameter_set_id = bits
            .ue_max(255, "pic_parameter_set_id above 255")
            .map_err(convert)?;
        let seq_parameter_set_id = bits
            .ue_max(31, "seq_parameter_set_id above 31")
            .map_err(convert)?;
        Ok(Pps {
            pic_parameter_set_id,
            seq_parameter_set_id,
            slice_fields: parse_pps_slice_fields(&mut bits).ok(),
        })
    }
}

/// The PPS from entropy_coding_mode_flag to redundant_pic_cnt_present_flag.
fn parse_pps_slice_fields(bits: &mut BitReader<'_>) -> Result<PpsSliceFields, SpsError> {
    let _entropy_coding_mode = bits.flag()?;
    let bottom_field_pic_order_in_frame_present = bits.flag()?;
    let num_slice_groups_minus1 =
        bits.ue_max(MAX_SLICE_GROUPS_MINUS1, "num_slice_groups_minus1 above 7")?;
    if num_slice_groups_minus1 > 0 {
        skip_slice_group_map(bits, num_slice_groups_minus1)?;
    }
    let l0 = bits.ue_max(31, "num_ref_idx_l0_default_active_minus1 above 31")? as u8;
    let l1 = bits.ue_max(31, "num_ref_idx_l1_default_active_minus1 above 31")? as u8;
    let weighted_pred = bits.flag()?;
    let weighted_bipred_idc = bits.bits(2)? as u8;
    if weighted_bipred_idc > 2 {
        return Err(SpsError::Invalid("weighted_bipred_idc is 3"));
    }
    let _pic_init_qp_minus26 = bits.se()?;
    let _pic_init_qs_minus26 = bits.se()?;
    let _chroma_qp_index_offset = bits.se()?;
    let _deblocking_filter_control_present = bits.flag()?;
    let _constrained_intra_pred = bits.flag()?;
    let redundant_pic_cnt_present = bits.flag()?;
    Ok(PpsSliceFields {
        bottom_field_pic_order_in_frame_present,
        num_ref_idx_default_active_minus1: [l0, l1],
        weighted_pred,
        weighted_bipred_idc,
        redundant_pic_cnt_present,
    })
}

/// Reads past the slice group map of a PPS with several slice groups (FMO, 7.3.2.2).
fn skip_slice_group_map(bits: &mut BitReader<'_>, groups_minus1: u32) -> Result<(), SpsError> {
    match bits.ue_max(6, "slice_group_map_type above 6")? {
        0 => {
            for _ in 0..=groups_minus1 {
                bits.ue_max(MAX_FRAME_SIZE_IN_MBS, "run_length_minus1 too large")?;
            }
        }
        2 => {
            for _ in 0..groups_minus1 {
                bits.ue_max(MAX_FRAME_SIZE_IN_MBS, "top_left too large")?;
                bits.ue_max(MAX_FRAME_SIZE_IN_MBS, "bottom_right too large")?;
            }
        }
        3..=5 => {
            let _slice_group_change_direction = bits.flag()?;
            bits.ue_max(
                MAX_FRAME_SIZE_IN_MBS,
                "slice_group_change_rate_minus1 too large",
            )?;
        }
        6 => {
            let map_units = bits.ue_max(
                MAX_FRAME_SIZE_IN_MBS,
                "pic_size_in_map_units_minus1 too large",
            )? + 1;
            // Ceil(Log2(num_slice_groups_minus1 + 1)) bits per map unit: 1 to 3.
            let width = 32 - groups_minus1.leading_zeros();
            for _ in 0..map_units {
                bits.bits(width)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Reads past scaling_list() (7.3.2.1.1.1) of `size` coefficients: delta_scale is read only while
/// nextScale is non-zero, and must be within -128..=127.
fn skip_scaling_list(bits: &mut BitReader<'_>, size: usize) -> Result<(), SpsError> {
    let mut last_scale: i32 = 8;
    for _ in 0..size {
        let delta_scale = bits.se()?;
        if !(-128..=127).contains(&delta_scale) {
            return Err(SpsError::Invalid("delta_scale out of range"));
        }
        let next_scale = (last_scale + delta_scale + 256).rem_euclid(256);
        if next_scale == 0 {
            // The remaining coefficients repeat the last one (or the list is the default one):
            // nothing more is coded.
            return Ok(());
        }
        last_scale = next_scale;
    }
    Ok(())
}

/// Table E-1: sample aspect ratios for aspect_ratio_idc 1..=16.
const ASPECT_RATIOS: [(u16, u16); 16] = [
    (1, 1),
    (12, 11),
    (10, 11),
    (16, 11),
    (40, 33),
    (24, 11),
    (20, 11),
    (32, 11),
    (80, 33),
    (18, 11),
    (15, 11),
    (64, 33),
    (160, 99),
    (4, 3),
    (3, 2),
    (2, 1),
];

/// aspect_ratio_idc value meaning "sar_width and sar_height follow".
const EXTENDED_SAR: u8 = 255;

/// vui_parameters() (E.1.1), and whether the NAL unit ended inside bitstream_restriction.
fn parse_vui(bits: &mut BitReader<'_>) -> Result<(Vui, bool), SpsError> {
    let mut sample_aspect_ratio = None;
    if bits.flag()? {
        let aspect_ratio_idc = bits.u8_bits(8)?;
        if aspect_ratio_idc == EXTENDED_SAR {
            let sar_width = bits.bits(16)? as u16;
            let sar_height = bits.bits(16)? as u16;
            if sar_width != 0 && sar_height != 0 {
                sample_aspect_ratio = Some((sar_width, sar_height));
            }
        } else if let Some(index) = usize::from(aspect_ratio_idc).checked_sub(1) {
            // 0 is "unspecified", 17..=254 reserved: both leave the ratio unknown.
            sample_aspect_ratio = ASPECT_RATIOS.get(index).copied();
        }
    }
    if bits.flag()? {
        let _overscan_appropriate = bits.flag()?;
    }
    if bits.flag()? {
        let _video_format = bits.bits(3)?;
        let _video_full_range = bits.flag()?;
        if bits.flag()? {
            let _colour_primaries = bits.bits(8)?;
            let _transfer_characteristics = bits.bits(8)?;
            let _matrix_coefficients = bits.bits(8)?;
        }
    }
    if bits.flag()? {
        bits.ue_max(5, "chroma_sample_loc_type_top_field above 5")?;
        bits.ue_max(5, "chroma_sample_loc_type_bottom_field above 5")?;
    }
    let mut timing = None;
    if bits.flag()? {
        let num_units_in_tick = bits.bits(32)?;
        let time_scale = bits.bits(32)?;
        if num_units_in_tick == 0 {
            return Err(SpsError::Invalid("num_units_in_tick is 0"));
        }
        if time_scale == 0 {
            return Err(SpsError::Invalid("time_scale is 0"));
        }
        timing = Some(Timing {
            num_units_in_tick,
            time_scale,
            fixed_frame_rate: bits.flag()?,
        });
    }
    let nal_hrd = bits.flag()?;
    if nal_hrd {
        skip_hrd_parameters(bits)?;
    }
    let vcl_hrd = bits.flag()?;
    if vcl_hrd {
        skip_hrd_parameters(bits)?;
    }
    if nal_hrd || vcl_hrd {
        let _low_delay_hrd = bits.flag()?;
    }
    let _pic_struct_present = bits.flag()?;
    let ((max_num_reorder_frames, max_dec_frame_buffering), cut_short) = if bits.flag()? {
        match parse_bitstream_restriction(bits) {
            Ok((reorder, buffering)) => ((Some(reorder), Some(buffering)), false),
            // Some encoders cut the VUI short here; what came before is still good.
            Err(SpsError::Truncated) => ((None, None), true),
            Err(error) => return Err(error),
        }
    } else {
        ((None, None), false)
    };
    Ok((
        Vui {
            sample_aspect_ratio,
            timing,
            max_num_reorder_frames,
            max_dec_frame_buffering,
        },
        cut_short,
    ))
}

/// The bitstream_restriction fields of the VUI; returns max_num_reorder_frames and
/// max_dec_frame_buffering.
fn parse_bitstream_restriction(bits: &mut BitReader<'_>) -> Result<(u32, u32), SpsError> {
    let _motion_vectors_over_pic_boundaries = bits.flag()?;
    bits.ue_max(16, "max_bytes_per_pic_denom above 16")?;
    bits.ue_max(16, "max_bits_per_mb_denom above 16")?;
    bits.ue_max(16, "log2_max_mv_length_horizontal above 16")?;
    bits.ue_max(16, "log2_max_mv_length_vertical above 16")?;
    let max_num_reorder_frames = bits.ue_max(16, "max_num_reorder_frames above 16")?;
    // Not cross-checked against max_num_reorder_frames: an inconsistent VUI is no reason to
    // refuse a stream that decoders play.
    let max_dec_frame_buffering = bits.ue_max(16, "max_dec_frame_buffering above 16")?;
    Ok((max_num_reorder_frames, max_dec_frame_buffering))
}

/// Reads past hrd_parameters() (E.1.2).
fn skip_hrd_parameters(bits: &mut BitReader<'_>) -> Result<(), SpsError> {
    let cpb_count = bits.ue_max(31, "cpb_cnt_minus1 above 31")? + 1;
    let _bit_rate_scale = bits.bits(4)?;
    let _cpb_size_scale = bits.bits(4)?;
    for _ in 0..cpb_count {
        bits.ue_max(u32::MAX - 1, "bit_rate_value_minus1 too large")?;
        bits.ue_max(u32::MAX - 1, "cpb_size_value_minus1 too large")?;
        let _cbr = bits.flag()?;
    }
    let _initial_cpb_removal_delay_length_minus1 = bits.bits(5)?;
    let _cpb_removal_delay_length_minus1 = bits.bits(5)?;
    let _dpb_output_delay_length_minus1 = bits.bits(5)?;
    let _time_offset_length = bits.bits(5)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::testing::hex;

    /// The SPS of ../shared/clips/pi-hw-1080p-20frames.h264 (Raspberry Pi hardware encoder),
    /// copied from the clip's first NAL unit. Field values cross-checked with
    /// `ffmpeg -bsf:v trace_headers`: High 4.1, poc type 2, 120x68 MBs, crop bottom 4 (x2 rows),
    /// VUI timing 1/60 fixed, NAL HRD (1 CPB), bitstream_restriction with 0 reorder frames.
    /// It contains two emulation-prevention bytes.
    const PI_SPS: &str =
        "27640029ac2b403c0113f2c200000300020000030079c9800072708000ee6bdef700f1226a";

    #[test]
    fn raspberry_pi_sps() {
        let sps = Sps::parse(&hex(PI_SPS)).unwrap();
        assert_eq!(
            sps,
            Sps {
                profile_idc: 100,
                constraint_flags: 0,
                level_idc: 41,
                seq_parameter_set_id: 0,
                chroma_format_idc: 1,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
                separate_colour_plane: false,
                frame_mbs_only: true,
                log2_max_frame_num: 8,
                pic_order_cnt: PicOrderCntType::FrameNum,
                max_num_ref_frames: 1,
                coded_width: 1920,
                coded_height: 1088,
                width: 1920,
                height: 1080,
                vui: Some(Vui {
                    sample_aspect_ratio: None,
                    timing: Some(Timing {
                        num_units_in_tick: 1,
                        time_scale: 60,
                        fixed_frame_rate: true
                    }),
                    max_num_reorder_frames: Some(0),
                    max_dec_frame_buffering: Some(1),
                }),
            }
        );
        assert_eq!(sps.frame_rate(), Some((30, 1)));
    }

    #[test]
    fn raspberry_pi_clip_first_nal_is_this_sps() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/clips/pi-hw-1080p-20frames.h264"
        );
        let Ok(clip) = std::fs::read(path) else {
            eprintln!("skipping: {path} not found");
            return;
        };
        let mut nals = Vec::new();
        crate::media::annexb::split_nals(&clip, &mut nals);
        let first = nals[0];
        assert_eq!(clip[first.start..first.start + first.len], hex(PI_SPS)[..]);
    }

    /// `ffmpeg -f lavfi -i testsrc2=size=640x480:rate=25 -frames:v 3 -c:v libx264 -profile:v baseline
    /// -f h264` (libx264, FFmpeg 5.1): Constrained Baseline 3.0, poc type 2, 40x30 MBs, no cropping,
    /// VUI SAR 1:1, timing 1/50 not fixed, bitstream_restriction 0 reorder frames (trace_headers).
    const BASELINE_640X480_SPS: &str = "6742c01ed900a03db011000003000100000300320f162e48";
    /// The PPS of the same stream.
    const BASELINE_640X480_PPS: &str = "68cb83cb20";

    #[test]
    fn x264_baseline_640x480() {
        let sps = Sps::parse(&hex(BASELINE_640X480_SPS)).unwrap();
        assert_eq!(
            sps,
            Sps {
                profile_idc: 66,
                constraint_flags: 0xc0,
                level_idc: 30,
                seq_parameter_set_id: 0,
                chroma_format_idc: 1,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
                separate_colour_plane: false,
                frame_mbs_only: true,
                log2_max_frame_num: 4,
                pic_order_cnt: PicOrderCntType::FrameNum,
                max_num_ref_frames: 3,
                coded_width: 640,
                coded_height: 480,
                width: 640,
                height: 480,
                vui: Some(Vui {
                    sample_aspect_ratio: Some((1, 1)),
                    timing: Some(Timing {
                        num_units_in_tick: 1,
                        time_scale: 50,
                        fixed_frame_rate: false
                    }),
                    max_num_reorder_frames: Some(0),
                    max_dec_frame_buffering: Some(3),
                }),
            }
        );
        assert_eq!(sps.frame_rate(), Some((25, 1)));
    }

    /// `ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30 -frames:v 3 -c:v libx264 -profile:v high
    /// -pix_fmt yuv420p -f h264`: High 3.1, poc type 0, 80x45 MBs, SAR 1:1, timing 1/60,
    /// 2 reorder frames (B-frames), 4 reference frames (trace_headers).
    const HIGH_720P30_SPS: &str = "6764001facd9405005bb0110000003001000000303c0f1831960";

    #[test]
    fn x264_high_720p30() {
        let sps = Sps::parse(&hex(HIGH_720P30_SPS)).unwrap();
        assert_eq!(
            (sps.profile_idc, sps.constraint_flags, sps.level_idc),
            (100, 0, 31)
        );
        assert_eq!(
            (sps.coded_width, sps.coded_height, sps.width, sps.height),
            (1280, 720, 1280, 720)
        );
        assert_eq!(sps.max_num_ref_frames, 4);
        assert!(sps.frame_mbs_only);
        let vui = sps.vui.clone().unwrap();
        assert_eq!(vui.sample_aspect_ratio, Some((1, 1)));
        assert_eq!(vui.max_num_reorder_frames, Some(2));
        assert_eq!(
            vui.timing,
            Some(Timing {
                num_units_in_tick: 1,
                time_scale: 60,
                fixed_frame_rate: false
            })
        );
        assert_eq!(sps.frame_rate(), Some((30, 1)));
    }

    /// `ffmpeg -f lavfi -i testsrc2=size=352x280:rate=25 -frames:v 3 -c:v libx264 -flags +ildct+ilme
    /// -pix_fmt yuv420p -f h264`: frame_mbs_only 0 with MBAFF, 22x9 map units (288 rows), cropped
    /// bottom 2 units of 4 rows, pic_struct_present, level 2.1 (trace_headers).
    const INTERLACED_352X280_SPS: &str = "67640015acd941612fde0220000003002000000643e28532c0";

    #[test]
    fn x264_interlaced() {
        let sps = Sps::parse(&hex(INTERLACED_352X280_SPS)).unwrap();
        assert!(!sps.frame_mbs_only);
        assert_eq!(
            (sps.coded_width, sps.coded_height, sps.width, sps.height),
            (352, 288, 352, 280)
        );
        assert_eq!(sps.level_idc, 21);
        assert_eq!(sps.frame_rate(), Some((25, 1)));
        assert_eq!(sps.vui.unwrap().max_num_reorder_frames, Some(2));
    }

    /// `ffmpeg -f lavfi -i testsrc2=size=320x240:rate=24000/1001 -vf setsar=64/45 -frames:v 3
    /// -c:v libx264 -pix_fmt yuv422p10le -f h264`: High 4:2:2 (122) level 1.3, 10-bit 4:2:2,
    /// Extended_SAR 64:45, timing 1001/48000 (trace_headers).
    const HIGH422_10BIT_SPS: &str = "677a000db6cd94141fbff0040002d100000303e90000bb800f142996";

    #[test]
    fn x264_high_422_10bit_extended_sar() {
        let sps = Sps::parse(&hex(HIGH422_10BIT_SPS)).unwrap();
        assert_eq!((sps.profile_idc, sps.level_idc), (122, 13));
        assert_eq!(sps.chroma_format_idc, 2);
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (10, 10));
        assert_eq!((sps.width, sps.height), (320, 240));
        let vui = sps.vui.clone().unwrap();
        assert_eq!(vui.sample_aspect_ratio, Some((64, 45)));
        assert_eq!(
            vui.timing.map(|t| (t.num_units_in_tick, t.time_scale)),
            Some((1001, 48000))
        );
        assert_eq!(sps.frame_rate(), Some((24000, 1001)));
    }

    /// `ffmpeg -f lavfi -i testsrc2=size=176x144:rate=50 -frames:v 3 -c:v libx264 -pix_fmt yuv444p
    /// -qp 0 -f h264`: High 4:4:4 Predictive (244), chroma_format_idc 3 without separate planes,
    /// qpprime_y_zero_transform_bypass (lossless), level 1.2, timing 1/100 (trace_headers).
    const HIGH444_LOSSLESS_SPS: &str = "67f4000c91d640b13b0110000003001000000640f142a480";

    #[test]
    fn x264_high_444_lossless() {
        let sps = Sps::parse(&hex(HIGH444_LOSSLESS_SPS)).unwrap();
        assert_eq!((sps.profile_idc, sps.chroma_format_idc), (244, 3));
        assert_eq!((sps.width, sps.height), (176, 144));
        assert_eq!(sps.frame_rate(), Some((50, 1)));
    }

    /// Hand-crafted with a bit writer (scripted in Python) to cover what x264 never writes, and
    /// checked with `ffmpeg -bsf:v trace_headers`, which read every field back as intended and
    /// ended on the rbsp_stop_one_bit: High, sps_id 1, scaling matrices (list 0 custom, list 2
    /// "use default" via delta -8, list 6 with deltas +-100, list 7 ending early on nextScale 0),
    /// pic_order_cnt_type 1 with a 3-entry cycle (1, -1, 40000), 80x23 map units with
    /// frame_mbs_only 0 (1280x736) cropped left 2, right 3, bottom 4 units (2x4 samples) to
    /// 1270x720, VUI with aspect_ratio_idc 14 (4:3), overscan, video signal type with colour
    /// description, chroma location, timing 1001/60000 fixed, NAL HRD with 3 CPBs, VCL HRD,
    /// pic_struct_present and bitstream_restriction with 1 reorder frame.
    const CRAFTED_FULL_SPS: &str = concat!(
        "676400284b6104924924924921110190032406400c90190032406400c90190032406400c9019003240",
        "6400c90190032406400c90190032406400c90190032406400c90190032406400c90190032406400c90",
        "190032406400c90190032406400c90190032406400c90190032406400c90190032406400c901900324",
        "06400c90190032406400c990819221c844c00027100501402e6c92e1dee0202034a000007d20001d4c",
        "1b23007d2001389001f44001388c005dc8003a995ef7c601800001da08041160"
    );

    fn offsets(values: &[i32]) -> RefFrameOffsets {
        let mut offsets = RefFrameOffsets::new();
        for &value in values {
            assert!(offsets.push(value));
        }
        offsets
    }

    #[test]
    fn crafted_sps_with_every_optional_part() {
        let sps = Sps::parse(&hex(CRAFTED_FULL_SPS)).unwrap();
        assert_eq!(
            sps,
            Sps {
                profile_idc: 100,
                constraint_flags: 0,
                level_idc: 40,
                seq_parameter_set_id: 1,
                chroma_format_idc: 1,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
                separate_colour_plane: false,
                frame_mbs_only: false,
                log2_max_frame_num: 7,
                pic_order_cnt: PicOrderCntType::Cycle(PocCycle {
                    delta_pic_order_always_zero: false,
                    offset_for_non_ref_pic: -3,
                    offset_for_top_to_bottom_field: 2,
                    offsets_for_ref_frame: offsets(&[1, -1, 40000]),
                }),
                max_num_ref_frames: 4,
                coded_width: 1280,
                coded_height: 736,
                width: 1270,
                height: 720,
                vui: Some(Vui {
                    sample_aspect_ratio: Some((4, 3)),
                    timing: Some(Timing {
                        num_units_in_tick: 1001,
                        time_scale: 60000,
                        fixed_frame_rate: true
                    }),
                    max_num_reorder_frames: Some(1),
                    max_dec_frame_buffering: Some(4),
                }),
            }
        );
        assert_eq!(sps.frame_rate(), Some((30000, 1001)));
    }

    /// Hand-crafted like the one above and checked the same way: High 4:4:4 (244) level 5.1,
    /// sps_id 31, chroma_format_idc 3 with separate_colour_plane_flag (so crop units are 1x1),
    /// 10-bit, lossless, 12 scaling lists (list 1 +3 steps, list 8 flat, list 11 reaching 0 after
    /// 8 deltas), log2_max_frame_num and poc lsb at their maximum (16 bits), 16 reference frames,
    /// 11x9 MBs (176x144) cropped right 1 and bottom 3 to 175x141, no VUI.
    const CRAFTED_444_SEPARATE_PLANES_SPS: &str =
        "67f400330404b7a6318c6318c6318c6318c07fffffffffffffffcb6db6d8d8d08c589b5220";

    #[test]
    fn crafted_separate_colour_planes_with_twelve_scaling_lists() {
        let sps = Sps::parse(&hex(CRAFTED_444_SEPARATE_PLANES_SPS)).unwrap();
        assert_eq!(
            sps,
            Sps {
                profile_idc: 244,
                constraint_flags: 0,
                level_idc: 51,
                seq_parameter_set_id: 31,
                chroma_format_idc: 3,
                bit_depth_luma: 10,
                bit_depth_chroma: 10,
                separate_colour_plane: true,
                frame_mbs_only: true,
                log2_max_frame_num: 16,
                pic_order_cnt: PicOrderCntType::Lsb { log2_max_lsb: 16 },
                max_num_ref_frames: 16,
                coded_width: 176,
                coded_height: 144,
                width: 175,
                height: 141,
                vui: None,
            }
        );
        assert_eq!(sps.frame_rate(), None);
    }

    #[test]
    fn emulation_prevention_bytes_are_skipped() {
        // The Pi SPS has "00 00 03 00 02 00 00 03 00 79": 32-bit timing fields span them.
        let raw = hex(PI_SPS);
        assert!(raw.windows(3).filter(|w| w == &[0, 0, 3]).count() == 2);
        let mut bits = BitReader::new(&[0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x03]);
        assert_eq!(bits.bits(24).unwrap(), 0x000001);
        assert_eq!(bits.bits(24).unwrap(), 0x000003);
        assert_eq!(bits.flag(), Err(SpsError::Truncated));
    }

    #[test]
    fn exp_golomb_limits() {
        // 32 leading zeros, then 1 and 32 zero bits: 2^32 - 1, the largest u32.
        let mut data = vec![0u8; 4];
        data.extend_from_slice(&[0x80, 0, 0, 0, 0]);
        assert_eq!(BitReader::new(&data).ue(), Ok(u32::MAX));
        // Same length with a non-zero suffix does not fit in u32.
        let mut data = vec![0u8; 4];
        data.extend_from_slice(&[0x80, 0, 0, 0, 0x80]);
        assert!(matches!(
            BitReader::new(&data).ue(),
            Err(SpsError::Invalid(_))
        ));
        // 33 leading zeros.
        let data = [0u8, 0, 0, 0, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            BitReader::new(&data).ue(),
            Err(SpsError::Invalid(_))
        ));
        // se(v): codes 1, 2, 3, 4 are 1, -1, 2, -2; 2^32-1 is +2^31, out of range.
        let mut bits = BitReader::new(&[0b0100_1100, 0b1000_0101, 0]);
        assert_eq!(bits.se(), Ok(1));
        assert_eq!(bits.se(), Ok(-1));
        assert_eq!(bits.se(), Ok(2));
        assert_eq!(bits.se(), Ok(-2));
        let mut data = vec![0u8; 4];
        data.extend_from_slice(&[0x80, 0, 0, 0, 0]);
        assert!(matches!(
            BitReader::new(&data).se(),
            Err(SpsError::Invalid(_))
        ));
    }

    #[test]
    fn not_an_sps() {
        assert_eq!(Sps::parse(&[]), Err(SpsError::NotAnSps));
        assert_eq!(
            Sps::parse(&hex(BASELINE_640X480_PPS)),
            Err(SpsError::NotAnSps)
        );
        assert_eq!(Sps::parse(&[0x67]), Err(SpsError::Truncated));
        assert!(matches!(
            Sps::parse(&[0xe7, 66, 0, 30, 0x80]),
            Err(SpsError::Invalid(_))
        ));
    }

    #[test]
    fn out_of_range_values_are_invalid() {
        // Baseline, sps_id 32 (ue 000001 00001).
        assert_eq!(
            Sps::parse(&[0x67, 66, 0, 30, 0b0000_0100, 0b0010_0000]),
            Err(SpsError::Invalid("seq_parameter_set_id above 31"))
        );
        // Cropping everything: Baseline 1x1 MB, crop right 8 (x2 = 16 samples).
        // sps_id 1b, log2_max_frame_num 1b, poc type 2 (011), max refs 0 (1), gaps 0,
        // width 1 (1), height 1 (1), frame_mbs_only 1, direct 1, cropping 1, left 0 (1),
        // right 8 (0001001), top 0 (1), bottom 0 (1), vui 0, stop bit.
        let bits = "1 1 011 1 0 1 1 1 1 1 1 0001001 1 1 0 1";
        assert_eq!(
            Sps::parse(&nal_from_bits(bits)),
            Err(SpsError::Invalid(
                "frame cropping removes the whole picture"
            ))
        );
        // Crop right 7 leaves 2 samples.
        let sps = Sps::parse(&nal_from_bits("1 1 011 1 0 1 1 1 1 1 1 0001000 1 1 0 1")).unwrap();
        assert_eq!((sps.width, sps.height), (2, 16));
    }

    /// A Baseline SPS NAL (level 3.0) whose payload after level_idc is the given bit string.
    fn nal_from_bits(bits: &str) -> Vec<u8> {
        nal_with(66, 30, bits)
    }

    /// An SPS NAL with this profile_idc and level_idc (no constraint flags) whose payload after
    /// level_idc is the given bit string, zero-padded to a whole byte.
    fn nal_with(profile_idc: u8, level_idc: u8, bits: &str) -> Vec<u8> {
        let mut out = vec![0x67, profile_idc, 0, level_idc];
        let bits: Vec<u8> = bits.bytes().filter(|b| *b == b'0' || *b == b'1').collect();
        for chunk in bits.chunks(8) {
            let mut byte = 0u8;
            for (index, bit) in chunk.iter().enumerate() {
                byte |= (bit - b'0') << (7 - index);
            }
            out.push(byte);
        }
        out
    }

    /// A valid minimal Baseline body: sps_id 0, log2_max_frame_num_minus4 0, poc type 2, 0 refs,
    /// no gaps, 1x1 MB, frame_mbs_only, direct_8x8, no cropping, no VUI, stop bit.
    const MINIMAL: &str = "1 1 011 1 0 1 1 1 1 0 0 1";

    fn invalid(nal: &[u8]) -> &'static str {
        match Sps::parse(nal) {
            Err(SpsError::Invalid(what)) => what,
            other => panic!("{nal:02x?} gave {other:?}"),
        }
    }

    #[test]
    fn minimal_sps_is_valid() {
        let nal = nal_from_bits(MINIMAL);
        assert_eq!(nal, [0x67, 66, 0, 30, 0xdd, 0xe4]);
        let sps = Sps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height), (16, 16));
    }

    #[test]
    fn unknown_profile_is_invalid() {
        // The issue's random "SPS" had profile 21.
        for profile in [0, 21, 65, 67, 101, 255] {
            assert_eq!(
                invalid(&nal_with(profile, 30, MINIMAL)),
                "unknown profile_idc"
            );
        }
        for profile in [66, 77, 88] {
            Sps::parse(&nal_with(profile, 30, MINIMAL)).unwrap();
        }
    }

    #[test]
    fn unknown_level_is_invalid() {
        for level in [0, 1, 8, 14, 15, 23, 33, 63, 158, 255] {
            assert_eq!(invalid(&nal_with(66, level, MINIMAL)), "unknown level_idc");
        }
        for level in [9, 10, 11, 13, 20, 31, 42, 52, 62] {
            Sps::parse(&nal_with(66, level, MINIMAL)).unwrap();
        }
    }

    #[test]
    fn high_profile_fields_out_of_range_are_invalid() {
        // High: chroma_format_idc 4 (ue 00101).
        assert_eq!(
            invalid(&nal_with(100, 40, "1 00101")),
            "chroma_format_idc above 3"
        );
        // chroma_format_idc 1, bit_depth_luma_minus8 7 (ue 0001000): 15 bits.
        assert_eq!(
            invalid(&nal_with(100, 40, "1 010 0001000")),
            "bit_depth_luma_minus8 above 6"
        );
        // luma 8, chroma_minus8 7.
        assert_eq!(
            invalid(&nal_with(100, 40, "1 010 1 0001000")),
            "bit_depth_chroma_minus8 above 6"
        );
        // The same fields in range, no scaling matrix, then the minimal rest: valid.
        let sps = Sps::parse(&nal_with(
            100,
            40,
            "1 010 00111 00111 0 0 1 011 1 0 1 1 1 1 0 0 1",
        ))
        .unwrap();
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (14, 14));
    }

    #[test]
    fn frame_num_and_poc_fields_out_of_range_are_invalid() {
        // log2_max_frame_num_minus4 13 (ue 0001110).
        assert_eq!(
            invalid(&nal_from_bits("1 0001110")),
            "log2_max_frame_num_minus4 above 12"
        );
        // pic_order_cnt_type 3 (ue 00100).
        assert_eq!(
            invalid(&nal_from_bits("1 1 00100")),
            "pic_order_cnt_type above 2"
        );
        // pic_order_cnt_type 0, log2_max_pic_order_cnt_lsb_minus4 13.
        assert_eq!(
            invalid(&nal_from_bits("1 1 1 0001110")),
            "log2_max_pic_order_cnt_lsb_minus4 above 12"
        );
        // max_num_ref_frames 17 (ue 000010010).
        assert_eq!(
            invalid(&nal_from_bits("1 1 011 000010010")),
            "max_num_ref_frames above 16"
        );
    }

    #[test]
    fn pictures_beyond_level_6_2_are_invalid() {
        // Width 1056 MBs (minus1 1055: ue 0000000000 10000100000).
        assert_eq!(
            invalid(&nal_from_bits("1 1 011 1 0 000000000010000100000")),
            "picture too wide"
        );
        // Height 1056 MBs.
        assert_eq!(
            invalid(&nal_from_bits("1 1 011 1 0 1 000000000010000100000")),
            "picture too tall"
        );
        // 528 map units of field pairs (frame_mbs_only 0, mbaff 0, direct_8x8 1): 1056 MBs.
        assert_eq!(
            invalid(&nal_from_bits("1 1 011 1 0 1 000000000 1000010000 0 0 1")),
            "picture too tall"
        );
        // 1055 x 133 MBs = 140315 > 139264 (minus1 1054: 0000000000 10000011111; 132: 0000000 10000101).
        let wide = "1 1 011 1 0 000000000010000011111";
        assert_eq!(
            invalid(&nal_from_bits(&format!("{wide} 000000010000101 1 1 0 0 1"))),
            "picture larger than level 6.2 allows"
        );
        // 1055 x 132 = 139260 fits (height minus1 131: 0000000 10000100).
        let sps = Sps::parse(&nal_with(
            66,
            62,
            &format!("{wide} 000000010000100 1 1 0 0 1"),
        ))
        .unwrap();
        assert_eq!((sps.width, sps.height), (16880, 2112));
    }

    #[test]
    fn field_coding_needs_direct_8x8_inference() {
        // frame_mbs_only 0, mb_adaptive 0, direct_8x8_inference 0.
        assert_eq!(
            invalid(&nal_from_bits("1 1 011 1 0 1 1 0 0 0 0 0 1")),
            "direct_8x8_inference_flag is 0 with frame_mbs_only_flag 0"
        );
        Sps::parse(&nal_from_bits("1 1 011 1 0 1 1 0 0 1 0 0 1")).unwrap();
    }

    #[test]
    fn vui_timing_with_a_zero_is_invalid() {
        // VUI: no aspect ratio, overscan, signal type or chroma location; timing present.
        let vui = |tick: u32, scale: u32| {
            format!("1 1 011 1 0 1 1 1 1 0 1 0 0 0 0 1 {tick:032b} {scale:032b} 1 0 0 0 0 1")
        };
        assert_eq!(
            invalid(&nal_from_bits(&vui(0, 50))),
            "num_units_in_tick is 0"
        );
        assert_eq!(invalid(&nal_from_bits(&vui(1, 0))), "time_scale is 0");
        let sps = Sps::parse(&nal_from_bits(&vui(1, 50))).unwrap();
        assert_eq!(sps.frame_rate(), Some((25, 1)));
    }

    #[test]
    fn anything_but_rbsp_trailing_bits_is_invalid() {
        // No stop bit: a 0 where it should be (and a 1 after it).
        assert_eq!(
            invalid(&nal_from_bits("1 1 011 1 0 1 1 1 1 0 0 0 1")),
            "data where rbsp_trailing_bits should be (no stop bit)"
        );
        // A 1 after the stop bit in the same byte.
        assert_eq!(
            invalid(&nal_from_bits("1 1 011 1 0 1 1 1 1 0 0 1 01")),
            "non-zero bits after the rbsp_stop_one_bit"
        );
        // A non-zero byte after it.
        let mut nal = nal_from_bits(MINIMAL);
        nal.extend_from_slice(&[0x00, 0x01]);
        assert_eq!(invalid(&nal), "data after the rbsp_stop_one_bit");
        // Missing entirely.
        assert_eq!(
            Sps::parse(&nal_from_bits("1 1 011 1 0 1 1 1 1 0 0")[..5]),
            Err(SpsError::Truncated)
        );
        // Zero bytes after it are zero bits (trailing_zero_8bits, cabac_zero_words with their
        // emulation prevention).
        let mut nal = nal_from_bits(MINIMAL);
        nal.extend_from_slice(&[0x00, 0x00, 0x03, 0x00, 0x00]);
        Sps::parse(&nal).unwrap();
    }

    #[test]
    fn the_issues_random_sps_is_invalid() {
        // Random bytes after a start code, as the garbage in the issue: with the header byte of
        // an SPS, 1000 random bytes never pass (profile, level, ranges, trailing bits).
        let mut state = 0x0123_4567_89ab_cdefu64;
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut nal = vec![0x67];
            for _ in 0..1000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                nal.push((state >> 24) as u8);
            }
            accepted += usize::from(Sps::parse(&nal).is_ok());
        }
        assert_eq!(accepted, 0);
    }

    fn pps_from_bits(bits: &str) -> Vec<u8> {
        let mut nal = nal_from_bits(bits);
        nal.splice(..4, [0x68]);
        nal
    }

    #[test]
    fn pps_ids() {
        assert_eq!(
            Pps::parse(&hex(BASELINE_640X480_PPS)),
            Ok(Pps {
                pic_parameter_set_id: 0,
                seq_parameter_set_id: 0,
                slice_fields: Some(PpsSliceFields {
                    bottom_field_pic_order_in_frame_present: false,
                    num_ref_idx_default_active_minus1: [2, 0],
                    weighted_pred: false,
                    weighted_bipred_idc: 0,
                    redundant_pic_cnt_present: false,
                }),
            })
        );
        // pps_id 255 (ue 00000000 100000000), sps_id 31 (ue 00000 100000), stop bit.
        assert_eq!(
            Pps::parse(&pps_from_bits("00000000 100000000 00000 100000 1")),
            Ok(Pps {
                pic_parameter_set_id: 255,
                seq_parameter_set_id: 31,
                slice_fields: None,
            })
        );
        // pps_id 256 (ue 00000000 100000001).
        assert_eq!(
            Pps::parse(&pps_from_bits("00000000 100000001")),
            Err(PpsError::Invalid("pic_parameter_set_id above 255"))
        );
        // pps_id 0, sps_id 32 (ue 00000 100001).
        assert_eq!(
            Pps::parse(&pps_from_bits("1 00000 100001")),
            Err(PpsError::Invalid("seq_parameter_set_id above 31"))
        );
        assert_eq!(Pps::parse(&[]), Err(PpsError::NotAPps));
        assert_eq!(Pps::parse(&hex(PI_SPS)), Err(PpsError::NotAPps));
        assert_eq!(Pps::parse(&[0x68]), Err(PpsError::Truncated));
        assert_eq!(
            Pps::parse(&[0xe8, 0xce]),
            Err(PpsError::Invalid("forbidden_zero_bit is set"))
        );
        assert!(PpsError::Truncated
            .to_string()
            .contains("picture parameter set"));
    }

    #[test]
    fn pps_slice_fields() {
        // x264 High (`-bf 3`), checked with trace_headers: CABAC, 3 and 1 default references,
        // weighted_pred_flag 1, weighted_bipred_idc 2.
        let pps = Pps::parse(&hex("68ebe3cb22c0")).unwrap();
        assert_eq!(
            pps.slice_fields,
            Some(PpsSliceFields {
                bottom_field_pic_order_in_frame_present: false,
                num_ref_idx_default_active_minus1: [2, 0],
                weighted_pred: true,
                weighted_bipred_idc: 2,
                redundant_pic_cnt_present: false,
            })
        );
        // Four slice groups with map type 6 (2 bits for each of 3 map units), bottom-field
        // deltas, redundant_pic_cnt.
        let fmo = "1 1 0 1 00100 00111 011 10 01 00 1 1 0 01 1 1 1 0 0 1";
        let pps = Pps::parse(&pps_from_bits(fmo)).unwrap();
        assert_eq!(
            pps.slice_fields,
            Some(PpsSliceFields {
                bottom_field_pic_order_in_frame_present: true,
                num_ref_idx_default_active_minus1: [0, 0],
                weighted_pred: false,
                weighted_bipred_idc: 1,
                redundant_pic_cnt_present: true,
            })
        );
        // weighted_bipred_idc 3, or a PPS that ends after its ids: accepted for its ids (the
        // sequence header needs no more), without slice fields.
        let pps = Pps::parse(&pps_from_bits("1 1 0 0 1 1 1 0 11 1 1 1 1 0 0")).unwrap();
        assert_eq!((pps.seq_parameter_set_id, pps.slice_fields), (0, None));
        assert_eq!(Pps::parse(&[0x68, 0xc0]).unwrap().slice_fields, None);
    }

    #[test]
    fn truncation_at_every_length_is_an_error_not_a_panic() {
        for vector in [
            PI_SPS,
            BASELINE_640X480_SPS,
            HIGH_720P30_SPS,
            INTERLACED_352X280_SPS,
            HIGH422_10BIT_SPS,
            HIGH444_LOSSLESS_SPS,
            CRAFTED_FULL_SPS,
            CRAFTED_444_SEPARATE_PLANES_SPS,
        ] {
            let nal = hex(vector);
            let full = Sps::parse(&nal).unwrap();
            for len in 0..nal.len() {
                match Sps::parse(&nal[..len]) {
                    Err(_) => {}
                    // Only a cut inside bitstream_restriction (or the trailing bits) may succeed.
                    Ok(sps) => {
                        let mut expected = full.clone();
                        if sps
                            .vui
                            .as_ref()
                            .is_some_and(|v| v.max_num_reorder_frames.is_none())
                        {
                            if let Some(vui) = expected.vui.as_mut() {
                                vui.max_num_reorder_frames = None;
                                vui.max_dec_frame_buffering = None;
                            }
                        }
                        assert_eq!(sps, expected, "{vector} cut at {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut data = Vec::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            data.clear();
            data.push(0x67);
            let mut word = state;
            for index in 0..len {
                if index % 8 == 0 {
                    word = word.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                }
                data.push((word >> ((index % 8) * 8)) as u8);
            }
            let _ = Sps::parse(&data);
        }
        // Flip every bit of real SPSs.
        for vector in [PI_SPS, CRAFTED_FULL_SPS, CRAFTED_444_SEPARATE_PLANES_SPS] {
            let nal = hex(vector);
            for bit in 8..nal.len() * 8 {
                let mut flipped = nal.clone();
                flipped[bit / 8] ^= 0x80 >> (bit % 8);
                let _ = Sps::parse(&flipped);
            }
        }
    }

    #[test]
    fn frame_rate_reduces_and_rejects_zeros() {
        let mut sps = Sps::parse(&hex(PI_SPS)).unwrap();
        let set = |sps: &mut Sps, n: u32, s: u32| {
            sps.vui.as_mut().unwrap().timing = Some(Timing {
                num_units_in_tick: n,
                time_scale: s,
                fixed_frame_rate: true,
            });
        };
        set(&mut sps, 1001, 60000);
        assert_eq!(sps.frame_rate(), Some((30000, 1001)));
        set(&mut sps, 0, 60);
        assert_eq!(sps.frame_rate(), None);
        set(&mut sps, 1, 0);
        assert_eq!(sps.frame_rate(), None);
        set(&mut sps, u32::MAX, u32::MAX);
        assert_eq!(sps.frame_rate(), Some((1, 2)));
        set(&mut sps, u32::MAX, 1);
        assert_eq!(sps.frame_rate(), None);
        sps.vui = None;
        assert_eq!(sps.frame_rate(), None);
    }

    #[test]
    fn display_texts() {
        assert!(SpsError::Invalid("x above 3")
            .to_string()
            .contains("x above 3"));
        assert!(SpsError::Truncated.to_string().contains("truncated"));
    }
}
