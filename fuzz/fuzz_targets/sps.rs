//! Fuzzes the SPS parser: any bytes must give an `Sps` or an error, never a panic, and a parsed
//! SPS must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::media::sps::Sps;

fuzz_target!(|data: &[u8]| {
    if let Ok(sps) = Sps::parse(data) {
        assert!(sps.width >= 1 && sps.width <= sps.coded_width);
        assert!(sps.height >= 1 && sps.height <= sps.coded_height);
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
