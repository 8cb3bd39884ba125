//! Generates the gRPC code from `proto/stt.proto` with a vendored `protoc`, so no system package is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["../../proto/stt.proto"],
        &["../../proto"],
    )?;
    println!("cargo:rerun-if-changed=../../proto/stt.proto");
    Ok(())
}
