//! Name resolution: [`mdns`] is the sans-IO one-shot mDNS query and response parser.

pub mod mdns;
