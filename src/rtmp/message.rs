//! message: being implemented.
