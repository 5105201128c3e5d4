//! The hardware parameter space (`snd_pcm_hw_params`) as values, and the negotiation that
//! narrows it to one capture configuration.
//!
//! A device describes what it can do as a space: a mask per enumerated parameter (access, format,
//! subformat) and an interval per numeric one (channels, rate, period size, periods, ...), tied
//! together by the driver's rules. `SNDRV_PCM_IOCTL_HW_REFINE` narrows a space to what the device
//! can do within it, and fails with EINVAL when nothing is left. [`negotiate`] asks one question
//! at a time on a copy ("can it do S16_LE?", "48000 Hz?") and keeps each answer it can use, in the
//! order alsa-lib's `snd_pcm_hw_params_set_*` calls would be made; then `HW_PARAMS` fixes what
//! remains. The device is reached only through a `refine` callback, so the negotiation is tested
//! here against simulated devices.

use std::fmt;

use nix::errno::Errno;

use super::convert::SampleFormat;
use super::sys;

/// The sample rates the encoder takes, in the order v4l2rtmp prefers them.
pub const STANDARD_RATES: [u32; 5] = [48000, 44100, 32000, 22050, 16000];

/// A range of values of one numeric parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub min: u32,
    pub max: u32,
    /// `min` itself is not in the range.
    pub open_min: bool,
    /// `max` itself is not in the range.
    pub open_max: bool,
    /// Only integers (always so for the parameters v4l2rtmp reads).
    pub integer: bool,
    pub empty: bool,
}

impl Interval {
    /// Everything: what `HW_REFINE` starts from.
    pub const ANY: Interval = Interval {
        min: 0,
        max: u32::MAX,
        open_min: false,
        open_max: false,
        integer: false,
        empty: false,
    };

    /// Exactly `value`.
    pub fn single(value: u32) -> Interval {
        Interval {
            min: value,
            max: value,
            open_min: false,
            open_max: false,
            integer: true,
            empty: false,
        }
    }

    pub fn from_raw(raw: &sys::snd_interval) -> Interval {
        Interval {
            min: raw.min,
            max: raw.max,
            open_min: raw.flags & sys::INTERVAL_OPENMIN != 0,
            open_max: raw.flags & sys::INTERVAL_OPENMAX != 0,
            integer: raw.flags & sys::INTERVAL_INTEGER != 0,
            empty: raw.flags & sys::INTERVAL_EMPTY != 0,
        }
    }

    pub fn to_raw(self) -> sys::snd_interval {
        let flag = |set: bool, bit: u32| if set { bit } else { 0 };
        sys::snd_interval {
            min: self.min,
            max: self.max,
            flags: flag(self.open_min, sys::INTERVAL_OPENMIN)
                | flag(self.open_max, sys::INTERVAL_OPENMAX)
                | flag(self.integer, sys::INTERVAL_INTEGER)
                | flag(self.empty, sys::INTERVAL_EMPTY),
        }
    }

    /// The smallest integer in the range (`None` when empty).
    pub fn lowest(&self) -> Option<u32> {
        let low = if self.open_min {
            self.min.checked_add(1)?
        } else {
            self.min
        };
        (!self.empty && low <= self.highest_bound()).then_some(low)
    }

    /// The largest integer in the range (`None` when empty).
    pub fn highest(&self) -> Option<u32> {
        let high = self.highest_bound();
        let low = self.min.saturating_add(u32::from(self.open_min));
        (!self.empty && (low <= high) && !(self.open_max && self.max == 0)).then_some(high)
    }

    fn highest_bound(&self) -> u32 {
        if self.open_max {
            self.max.saturating_sub(1)
        } else {
            self.max
        }
    }

    pub fn contains(&self, value: u32) -> bool {
        matches!((self.lowest(), self.highest()), (Some(low), Some(high)) if low <= value && value <= high)
    }

    /// The one integer in the range, if there is exactly one.
    pub fn only(&self) -> Option<u32> {
        match (self.lowest(), self.highest()) {
            (Some(low), Some(high)) if low == high => Some(low),
            _ => None,
        }
    }

    /// The integer of the range nearest to `value`.
    pub fn nearest(&self, value: u32) -> Option<u32> {
        Some(value.clamp(self.lowest()?, self.highest()?))
    }
}

impl fmt::Display for Interval {
    /// `1`, `1-2`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.lowest(), self.highest()) {
            (Some(low), Some(high)) if low == high => write!(f, "{low}"),
            (Some(low), Some(high)) => write!(f, "{low}-{high}"),
            _ => f.write_str("none"),
        }
    }
}

/// A configuration space: the `snd_pcm_hw_params` that HW_REFINE and HW_PARAMS take.
#[derive(Clone, Copy, Debug)]
pub struct HwParams {
    raw: sys::snd_pcm_hw_params,
}

/// The masked parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskParam {
    Access = sys::SNDRV_PCM_HW_PARAM_ACCESS as isize,
    Format = sys::SNDRV_PCM_HW_PARAM_FORMAT as isize,
    Subformat = sys::SNDRV_PCM_HW_PARAM_SUBFORMAT as isize,
}

/// The interval parameters v4l2rtmp sets or reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntervalParam {
    SampleBits = sys::SNDRV_PCM_HW_PARAM_SAMPLE_BITS as isize,
    FrameBits = sys::SNDRV_PCM_HW_PARAM_FRAME_BITS as isize,
    Channels = sys::SNDRV_PCM_HW_PARAM_CHANNELS as isize,
    Rate = sys::SNDRV_PCM_HW_PARAM_RATE as isize,
    PeriodSize = sys::SNDRV_PCM_HW_PARAM_PERIOD_SIZE as isize,
    Periods = sys::SNDRV_PCM_HW_PARAM_PERIODS as isize,
    BufferSize = sys::SNDRV_PCM_HW_PARAM_BUFFER_SIZE as isize,
}

impl Default for HwParams {
    fn default() -> Self {
        HwParams::any()
    }
}

impl HwParams {
    /// The whole space: every mask bit set, every interval unbounded, every parameter to be
    /// refined (as `snd_pcm_hw_params_any` and tinyalsa's `param_init` start).
    pub fn any() -> HwParams {
        let mut raw: sys::snd_pcm_hw_params = sys::zeroed();
        for mask in raw.masks.iter_mut() {
            mask.bits = [u32::MAX; sys::SNDRV_MASK_MAX / 32];
        }
        for interval in raw.intervals.iter_mut() {
            *interval = Interval::ANY.to_raw();
        }
        raw.rmask = u32::MAX;
        raw.info = u32::MAX;
        HwParams { raw }
    }

    pub fn raw(&self) -> &sys::snd_pcm_hw_params {
        &self.raw
    }

    pub fn raw_mut(&mut self) -> &mut sys::snd_pcm_hw_params {
        &mut self.raw
    }

    /// Asks the kernel to refine every parameter again (after a change).
    pub fn refine_all(&mut self) {
        self.raw.rmask = u32::MAX;
        self.raw.cmask = 0;
    }

    fn mask_bits(&self, param: MaskParam) -> &[u32; 8] {
        &self.raw.masks[param as usize - sys::SNDRV_PCM_HW_PARAM_FIRST_MASK].bits
    }

    /// Whether `value` is in the mask of `param`.
    pub fn mask_has(&self, param: MaskParam, value: u32) -> bool {
        let bits = self.mask_bits(param);
        let word = (value / 32) as usize;
        word < bits.len() && bits[word] & (1 << (value % 32)) != 0
    }

    /// The values in the mask of `param` that the protocol defines, ascending (the kernel
    /// leaves the bits past the last format set).
    pub fn mask_values(&self, param: MaskParam) -> impl Iterator<Item = u32> + '_ {
        let last = match param {
            MaskParam::Access => sys::SNDRV_PCM_ACCESS_LAST,
            MaskParam::Format => sys::SNDRV_PCM_FORMAT_LAST,
            MaskParam::Subformat => sys::SNDRV_PCM_SUBFORMAT_LAST,
        };
        (0..=last).filter(move |&v| self.mask_has(param, v))
    }

    /// Narrows the mask of `param` to `value` alone.
    pub fn set_mask(&mut self, param: MaskParam, value: u32) {
        let bits = &mut self.raw.masks[param as usize - sys::SNDRV_PCM_HW_PARAM_FIRST_MASK].bits;
        *bits = [0; 8];
        if let Some(word) = bits.get_mut((value / 32) as usize) {
            *word = 1 << (value % 32);
        }
    }

    pub fn interval(&self, param: IntervalParam) -> Interval {
        Interval::from_raw(
            &self.raw.intervals[param as usize - sys::SNDRV_PCM_HW_PARAM_FIRST_INTERVAL],
        )
    }

    pub fn set_interval(&mut self, param: IntervalParam, interval: Interval) {
        self.raw.intervals[param as usize - sys::SNDRV_PCM_HW_PARAM_FIRST_INTERVAL] =
            interval.to_raw();
    }

    /// The device formats in the space that v4l2rtmp reads, in its order of preference.
    pub fn sample_formats(&self) -> impl Iterator<Item = SampleFormat> + '_ {
        SampleFormat::PREFERENCE
            .into_iter()
            .filter(|f| self.mask_has(MaskParam::Format, f.raw()))
    }
}

/// What the caller asks of a capture device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// 1 or 2; `None`: what the device gives (mono when it can).
    pub channels: Option<u32>,
    /// One of [`STANDARD_RATES`]; `None`: the first of them the device takes.
    pub rate: Option<u32>,
    /// Frames per period (an interrupt, a wake-up); the device may give a divisor or a multiple.
    pub period_frames: u32,
    /// Periods in the buffer.
    pub periods: u32,
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted {
            channels: None,
            rate: None,
            period_frames: 1024,
            periods: 8,
        }
    }
}

/// The configuration negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub format: SampleFormat,
    /// Channels the device delivers.
    pub device_channels: u32,
    /// Channels the caller gets after conversion (the requested count, or the device's).
    pub output_channels: u32,
    pub rate: u32,
    pub period_frames: u32,
    pub buffer_frames: u32,
}

impl fmt::Display for Negotiated {
    /// `S16_LE, 2 channels (as 1), 48000 Hz, period 1024 frames, buffer 8192 frames`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {} channel", self.format, self.device_channels)?;
        if self.device_channels != 1 {
            f.write_str("s")?;
        }
        if self.output_channels != self.device_channels {
            write!(f, " (as {})", self.output_channels)?;
        }
        write!(
            f,
            ", {} Hz, period {} frames, buffer {} frames",
            self.rate, self.period_frames, self.buffer_frames
        )
    }
}

/// Why a device cannot be configured as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The device cannot be read with interleaved `read` (READI_FRAMES).
    NoInterleavedAccess,
    /// None of S16_LE, S32_LE, S24_LE, S24_3LE; the formats it has.
    NoUsableFormat(Vec<String>),
    /// Neither 1 nor 2 channels (with the format chosen); what it offers.
    NoUsableChannels(Interval),
    /// The rate asked for is not one the device takes; the standard ones it takes.
    RateNotOffered { wanted: u32, offered: Vec<u32> },
    /// None of the standard rates; the range it offers.
    NoStandardRate(Interval),
    /// HW_PARAMS refused the configuration or left a parameter undecided.
    Rejected(&'static str),
    /// The device failed (not EINVAL): unplugged, busy, in a wrong state.
    Device(Errno),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoInterleavedAccess => {
                f.write_str("it cannot be read with interleaved access (RW_INTERLEAVED)")
            }
            Refusal::NoUsableFormat(offered) => write!(
                f,
                "it offers no sample format v4l2rtmp reads (S16_LE, S32_LE, S24_LE, S24_3LE), \
                 only {}",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ),
            Refusal::NoUsableChannels(offered) => {
                write!(
                    f,
                    "it records {offered} channels, and v4l2rtmp takes 1 or 2"
                )
            }
            Refusal::RateNotOffered { wanted, offered } => {
                write!(f, "it does not record at {wanted} Hz; ")?;
                write_rates(f, offered)
            }
            Refusal::NoStandardRate(offered) => write!(
                f,
                "it records at {offered} Hz, none of the rates the encoder takes ({})",
                rate_list(&STANDARD_RATES)
            ),
            Refusal::Rejected(what) => write!(f, "it refused the configuration ({what})"),
            Refusal::Device(errno) => write!(f, "{}", std::io::Error::from(*errno)),
        }
    }
}

fn write_rates(f: &mut fmt::Formatter<'_>, rates: &[u32]) -> fmt::Result {
    if rates.is_empty() {
        write!(
            f,
            "it takes none of the encoder's rates ({})",
            rate_list(&STANDARD_RATES)
        )
    } else {
        write!(f, "it takes {}", rate_list(rates))
    }
}

/// `48000, 44100 Hz`.
pub fn rate_list(rates: &[u32]) -> String {
    let text: Vec<String> = rates.iter().map(u32::to_string).collect();
    format!("{} Hz", text.join(", "))
}

/// Narrows `space` (already refined once by the device) to one configuration and returns it
/// with the parameters HW_PARAMS should be given. `refine` is HW_REFINE on the device.
pub fn negotiate(
    refine: &mut impl FnMut(&mut HwParams) -> Result<(), Errno>,
    space: &HwParams,
    wanted: &Wanted,
) -> Result<(HwParams, Negotiated), Refusal> {
    let mut space = *space;
    // `attempt` refines a copy with one more choice made: Some(narrowed) if the device can.
    let mut attempt =
        |space: &HwParams, choose: &dyn Fn(&mut HwParams)| -> Result<Option<HwParams>, Refusal> {
            let mut trial = *space;
            choose(&mut trial);
            trial.refine_all();
            match refine(&mut trial) {
                Ok(()) => Ok(Some(trial)),
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(None),
                Err(e) => Err(Refusal::Device(e)),
            }
        };

    space = attempt(&space, &|p| {
        p.set_mask(MaskParam::Access, sys::SNDRV_PCM_ACCESS_RW_INTERLEAVED)
    })?
    .ok_or(Refusal::NoInterleavedAccess)?;
    space = attempt(&space, &|p| {
        p.set_mask(MaskParam::Subformat, sys::SNDRV_PCM_SUBFORMAT_STD)
    })?
    .unwrap_or(space);

    let mut chosen_format = None;
    for format in space.sample_formats().collect::<Vec<_>>() {
        if let Some(narrowed) = attempt(&space, &|p| p.set_mask(MaskParam::Format, format.raw()))? {
            space = narrowed;
            chosen_format = Some(format);
            break;
        }
    }
    let format = chosen_format.ok_or_else(|| {
        Refusal::NoUsableFormat(
            space
                .mask_values(MaskParam::Format)
                .map(format_name)
                .collect(),
        )
    })?;

    let channels_offered = space.interval(IntervalParam::Channels);
    let channel_order: &[u32] = match wanted.channels {
        Some(2) => &[2, 1],
        _ => &[1, 2],
    };
    let mut device_channels = None;
    for &channels in channel_order {
        if let Some(narrowed) = attempt(&space, &|p| {
            p.set_interval(IntervalParam::Channels, Interval::single(channels))
        })? {
            space = narrowed;
            device_channels = Some(channels);
            break;
        }
    }
    let device_channels = device_channels.ok_or(Refusal::NoUsableChannels(channels_offered))?;

    let rates_offered = space.interval(IntervalParam::Rate);
    let rate = match wanted.rate {
        Some(rate) => {
            match attempt(&space, &|p| {
                p.set_interval(IntervalParam::Rate, Interval::single(rate))
            })? {
                Some(narrowed) => {
                    space = narrowed;
                    rate
                }
                None => {
                    let mut offered = Vec::new();
                    for standard in STANDARD_RATES {
                        if attempt(&space, &|p| {
                            p.set_interval(IntervalParam::Rate, Interval::single(standard))
                        })?
                        .is_some()
                        {
                            offered.push(standard);
                        }
                    }
                    return Err(Refusal::RateNotOffered {
                        wanted: rate,
                        offered,
                    });
                }
            }
        }
        None => {
            let mut chosen = None;
            for standard in STANDARD_RATES {
                if let Some(narrowed) = attempt(&space, &|p| {
                    p.set_interval(IntervalParam::Rate, Interval::single(standard))
                })? {
                    space = narrowed;
                    chosen = Some(standard);
                    break;
                }
            }
            chosen.ok_or(Refusal::NoStandardRate(rates_offered))?
        }
    };

    // The period: the size asked for, else a divisor or multiple of it, else the nearest.
    let period = wanted.period_frames.max(1);
    let mut candidates = vec![
        period,
        period / 2,
        period * 2,
        period / 4,
        period * 4,
        period / 8,
    ];
    if let Some(nearest) = space.interval(IntervalParam::PeriodSize).nearest(period) {
        candidates.push(nearest);
    }
    for frames in candidates.into_iter().filter(|&f| f > 0) {
        if let Some(narrowed) = attempt(&space, &|p| {
            p.set_interval(IntervalParam::PeriodSize, Interval::single(frames))
        })? {
            space = narrowed;
            break;
        }
    }
    // The buffer: the periods asked for, else more, else fewer (at least 2), else the nearest.
    let periods = wanted.periods.max(2);
    let mut candidates = vec![
        periods,
        periods * 2,
        periods + periods / 2,
        periods / 2,
        4,
        3,
        2,
    ];
    if let Some(nearest) = space.interval(IntervalParam::Periods).nearest(periods) {
        candidates.push(nearest);
    }
    for count in candidates.into_iter().filter(|&c| c >= 2) {
        if let Some(narrowed) = attempt(&space, &|p| {
            p.set_interval(IntervalParam::Periods, Interval::single(count))
        })? {
            space = narrowed;
            break;
        }
    }
    // The kernel's HW_PARAMS picks what is still open (its `snd_pcm_hw_params_choose`); the
    // caller reads the result back with `negotiated_from`.
    let negotiated = Negotiated {
        format,
        device_channels,
        output_channels: wanted.channels.unwrap_or(device_channels),
        rate,
        period_frames: space
            .interval(IntervalParam::PeriodSize)
            .lowest()
            .unwrap_or(0),
        buffer_frames: space
            .interval(IntervalParam::BufferSize)
            .lowest()
            .unwrap_or(0),
    };
    Ok((space, negotiated))
}

/// What HW_PARAMS settled on, read back from the parameters it returned; `Err` names a parameter
/// left undecided or changed from what was negotiated.
pub fn negotiated_from(params: &HwParams, asked: &Negotiated) -> Result<Negotiated, Refusal> {
    let only = |param: IntervalParam, what: &'static str| {
        params.interval(param).only().ok_or(Refusal::Rejected(what))
    };
    let format = params
        .sample_formats()
        .next()
        .filter(|&f| f == asked.format && params.mask_values(MaskParam::Format).count() == 1)
        .ok_or(Refusal::Rejected("format"))?;
    let device_channels = only(IntervalParam::Channels, "channels")?;
    let rate = only(IntervalParam::Rate, "rate")?;
    if device_channels != asked.device_channels {
        return Err(Refusal::Rejected("channels"));
    }
    if rate != asked.rate {
        return Err(Refusal::Rejected("rate"));
    }
    let period_frames = only(IntervalParam::PeriodSize, "period size")?;
    let buffer_frames = only(IntervalParam::BufferSize, "buffer size")?;
    if period_frames == 0 || buffer_frames < period_frames {
        return Err(Refusal::Rejected("period and buffer size"));
    }
    Ok(Negotiated {
        format,
        device_channels,
        output_channels: asked.output_channels,
        rate,
        period_frames,
        buffer_frames,
    })
}

/// ALSA's name of a `SNDRV_PCM_FORMAT_*` number (`S16_LE`), or `format N`.
pub fn format_name(raw: u32) -> String {
    const NAMES: [&str; 53] = [
        "S8",
        "U8",
        "S16_LE",
        "S16_BE",
        "U16_LE",
        "U16_BE",
        "S24_LE",
        "S24_BE",
        "U24_LE",
        "U24_BE",
        "S32_LE",
        "S32_BE",
        "U32_LE",
        "U32_BE",
        "FLOAT_LE",
        "FLOAT_BE",
        "FLOAT64_LE",
        "FLOAT64_BE",
        "IEC958_SUBFRAME_LE",
        "IEC958_SUBFRAME_BE",
        "MU_LAW",
        "A_LAW",
        "IMA_ADPCM",
        "MPEG",
        "GSM",
        "S20_LE",
        "S20_BE",
        "U20_LE",
        "U20_BE",
        "",
        "",
        "SPECIAL",
        "S24_3LE",
        "S24_3BE",
        "U24_3LE",
        "U24_3BE",
        "S20_3LE",
        "S20_3BE",
        "U20_3LE",
        "U20_3BE",
        "S18_3LE",
        "S18_3BE",
        "U18_3LE",
        "U18_3BE",
        "G723_24",
        "G723_24_1B",
        "G723_40",
        "G723_40_1B",
        "DSD_U8",
        "DSD_U16_LE",
        "DSD_U32_LE",
        "DSD_U16_BE",
        "DSD_U32_BE",
    ];
    match NAMES.get(raw as usize) {
        Some(name) if !name.is_empty() => (*name).to_string(),
        _ => format!("format {raw}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated device: the formats, channel range, rates (a list: the rule a USB device's
    /// driver has) and period range it takes. `refine` narrows like the kernel (for what the
    /// negotiation looks at) and fails with EINVAL when something becomes empty.
    struct FakeDevice {
        formats: Vec<u32>,
        interleaved: bool,
        channels: (u32, u32),
        rates: Vec<u32>,
        period: (u32, u32),
        periods: (u32, u32),
        refines: usize,
    }

    impl FakeDevice {
        fn usb_mic() -> FakeDevice {
            FakeDevice {
                formats: vec![sys::SNDRV_PCM_FORMAT_S16_LE],
                interleaved: true,
                channels: (1, 1),
                rates: vec![44100, 48000],
                period: (64, 16384),
                periods: (2, 1024),
                refines: 0,
            }
        }

        fn refine(&mut self, p: &mut HwParams) -> Result<(), Errno> {
            self.refines += 1;
            p.raw.masks[0].bits[0] &= if self.interleaved { 1 << 3 } else { 1 };
            let no_access = p.raw.masks[0].bits[0] == 0;
            let formats = &mut p.raw.masks[1].bits;
            let mut device = [0u32; 8];
            for &f in &self.formats {
                device[(f / 32) as usize] |= 1 << (f % 32);
            }
            for (word, allowed) in formats.iter_mut().zip(device) {
                *word &= allowed;
            }
            if no_access || formats.iter().all(|&w| w == 0) {
                return Err(Errno::EINVAL);
            }
            let clamp = |p: &mut HwParams, param: IntervalParam, (lo, hi): (u32, u32)| {
                let mut i = p.interval(param);
                i.min = i.min.max(lo);
                i.max = i.max.min(hi);
                i.integer = true;
                p.set_interval(param, i);
                i.lowest().is_some()
            };
            let ok = clamp(p, IntervalParam::Channels, self.channels)
                && clamp(p, IntervalParam::PeriodSize, self.period)
                && clamp(p, IntervalParam::Periods, self.periods);
            if !ok {
                return Err(Errno::EINVAL);
            }
            let rate = p.interval(IntervalParam::Rate);
            let inside: Vec<u32> = self
                .rates
                .iter()
                .copied()
                .filter(|&r| rate.contains(r))
                .collect();
            let (Some(&lo), Some(&hi)) = (inside.iter().min(), inside.iter().max()) else {
                return Err(Errno::EINVAL);
            };
            p.set_interval(
                IntervalParam::Rate,
                Interval {
                    min: lo,
                    max: hi,
                    ..Interval::single(lo)
                },
            );
            let period = p.interval(IntervalParam::PeriodSize);
            let periods = p.interval(IntervalParam::Periods);
            p.set_interval(
                IntervalParam::BufferSize,
                Interval {
                    min: period.min * periods.min,
                    max: period.max.saturating_mul(periods.max),
                    ..Interval::single(0)
                },
            );
            Ok(())
        }

        fn negotiate(&mut self, wanted: &Wanted) -> Result<Negotiated, Refusal> {
            let mut space = HwParams::any();
            self.refine(&mut space).map_err(Refusal::Device)?;
            negotiate(&mut |p| self.refine(p), &space, wanted).map(|(_, n)| n)
        }
    }

    #[test]
    fn intervals_know_their_integers() {
        let closed = Interval {
            min: 1,
            max: 2,
            ..Interval::single(1)
        };
        assert_eq!((closed.lowest(), closed.highest()), (Some(1), Some(2)));
        assert!(closed.contains(2) && !closed.contains(3) && !closed.contains(0));
        assert_eq!(closed.only(), None);
        assert_eq!(closed.to_string(), "1-2");
        let open = Interval {
            open_min: true,
            open_max: true,
            min: 1,
            max: 3,
            ..closed
        };
        assert_eq!(open.only(), Some(2));
        assert_eq!(open.to_string(), "2");
        let nothing = Interval {
            open_min: true,
            min: 4,
            max: 4,
            ..closed
        };
        assert_eq!((nothing.lowest(), nothing.highest()), (None, None));
        assert_eq!(nothing.to_string(), "none");
        let empty = Interval {
            empty: true,
            ..closed
        };
        assert!(!empty.contains(1));
        assert_eq!(Interval::ANY.nearest(1024), Some(1024));
        assert_eq!(closed.nearest(1024), Some(2));
        let raw = open.to_raw();
        assert_eq!(
            raw.flags,
            sys::INTERVAL_OPENMIN | sys::INTERVAL_OPENMAX | sys::INTERVAL_INTEGER
        );
        assert_eq!(Interval::from_raw(&raw), open);
        let extreme = Interval {
            min: u32::MAX,
            max: u32::MAX,
            open_min: true,
            ..closed
        };
        assert_eq!(extreme.lowest(), None);
        let zero = Interval {
            min: 0,
            max: 0,
            open_max: true,
            ..closed
        };
        assert_eq!(zero.highest(), None);
    }

    #[test]
    fn masks_set_and_list_values() {
        let mut p = HwParams::any();
        assert!(p.mask_has(MaskParam::Format, sys::SNDRV_PCM_FORMAT_S24_3LE));
        assert_eq!(p.mask_values(MaskParam::Access).count(), 5);
        assert_eq!(p.mask_values(MaskParam::Format).count(), 53);
        p.set_mask(MaskParam::Format, sys::SNDRV_PCM_FORMAT_S24_3LE);
        assert_eq!(
            p.mask_values(MaskParam::Format).collect::<Vec<_>>(),
            [sys::SNDRV_PCM_FORMAT_S24_3LE]
        );
        assert_eq!(
            p.sample_formats().collect::<Vec<_>>(),
            [SampleFormat::S24_3Le]
        );
        assert!(!p.mask_has(MaskParam::Format, 999));
        p.set_mask(MaskParam::Access, 999);
        assert_eq!(p.mask_values(MaskParam::Access).count(), 0);
        assert_eq!(p.raw().rmask, u32::MAX);
        assert_eq!(format_name(2), "S16_LE");
        assert_eq!(format_name(32), "S24_3LE");
        assert_eq!(format_name(29), "format 29");
        assert_eq!(format_name(200), "format 200");
    }

    #[test]
    fn a_mono_usb_microphone_gives_what_it_has() {
        let mut mic = FakeDevice::usb_mic();
        let got = mic.negotiate(&Wanted::default()).unwrap();
        assert_eq!(got.format, SampleFormat::S16Le);
        assert_eq!((got.device_channels, got.output_channels), (1, 1));
        assert_eq!(got.rate, 48000);
        assert_eq!((got.period_frames, got.buffer_frames), (1024, 8192));
        assert_eq!(
            got.to_string(),
            "S16_LE, 1 channel, 48000 Hz, period 1024 frames, buffer 8192 frames"
        );
        // Stereo asked of a mono microphone: mono from the device, duplicated.
        let got = mic
            .negotiate(&Wanted {
                channels: Some(2),
                rate: Some(44100),
                ..Wanted::default()
            })
            .unwrap();
        assert_eq!(
            (got.device_channels, got.output_channels, got.rate),
            (1, 2, 44100)
        );
        assert_eq!(
            got.to_string(),
            "S16_LE, 1 channel (as 2), 44100 Hz, period 1024 frames, buffer 8192 frames"
        );
    }

    #[test]
    fn formats_channels_and_periods_fall_back() {
        let mut dev = FakeDevice {
            formats: vec![sys::SNDRV_PCM_FORMAT_S24_3LE, sys::SNDRV_PCM_FORMAT_S32_LE],
            channels: (2, 2),
            rates: vec![16000, 96000],
            period: (100, 600),
            periods: (2, 4),
            ..FakeDevice::usb_mic()
        };
        let got = dev
            .negotiate(&Wanted {
                channels: Some(1),
                ..Wanted::default()
            })
            .unwrap();
        assert_eq!(got.format, SampleFormat::S32Le);
        assert_eq!((got.device_channels, got.output_channels), (2, 1));
        assert_eq!(got.rate, 16000);
        // 1024 does not fit, nor 2048 or 4096; 512 (a divisor) does.
        assert_eq!(got.period_frames, 512);
        // 8 periods do not fit, nor 16 or 12; 4 do.
        assert_eq!(got.buffer_frames, 2048);
        let mut odd = FakeDevice {
            period: (1500, 1600),
            periods: (3, 3),
            ..FakeDevice::usb_mic()
        };
        let got = odd.negotiate(&Wanted::default()).unwrap();
        assert_eq!((got.period_frames, got.buffer_frames), (1500, 4500));
    }

    #[test]
    fn refusals_say_what_the_device_offers() {
        let mut float_only = FakeDevice {
            formats: vec![sys::SNDRV_PCM_FORMAT_FLOAT_LE, sys::SNDRV_PCM_FORMAT_U8],
            ..FakeDevice::usb_mic()
        };
        let refusal = float_only.negotiate(&Wanted::default()).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::NoUsableFormat(vec!["U8".into(), "FLOAT_LE".into()])
        );
        assert!(refusal.to_string().ends_with("only U8, FLOAT_LE"));
        let mut surround = FakeDevice {
            channels: (4, 8),
            ..FakeDevice::usb_mic()
        };
        assert_eq!(
            surround
                .negotiate(&Wanted::default())
                .unwrap_err()
                .to_string(),
            "it records 4-8 channels, and v4l2rtmp takes 1 or 2"
        );
        let mut mic = FakeDevice::usb_mic();
        let refusal = mic
            .negotiate(&Wanted {
                rate: Some(32000),
                ..Wanted::default()
            })
            .unwrap_err();
        assert_eq!(
            refusal,
            Refusal::RateNotOffered {
                wanted: 32000,
                offered: vec![48000, 44100]
            }
        );
        assert_eq!(
            refusal.to_string(),
            "it does not record at 32000 Hz; it takes 48000, 44100 Hz"
        );
        let mut odd_rates = FakeDevice {
            rates: vec![8000, 96000],
            ..FakeDevice::usb_mic()
        };
        assert_eq!(
            odd_rates
                .negotiate(&Wanted::default())
                .unwrap_err()
                .to_string(),
            "it records at 8000-96000 Hz, none of the rates the encoder takes \
             (48000, 44100, 32000, 22050, 16000 Hz)"
        );
        let mut mmap_only = FakeDevice {
            interleaved: false,
            ..FakeDevice::usb_mic()
        };
        assert_eq!(
            mmap_only.negotiate(&Wanted::default()).unwrap_err(),
            Refusal::NoInterleavedAccess
        );
    }

    #[test]
    fn a_failing_device_stops_the_negotiation() {
        let space = HwParams::any();
        let mut calls = 0;
        let refusal = negotiate(
            &mut |_| {
                calls += 1;
                Err(Errno::ENODEV)
            },
            &space,
            &Wanted::default(),
        )
        .unwrap_err();
        assert_eq!(refusal, Refusal::Device(Errno::ENODEV));
        assert_eq!(calls, 1);
    }

    #[test]
    fn the_result_of_hw_params_is_read_back() {
        let mut mic = FakeDevice::usb_mic();
        let mut space = HwParams::any();
        mic.refine(&mut space).unwrap();
        let (mut chosen, asked) =
            negotiate(&mut |p| mic.refine(p), &space, &Wanted::default()).unwrap();
        assert!(mic.refines > 5);
        // What HW_PARAMS would return: every interval one value.
        chosen.set_interval(IntervalParam::BufferSize, Interval::single(8192));
        assert_eq!(negotiated_from(&chosen, &asked), Ok(asked));
        chosen.set_interval(
            IntervalParam::BufferSize,
            Interval {
                min: 2048,
                max: 8192,
                ..Interval::single(0)
            },
        );
        assert_eq!(
            negotiated_from(&chosen, &asked),
            Err(Refusal::Rejected("buffer size"))
        );
        chosen.set_interval(IntervalParam::Rate, Interval::single(44100));
        assert_eq!(
            negotiated_from(&chosen, &asked),
            Err(Refusal::Rejected("rate"))
        );
    }
}
