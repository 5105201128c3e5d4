//! Fuzzes the mDNS response parser: any bytes must be taken or ignored, never a panic, and a taken
//! packet adds at most one address per record for the name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::net::mdns::{self, Lookup};

fuzz_target!(|data: &[u8]| {
    let mut lookup = Lookup::new("nvr.local").unwrap();
    if let Ok(count) = lookup.handle(data) {
        assert!(lookup.addresses().len() <= count);
    }
    let _ = mdns::parse_response(data, b"\x03NVR\x05local\x00");
});
