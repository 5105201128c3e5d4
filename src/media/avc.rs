//! avc: INTERFACE STUB, being implemented.
