//! The start of an H.264 slice header (7.3.3), up to `dec_ref_pic_marking()`: what picture order
//! counts (8.2.1) need to know about a picture.
//!
//! Invariants:
//! - The input is the escaped slice NAL unit (type 1 or 5) as it appears in the stream; the SPS
//!   bit reader drops emulation-prevention bytes as it goes and reads only as far as the header
//!   reaches, so parsing copies nothing, allocates nothing, and costs the same for a 1-byte and
//!   a 1-megabyte slice.
//! - The header's layout depends on the SPS and PPS in force; both are given, and a slice that
//!   names another PPS is refused ([`SliceError::OtherPps`]) rather than misread.
//! - Every value is range-checked against H.264's limits, and every loop (reference list
//!   modifications, weights, memory management operations) is bounded by them, so no input
//!   panics or loops for long: bad input gives a [`SliceError`].
//! - Only the fields picture order counts use are kept; the rest are read and dropped.

use std::fmt;

use crate::media::sps::{BitReader, PicOrderCntType, Pps, PpsSliceFields, Sps, SpsError};

/// nal_unit_type of a slice of a non-IDR picture.
const NAL_SLICE: u8 = 1;
/// nal_unit_type of a slice of an IDR picture.
const NAL_IDR: u8 = 5;

/// Reference list modification commands per list: at most num_ref_idx_active (32) and the end.
const MAX_LIST_MODIFICATIONS: u32 = 33;
/// Memory management operations per picture: each of the 32 references once, the long-term
/// limit, the current picture, a reset, and the end; more is no stream a decoder takes.
const MAX_MMCO: u32 = 66;

/// slice_type modulo 5 (Table 7-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceType {
    P,
    B,
    I,
    Sp,
    Si,
}

/// What a slice header says about its picture's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceHeader {
    /// nal_ref_idc from the NAL header: 0 for a picture nothing refers to.
    pub nal_ref_idc: u8,
    /// An IDR picture (nal_unit_type 5): picture order counts start again.
    pub idr: bool,
    pub first_mb_in_slice: u32,
    pub slice_type: SliceType,
    pub pic_parameter_set_id: u32,
    /// colour_plane_id, 0..=2, for 4:4:4 with separate colour planes; else 0.
    pub colour_plane_id: u8,
    pub frame_num: u32,
    /// field_pic_flag: this picture is one field.
    pub field_pic: bool,
    /// bottom_field_flag: that field is the bottom one.
    pub bottom_field: bool,
    /// idr_pic_id (0 unless `idr`).
    pub idr_pic_id: u32,
    /// pic_order_cnt_lsb (type 0), else 0.
    pub pic_order_cnt_lsb: u32,
    /// delta_pic_order_cnt_bottom (type 0, frames, when the PPS says so), else 0.
    pub delta_pic_order_cnt_bottom: i32,
    /// delta_pic_order_cnt[0..1] (type 1, unless the SPS says they are always 0), else 0.
    pub delta_pic_order_cnt: [i32; 2],
    /// A memory_management_control_operation 5 in dec_ref_pic_marking(): every reference is
    /// dropped and picture order counts start again after this picture, as after an IDR.
    pub mmco5: bool,
}

/// Why a slice header could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SliceError {
    /// Not a slice NAL unit of type 1 or 5, or forbidden_zero_bit set.
    NotASlice,
    /// The NAL unit ended inside the header.
    Truncated,
    /// A syntax element has a value H.264 does not allow; the text names it.
    Invalid(&'static str),
    /// The slice refers to another PPS than the one given.
    OtherPps(u32),
    /// The PPS given ended or went out of range before the fields slice headers depend on.
    PpsIncomplete,
}

impl fmt::Display for SliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceError::NotASlice => f.write_str("not an H.264 slice NAL unit"),
            SliceError::Truncated => f.write_str("H.264 slice header is truncated"),
            SliceError::Invalid(what) => write!(f, "invalid H.264 slice header: {what}"),
            SliceError::OtherPps(id) => {
                write!(
                    f,
                    "the slice refers to PPS {id}, which is not the one in force"
                )
            }
            SliceError::PpsIncomplete => {
                f.write_str("the PPS in force lacks the fields slice headers depend on")
            }
        }
    }
}

impl std::error::Error for SliceError {}

impl From<SpsError> for SliceError {
    fn from(error: SpsError) -> Self {
        match error {
            SpsError::Invalid(what) => SliceError::Invalid(what),
            SpsError::Truncated | SpsError::NotAnSps => SliceError::Truncated,
        }
    }
}

impl SliceHeader {
    /// Reads the header of `nal`, a whole slice NAL unit (header byte first, still escaped), as
    /// laid out by `sps` and `pps`.
    pub fn parse(nal: &[u8], sps: &Sps, pps: &Pps) -> Result<SliceHeader, SliceError> {
        let (&header, payload) = nal.split_first().ok_or(SliceError::NotASlice)?;
        let nal_type = header & 0x1f;
        if header & 0x80 != 0 || (nal_type != NAL_SLICE && nal_type != NAL_IDR) {
            return Err(SliceError::NotASlice);
        }
        let nal_ref_idc = (header >> 5) & 3;
        let idr = nal_type == NAL_IDR;
        if idr && nal_ref_idc == 0 {
            return Err(SliceError::Invalid("an IDR slice with nal_ref_idc 0"));
        }
        let mut bits = BitReader::new(payload);
        let first_mb_in_slice = bits.ue_max(139_263, "first_mb_in_slice beyond level 6.2")?;
        let slice_type = match bits.ue_max(9, "slice_type above 9")? % 5 {
            0 => SliceType::P,
            1 => SliceType::B,
            2 => SliceType::I,
            3 => SliceType::Sp,
            _ => SliceType::Si,
        };
        if idr && !matches!(slice_type, SliceType::I | SliceType::Si) {
            return Err(SliceError::Invalid("an IDR slice that is not I or SI"));
        }
        let pic_parameter_set_id = bits.ue_max(255, "pic_parameter_set_id above 255")?;
        if pic_parameter_set_id != pps.pic_parameter_set_id {
            return Err(SliceError::OtherPps(pic_parameter_set_id));
        }
        let fields: PpsSliceFields = pps.slice_fields.ok_or(SliceError::PpsIncomplete)?;
        let mut colour_plane_id = 0;
        if sps.separate_colour_plane {
            colour_plane_id = bits.bits(2)? as u8;
            if colour_plane_id > 2 {
                return Err(SliceError::Invalid("colour_plane_id is 3"));
            }
        }
        let frame_num = bits.bits(u32::from(sps.log2_max_frame_num))?;
        if idr && frame_num != 0 {
            return Err(SliceError::Invalid(
                "an IDR slice with frame_num other than 0",
            ));
        }
        let (mut field_pic, mut bottom_field) = (false, false);
        if !sps.frame_mbs_only {
            field_pic = bits.flag()?;
            if field_pic {
                bottom_field = bits.flag()?;
            }
        }
        let idr_pic_id = if idr {
            bits.ue_max(65_535, "idr_pic_id above 65535")?
        } else {
            0
        };
        let mut pic_order_cnt_lsb = 0;
        let mut delta_pic_order_cnt_bottom = 0;
        let mut delta_pic_order_cnt = [0; 2];
        let bottom_present = fields.bottom_field_pic_order_in_frame_present && !field_pic;
        match &sps.pic_order_cnt {
            PicOrderCntType::Lsb { log2_max_lsb } => {
                pic_order_cnt_lsb = bits.bits(u32::from(*log2_max_lsb))?;
                if bottom_present {
                    delta_pic_order_cnt_bottom = bits.se()?;
                }
            }
            PicOrderCntType::Cycle(cycle) if !cycle.delta_pic_order_always_zero => {
                delta_pic_order_cnt[0] = bits.se()?;
                if bottom_present {
                    delta_pic_order_cnt[1] = bits.se()?;
                }
            }
            _ => {}
        }
        let mut slice = SliceHeader {
            nal_ref_idc,
            idr,
            first_mb_in_slice,
            slice_type,
            pic_parameter_set_id,
            colour_plane_id,
            frame_num,
            field_pic,
            bottom_field,
            idr_pic_id,
            pic_order_cnt_lsb,
            delta_pic_order_cnt_bottom,
            delta_pic_order_cnt,
            mmco5: false,
        };
        // Only a reference picture that is not an IDR can carry memory management operations;
        // everything up to them is read to get there.
        if nal_ref_idc != 0 && !idr {
            slice.mmco5 = read_to_mmco5(&mut bits, sps, &fields, &slice)?;
        }
        Ok(slice)
    }
}

/// Reads from redundant_pic_cnt to the end of dec_ref_pic_marking() of a non-IDR reference
/// picture; whether it holds memory_management_control_operation 5.
fn read_to_mmco5(
    bits: &mut BitReader<'_>,
    sps: &Sps,
    pps: &PpsSliceFields,
    slice: &SliceHeader,
) -> Result<bool, SliceError> {
    if pps.redundant_pic_cnt_present {
        bits.ue_max(127, "redundant_pic_cnt above 127")?;
    }
    let b = slice.slice_type == SliceType::B;
    let inter = matches!(
        slice.slice_type,
        SliceType::P | SliceType::Sp | SliceType::B
    );
    if b {
        let _direct_spatial_mv_pred = bits.flag()?;
    }
    let [mut l0, mut l1] = pps.num_ref_idx_default_active_minus1.map(u32::from);
    if inter && bits.flag()? {
        // num_ref_idx_active_override_flag: up to 32 references for fields, 16 for frames.
        let max = if slice.field_pic { 31 } else { 15 };
        l0 = bits.ue_max(max, "num_ref_idx_l0_active_minus1 out of range")?;
        if b {
            l1 = bits.ue_max(max, "num_ref_idx_l1_active_minus1 out of range")?;
        }
    }
    // ref_pic_list_modification() (7.3.3.1); MVC's variant (NAL type 20) never reaches here.
    if slice.slice_type != SliceType::I && slice.slice_type != SliceType::Si {
        skip_list_modification(bits)?;
        if b {
            skip_list_modification(bits)?;
        }
    }
    let weighted = (pps.weighted_pred && matches!(slice.slice_type, SliceType::P | SliceType::Sp))
        || (pps.weighted_bipred_idc == 1 && b);
    if weighted {
        let chroma = !sps.separate_colour_plane && sps.chroma_format_idc != 0;
        skip_pred_weight_table(bits, chroma, l0, b.then_some(l1))?;
    }
    // dec_ref_pic_marking() (7.3.3.3) of a non-IDR picture.
    if !bits.flag()? {
        return Ok(false);
    }
    let mut mmco5 = false;
    for _ in 0..MAX_MMCO {
        match bits.ue_max(6, "memory_management_control_operation above 6")? {
            0 => return Ok(mmco5),
            1 => {
                bits.ue()?;
            }
            2 => {
                bits.ue_max(31, "long_term_pic_num above 31")?;
            }
            3 => {
                bits.ue()?;
                bits.ue_max(15, "long_term_frame_idx above 15")?;
            }
            4 => {
                bits.ue_max(16, "max_long_term_frame_idx_plus1 above 16")?;
            }
            5 => mmco5 = true,
            _ => {
                bits.ue_max(15, "long_term_frame_idx above 15")?;
            }
        }
    }
    Err(SliceError::Invalid(
        "too many memory_management_control_operations",
    ))
}

/// One list's ref_pic_list_modification_flag and commands.
fn skip_list_modification(bits: &mut BitReader<'_>) -> Result<(), SliceError> {
    if !bits.flag()? {
        return Ok(());
    }
    for _ in 0..MAX_LIST_MODIFICATIONS {
        match bits.ue_max(5, "modification_of_pic_nums_idc above 5")? {
            3 => return Ok(()),
            0..=2 => {
                bits.ue()?;
            }
            // 4 and 5 are MVC's (view indices), which a plain slice must not use.
            _ => {
                return Err(SliceError::Invalid(
                    "modification_of_pic_nums_idc 4 or 5 outside MVC",
                ))
            }
        }
    }
    Err(SliceError::Invalid("too many reference list modifications"))
}

/// pred_weight_table() (7.3.3.2) with `l0_minus1 + 1` (and for B slices `l1_minus1 + 1`) entries.
fn skip_pred_weight_table(
    bits: &mut BitReader<'_>,
    chroma: bool,
    l0_minus1: u32,
    l1_minus1: Option<u32>,
) -> Result<(), SliceError> {
    bits.ue_max(7, "luma_log2_weight_denom above 7")?;
    if chroma {
        bits.ue_max(7, "chroma_log2_weight_denom above 7")?;
    }
    for count in [Some(l0_minus1), l1_minus1].into_iter().flatten() {
        for _ in 0..=count {
            if bits.flag()? {
                bits.se()?;
                bits.se()?;
            }
            if chroma && bits.flag()? {
                for _ in 0..4 {
                    bits.se()?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::testing::hex;

    use crate::media::testing::escaped_nal as nal;

    /// x264's High SPS and PPS (pic_order_cnt_type 0, 6-bit lsb; weighted_pred_flag 1,
    /// weighted_bipred_idc 2) of `-bf 3` at 160x96, and its first five slices cut after the
    /// header, as in `media::poc`'s tests.
    const X264_SPS: &str = "6764000bacd9428db011000003000100000300320f142996";
    const X264_PPS: &str = "68ebe3cb22c0";
    const X264_SLICES: [&str; 6] = [
        "658884017f",
        "419a246c57b3",
        "419e427885bf",
        "019e617442df",
        "419a6849a84168994c0aff",
        "419e8645112c25",
    ];

    fn x264() -> (Sps, Pps) {
        (
            Sps::parse(&hex(X264_SPS)).unwrap(),
            Pps::parse(&hex(X264_PPS)).unwrap(),
        )
    }

    fn header(
        nal_ref_idc: u8,
        idr: bool,
        slice_type: SliceType,
        frame_num: u32,
        lsb: u32,
    ) -> SliceHeader {
        SliceHeader {
            nal_ref_idc,
            idr,
            first_mb_in_slice: 0,
            slice_type,
            pic_parameter_set_id: 0,
            colour_plane_id: 0,
            frame_num,
            field_pic: false,
            bottom_field: false,
            idr_pic_id: 0,
            pic_order_cnt_lsb: lsb,
            delta_pic_order_cnt_bottom: 0,
            delta_pic_order_cnt: [0, 0],
            mmco5: false,
        }
    }

    #[test]
    fn x264_slices_read_as_trace_headers_reads_them() {
        // Field values from `ffmpeg -bsf:v trace_headers`.
        let (sps, pps) = x264();
        let parsed: Vec<SliceHeader> = X264_SLICES
            .iter()
            .map(|s| SliceHeader::parse(&hex(s), &sps, &pps).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [
                header(3, true, SliceType::I, 0, 0),
                // P with num_ref_idx_active_override and a pred_weight_table before the marking.
                header(2, false, SliceType::P, 1, 8),
                header(2, false, SliceType::B, 2, 4),
                header(0, false, SliceType::B, 3, 2),
                header(2, false, SliceType::P, 3, 16),
                // Adaptive marking with two MMCO 1: read through, no MMCO 5.
                header(2, false, SliceType::B, 4, 12),
            ]
        );
    }

    #[test]
    fn interlaced_slices_carry_field_flags_and_the_bottom_delta() {
        // x264 -flags +ildct+ilme (MBAFF): frame pictures with delta_pic_order_cnt_bottom -1.
        let sps = Sps::parse(&hex("67640015acd1029b6022000003000200000300643e285224")).unwrap();
        let pps = Pps::parse(&hex("68fba3cb22c0")).unwrap();
        assert!(
            pps.slice_fields
                .unwrap()
                .bottom_field_pic_order_in_frame_present
        );
        let idr = SliceHeader::parse(&hex("6588821608ff"), &sps, &pps).unwrap();
        assert_eq!(
            (
                idr.field_pic,
                idr.pic_order_cnt_lsb,
                idr.delta_pic_order_cnt_bottom
            ),
            (false, 1, -1)
        );
        // A hand-made bottom field (field_pic_flag 1, bottom_field_flag 1, 5-bit lsb 3): no
        // bottom delta.
        let field =
            SliceHeader::parse(&nal(0x01, "1 00111 1 0011 1 1 00011 1 1 0"), &sps, &pps).unwrap();
        assert_eq!(
            (field.field_pic, field.bottom_field, field.pic_order_cnt_lsb),
            (true, true, 3)
        );
        assert_eq!(field.delta_pic_order_cnt_bottom, 0);
    }

    /// pps_id 0, sps_id 0, CABAC, one slice group, 2 and 1 default references, weighted_pred_flag
    /// (or not), qp/qs/chroma offsets 0, deblocking control, no redundant count.
    fn weighted_pps() -> Pps {
        Pps::parse(&nal(0x68, "1 1 1 0 1 010 1 1 00 1 1 1 1 0 0")).unwrap()
    }

    fn plain_pps() -> Pps {
        Pps::parse(&nal(0x68, "1 1 1 0 1 010 1 0 00 1 1 1 1 0 0")).unwrap()
    }

    #[test]
    fn mmco5_is_found_behind_list_modifications_and_weights() {
        let (sps, _) = x264();
        let pps = weighted_pps();
        // P, ref, frame_num 5, lsb 10; no override; l0 modification (idc 0, diff 0; idc 3);
        // pred_weight_table for 2 references: denominators 0, entry 0 with luma (2, 1) and chroma
        // (4 zeros), entry 1 with neither; marking: adaptive, MMCO 1 (diff 0), MMCO 5, end.
        let start = "1 00110 1 0101 001010 0 1 1 1 00100 1 1 1 00100 010 1 1 1 1 1 0 0";
        let slice = SliceHeader::parse(&nal(0x41, &format!("{start} 1 010 1 00110 1")), &sps, &pps)
            .unwrap();
        assert!(slice.mmco5);
        assert_eq!((slice.frame_num, slice.pic_order_cnt_lsb), (5, 10));
        // The same without MMCO 5.
        let bits = format!("{start} 1 010 1 1");
        let bits = bits.as_str();
        assert!(
            !SliceHeader::parse(&nal(0x41, bits), &sps, &pps)
                .unwrap()
                .mmco5
        );
        // Cut short anywhere inside, it is truncated, never misread.
        let full = nal(0x41, bits);
        for len in 0..full.len() - 1 {
            assert!(
                SliceHeader::parse(&full[..len], &sps, &pps).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn bad_slices_are_errors() {
        let (sps, pps) = x264();
        let parse = |nal: &[u8]| SliceHeader::parse(nal, &sps, &pps);
        assert_eq!(parse(&[]), Err(SliceError::NotASlice));
        assert_eq!(parse(&hex(X264_SPS)), Err(SliceError::NotASlice));
        assert_eq!(parse(&[0xe5, 0x88]), Err(SliceError::NotASlice));
        assert_eq!(parse(&[0x65]), Err(SliceError::Truncated));
        // An IDR that nothing refers to, or that is a P slice, or has a frame_num.
        assert!(matches!(
            parse(&[0x05, 0x88, 0x84]),
            Err(SliceError::Invalid(_))
        ));
        assert!(matches!(
            parse(&nal(0x65, "1 00110 1 0000 1 000000")),
            Err(SliceError::Invalid(_))
        ));
        assert!(matches!(
            parse(&nal(0x65, "1 0001000 1 0001 1 000000")),
            Err(SliceError::Invalid(_))
        ));
        // slice_type 10 (ue 0001011).
        assert_eq!(
            parse(&nal(0x41, "1 0001011")),
            Err(SliceError::Invalid("slice_type above 9"))
        );
        // pps_id 1 when the PPS in force is 0.
        assert_eq!(
            parse(&nal(0x41, "1 00110 010")),
            Err(SliceError::OtherPps(1))
        );
        // A PPS without its slice fields.
        let short = Pps::parse(&[0x68, 0xc0]).unwrap();
        assert_eq!(short.slice_fields, None);
        assert_eq!(
            SliceHeader::parse(&hex(X264_SLICES[1]), &sps, &short),
            Err(SliceError::PpsIncomplete)
        );
        // 70 MMCO 1 without an end.
        let endless = format!("1 00110 1 0101 001010 0 0 1 {}", "010 1 ".repeat(70));
        assert_eq!(
            SliceHeader::parse(&nal(0x41, &endless), &sps, &plain_pps()),
            Err(SliceError::Invalid(
                "too many memory_management_control_operations"
            ))
        );
        assert!(SliceError::OtherPps(3).to_string().contains("PPS 3"));
    }

    #[test]
    fn separate_colour_planes_carry_colour_plane_id() {
        // The crafted 4:4:4 SPS of sps.rs (sps_id 31, 16-bit frame_num and lsb).
        let sps = Sps::parse(&hex(
            "67f400330404b7a6318c6318c6318c6318c07fffffffffffffffcb6db6d8d8d08c589b5220",
        ))
        .unwrap();
        assert!(sps.separate_colour_plane);
        // pps_id 0, sps_id 31 (ue 00000 100000), then the rest of a plain PPS.
        let pps = Pps::parse(&nal(0x68, "1 00000100000 0 0 1 1 1 0 00 1 1 1 1 0 0")).unwrap();
        let bits = format!("1 0001000 1 10 {} 1 {}", "0".repeat(16), "0000000000000110");
        let slice = SliceHeader::parse(&nal(0x65, &bits), &sps, &pps).unwrap();
        assert_eq!((slice.colour_plane_id, slice.pic_order_cnt_lsb), (2, 6));
        let bits = format!("1 0001000 1 11 {}", "0".repeat(16));
        assert_eq!(
            SliceHeader::parse(&nal(0x65, &bits), &sps, &pps),
            Err(SliceError::Invalid("colour_plane_id is 3"))
        );
    }

    mod properties {
        use super::*;
        use crate::media::poc::{DisplayOrder, PocState};
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn slice_sps_and_pps_parsing_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..64),
                header in prop_oneof![Just(0x01u8), Just(0x21), Just(0x41), Just(0x65), any::<u8>()],
            ) {
                let _ = Sps::parse(&bytes);
                let _ = Pps::parse(&bytes);
                let mut nal = vec![header];
                nal.extend_from_slice(&bytes);
                let _ = Sps::parse(&[&[0x67u8][..], &bytes].concat());
                let _ = Pps::parse(&[&[0x68u8][..], &bytes].concat());
                let (sps, pps) = x264();
                let mut state = PocState::new();
                let mut order = DisplayOrder::for_sps(&sps);
                if let Ok(slice) = SliceHeader::parse(&nal, &sps, &pps) {
                    let picture = state.picture(&sps, &slice);
                    prop_assert!(order.next(picture) <= crate::media::poc::MAX_OFFSET);
                }
            }

            #[test]
            fn x264_slices_with_flipped_bits_never_panic(
                index in 0usize..6,
                flips in proptest::collection::vec(any::<usize>(), 1..4),
            ) {
                let (sps, pps) = x264();
                let mut nal = hex(X264_SLICES[index]);
                for flip in flips {
                    let bit = flip % (nal.len() * 8);
                    nal[bit / 8] ^= 0x80 >> (bit % 8);
                }
                let mut state = PocState::new();
                if let Ok(slice) = SliceHeader::parse(&nal, &sps, &pps) {
                    let _ = state.picture(&sps, &slice);
                }
            }
        }
    }
}
