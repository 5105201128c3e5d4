//! The encoders under test behind one call, and the WAV files they read: shared by the
//! benchmark tool (main.rs) and the size probe (bin/size_probe.rs).

use std::fs;

pub type Res<T> = Result<T, String>;

/// Encodes interleaved PCM to an ADTS stream with the named candidate (`fdk`, `fdk-ab`,
/// `rusty`, `syom`, `oxideav`), if its cargo feature is on.
pub fn encode(codec: &str, pcm: &Pcm, bitrate: u32) -> Res<Vec<u8>> {
    let _ = (pcm, bitrate);
    match codec {
        #[cfg(feature = "fdk")]
        "fdk" => fdk::encode(pcm, bitrate, false),
        #[cfg(feature = "fdk")]
        "fdk-ab" => fdk::encode(pcm, bitrate, true),
        #[cfg(feature = "rusty")]
        "rusty" => rusty::encode(pcm, bitrate),
        #[cfg(feature = "syom")]
        "syom" => syom_enc::encode(pcm, bitrate),
        #[cfg(feature = "oxideav")]
        "oxideav" => oxideav::encode(pcm, bitrate),
        _ => Err(format!(
            "codec {codec:?} is not built in (see the cargo features)"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// WAV in and out: PCM S16_LE or IEEE float, the fmt and data chunks, nothing else.

pub struct Pcm {
    pub rate: u32,
    pub channels: u16,
    /// Interleaved samples in [-1, 1).
    pub samples: Vec<f32>,
}

pub fn read_wav(path: &str) -> Res<Pcm> {
    let b = fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(format!("{path}: not a RIFF WAVE file"));
    }
    let (mut fmt, mut data) = (None, None);
    let mut at = 12;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &b[at + 8..(at + 8 + len).min(b.len())];
        match id {
            b"fmt " => fmt = Some(body),
            b"data" => data = Some(body),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    let (fmt, data) = match (fmt, data) {
        (Some(f), Some(d)) if f.len() >= 16 => (f, d),
        _ => return Err(format!("{path}: no fmt or data chunk")),
    };
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let mut tag = u16_at(0);
    if tag == 0xfffe && fmt.len() >= 26 {
        tag = u16_at(24); // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag
    }
    let channels = u16_at(2);
    let rate = u32::from_le_bytes(fmt[4..8].try_into().unwrap());
    let bits = u16_at(14);
    let samples = match (tag, bits) {
        (1, 16) => data
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
            .collect(),
        (3, 32) => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        _ => {
            return Err(format!(
                "{path}: format {tag}/{bits} bits: want S16_LE or float32"
            ))
        }
    };
    Ok(Pcm {
        rate,
        channels,
        samples,
    })
}

pub fn write_wav_s16(path: &str, rate: u32, samples: &[i16]) -> Res<()> {
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    let data_len = (samples.len() * 2) as u32;
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    fs::write(path, b).map_err(|e| format!("{path}: {e}"))
}

pub fn to_i16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// The 7-byte ADTS header (no CRC) for one AAC-LC raw data block of `payload` bytes.
#[cfg(feature = "rusty")]
pub fn adts_header(rate: u32, channels: u16, payload: usize) -> [u8; 7] {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let sfi = RATES.iter().position(|&r| r == rate).unwrap_or(3) as u8;
    let len = payload + 7;
    let ch = channels as u8;
    [
        0xff,
        0xf1,                              // MPEG-4, layer 0, no CRC
        (1 << 6) | (sfi << 2) | (ch >> 2), // profile LC (object type 2 - 1)
        ((ch & 3) << 6) | ((len >> 11) as u8 & 3),
        (len >> 3) as u8,
        ((len as u8 & 7) << 5) | 0x1f, // buffer fullness 0x7ff: VBR
        0xfc,
    ]
}

#[cfg(feature = "fdk")]
mod fdk {
    //! Fraunhofer FDK AAC through fdk-aac-sys's bindings: the calls a live encoder makes
    //! (one 1024-sample frame in, at most one ADTS frame out per call), then a flush.
    use super::{to_i16, Pcm, Res};
    use fdk_aac_sys as sys;
    use std::os::raw::{c_int, c_void};
    use std::ptr;

    fn check(what: &str, e: sys::AACENC_ERROR) -> Res<()> {
        if e == sys::AACENC_ERROR_AACENC_OK {
            Ok(())
        } else {
            Err(format!("fdk {what}: error {e:#x}"))
        }
    }

    pub fn encode(pcm: &Pcm, bitrate: u32, afterburner: bool) -> Res<Vec<u8>> {
        let ch = u32::from(pcm.channels);
        let mut h: sys::HANDLE_AACENCODER = ptr::null_mut();
        // SAFETY: the FDK API as documented in aacenc_lib.h: open, set parameters, one
        // all-null call to initialise, then encode calls with valid buffer descriptors.
        unsafe {
            check("open", sys::aacEncOpen(&mut h, 0x01, ch))?; // AAC module only
            let set = |p, v| check("set param", sys::aacEncoder_SetParam(h, p, v));
            set(sys::AACENC_PARAM_AACENC_AOT, 2)?; // AAC-LC
            set(sys::AACENC_PARAM_AACENC_SAMPLERATE, pcm.rate)?;
            set(sys::AACENC_PARAM_AACENC_CHANNELMODE, ch)?;
            set(sys::AACENC_PARAM_AACENC_BITRATEMODE, 0)?; // CBR
            set(sys::AACENC_PARAM_AACENC_BITRATE, bitrate)?;
            set(sys::AACENC_PARAM_AACENC_TRANSMUX, 2)?; // ADTS
            set(sys::AACENC_PARAM_AACENC_AFTERBURNER, u32::from(afterburner))?;
            check(
                "init",
                sys::aacEncEncode(h, ptr::null(), ptr::null(), ptr::null(), ptr::null_mut()),
            )?;
        }
        let input: Vec<i16> = pcm.samples.iter().map(|&x| to_i16(x)).collect();
        let frame = 1024 * pcm.channels as usize;
        let mut out = Vec::with_capacity(input.len() / 4);
        let mut obuf = vec![0u8; 8192];
        let mut at = 0;
        loop {
            let flush = at >= input.len();
            let n = if flush {
                0
            } else {
                frame.min(input.len() - at)
            };
            let mut in_ptr = input[at..].as_ptr() as *mut c_void;
            let mut in_id: c_int = sys::AACENC_BufferIdentifier_IN_AUDIO_DATA as c_int;
            let mut in_size: c_int = (n * 2) as c_int;
            let mut in_el: c_int = 2;
            let in_desc = sys::AACENC_BufDesc {
                numBufs: 1,
                bufs: &mut in_ptr,
                bufferIdentifiers: &mut in_id,
                bufSizes: &mut in_size,
                bufElSizes: &mut in_el,
            };
            let mut out_ptr = obuf.as_mut_ptr() as *mut c_void;
            let mut out_id: c_int = sys::AACENC_BufferIdentifier_OUT_BITSTREAM_DATA as c_int;
            let mut out_size: c_int = obuf.len() as c_int;
            let mut out_el: c_int = 1;
            let out_desc = sys::AACENC_BufDesc {
                numBufs: 1,
                bufs: &mut out_ptr,
                bufferIdentifiers: &mut out_id,
                bufSizes: &mut out_size,
                bufElSizes: &mut out_el,
            };
            // numInSamples -1 asks the encoder to flush what it holds.
            let in_args = sys::AACENC_InArgs {
                numInSamples: if flush { -1 } else { n as c_int },
                numAncBytes: 0,
            };
            // SAFETY: all-zero is a valid AACENC_OutArgs (plain integers).
            let mut out_args: sys::AACENC_OutArgs = unsafe { std::mem::zeroed() };
            // SAFETY: the descriptors point at live buffers of the sizes they state.
            let e = unsafe { sys::aacEncEncode(h, &in_desc, &out_desc, &in_args, &mut out_args) };
            if flush && e == sys::AACENC_ERROR_AACENC_ENCODE_EOF {
                break;
            }
            check("encode", e)?;
            out.extend_from_slice(&obuf[..out_args.numOutBytes as usize]);
            at += out_args.numInSamples as usize;
            if flush && out_args.numOutBytes == 0 {
                break;
            }
        }
        // SAFETY: the handle came from aacEncOpen and is closed once.
        unsafe { sys::aacEncClose(&mut h) };
        Ok(out)
    }
}

#[cfg(feature = "rusty")]
mod rusty {
    //! rusty_aac's encoder. Its API is offline: PCM is buffered by push_pcm and every frame is
    //! encoded by finish() (on worker threads); packets come out only after that.
    use super::{adts_header, Pcm, Res};
    use rusty_aac::{AacEncoder, AacEncoderConfig};

    pub fn encode(pcm: &Pcm, bitrate: u32) -> Res<Vec<u8>> {
        let mut enc = AacEncoder::new(AacEncoderConfig {
            bitrate_bps: bitrate,
            ..Default::default()
        });
        enc.push_pcm(&pcm.samples, pcm.channels, pcm.rate)
            .map_err(|e| format!("rusty: {e:?}"))?;
        enc.finish();
        let mut out = Vec::with_capacity(pcm.samples.len() / 4);
        while let Ok(p) = enc.next_packet() {
            out.extend_from_slice(&adts_header(pcm.rate, pcm.channels, p.data.len()));
            out.extend_from_slice(&p.data);
        }
        Ok(out)
    }
}

#[cfg(feature = "syom")]
mod syom_enc {
    //! syom's push encoder: planar f32 in any chunking, one ADTS frame out per 1024 samples
    //! through a callback; finish() codes the padded tail and drains the overlap.
    use super::{Pcm, Res};
    use syom::{EncodeOptions, Encoder};

    pub fn encode(pcm: &Pcm, bitrate: u32) -> Res<Vec<u8>> {
        if pcm.channels != 1 {
            return Err("syom: the benchmark feeds mono only".into());
        }
        let opts = EncodeOptions::adts().with_bitrate_bps(bitrate);
        let mut enc = Encoder::new(pcm.rate, 1, &opts).map_err(|e| format!("syom: {e}"))?;
        let mut out = Vec::with_capacity(pcm.samples.len() / 4);
        // The samples a capture period gives at a time, not whole frames.
        for chunk in pcm.samples.chunks(960) {
            enc.feed(&[chunk], |f| {
                out.extend_from_slice(f.au);
                Ok(())
            })
            .map_err(|e| format!("syom: {e}"))?;
        }
        enc.finish(|f| {
            out.extend_from_slice(f.au);
            Ok(())
        })
        .map_err(|e| format!("syom: {e}"))?;
        Ok(out)
    }
}

#[cfg(feature = "oxideav")]
mod oxideav {
    //! oxideav-aac's StreamEncoder: one 1024-sample frame of interleaved S16 in, one ADTS
    //! frame out; finish() codes a frame of silence to drain the overlap.
    use super::{to_i16, Pcm, Res};
    use oxideav_aac::encoder::{EncoderConfig, StreamEncoder};

    pub fn encode(pcm: &Pcm, bitrate: u32) -> Res<Vec<u8>> {
        let cfg = EncoderConfig {
            sample_rate: pcm.rate,
            channels: pcm.channels as u8,
            bitrate,
        };
        let mut enc = StreamEncoder::new(cfg).map_err(|e| format!("oxideav: {e:?}"))?;
        let input: Vec<i16> = pcm.samples.iter().map(|&x| to_i16(x)).collect();
        let mut out = Vec::with_capacity(input.len() / 4);
        for frame in input.chunks(1024 * pcm.channels as usize) {
            out.extend(
                enc.encode_frame(frame)
                    .map_err(|e| format!("oxideav: {e:?}"))?,
            );
        }
        out.extend(enc.finish().map_err(|e| format!("oxideav: {e:?}"))?);
        Ok(out)
    }
}
