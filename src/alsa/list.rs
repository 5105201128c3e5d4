//! Capture devices for `v4l2rtmp devices`: every sound card's capture PCMs with the names to give
//! `--audio`, and what each offers (formats, rates, channels), read with HW_REFINE on an open of
//! the device. A device that cannot be opened (busy: another program records from it) is listed
//! with the reason. [`capture_devices`] returns the data, whose `Display` is the report.

use std::fmt;
use std::io::Write;

use super::ctl::{self, CardInfo, Control, PcmInfo};
use super::name::{CardRef, PcmName};
use super::params::{format_name, HwParams, Interval, IntervalParam, MaskParam, STANDARD_RATES};
use super::pcm::PcmDevice;
use super::SampleFormat;
use crate::error::{Error, Fault, Result};

/// One sound card and its capture devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardReport {
    pub card: CardInfo,
    /// Empty when the card has no capture device.
    pub devices: Vec<DeviceReport>,
    /// Why the card's devices could not be listed.
    pub error: Option<String>,
}

/// One capture PCM device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    pub device: u32,
    pub info: PcmInfo,
    /// What it offers, or why it could not be asked (busy, gone).
    pub offer: std::result::Result<Offer, String>,
}

/// What a capture device offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Every format, by ALSA's names.
    pub formats: Vec<String>,
    /// The formats v4l2rtmp reads, in its order of preference.
    pub usable_formats: Vec<SampleFormat>,
    pub rates: Interval,
    /// Which of [`STANDARD_RATES`] the device takes.
    pub standard_rates: Vec<u32>,
    pub channels: Interval,
}

/// Every card's capture devices, in card order.
pub fn capture_devices() -> Vec<CardReport> {
    ctl::card_indexes()
        .into_iter()
        .filter_map(|index| card_report(index).ok())
        .collect()
}

/// One card's capture devices.
pub fn card_report(index: u32) -> Result<CardReport> {
    let control = Control::open(index)?;
    let card = control.card_info()?;
    let mut report = CardReport {
        card,
        devices: Vec::new(),
        error: None,
    };
    let devices = match control.pcm_devices() {
        Ok(devices) => devices,
        Err(e) => {
            report.error = Some(e.to_string());
            return Ok(report);
        }
    };
    for device in devices {
        match control.capture_info(device) {
            Ok(Some(info)) => report.devices.push(DeviceReport {
                device,
                info,
                offer: offer(index, device).map_err(|e| e.message().to_string()),
            }),
            Ok(None) => {}
            Err(e) => report.error = Some(e.to_string()),
        }
    }
    Ok(report)
}

/// Opens the device and asks what it can do.
fn offer(card: u32, device: u32) -> Result<Offer> {
    let name = PcmName {
        card: CardRef::Index(card),
        device,
        subdevice: None,
    };
    let pcm = PcmDevice::open_name(&name, &PcmName::node(card, device))?;
    let space = pcm.space()?;
    let mut standard_rates = Vec::new();
    for rate in STANDARD_RATES {
        let mut trial = space;
        trial.set_interval(IntervalParam::Rate, Interval::single(rate));
        trial.refine_all();
        if pcm.refine(&mut trial).is_ok() {
            standard_rates.push(rate);
        }
    }
    Ok(offer_of(&space, standard_rates))
}

/// The offer a refined space describes.
pub fn offer_of(space: &HwParams, standard_rates: Vec<u32>) -> Offer {
    Offer {
        formats: space
            .mask_values(MaskParam::Format)
            .map(format_name)
            .collect(),
        usable_formats: space.sample_formats().collect(),
        rates: space.interval(IntervalParam::Rate),
        standard_rates,
        channels: space.interval(IntervalParam::Channels),
    }
}

/// Writes the report of every card with a capture device (a line when there is none).
pub fn report(out: &mut impl Write) -> Result<()> {
    let cards: Vec<CardReport> = capture_devices()
        .into_iter()
        .filter(|c| !c.devices.is_empty() || c.error.is_some())
        .collect();
    let mut text = String::new();
    if cards.is_empty() {
        text.push_str(
            "no ALSA capture devices (no /dev/snd/pcmC*D*c: is the microphone connected and \
             its driver loaded?)\n",
        );
    }
    for (i, card) in cards.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&card.to_string());
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(Fault::Input, "cannot write the device report", e))
}

impl fmt::Display for CardReport {
    /// One paragraph per capture device:
    ///
    /// ```text
    /// /dev/snd/pcmC1D0c: hw:1,0 or hw:Loopback,0
    ///   card 1 [Loopback] "Loopback", driver Loopback; device 0 "Loopback PCM", 8 subdevices (8 free)
    ///   formats S16_LE, S32_LE, ... (v4l2rtmp reads S16_LE, S32_LE)
    ///   rates 8000-192000 Hz; of the encoder's: 48000, 44100, 32000, 22050, 16000 Hz
    ///   channels 1-32
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let card = &self.card;
        for (i, device) in self.devices.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(
                f,
                "{}: hw:{},{} or hw:{},{}",
                PcmName::node(card.index, device.device),
                card.index,
                device.device,
                card.id,
                device.device
            )?;
            write!(
                f,
                "  card {} [{}] \"{}\", driver {}; device {} \"{}\"",
                card.index, card.id, card.name, card.driver, device.device, device.info.name
            )?;
            match device.info.subdevices {
                0 | 1 => writeln!(f)?,
                n => writeln!(f, ", {n} subdevices ({} free)", device.info.subdevices_free)?,
            }
            match &device.offer {
                Ok(offer) => write!(f, "{offer}")?,
                Err(reason) => writeln!(f, "  cannot be asked what it offers: {reason}")?,
            }
        }
        if let Some(error) = &self.error {
            if !self.devices.is_empty() {
                writeln!(f)?;
            }
            writeln!(
                f,
                "card {} [{}] \"{}\": {error}",
                card.index, card.id, card.name
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "  formats {}", self.formats.join(", "))?;
        if self.usable_formats.is_empty() {
            writeln!(
                f,
                " (none that v4l2rtmp reads: S16_LE, S32_LE, S24_LE, S24_3LE)"
            )?;
        } else {
            let usable: Vec<&str> = self.usable_formats.iter().map(|f| f.name()).collect();
            writeln!(f, " (v4l2rtmp reads {})", usable.join(", "))?;
        }
        write!(f, "  rates {} Hz; of the encoder's: ", self.rates)?;
        if self.standard_rates.is_empty() {
            writeln!(f, "none")?;
        } else {
            writeln!(f, "{}", super::params::rate_list(&self.standard_rates))?;
        }
        writeln!(f, "  channels {}", self.channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alsa::sys;

    fn loopback() -> CardReport {
        let mut space = HwParams::any();
        space.set_mask(MaskParam::Format, sys::SNDRV_PCM_FORMAT_S16_LE);
        space.set_interval(
            IntervalParam::Rate,
            Interval {
                min: 8000,
                max: 192000,
                ..Interval::single(8000)
            },
        );
        space.set_interval(
            IntervalParam::Channels,
            Interval {
                min: 1,
                max: 32,
                ..Interval::single(1)
            },
        );
        let info = PcmInfo {
            device: 1,
            subdevice: 0,
            id: "Loopback PCM".into(),
            name: "Loopback PCM".into(),
            subdevice_name: "subdevice #0".into(),
            subdevices: 8,
            subdevices_free: 7,
        };
        CardReport {
            card: CardInfo {
                index: 0,
                id: "Loopback".into(),
                driver: "Loopback".into(),
                name: "Loopback".into(),
                long_name: "Loopback 1".into(),
            },
            devices: vec![
                DeviceReport {
                    device: 0,
                    info: PcmInfo {
                        device: 0,
                        subdevices: 1,
                        ..info.clone()
                    },
                    offer: Err("hw:0,0 is busy: another program is recording from it".into()),
                },
                DeviceReport {
                    device: 1,
                    info,
                    offer: Ok(offer_of(&space, STANDARD_RATES.to_vec())),
                },
            ],
            error: None,
        }
    }

    #[test]
    fn the_report_names_each_device_as_users_write_it() {
        assert_eq!(
            loopback().to_string(),
            "/dev/snd/pcmC0D0c: hw:0,0 or hw:Loopback,0\n\
             \x20 card 0 [Loopback] \"Loopback\", driver Loopback; device 0 \"Loopback PCM\"\n\
             \x20 cannot be asked what it offers: hw:0,0 is busy: another program is recording from it\n\
             \n\
             /dev/snd/pcmC0D1c: hw:0,1 or hw:Loopback,1\n\
             \x20 card 0 [Loopback] \"Loopback\", driver Loopback; device 1 \"Loopback PCM\", 8 subdevices (7 free)\n\
             \x20 formats S16_LE (v4l2rtmp reads S16_LE)\n\
             \x20 rates 8000-192000 Hz; of the encoder's: 48000, 44100, 32000, 22050, 16000 Hz\n\
             \x20 channels 1-32\n"
        );
    }

    #[test]
    fn unusable_offers_and_card_errors_are_shown() {
        let mut space = HwParams::any();
        space.set_mask(MaskParam::Format, sys::SNDRV_PCM_FORMAT_FLOAT_LE);
        space.set_interval(IntervalParam::Rate, Interval::single(96000));
        space.set_interval(IntervalParam::Channels, Interval::single(4));
        let offer = offer_of(&space, Vec::new());
        assert_eq!(
            offer.to_string(),
            "  formats FLOAT_LE (none that v4l2rtmp reads: S16_LE, S32_LE, S24_LE, S24_3LE)\n\
             \x20 rates 96000 Hz; of the encoder's: none\n\
             \x20 channels 4\n"
        );
        let mut card = loopback();
        card.devices.clear();
        card.error = Some("input error: sound card 0: listing the PCM devices failed".into());
        assert_eq!(
            card.to_string(),
            "card 0 [Loopback] \"Loopback\": input error: sound card 0: listing the PCM devices failed\n"
        );
    }
}
