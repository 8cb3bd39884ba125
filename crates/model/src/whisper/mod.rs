//! The Whisper recognizer: loads any Hugging Face Whisper checkpoint directory and decodes
//! batches of log-mel windows greedily, with confidences and word timings.

mod alignment;
mod network;

use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::mel;
use crate::{ModelError, RecognitionRequest, Recognizer, Transcript, WindowKind, WordTiming};
use network::WhisperNetwork;

/// Trailing digital silence appended to a final's window. A window cut right after speech makes
/// the tiny models loop instead of ending the text; two seconds of silence lets them finish.
const FINAL_SILENCE_FRAMES: usize = 200;
/// Partials use one second: the encoder is most of their cost, the loop guard and token budget
/// catch the occasional loop, and their text is provisional.
const PARTIAL_SILENCE_FRAMES: usize = 100;
const FRAMES_PER_SECOND: f32 = 100.0;
/// Output cap per second of audio: fast speech stays below ~5 tokens/s, loops go far beyond.
const MAX_TOKENS_PER_SECOND: f32 = 10.0;
const MIN_TOKEN_BUDGET: usize = 12;

/// The hyper-parameters of a Hugging Face `config.json` that the network needs.
#[derive(Debug, Clone, Deserialize)]
pub struct WhisperConfig {
    pub num_mel_bins: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_layers: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub vocab_size: usize,
    pub max_source_positions: usize,
    pub max_target_positions: usize,
    #[serde(default)]
    pub suppress_tokens: Vec<u32>,
    #[serde(default)]
    pub begin_suppress_tokens: Vec<u32>,
}

/// The parts of `generation_config.json` used here; newer checkpoints keep suppression lists
/// only there.
#[derive(Debug, Default, Deserialize)]
struct GenerationConfig {
    #[serde(default)]
    alignment_heads: Vec<(usize, usize)>,
    #[serde(default)]
    suppress_tokens: Vec<u32>,
    #[serde(default)]
    begin_suppress_tokens: Vec<u32>,
}

/// Special token ids, looked up by name in the tokenizer so that any checkpoint works.
#[derive(Debug, Clone)]
struct SpecialTokens {
    end_of_text: u32,
    prompt: Vec<u32>,
    no_speech: Option<u32>,
}

impl SpecialTokens {
    fn from_tokenizer(tokenizer: &Tokenizer, multilingual: bool) -> Result<Self, ModelError> {
        let id = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| ModelError::Format(format!("tokenizer has no {name} token")))
        };
        let mut prompt = vec![id("<|startoftranscript|>")?];
        if multilingual {
            prompt.push(id("<|en|>")?);
            prompt.push(id("<|transcribe|>")?);
        }
        prompt.push(id("<|notimestamps|>")?);
        let no_speech = tokenizer
            .token_to_id("<|nospeech|>")
            .or_else(|| tokenizer.token_to_id("<|nocaptions|>"));
        Ok(Self {
            end_of_text: id("<|endoftext|>")?,
            prompt,
            no_speech,
        })
    }
}

/// Whisper on candle. Not `Sync`: one batcher thread owns it.
pub struct WhisperRecognizer {
    network: WhisperNetwork,
    config: WhisperConfig,
    tokenizer: Tokenizer,
    special: SpecialTokens,
    /// Tokens never emitted: the checkpoint's suppression list plus every special token except
    /// end-of-text (timestamps included: this decoder runs without them).
    suppressed: Vec<bool>,
    /// Additionally suppressed at the first text position (a leading blank or an empty text).
    begin_suppressed: Vec<u32>,
    alignment_heads: Vec<(usize, usize)>,
    device: Device,
    dtype: DType,
}

impl WhisperRecognizer {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` (and, when present,
    /// `generation_config.json`) from a Hugging Face Whisper checkpoint directory.
    pub fn load(model_dir: &Path, device: &Device) -> Result<Self, ModelError> {
        for required in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !model_dir.join(required).is_file() {
                return Err(ModelError::MissingFile {
                    dir: model_dir.to_path_buf(),
                    file: required,
                });
            }
        }
        let config: WhisperConfig = read_json(&model_dir.join("config.json"))?;
        let generation: GenerationConfig = if model_dir.join("generation_config.json").is_file() {
            read_json(&model_dir.join("generation_config.json"))?
        } else {
            GenerationConfig::default()
        };
        let tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|err| ModelError::Format(format!("tokenizer.json: {err}")))?;
        let multilingual = config.vocab_size >= 51865;
        let special = SpecialTokens::from_tokenizer(&tokenizer, multilingual)?;

        let dtype = network::compute_dtype(device);
        let weights = std::fs::read(model_dir.join("model.safetensors")).map_err(|source| {
            ModelError::Io {
                path: model_dir.join("model.safetensors"),
                source,
            }
        })?;
        let vb = VarBuilder::from_buffered_safetensors(weights, dtype, device)?;
        let network = WhisperNetwork::load(vb, &config)?;

        let mut suppressed = vec![false; config.vocab_size];
        let suppress_list = if config.suppress_tokens.is_empty() {
            &generation.suppress_tokens
        } else {
            &config.suppress_tokens
        };
        for &token in suppress_list {
            if let Some(flag) = suppressed.get_mut(token as usize) {
                *flag = true;
            }
        }
        for flag in suppressed.iter_mut().skip(special.end_of_text as usize + 1) {
            *flag = true;
        }
        let mut begin_suppressed = if config.begin_suppress_tokens.is_empty() {
            generation.begin_suppress_tokens.clone()
        } else {
            config.begin_suppress_tokens.clone()
        };
        if begin_suppressed.is_empty() {
            begin_suppressed = vec![220, special.end_of_text];
        }
        // Without a list, OpenAI uses every head of the second half of the decoder.
        let alignment_heads = if generation.alignment_heads.is_empty() {
            (config.decoder_layers / 2..config.decoder_layers)
                .flat_map(|layer| (0..config.decoder_attention_heads).map(move |h| (layer, h)))
                .collect()
        } else {
            generation.alignment_heads
        };
        Ok(Self {
            network,
            config,
            tokenizer,
            special,
            suppressed,
            begin_suppressed,
            alignment_heads,
            device: device.clone(),
            dtype,
        })
    }

    /// Frames in the encoder window for a batch: each row's audio plus its trailing silence,
    /// the longest of them, even, at most the model's 30 s.
    fn window_frames(&self, real_frames: &[usize], batch: &[RecognitionRequest]) -> usize {
        let max_frames = 2 * self.config.max_source_positions;
        let window = real_frames
            .iter()
            .zip(batch)
            .map(|(&frames, request)| {
                frames
                    + match request.kind {
                        WindowKind::Final => FINAL_SILENCE_FRAMES,
                        WindowKind::Partial => PARTIAL_SILENCE_FRAMES,
                    }
            })
            .max()
            .unwrap_or(0)
            .min(max_frames);
        window - window % 2
    }

    fn encode(&self, batch: &[RecognitionRequest]) -> Result<(Tensor, Vec<usize>), ModelError> {
        let n_mels = self.config.num_mel_bins;
        let max_frames = 2 * self.config.max_source_positions;
        let real_frames: Vec<usize> = batch
            .iter()
            .map(|request| (request.raw_log_mel.len() / n_mels).min(max_frames))
            .collect();
        let window = self.window_frames(&real_frames, batch);
        let mut input = Vec::with_capacity(batch.len() * n_mels * window);
        for (request, &frames) in batch.iter().zip(&real_frames) {
            let raw = &request.raw_log_mel[..frames * n_mels];
            input.extend(mel::normalize_to_model_input(raw, n_mels, window - frames));
        }
        let mel = Tensor::from_vec(input, (batch.len(), n_mels, window), &self.device)?
            .to_dtype(self.dtype)?;
        let features = self.network.encoder.forward(&mel)?;
        Ok((features, real_frames))
    }

    /// Greedy batched decoding; every row stops at end-of-text, its token budget, or a loop.
    /// A row's forced prefix is read in the first pass; rows are left-padded to one length.
    fn decode_greedy(
        &self,
        features: &Tensor,
        budgets: &[usize],
        batch: &[RecognitionRequest],
    ) -> Result<Vec<GreedyOutput>, ModelError> {
        let n_rows = budgets.len();
        let prompt = &self.special.prompt;
        let max_prefix = self.network.decoder.max_positions() / 2;
        let sequences: Vec<Vec<u32>> = batch
            .iter()
            .map(|request| {
                let prefix = &request.prefix_tokens[..request.prefix_tokens.len().min(max_prefix)];
                prompt.iter().chain(prefix).copied().collect()
            })
            .collect();
        let width = sequences.iter().map(Vec::len).max().unwrap_or(prompt.len());
        let padding: Vec<usize> = sequences.iter().map(|s| width - s.len()).collect();
        let input: Vec<u32> = sequences
            .iter()
            .zip(&padding)
            .flat_map(|(sequence, &pad)| {
                std::iter::repeat_n(self.special.end_of_text, pad).chain(sequence.iter().copied())
            })
            .collect();
        let mut state = self.network.decoder.start(features, padding.clone())?;
        let input = Tensor::from_vec(input, (n_rows, width), &self.device)?;
        let (hidden, _) = self.network.decoder.step(&input, &mut state, &[])?;

        // Logits at two columns per row: start-of-transcript (for the no-speech probability)
        // and the last one (the first prediction).
        let columns: Vec<u32> = (0..n_rows)
            .flat_map(|row| {
                [
                    (row * width + padding[row]) as u32,
                    (row * width + width - 1) as u32,
                ]
            })
            .collect();
        let selected = hidden
            .reshape((n_rows * width, ()))?
            .index_select(&Tensor::from_vec(columns, 2 * n_rows, &self.device)?, 0)?;
        let logits = self
            .network
            .decoder
            .project(&selected)?
            .to_dtype(DType::F32)?
            .reshape((n_rows, 2, ()))?;

        let mut outputs: Vec<GreedyOutput> = batch
            .iter()
            .map(|request| {
                let n_prefix = request.prefix_tokens.len().min(max_prefix);
                GreedyOutput {
                    tokens: request.prefix_tokens[..n_prefix].to_vec(),
                    probs: (0..n_prefix)
                        .map(|i| request.prefix_probs.get(i).copied().unwrap_or(1.0))
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        if let Some(no_speech) = self.special.no_speech {
            let first = logits.narrow(1, 0, 1)?.squeeze(1)?.to_vec2::<f32>()?;
            for (output, row) in outputs.iter_mut().zip(first) {
                // A forced prefix already passed this test when it was decoded.
                if output.tokens.is_empty() {
                    output.no_speech_prob = network::log_softmax_row(&row)
                        .get(no_speech as usize)
                        .map_or(0.0, |lp| lp.exp());
                }
            }
        }
        let mut last = logits.narrow(1, 1, 1)?.squeeze(1)?;
        let max_steps = self.network.decoder.max_positions().saturating_sub(width);
        let mut done = vec![false; n_rows];
        for step in 0..max_steps {
            let rows = last.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let mut next_tokens = vec![self.special.end_of_text; n_rows];
            for (row_idx, mut row) in rows.into_iter().enumerate() {
                if done[row_idx] {
                    continue;
                }
                let output = &mut outputs[row_idx];
                self.apply_suppression(&mut row, output.tokens.is_empty());
                let logprobs = network::log_softmax_row(&row);
                let token = network::argmax(&logprobs) as u32;
                output.sum_logprob += logprobs[token as usize];
                if token == self.special.end_of_text {
                    done[row_idx] = true;
                    continue;
                }
                output.tokens.push(token);
                output.probs.push(logprobs[token as usize].exp());
                if output.tokens.len() >= budgets[row_idx] {
                    done[row_idx] = true;
                } else if truncate_repetition(&mut output.tokens, &mut output.probs) {
                    output.stopped_by_loop_guard = true;
                    done[row_idx] = true;
                }
                next_tokens[row_idx] = token;
            }
            if done.iter().all(|&d| d) || step + 1 == max_steps {
                break;
            }
            let input = Tensor::from_vec(next_tokens, (n_rows, 1), &self.device)?;
            let (hidden, _) = self.network.decoder.step(&input, &mut state, &[])?;
            last = self.network.decoder.project(&hidden.squeeze(1)?)?;
        }
        Ok(outputs)
    }

    fn apply_suppression(&self, logits: &mut [f32], first_step: bool) {
        for (logit, &suppressed) in logits.iter_mut().zip(&self.suppressed) {
            if suppressed {
                *logit = f32::NEG_INFINITY;
            }
        }
        if first_step {
            for &token in &self.begin_suppressed {
                if let Some(logit) = logits.get_mut(token as usize) {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Splits text tokens into words: a token whose text starts with a space (BPE `Ġ`) opens a
    /// new word; punctuation and word pieces join the word before them.
    fn split_words(&self, tokens: &[u32]) -> Vec<Vec<usize>> {
        let mut words: Vec<Vec<usize>> = Vec::new();
        for (idx, &token) in tokens.iter().enumerate() {
            let piece = self.tokenizer.id_to_token(token).unwrap_or_default();
            let opens_word = piece.starts_with('Ġ') || words.is_empty();
            let is_punctuation = !piece.is_empty()
                && piece
                    .trim_start_matches('Ġ')
                    .chars()
                    .all(|c| c.is_ascii_punctuation());
            if opens_word && (words.is_empty() || !is_punctuation) {
                words.push(vec![idx]);
            } else if let Some(word) = words.last_mut() {
                word.push(idx);
            }
        }
        words
    }

    /// Word timings for one decoded row by DTW over the alignment heads' cross-attention.
    fn align_words(
        &self,
        features: &Tensor,
        row: usize,
        output: &GreedyOutput,
        real_frames: usize,
    ) -> Result<Vec<WordTiming>, ModelError> {
        let word_groups = self.split_words(&output.tokens);
        if word_groups.is_empty() {
            return Ok(Vec::new());
        }
        let prompt = &self.special.prompt;
        let mut sequence = prompt.clone();
        sequence.extend(&output.tokens);
        sequence.push(self.special.end_of_text);
        let row_features = features.narrow(0, row, 1)?;
        let mut state = self.network.decoder.start(&row_features, vec![0])?;
        let input = Tensor::from_vec(sequence.clone(), (1, sequence.len()), &self.device)?;
        let (_, captured) = self
            .network
            .decoder
            .step(&input, &mut state, &self.alignment_heads)?;
        let n_positions_total = features.dim(1)?;
        let n_positions = (real_frames / 2).clamp(1, n_positions_total);
        // Rows: the position before the first text token, then every text token.
        let first_row = prompt.len() - 1;
        let n_rows = output.tokens.len() + 1;
        let head_logits = captured
            .iter()
            .map(|logits| {
                let rows = logits
                    .narrow(0, first_row, n_rows)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Ok(rows)
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let matrix =
            alignment::attention_matrix(&head_logits, n_rows, n_positions_total, n_positions);
        let tokens_per_word: Vec<usize> = word_groups.iter().map(Vec::len).collect();
        let spans = alignment::word_spans(&matrix, n_rows, n_positions, &tokens_per_word);
        let to_duration =
            |position: f32| Duration::from_secs_f32(position / alignment::POSITIONS_PER_SECOND);
        Ok(word_groups
            .iter()
            .zip(spans)
            .map(|(group, (start, end))| {
                let ids: Vec<u32> = group.iter().map(|&i| output.tokens[i]).collect();
                let confidence =
                    group.iter().map(|&i| output.probs[i]).sum::<f32>() / group.len() as f32;
                WordTiming {
                    word: self.decode_text(&ids),
                    start: to_duration(start),
                    end: to_duration(end),
                    confidence,
                }
            })
            .collect())
    }

    fn decode_text(&self, tokens: &[u32]) -> String {
        self.tokenizer
            .decode(tokens, true)
            .map(|text| text.trim().to_string())
            .unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct GreedyOutput {
    tokens: Vec<u32>,
    probs: Vec<f32>,
    sum_logprob: f32,
    no_speech_prob: f32,
    stopped_by_loop_guard: bool,
}

/// Detects the decoder looping: the same n-gram repeated at the end. Long n-grams (a phrase or
/// sentence, 8 to 64 tokens) count after two occurrences, short ones after three, and single
/// tokens after five (real speech does say "words words words words"). Drops the repeats,
/// keeping one occurrence, and returns true.
fn truncate_repetition(tokens: &mut Vec<u32>, probs: &mut Vec<f32>) -> bool {
    for n in 1..=64usize {
        let repeats = match n {
            1 => 5,
            2..=7 => 3,
            _ => 2,
        };
        if tokens.len() < n * repeats {
            continue;
        }
        let tail = &tokens[tokens.len() - n..];
        let all_equal = (1..repeats).all(|k| {
            let start = tokens.len() - n * (k + 1);
            &tokens[start..start + n] == tail
        });
        if all_equal {
            let keep = tokens.len() - n * (repeats - 1);
            tokens.truncate(keep);
            probs.truncate(keep);
            return true;
        }
    }
    false
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|err| ModelError::Format(format!("{}: {err}", path.display())))
}

impl Recognizer for WhisperRecognizer {
    fn n_mels(&self) -> usize {
        self.config.num_mel_bins
    }

    fn recognize_batch(
        &mut self,
        batch: &[RecognitionRequest],
    ) -> Result<Vec<Transcript>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let (features, real_frames) = self.encode(batch)?;
        let encoded = started.elapsed();
        let budgets: Vec<usize> = real_frames
            .iter()
            .map(|&frames| {
                let seconds = frames as f32 / FRAMES_PER_SECOND;
                (seconds * MAX_TOKENS_PER_SECOND).ceil() as usize + MIN_TOKEN_BUDGET
            })
            .collect();
        let outputs = self.decode_greedy(&features, &budgets, batch)?;
        let decoded = started.elapsed();
        let transcripts = outputs
            .iter()
            .enumerate()
            .map(|(row, output)| {
                let words = if batch[row].kind == WindowKind::Final {
                    self.align_words(&features, row, output, real_frames[row])?
                } else {
                    Vec::new()
                };
                let n_tokens = output.tokens.len();
                let confidence = if n_tokens == 0 {
                    0.0
                } else {
                    output.probs.iter().sum::<f32>() / n_tokens as f32
                };
                Ok(Transcript {
                    text: self.decode_text(&output.tokens),
                    confidence,
                    avg_logprob: output.sum_logprob / (n_tokens + 1) as f32,
                    no_speech_prob: output.no_speech_prob,
                    n_tokens,
                    stopped_by_loop_guard: output.stopped_by_loop_guard,
                    words,
                    tokens: output.tokens.clone(),
                    token_probs: output.probs.clone(),
                })
            })
            .collect();
        tracing::debug!(
            batch = batch.len(),
            window_frames = features.dim(1).unwrap_or(0) * 2,
            tokens = outputs.iter().map(|o| o.tokens.len()).sum::<usize>(),
            encode_ms = encoded.as_millis() as u64,
            decode_ms = (decoded - encoded).as_millis() as u64,
            align_ms = (started.elapsed() - decoded).as_millis() as u64,
            "recognized batch"
        );
        transcripts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_guard_keeps_one_occurrence_of_a_looping_phrase() {
        let mut tokens = vec![1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5];
        let mut probs = vec![0.9; tokens.len()];
        assert!(truncate_repetition(&mut tokens, &mut probs));
        assert_eq!(tokens, vec![1, 2, 3, 4, 5]);
        assert_eq!(probs.len(), tokens.len());
    }

    #[test]
    fn repetition_guard_allows_a_word_said_four_times() {
        let mut tokens = vec![7, 9, 9, 9, 9];
        let mut probs = vec![0.9; tokens.len()];
        assert!(!truncate_repetition(&mut tokens, &mut probs));
        tokens.push(9);
        probs.push(0.9);
        assert!(truncate_repetition(&mut tokens, &mut probs));
        assert_eq!(tokens, vec![7, 9]);
    }

    #[test]
    fn repetition_guard_stops_a_repeated_sentence() {
        let sentence: Vec<u32> = (100..115).collect();
        let mut tokens: Vec<u32> = vec![1, 2];
        tokens.extend(&sentence);
        tokens.extend(&sentence);
        let mut probs = vec![0.9; tokens.len()];
        assert!(truncate_repetition(&mut tokens, &mut probs));
        assert_eq!(tokens.len(), 2 + sentence.len());
    }

    #[test]
    fn repetition_guard_ignores_ordinary_text() {
        let mut tokens = vec![1, 2, 3, 1, 2, 4, 1, 2, 5];
        let mut probs = vec![0.9; tokens.len()];
        assert!(!truncate_repetition(&mut tokens, &mut probs));
    }
}
