//! Fuzzes the AMF0 decoder with arbitrary bytes, as a hostile server could send them.
//!
//! Checks, for every input:
//! - `decode_all` and `decode` never panic, and `decode` never claims more bytes than it had;
//! - decoding is a fixpoint after one round: if `decode` succeeds, re-encoding the value gives
//!   bytes that decode, in full, to a value that re-encodes to the very same bytes.
//!
//! Equality is checked on encoded bytes rather than with `==` on values, and only from the
//! second round on, because the first round legitimately changes things: `NaN != NaN` under
//! `PartialEq` (the bytes keep the bit pattern), typed objects lose their class name, long
//! strings, XML documents and short strings all become `Value::String` (re-encoded by length),
//! the unsupported marker becomes undefined, ECMA array count hints are replaced by the real
//! count, and lossy UTF-8 decoding can grow a property name past 65535 bytes, which encoding
//! then truncates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::rtmp::amf0;

fuzz_target!(|data: &[u8]| {
    let _ = amf0::decode_all(data);

    if let Ok((value, used)) = amf0::decode(data) {
        assert!(
            used <= data.len(),
            "decode used {used} of {} bytes",
            data.len()
        );

        let mut first = Vec::new();
        value.encode(&mut first);
        let (again, used_again) = amf0::decode(&first).expect("a re-encoded value must decode");
        assert_eq!(
            used_again,
            first.len(),
            "re-encoded value not decoded in full"
        );

        let mut second = Vec::new();
        again.encode(&mut second);
        assert_eq!(first, second, "encode(decode(x)) is not a fixpoint");
    }
});
