//! A node of the proof-of-work chain.
//!
//! # Layout
//! - [`chain`]: block format, proof of work, validation, fork choice, storage.
pub mod chain;
