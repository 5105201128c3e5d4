//! RTMP handshake: INTERFACE STUB, being implemented.
