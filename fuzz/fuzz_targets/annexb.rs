//! Fuzzes the Annex-B splitter: the input is fed to `AnnexBReader` in chunks whose sizes come
//! from the input itself, every access unit is drained (and checked for internal consistency),
//! then `split_nals` runs over the whole input and must find the same NAL units.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v4l2rtmp::media::annexb::{split_nals, AnnexBReader};

fuzz_target!(|data: &[u8]| {
    // First byte: chunk-size seed; second byte: small limit or a roomy one.
    let (seed, stream) = match data.split_first() {
        Some((&seed, rest)) => (seed, rest),
        None => return,
    };
    let small_limit = seed & 0x80 != 0;
    let mut reader = AnnexBReader::new(if small_limit { 64 } else { 1 << 20 });
    let mut from_reader: Vec<Vec<u8>> = Vec::new();
    let mut offset = 0;
    let mut step = 0usize;
    let mut overflowed = false;
    while offset < stream.len() {
        // Chunk sizes are taken from the data: the byte at a rotating position, plus the seed.
        let size_byte = stream[(offset + step) % stream.len()];
        let want = 1 + usize::from(size_byte ^ seed) % 97;
        step += 1;
        match reader.read_buf() {
            Ok(spare) => {
                assert!(!spare.is_empty());
                let n = want.min(spare.len()).min(stream.len() - offset);
                spare[..n].copy_from_slice(&stream[offset..offset + n]);
                reader.commit(n);
                offset += n;
            }
            Err(_) => overflowed = true,
        }
        while let Some(au) = reader.next_access_unit() {
            check(&au);
            from_reader.extend(au.nal_bytes().map(|(_, bytes)| bytes.to_vec()));
        }
    }
    reader.finish();
    while let Some(au) = reader.next_access_unit() {
        check(&au);
        from_reader.extend(au.nal_bytes().map(|(_, bytes)| bytes.to_vec()));
    }
    assert!(reader.next_access_unit().is_none());
    assert_eq!(reader.bytes_read(), stream.len() as u64);
    assert!(reader.skipped_bytes() <= reader.bytes_read());

    let mut nals = Vec::new();
    split_nals(stream, &mut nals);
    if !overflowed {
        assert_eq!(nals.len(), from_reader.len());
        for (nal, bytes) in nals.iter().zip(&from_reader) {
            assert_eq!(&stream[nal.start..nal.start + nal.len], bytes.as_slice());
        }
    }
});

fn check(au: &v4l2rtmp::media::annexb::AccessUnit<'_>) {
    assert!(!au.nals.is_empty());
    for (nal, bytes) in au.nal_bytes() {
        assert_eq!(bytes.len(), nal.len);
        assert!(!bytes.is_empty());
        assert_eq!(bytes[0] & 0x1f, nal.nal_type);
        assert_ne!(bytes[bytes.len() - 1], 0);
    }
    let _ = (au.is_idr(), au.has_vcl());
}
