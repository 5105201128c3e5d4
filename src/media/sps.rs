//! sps: INTERFACE STUB, being implemented.
