//! Generated code for the `stt` gRPC package (`proto/stt.proto`); nothing hand-written lives here.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("stt");
