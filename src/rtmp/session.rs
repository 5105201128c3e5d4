//! session: being implemented.
