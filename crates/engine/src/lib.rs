//! The speech engine: the `stt.SpeechToText` gRPC service over a batched recognizer.
//!
//! Streams feed [`session::Session`]s (resampling, log-mel, endpointing); their windows are
//! decoded by the [`batcher`] thread; [`service`] maps everything onto gRPC.

pub mod batcher;
pub mod bench;
pub mod client;
pub mod config;
pub mod metrics;
pub mod server;
pub mod service;
pub mod session;

#[cfg(test)]
mod engine_tests;

pub use config::EngineConfig;
pub use metrics::EngineMetrics;
pub use server::{EngineError, RunningEngine, SERVICE_NAME, run_engine};
