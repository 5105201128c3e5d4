//! Fuzzes slice headers, picture order counts and composition times: any bytes must give a
//! header or an error, never a panic, and composition offsets stay within their bounds.
//!
//! First byte: which SPS/PPS pair lays the headers out (x264 High with pic_order_cnt_type 0 and
//! weighted prediction, x264 interlaced with bottom-field deltas, a hand-made type 1, x264 without
//! B-frames: type 2) and whether the SPS's VUI reorder depth is used. The rest is a run of slice
//! NAL units, each preceded by its length byte, fed in order to one `PocState` and
//! `DisplayOrder`, as the muxer does. Then the whole input runs through `AvcMuxer` after the
//! pair's SPS and PPS, as an Annex-B stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::media::annexb::split_nals;
use v4l2rtmp::media::annexb::AccessUnit;
use v4l2rtmp::media::flv::{AvcMuxer, FrameDuration, Muxed};
use v4l2rtmp::media::poc::{DisplayOrder, PocState, MAX_DELAY, MAX_OFFSET};
use v4l2rtmp::media::slice::SliceHeader;
use v4l2rtmp::media::sps::{Pps, Sps};

const PAIRS: [(&[u8], &[u8]); 4] = [
    (
        &[
            0x67, 0x64, 0x00, 0x0b, 0xac, 0xd9, 0x42, 0x8d, 0xb0, 0x11, 0x00, 0x00, 0x03, 0x00,
            0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x14, 0x29, 0x96,
        ],
        &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0],
    ),
    (
        &[
            0x67, 0x64, 0x00, 0x15, 0xac, 0xd1, 0x02, 0x9b, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00,
            0x02, 0x00, 0x00, 0x03, 0x00, 0x64, 0x3e, 0x28, 0x52, 0x24,
        ],
        &[0x68, 0xfb, 0xa3, 0xcb, 0x22, 0xc0],
    ),
    // Main, pic_order_cnt_type 1 (offset_for_non_ref_pic -2, cycle [4]), no VUI; a plain PPS.
    (
        &[0x67, 0x4d, 0x00, 0x1e, 0xd0, 0xb4, 0x21, 0xbc, 0x80],
        &[0x68, 0xce, 0x3c, 0x80],
    ),
    (
        &[
            0x67, 0x64, 0x00, 0x0b, 0xac, 0xb2, 0x05, 0x1b, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00,
            0x02, 0x00, 0x00, 0x03, 0x00, 0x64, 0x1e, 0x28, 0x54, 0x90,
        ],
        &[0x68, 0xeb, 0xc3, 0xcb, 0x22, 0xc0],
    ),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (sps_nal, pps_nal) = PAIRS[usize::from(selector) % PAIRS.len()];
    let sps = Sps::parse(sps_nal).expect("a valid SPS");
    let pps = Pps::parse(pps_nal).expect("a valid PPS");
    let mut state = PocState::new();
    let mut order = if selector & 0x80 != 0 {
        DisplayOrder::for_sps(&sps)
    } else {
        DisplayOrder::new(None, false)
    };
    let mut input = rest;
    while let Some((&len, tail)) = input.split_first() {
        let len = usize::from(len).min(tail.len());
        let (nal, next) = tail.split_at(len);
        input = next;
        let offset = match SliceHeader::parse(nal, &sps, &pps) {
            Ok(header) => order.next(state.picture(&sps, &header)),
            Err(_) => order.unknown(nal.first().is_some_and(|h| h & 0x1f == 5)),
        };
        assert!(offset <= MAX_OFFSET);
        assert!(order.delay() <= MAX_DELAY);
    }

    // The muxer over the pair's parameter sets and the input as Annex-B.
    let mut stream = Vec::with_capacity(rest.len() + 64);
    for nal in [sps_nal, pps_nal] {
        stream.extend_from_slice(&[0, 0, 0, 1]);
        stream.extend_from_slice(nal);
    }
    stream.extend_from_slice(rest);
    let mut nals = Vec::new();
    split_nals(&stream, &mut nals);
    let mut muxer = AvcMuxer::new();
    // One access unit per NAL unit: each slice is a picture.
    for nal in &nals {
        let au = AccessUnit {
            data: &stream,
            nals: std::slice::from_ref(nal),
        };
        if let Ok(Muxed::Frame { .. }) = muxer.push(&au) {
            muxer.set_frame_duration(FrameDuration::from_rate(30000, 1001).unwrap());
            assert!(muxer.composition_time_ms() <= 0x7f_ffff);
        }
    }
});
