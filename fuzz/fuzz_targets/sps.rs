//! Fuzzes the SPS and PPS parsers: any bytes must give an `Sps` / `Pps` or an error, never a
//! panic, and a parsed SPS must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::media::sps::{Pps, Sps};

fuzz_target!(|data: &[u8]| {
    if let Ok(pps) = Pps::parse(data) {
        assert!(pps.pic_parameter_set_id <= 255 && pps.seq_parameter_set_id <= 31);
    }
    if let Ok(sps) = Sps::parse(data) {
        assert!(sps.width >= 1 && sps.width <= sps.coded_width);
        assert!(sps.height >= 1 && sps.height <= sps.coded_height);
        if let Some(timing) = sps.vui.as_ref().and_then(|vui| vui.timing) {
            assert!(timing.num_units_in_tick > 0 && timing.time_scale > 0);
        }
        let _ = sps.frame_rate();
        let mut record = Vec::new();
        let _ = v4l2rtmp::media::avc::write_avc_decoder_configuration_record(
            data,
            &sps,
            &[0x68, 0xce, 0x38, 0x80],
            &mut record,
        );
    }
});
