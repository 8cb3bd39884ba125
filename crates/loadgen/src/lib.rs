//! Measuring Earshot: word error rate against reference transcripts and latency percentiles.

pub mod corpus;
pub mod latency;
pub mod stats;
pub mod wer;
