//! flv: INTERFACE STUB, being implemented.
