//! The Whisper encoder-decoder network on candle, with a self-attention KV cache for batched
//! incremental decoding and optional capture of cross-attention logits for word alignment.
//!
//! candle-transformers' Whisper re-runs the whole token prefix at every step; caching past keys
//! and values makes a decoding step three to four times cheaper with identical output.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use rayon::prelude::*;

use super::WhisperConfig;

const LAYER_NORM_EPS: f64 = 1e-5;

struct MultiHeadAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    n_head: usize,
    head_dim: usize,
}

impl MultiHeadAttention {
    fn load(vb: VarBuilder, d_model: usize, n_head: usize) -> Result<Self> {
        Ok(Self {
            query: candle_nn::linear(d_model, d_model, vb.pp("q_proj"))?,
            // Whisper's key projection has no bias.
            key: candle_nn::linear_no_bias(d_model, d_model, vb.pp("k_proj"))?,
            value: candle_nn::linear(d_model, d_model, vb.pp("v_proj"))?,
            out: candle_nn::linear(d_model, d_model, vb.pp("out_proj"))?,
            n_head,
            head_dim: d_model / n_head,
        })
    }

    /// [B, T, D] -> [B, H, T, Dh]
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, time, _) = x.dims3()?;
        x.reshape((batch, time, self.n_head, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// [B, H, T, Dh] -> [B, T, D]
    fn merge_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, n_head, time, head_dim) = x.dims4()?;
        x.transpose(1, 2)?.reshape((batch, time, n_head * head_dim))
    }

    /// Keys transposed for the attention product ([B, H, Dh, T]) and values ([B, H, T, Dh]).
    fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, time, _) = x.dims3()?;
        let keys_t = self
            .key
            .forward(x)?
            .reshape((batch, time, self.n_head, self.head_dim))?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        let values = self.split_heads(&self.value.forward(x)?)?;
        Ok((keys_t, values))
    }

    /// Attends `x` to the given (transposed) keys and values; returns the output and, when
    /// asked, the pre-softmax attention logits [B, H, Tq, Tk].
    fn attend(
        &self,
        x: &Tensor,
        keys_t: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
        want_logits: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let scale = (self.head_dim as f64).powf(-0.5);
        let queries = (self.split_heads(&self.query.forward(x)?)? * scale)?;
        let mut logits = queries.matmul(keys_t)?;
        if let Some(mask) = mask {
            logits = logits.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&logits)?;
        let attended = weights.matmul(values)?;
        let out = self.out.forward(&self.merge_heads(&attended)?)?;
        Ok((out, want_logits.then_some(logits)))
    }
}

struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    norm: LayerNorm,
}

impl FeedForward {
    fn load(vb: &VarBuilder, d_model: usize, ffn_dim: usize) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(d_model, ffn_dim, vb.pp("fc1"))?,
            fc2: candle_nn::linear(ffn_dim, d_model, vb.pp("fc2"))?,
            norm: candle_nn::layer_norm(d_model, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
        })
    }

    fn residual(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = self.fc1.forward(&self.norm.forward(x)?)?.gelu_erf()?;
        x + self.fc2.forward(&hidden)?
    }
}

struct EncoderLayer {
    attention: MultiHeadAttention,
    attention_norm: LayerNorm,
    feed_forward: FeedForward,
}

pub(crate) struct Encoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    layers: Vec<EncoderLayer>,
    norm: LayerNorm,
}

impl Encoder {
    fn load(vb: VarBuilder, config: &WhisperConfig) -> Result<Self> {
        let d_model = config.d_model;
        let conv = |stride| Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let conv1 = candle_nn::conv1d(config.num_mel_bins, d_model, 3, conv(1), vb.pp("conv1"))?;
        let conv2 = candle_nn::conv1d(d_model, d_model, 3, conv(2), vb.pp("conv2"))?;
        let positions = vb
            .pp("embed_positions")
            .get((config.max_source_positions, d_model), "weight")?;
        let layers = (0..config.encoder_layers)
            .map(|idx| {
                let vb = vb.pp(format!("layers.{idx}"));
                Ok(EncoderLayer {
                    attention: MultiHeadAttention::load(
                        vb.pp("self_attn"),
                        d_model,
                        config.encoder_attention_heads,
                    )?,
                    attention_norm: candle_nn::layer_norm(
                        d_model,
                        LAYER_NORM_EPS,
                        vb.pp("self_attn_layer_norm"),
                    )?,
                    feed_forward: FeedForward::load(&vb, d_model, config.encoder_ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = candle_nn::layer_norm(d_model, LAYER_NORM_EPS, vb.pp("layer_norm"))?;
        Ok(Self {
            conv1,
            conv2,
            positions,
            layers,
            norm,
        })
    }

    /// Encodes log-mel input [B, n_mels, T] (T even, at most twice the audio positions) into
    /// audio features [B, T/2, D]. A window shorter than 30 s uses the leading positions only.
    pub(crate) fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(mel)?.gelu_erf()?;
        let x = self.conv2.forward(&x)?.gelu_erf()?.transpose(1, 2)?;
        let n_positions = x.dim(1)?;
        let mut x = x.broadcast_add(&self.positions.narrow(0, 0, n_positions)?)?;
        for layer in &self.layers {
            let normed = layer.attention_norm.forward(&x)?;
            let (keys, values) = layer.attention.keys_values(&normed)?;
            let (attended, _) = layer
                .attention
                .attend(&normed, &keys, &values, None, false)?;
            x = (x + attended)?;
            x = layer.feed_forward.residual(&x)?;
        }
        self.norm.forward(&x)
    }
}

struct DecoderLayer {
    self_attention: MultiHeadAttention,
    self_attention_norm: LayerNorm,
    cross_attention: MultiHeadAttention,
    cross_attention_norm: LayerNorm,
    feed_forward: FeedForward,
}

pub(crate) struct Decoder {
    token_embedding: Embedding,
    /// The tied output projection as row blocks of the embedding, one per CPU thread: a
    /// one-row product against the 51864 x 384 matrix is memory-bound and candle runs it on a
    /// single core, so the blocks are multiplied in parallel.
    output_blocks: Vec<Tensor>,
    positions: Tensor,
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    max_positions: usize,
}

/// Per-batch decoding state: the cross-attention keys/values (computed once per audio window)
/// and the growing self-attention cache. Keys are kept transposed ([B, H, Dh, T]).
pub(crate) struct DecoderState {
    cross: Vec<(Tensor, Tensor)>,
    past: Vec<Option<(Tensor, Tensor)>>,
    /// Columns fed so far (the same for every row).
    offset: usize,
    left_padding: Vec<usize>,
}

impl Decoder {
    fn load(vb: VarBuilder, config: &WhisperConfig) -> Result<Self> {
        let d_model = config.d_model;
        let n_head = config.decoder_attention_heads;
        let token_embedding =
            candle_nn::embedding(config.vocab_size, d_model, vb.pp("embed_tokens"))?;
        let positions = vb
            .pp("embed_positions")
            .get((config.max_target_positions, d_model), "weight")?;
        let layers = (0..config.decoder_layers)
            .map(|idx| {
                let vb = vb.pp(format!("layers.{idx}"));
                Ok(DecoderLayer {
                    self_attention: MultiHeadAttention::load(vb.pp("self_attn"), d_model, n_head)?,
                    self_attention_norm: candle_nn::layer_norm(
                        d_model,
                        LAYER_NORM_EPS,
                        vb.pp("self_attn_layer_norm"),
                    )?,
                    cross_attention: MultiHeadAttention::load(
                        vb.pp("encoder_attn"),
                        d_model,
                        n_head,
                    )?,
                    cross_attention_norm: candle_nn::layer_norm(
                        d_model,
                        LAYER_NORM_EPS,
                        vb.pp("encoder_attn_layer_norm"),
                    )?,
                    feed_forward: FeedForward::load(&vb, d_model, config.decoder_ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = candle_nn::layer_norm(d_model, LAYER_NORM_EPS, vb.pp("layer_norm"))?;
        let output_blocks = output_blocks(token_embedding.embeddings())?;
        Ok(Self {
            token_embedding,
            output_blocks,
            positions,
            layers,
            norm,
            max_positions: config.max_target_positions,
        })
    }

    pub(crate) fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Starts decoding a batch over `audio_features` [B, Ta, D]. Rows whose sequences are
    /// shorter than the batch's are left-padded by `left_padding[row]` columns, which attention
    /// never sees and which do not count as positions.
    pub(crate) fn start(
        &self,
        audio_features: &Tensor,
        left_padding: Vec<usize>,
    ) -> Result<DecoderState> {
        let cross = self
            .layers
            .iter()
            .map(|layer| layer.cross_attention.keys_values(audio_features))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderState {
            cross,
            past: vec![None; self.layers.len()],
            offset: 0,
            left_padding,
        })
    }

    /// Feeds `tokens` [B, t] after everything already in `state` and returns the final hidden
    /// states [B, t, D] (see [`Decoder::project`] for logits), plus the pre-softmax
    /// cross-attention logits [t, Ta] of batch row 0 for each `(layer, head)` in
    /// `capture_heads`.
    pub(crate) fn step(
        &self,
        tokens: &Tensor,
        state: &mut DecoderState,
        capture_heads: &[(usize, usize)],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let (batch, n_new) = tokens.dims2()?;
        let device = tokens.device();
        let padded = state.left_padding.iter().any(|&pad| pad > 0);
        let embedded = self.token_embedding.forward(tokens)?;
        let mut x = if padded {
            // Each row counts positions from its first real token.
            let offset = state.offset;
            let ids: Vec<u32> = state
                .left_padding
                .iter()
                .flat_map(|&pad| (0..n_new).map(move |i| (offset + i).saturating_sub(pad) as u32))
                .collect();
            let ids = Tensor::from_vec(ids, batch * n_new, device)?;
            let positions = self
                .positions
                .index_select(&ids, 0)?
                .reshape((batch, n_new, ()))?;
            (embedded + positions)?
        } else {
            embedded.broadcast_add(&self.positions.narrow(0, state.offset, n_new)?)?
        };
        let mask = if padded {
            Some(padded_causal_mask(
                &state.left_padding,
                n_new,
                state.offset,
                device,
            )?)
        } else if n_new > 1 {
            Some(causal_mask(n_new, state.offset, device)?)
        } else {
            None
        };
        // Masks are built in f32; the attention logits may be f16 on a GPU.
        let mask = mask.map(|m| m.to_dtype(x.dtype())).transpose()?;
        let mut captured = Vec::new();
        for (layer_idx, layer) in self.layers.iter().enumerate() {
            let normed = layer.self_attention_norm.forward(&x)?;
            let (new_keys, new_values) = layer.self_attention.keys_values(&normed)?;
            let (keys, values) = match state.past[layer_idx].take() {
                Some((past_keys, past_values)) => (
                    Tensor::cat(&[&past_keys, &new_keys], 3)?,
                    Tensor::cat(&[&past_values, &new_values], 2)?,
                ),
                None => (new_keys, new_values),
            };
            let (attended, _) =
                layer
                    .self_attention
                    .attend(&normed, &keys, &values, mask.as_ref(), false)?;
            state.past[layer_idx] = Some((keys, values));
            x = (x + attended)?;

            let want_logits = capture_heads.iter().any(|&(layer, _)| layer == layer_idx);
            let normed = layer.cross_attention_norm.forward(&x)?;
            let (cross_keys, cross_values) = &state.cross[layer_idx];
            let (attended, logits) = layer.cross_attention.attend(
                &normed,
                cross_keys,
                cross_values,
                None,
                want_logits,
            )?;
            if let Some(logits) = logits {
                for &(_, head) in capture_heads.iter().filter(|(l, _)| *l == layer_idx) {
                    captured.push(logits.i((0, head))?);
                }
            }
            x = (x + attended)?;
            x = layer.feed_forward.residual(&x)?;
        }
        state.offset += n_new;
        Ok((self.norm.forward(&x)?, captured))
    }

    /// Logits [N, V] for hidden states [N, D].
    pub(crate) fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        if self.output_blocks.len() == 1 {
            return hidden.matmul(&self.output_blocks[0]);
        }
        let blocks = self
            .output_blocks
            .par_iter()
            .map(|block| hidden.matmul(block))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&blocks, 1)
    }
}

/// Additive mask [B, 1, t, total] for left-padded rows: causal, and padding columns hidden
/// from every real position.
fn padded_causal_mask(
    left_padding: &[usize],
    n_new: usize,
    offset: usize,
    device: &Device,
) -> Result<Tensor> {
    let n_total = offset + n_new;
    let values: Vec<f32> = left_padding
        .iter()
        .flat_map(|&pad| {
            (0..n_new).flat_map(move |row| {
                (0..n_total).map(move |col| {
                    let query = offset + row;
                    // A padding query sees only itself: a row of nothing but -inf would turn
                    // its softmax, and through its keys every later one, into NaN.
                    let hidden = col > query || (col < pad && col != query);
                    if hidden { f32::NEG_INFINITY } else { 0.0 }
                })
            })
        })
        .collect();
    Tensor::from_vec(values, (left_padding.len(), 1, n_new, n_total), device)
}

/// Transposed views of the embedding's row blocks (no copies), one per CPU thread; a single
/// block on GPUs, which parallelise the product themselves.
fn output_blocks(embeddings: &Tensor) -> Result<Vec<Tensor>> {
    let n_blocks = if embeddings.device().is_cpu() {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    let vocab = embeddings.dim(0)?;
    let block = vocab.div_ceil(n_blocks);
    (0..vocab)
        .step_by(block)
        .map(|start| embeddings.narrow(0, start, block.min(vocab - start))?.t())
        .collect()
}

/// Additive mask so that position i (absolute offset + i) sees only positions <= itself.
fn causal_mask(n_new: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let n_total = offset + n_new;
    let values: Vec<f32> = (0..n_new)
        .flat_map(|row| {
            (0..n_total).map(move |col| {
                if col > offset + row {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (n_new, n_total), device)
}

pub(crate) struct WhisperNetwork {
    pub(crate) encoder: Encoder,
    pub(crate) decoder: Decoder,
}

impl WhisperNetwork {
    pub(crate) fn load(vb: VarBuilder, config: &WhisperConfig) -> Result<Self> {
        // Hugging Face checkpoints nest everything under `model.`.
        let vb = vb.pp("model");
        Ok(Self {
            encoder: Encoder::load(vb.pp("encoder"), config)?,
            decoder: Decoder::load(vb.pp("decoder"), config)?,
        })
    }
}

/// Log-probabilities of one row of logits (numerically stable).
pub(crate) fn log_softmax_row(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|&l| l - log_sum).collect()
}

/// The dtype the weights are computed in on `device`.
pub(crate) fn compute_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    }
}

/// Index of the largest value (the first one on ties).
pub(crate) fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(best_idx, best), (idx, &value)| {
            if value > best {
                (idx, value)
            } else {
                (best_idx, best)
            }
        })
        .0
}
