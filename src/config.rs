//! being implemented.
