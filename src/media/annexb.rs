//! annexb: INTERFACE STUB, being implemented.
