//! Word timings from cross-attention: dynamic time warping over the alignment heads' attention,
//! as OpenAI Whisper's `word_timestamps` does it.

/// Audio positions per second in the encoder output (one every 20 ms).
pub(crate) const POSITIONS_PER_SECOND: f32 = 50.0;
const MEDIAN_FILTER_WIDTH: usize = 7;

/// Builds the token-by-time cost matrix from the alignment heads' pre-softmax cross-attention
/// logits (each `[n_tokens, n_positions_total]`, row-major), keeping the first `n_positions`
/// (real audio, not padding): softmax over time, standardise each time column across tokens,
/// median filter along time, average the heads.
pub(crate) fn attention_matrix(
    head_logits: &[Vec<f32>],
    n_tokens: usize,
    n_positions_total: usize,
    n_positions: usize,
) -> Vec<f32> {
    let mut mean_matrix = vec![0.0f32; n_tokens * n_positions];
    if head_logits.is_empty() || n_positions == 0 {
        return mean_matrix;
    }
    for logits in head_logits {
        let mut weights = vec![0.0f32; n_tokens * n_positions];
        for token in 0..n_tokens {
            let row = &logits[token * n_positions_total..token * n_positions_total + n_positions];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
            for (position, &value) in row.iter().enumerate() {
                weights[token * n_positions + position] = (value - max).exp() / sum;
            }
        }
        standardise_columns(&mut weights, n_tokens, n_positions);
        let filtered = median_filter_rows(&weights, n_tokens, n_positions, MEDIAN_FILTER_WIDTH);
        for (acc, value) in mean_matrix.iter_mut().zip(filtered) {
            *acc += value / head_logits.len() as f32;
        }
    }
    mean_matrix
}

fn standardise_columns(weights: &mut [f32], n_rows: usize, n_cols: usize) {
    if n_rows < 2 {
        return;
    }
    for col in 0..n_cols {
        let mean = (0..n_rows).map(|r| weights[r * n_cols + col]).sum::<f32>() / n_rows as f32;
        let variance = (0..n_rows)
            .map(|r| (weights[r * n_cols + col] - mean).powi(2))
            .sum::<f32>()
            / (n_rows - 1) as f32;
        let std = variance.sqrt().max(1e-8);
        for row in 0..n_rows {
            let value = &mut weights[row * n_cols + col];
            *value = (*value - mean) / std;
        }
    }
}

fn median_filter_rows(values: &[f32], n_rows: usize, n_cols: usize, width: usize) -> Vec<f32> {
    let half = width / 2;
    let mut out = vec![0.0f32; values.len()];
    let mut window = Vec::with_capacity(width);
    for row in 0..n_rows {
        let row_values = &values[row * n_cols..(row + 1) * n_cols];
        for col in 0..n_cols {
            window.clear();
            // Reflect at the edges, as scipy/torch do for this filter.
            for offset in 0..width {
                let idx = col as isize + offset as isize - half as isize;
                let idx = reflect(idx, n_cols);
                window.push(row_values[idx]);
            }
            window.sort_by(f32::total_cmp);
            out[row * n_cols + col] = window[half];
        }
    }
    out
}

fn reflect(idx: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let mut idx = idx.rem_euclid(period);
    if idx >= len as isize {
        idx = period - idx;
    }
    idx as usize
}

/// Monotonic alignment minimising the summed cost; returns (row, col) pairs from (0, 0) to
/// (n_rows-1, n_cols-1).
pub(crate) fn dtw(cost: &[f32], n_rows: usize, n_cols: usize) -> Vec<(usize, usize)> {
    if n_rows == 0 || n_cols == 0 {
        return Vec::new();
    }
    let width = n_cols + 1;
    let mut total = vec![f32::INFINITY; (n_rows + 1) * width];
    // 0 = diagonal, 1 = from the row above (next token, same time), 2 = from the left.
    let mut trace = vec![0u8; (n_rows + 1) * width];
    total[0] = 0.0;
    for row in 1..=n_rows {
        for col in 1..=n_cols {
            let diagonal = total[(row - 1) * width + col - 1];
            let up = total[(row - 1) * width + col];
            let left = total[row * width + col - 1];
            let (best, step) = if diagonal <= up && diagonal <= left {
                (diagonal, 0)
            } else if up <= left {
                (up, 1)
            } else {
                (left, 2)
            };
            total[row * width + col] = cost[(row - 1) * n_cols + col - 1] + best;
            trace[row * width + col] = step;
        }
    }
    let (mut row, mut col) = (n_rows, n_cols);
    let mut path = Vec::with_capacity(n_rows + n_cols);
    while row > 0 && col > 0 {
        path.push((row - 1, col - 1));
        match trace[row * width + col] {
            0 => {
                row -= 1;
                col -= 1;
            }
            1 => row -= 1,
            _ => col -= 1,
        }
    }
    path.reverse();
    path
}

/// Start and end (in audio positions) of each word, given how many tokens each word has and
/// the cost matrix whose rows are [the token before the text, text tokens...]. Mirrors OpenAI's
/// `find_alignment`: a word starts where the path first reaches its first token's row.
pub(crate) fn word_spans(
    matrix: &[f32],
    n_rows: usize,
    n_positions: usize,
    tokens_per_word: &[usize],
) -> Vec<(f32, f32)> {
    let cost: Vec<f32> = matrix.iter().map(|v| -v).collect();
    let path = dtw(&cost, n_rows, n_positions);
    // Time at which the path enters each row.
    let mut row_entry = vec![0.0f32; n_rows + 1];
    let mut last_row = None;
    for &(row, col) in &path {
        if last_row != Some(row) {
            row_entry[row] = col as f32;
            last_row = Some(row);
        }
    }
    row_entry[n_rows] = n_positions as f32;
    let mut spans = Vec::with_capacity(tokens_per_word.len());
    let mut boundary = 0usize;
    for &n_tokens in tokens_per_word {
        let start = row_entry[boundary.min(n_rows)];
        boundary += n_tokens;
        let end = row_entry[boundary.min(n_rows)];
        spans.push((start, end.max(start)));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // Cost 0 on the diagonal of a 3x3, 1 elsewhere.
        let cost = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        assert_eq!(dtw(&cost, 3, 3), vec![(0, 0), (1, 1), (2, 2)]);
    }

    #[test]
    fn dtw_path_is_monotonic_and_complete() {
        let cost: Vec<f32> = (0..4 * 9).map(|i| ((i * 7919) % 13) as f32).collect();
        let path = dtw(&cost, 4, 9);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(3, 8)));
        for pair in path.windows(2) {
            let (r0, c0) = pair[0];
            let (r1, c1) = pair[1];
            assert!(r1 >= r0 && c1 >= c0 && (r1 - r0) + (c1 - c0) >= 1);
        }
    }

    #[test]
    fn word_spans_follow_attention_peaks() {
        // Rows: [pre-text token, w1, w2, eot]; attention of row r peaks at time 3r.
        let (n_rows, n_positions) = (4, 12);
        let mut matrix = vec![0.0f32; n_rows * n_positions];
        for row in 0..n_rows {
            for col in 0..n_positions {
                let distance = (col as f32 - 3.0 * row as f32).abs();
                matrix[row * n_positions + col] = -distance;
            }
        }
        // Words: "pre-text" row is part of the first word's lead-in as in OpenAI's layout:
        // tokens_per_word covers rows [1..] via boundaries starting at row 0.
        let spans = word_spans(&matrix, n_rows, n_positions, &[1, 1, 1]);
        assert_eq!(spans.len(), 3);
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].0,
                "starts must not go backwards: {spans:?}"
            );
        }
        assert!(spans[1].0 > spans[0].0);
    }

    #[test]
    fn median_filter_removes_single_spikes() {
        let values = [0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
        let filtered = median_filter_rows(&values, 1, 8, 7);
        assert!(filtered.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(-2, 5), 2);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(2, 5), 2);
        assert_eq!(reflect(-3, 1), 0);
    }
}
