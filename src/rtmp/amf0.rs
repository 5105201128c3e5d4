//! AMF0: INTERFACE STUB, being implemented.
