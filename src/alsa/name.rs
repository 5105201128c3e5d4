//! Names of capture devices, as users write them: `hw:CARD,DEV[,SUBDEV]` with the card given by
//! number or id (`hw:1,0`, `hw:Loopback,1,0`), the keyword form `hw:CARD=Name,DEV=0[,SUBDEV=0]`
//! (keywords in any order), or a device node `/dev/snd/pcmC1D0c`. Parsing is pure; finding the
//! card of an id is [`super::ctl::find_card`]'s.
//!
//! Only hardware devices are named here: `plughw:`, `default`, `dsnoop` and the like are
//! alsa-lib's plugins, which v4l2rtmp does not link, and the error says to use `hw:`.

use std::fmt;
use std::path::Path;

/// A card, by index or by id (`Loopback`, `Device`, as `/proc/asound/cards` shows in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardRef {
    Index(u32),
    Id(String),
}

impl fmt::Display for CardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardRef::Index(index) => write!(f, "{index}"),
            CardRef::Id(id) => f.write_str(id),
        }
    }
}

/// A capture PCM: card, device and, optionally, subdevice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcmName {
    pub card: CardRef,
    pub device: u32,
    /// `None`: whichever subdevice is free (the kernel's choice).
    pub subdevice: Option<u32>,
}

impl fmt::Display for PcmName {
    /// `hw:Loopback,1` or `hw:1,0,2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hw:{},{}", self.card, self.device)?;
        if let Some(subdevice) = self.subdevice {
            write!(f, ",{subdevice}")?;
        }
        Ok(())
    }
}

/// Highest card index the kernel gives (`SNDRV_CARDS` is at most 256).
const MAX_CARD: u32 = 255;

impl PcmName {
    /// Parses `hw:...` or a `/dev/snd/pcmC<card>D<device>c` path; the error is a sentence
    /// saying what is accepted.
    pub fn parse(text: &str) -> Result<PcmName, String> {
        let text = text.trim();
        if text.starts_with('/') {
            return PcmName::from_node(Path::new(text));
        }
        let Some(args) = text.strip_prefix("hw:") else {
            let plugin = text.split(':').next().unwrap_or(text);
            return Err(format!(
                "'{text}' is not an ALSA hardware device: v4l2rtmp reads hw:CARD,DEV \
                 (hw:1,0, hw:CARD=Device,DEV=0) or /dev/snd/pcmC1D0c directly, without \
                 alsa-lib's plugins such as '{plugin}' (`arecord -l` lists cards and devices)"
            ));
        };
        let fields: Vec<&str> = args.split(',').map(str::trim).collect();
        if fields.iter().any(|f| f.contains('=')) {
            parse_keywords(text, &fields)
        } else {
            parse_positional(text, &fields)
        }
    }

    /// The card and device of a node's file name, `pcmC1D0c` (capture; `p` is playback).
    pub fn from_node(path: &Path) -> Result<PcmName, String> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let invalid = || {
            format!(
                "'{}' is not an ALSA capture node (/dev/snd/pcmC<card>D<device>c)",
                path.display()
            )
        };
        let rest = name.strip_prefix("pcmC").ok_or_else(invalid)?;
        if rest.ends_with('p') {
            return Err(format!(
                "'{}' is a playback device; capture devices end in 'c'",
                path.display()
            ));
        }
        let rest = rest.strip_suffix('c').ok_or_else(invalid)?;
        let (card, device) = rest.split_once('D').ok_or_else(invalid)?;
        let card = number(card)
            .filter(|&c| c <= MAX_CARD)
            .ok_or_else(invalid)?;
        let device = number(device).ok_or_else(invalid)?;
        Ok(PcmName {
            card: CardRef::Index(card),
            device,
            subdevice: None,
        })
    }

    /// The capture node of a card index: `/dev/snd/pcmC1D0c`.
    pub fn node(card: u32, device: u32) -> String {
        format!("/dev/snd/pcmC{card}D{device}c")
    }
}

/// A decimal number with nothing else (no sign, no spaces).
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn card_ref(text: &str, value: &str) -> Result<CardRef, String> {
    let value = value.trim_matches('"');
    if let Some(index) = number(value) {
        return if index <= MAX_CARD {
            Ok(CardRef::Index(index))
        } else {
            Err(format!(
                "'{text}': card {index} is out of range (0-{MAX_CARD})"
            ))
        };
    }
    // Card ids are what the driver or `index=`/`id=` options set: letters, digits, '_' and '-'.
    let valid = !value.is_empty()
        && value.len() <= 15
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(CardRef::Id(value.to_string()))
    } else {
        Err(format!(
            "'{text}': '{value}' is neither a card number nor a card id (up to 15 letters, \
             digits, '_' or '-')"
        ))
    }
}

fn index_value(text: &str, what: &str, value: &str) -> Result<u32, String> {
    number(value.trim_matches('"'))
        .ok_or_else(|| format!("'{text}': the {what} must be a number, not '{value}'"))
}

fn parse_positional(text: &str, fields: &[&str]) -> Result<PcmName, String> {
    match fields {
        [card] | [card, ..] if fields.len() <= 3 && !card.is_empty() => {
            let card = card_ref(text, card)?;
            let device = match fields.get(1) {
                Some(device) => index_value(text, "device", device)?,
                None => 0,
            };
            let subdevice = match fields.get(2) {
                Some(subdevice) => Some(index_value(text, "subdevice", subdevice)?),
                None => None,
            };
            Ok(PcmName {
                card,
                device,
                subdevice,
            })
        }
        _ => Err(format!(
            "'{text}' should be hw:CARD[,DEV[,SUBDEV]] (hw:1,0 or hw:Loopback,1,0)"
        )),
    }
}

fn parse_keywords(text: &str, fields: &[&str]) -> Result<PcmName, String> {
    let (mut card, mut device, mut subdevice) = (None, None, None);
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!(
                "'{text}': '{field}' lacks a keyword; write every field as KEY=VALUE \
                 (hw:CARD=Device,DEV=0) or none (hw:Device,0)"
            ));
        };
        let slot = match key.trim().to_ascii_uppercase().as_str() {
            "CARD" => {
                if card.replace(card_ref(text, value.trim())?).is_some() {
                    return Err(format!("'{text}' names CARD twice"));
                }
                continue;
            }
            "DEV" => &mut device,
            "SUBDEV" => &mut subdevice,
            other => {
                return Err(format!(
                    "'{text}': unknown keyword '{other}' (CARD, DEV and SUBDEV are)"
                ))
            }
        };
        if slot
            .replace(index_value(text, key.trim(), value.trim())?)
            .is_some()
        {
            return Err(format!("'{text}' names {} twice", key.trim()));
        }
    }
    let card = card.ok_or_else(|| format!("'{text}' names no CARD"))?;
    Ok(PcmName {
        card,
        device: device.unwrap_or(0),
        subdevice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(card: CardRef, device: u32, subdevice: Option<u32>) -> PcmName {
        PcmName {
            card,
            device,
            subdevice,
        }
    }

    #[test]
    fn positional_names() {
        use CardRef::*;
        assert_eq!(PcmName::parse("hw:1,0"), Ok(hw(Index(1), 0, None)));
        assert_eq!(PcmName::parse("hw:1"), Ok(hw(Index(1), 0, None)));
        assert_eq!(
            PcmName::parse("hw:Loopback,1,0"),
            Ok(hw(Id("Loopback".into()), 1, Some(0)))
        );
        assert_eq!(
            PcmName::parse(" hw:Device, 2 "),
            Ok(hw(Id("Device".into()), 2, None))
        );
        assert_eq!(
            PcmName::parse("hw:Loopback,1,0").unwrap().to_string(),
            "hw:Loopback,1,0"
        );
        assert_eq!(PcmName::parse("hw:3,1").unwrap().to_string(), "hw:3,1");
    }

    #[test]
    fn keyword_names() {
        use CardRef::*;
        assert_eq!(
            PcmName::parse("hw:CARD=Name,DEV=0"),
            Ok(hw(Id("Name".into()), 0, None))
        );
        assert_eq!(
            PcmName::parse("hw:DEV=1,CARD=Loopback,SUBDEV=3"),
            Ok(hw(Id("Loopback".into()), 1, Some(3)))
        );
        assert_eq!(PcmName::parse("hw:CARD=2"), Ok(hw(Index(2), 0, None)));
        assert_eq!(
            PcmName::parse("hw:card=\"U0x46d0x825\",dev=0"),
            Ok(hw(Id("U0x46d0x825".into()), 0, None))
        );
    }

    #[test]
    fn device_nodes() {
        use CardRef::*;
        assert_eq!(
            PcmName::parse("/dev/snd/pcmC1D0c"),
            Ok(hw(Index(1), 0, None))
        );
        assert_eq!(
            PcmName::parse("/dev/snd/pcmC12D7c"),
            Ok(hw(Index(12), 7, None))
        );
        assert_eq!(PcmName::node(0, 1), "/dev/snd/pcmC0D1c");
        let playback = PcmName::parse("/dev/snd/pcmC0D0p").unwrap_err();
        assert!(playback.contains("is a playback device"), "{playback}");
        for bad in [
            "/dev/snd/controlC0",
            "/dev/snd/pcmC0c",
            "/dev/snd/pcmCxD0c",
            "/dev/snd/pcmC0D-1c",
            "/dev/snd/pcmC999D0c",
            "/",
        ] {
            let error = PcmName::parse(bad).unwrap_err();
            assert!(error.contains("not an ALSA capture node"), "{bad}: {error}");
        }
    }

    #[test]
    fn what_is_refused_and_why() {
        let plugin = PcmName::parse("plughw:1,0").unwrap_err();
        assert!(plugin.contains("plugins such as 'plughw'"), "{plugin}");
        assert!(PcmName::parse("default").unwrap_err().contains("'default'"));
        let cases = [
            ("hw:", "should be hw:CARD"),
            ("hw:1,0,0,0", "should be hw:CARD"),
            ("hw:1,x", "the device must be a number"),
            ("hw:1,0,-1", "the subdevice must be a number"),
            ("hw:1,99999999999", "the device must be a number"),
            ("hw:300", "out of range"),
            ("hw:Bad Name,0", "neither a card number nor a card id"),
            (
                "hw:ThisIdIsFarTooLong,0",
                "neither a card number nor a card id",
            ),
            ("hw:CARD=X,0", "lacks a keyword"),
            ("hw:DEV=0", "names no CARD"),
            ("hw:CARD=X,CARD=Y", "names CARD twice"),
            ("hw:CARD=X,DEV=0,DEV=1", "names DEV twice"),
            ("hw:CARD=X,RATE=48000", "unknown keyword 'RATE'"),
        ];
        for (text, wanted) in cases {
            let error = PcmName::parse(text).unwrap_err();
            assert!(error.contains(wanted), "{text}: {error}");
        }
    }
}
