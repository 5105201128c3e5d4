//! The control device of a sound card (`/dev/snd/controlC<card>`): the card's id and names, its
//! PCM devices, and the subdevice preference that makes the next PCM open take a given
//! subdevice. [`find_card`] turns a card id into its index.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::libc;

use super::name::CardRef;
use super::sys;
use crate::error::{Error, Fault, Result};

/// An open control device.
pub struct Control {
    fd: OwnedFd,
    card: u32,
}

/// What `SNDRV_CTL_IOCTL_CARD_INFO` says about a card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardInfo {
    pub index: u32,
    /// The short id (`Loopback`), what `hw:ID` names.
    pub id: String,
    pub driver: String,
    pub name: String,
    pub long_name: String,
}

/// What `SNDRV_CTL_IOCTL_PCM_INFO` says about one stream of a PCM device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcmInfo {
    pub device: u32,
    pub subdevice: u32,
    pub id: String,
    pub name: String,
    pub subdevice_name: String,
    pub subdevices: u32,
    pub subdevices_free: u32,
}

impl PcmInfo {
    pub fn from_raw(raw: &sys::snd_pcm_info) -> PcmInfo {
        PcmInfo {
            device: raw.device,
            subdevice: raw.subdevice,
            id: sys::c_str(&raw.id),
            name: sys::c_str(&raw.name),
            subdevice_name: sys::c_str(&raw.subname),
            subdevices: raw.subdevices_count,
            subdevices_free: raw.subdevices_avail,
        }
    }
}

impl Control {
    /// Opens `/dev/snd/controlC<card>`.
    pub fn open(card: u32) -> Result<Control> {
        Control::open_path(&format!("/dev/snd/controlC{card}"), card)
    }

    fn open_path(path: &str, card: u32) -> Result<Control> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("there is no sound card {card} ({path} does not exist)")
                } else {
                    format!("cannot open {path}")
                };
                Error::io(Fault::Input, what, e)
            })?;
        Ok(Control {
            fd: file.into(),
            card,
        })
    }

    pub fn card(&self) -> u32 {
        self.card
    }

    pub fn card_info(&self) -> Result<CardInfo> {
        let mut raw: sys::snd_ctl_card_info = sys::zeroed();
        sys::ctl_card_info(self.fd.as_fd(), &mut raw)
            .map_err(|e| self.error("reading the card's information", e))?;
        Ok(CardInfo {
            index: u32::try_from(raw.card).unwrap_or(self.card),
            id: sys::c_str(&raw.id),
            driver: sys::c_str(&raw.driver),
            name: sys::c_str(&raw.name),
            long_name: sys::c_str(&raw.longname),
        })
    }

    /// The card's PCM device numbers, ascending.
    pub fn pcm_devices(&self) -> Result<Vec<u32>> {
        let mut devices = Vec::new();
        let mut next: libc::c_int = -1;
        loop {
            sys::ctl_pcm_next_device(self.fd.as_fd(), &mut next)
                .map_err(|e| self.error("listing the PCM devices", e))?;
            match u32::try_from(next) {
                // A device number that does not grow would loop for ever: stop there.
                Ok(device) if devices.last().is_none_or(|&last| device > last) => {
                    devices.push(device)
                }
                _ => return Ok(devices),
            }
        }
    }

    /// The capture stream of PCM `device` (subdevice 0), or `None` if it has none.
    pub fn capture_info(&self, device: u32) -> Result<Option<PcmInfo>> {
        let mut raw: sys::snd_pcm_info = sys::zeroed();
        raw.device = device;
        raw.subdevice = 0;
        raw.stream = sys::SNDRV_PCM_STREAM_CAPTURE;
        match sys::ctl_pcm_info(self.fd.as_fd(), &mut raw) {
            Ok(()) => Ok(Some(PcmInfo::from_raw(&raw))),
            // No capture stream on this device (ENOENT), or no such subdevice (ENXIO).
            Err(Errno::ENOENT) | Err(Errno::ENXIO) => Ok(None),
            Err(e) => Err(self.error("reading a PCM device's information", e)),
        }
    }

    /// Makes this process's next open of a PCM device of the card take `subdevice` (while this
    /// control device stays open).
    pub fn prefer_subdevice(&self, subdevice: u32) -> Result<()> {
        let mut value = libc::c_int::try_from(subdevice)
            .map_err(|_| Error::config(format!("subdevice {subdevice} is out of range")))?;
        sys::ctl_pcm_prefer_subdevice(self.fd.as_fd(), &mut value)
            .map_err(|e| self.error("choosing the subdevice", e))
    }

    fn error(&self, what: &str, errno: Errno) -> Error {
        super::ioctl_error(&format!("sound card {}", self.card), what, errno)
    }
}

/// The card indexes that have a control device, ascending.
pub fn card_indexes() -> Vec<u32> {
    card_indexes_in(Path::new("/dev/snd"))
}

fn card_indexes_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut cards: Vec<u32> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let digits = name.to_str()?.strip_prefix("controlC")?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        })
        .collect();
    cards.sort_unstable();
    cards
}

/// Every card's information (cards that cannot be read are left out).
pub fn cards() -> Vec<CardInfo> {
    card_indexes()
        .into_iter()
        .filter_map(|index| Control::open(index).and_then(|c| c.card_info()).ok())
        .collect()
}

/// The index of a card: an index as it is (checked when the PCM is opened), an id looked up in
/// the cards' information. The error lists the cards there are.
pub fn find_card(card: &CardRef) -> Result<u32> {
    let id = match card {
        CardRef::Index(index) => return Ok(*index),
        CardRef::Id(id) => id,
    };
    let cards = cards();
    if let Some(found) = cards.iter().find(|c| &c.id == id) {
        return Ok(found.index);
    }
    Err(Error::input(format!(
        "there is no sound card with the id '{id}' ({})",
        describe_cards(&cards)
    )))
}

/// `cards: 0 [PCH] "HDA Intel PCH", 1 [Loopback] "Loopback"` or `no sound cards`.
pub fn describe_cards(cards: &[CardInfo]) -> String {
    if cards.is_empty() {
        return "there are no sound cards: is the driver loaded?".to_string();
    }
    let list: Vec<String> = cards
        .iter()
        .map(|c| format!("{} [{}] \"{}\"", c.index, c.id, c.name))
        .collect();
    format!("cards: {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_nodes_are_found_in_numeric_order() {
        let dir = std::env::temp_dir().join(format!("v4l2rtmp-alsa-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "controlC10",
            "controlC2",
            "pcmC2D0c",
            "controlCx",
            "controlC",
            "timer",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        assert_eq!(card_indexes_in(&dir), [2, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(card_indexes_in(Path::new("/nonexistent/v4l2rtmp")).is_empty());
    }

    #[test]
    fn cards_are_described_for_errors() {
        let card = |index, id: &str, name: &str| CardInfo {
            index,
            id: id.into(),
            driver: String::new(),
            name: name.into(),
            long_name: String::new(),
        };
        assert_eq!(
            describe_cards(&[
                card(0, "PCH", "HDA Intel PCH"),
                card(1, "Loopback", "Loopback")
            ]),
            "cards: 0 [PCH] \"HDA Intel PCH\", 1 [Loopback] \"Loopback\""
        );
        assert!(describe_cards(&[]).contains("no sound cards"));
    }
}
