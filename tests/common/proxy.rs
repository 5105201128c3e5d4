//! Placeholder: the fault-injection proxy is being written.
