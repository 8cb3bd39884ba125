//! The audio a load test streams: one WAV, a directory of WAVs, or a corpus directory
//! (`refs.tsv` with `wav/`), converted once to 16 kHz mono PCM16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use earshot_audio::pcm::encode_pcm16;
use earshot_audio::resample::StreamResampler;
use earshot_audio::wav::read_wav;

use crate::run::Clip;

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("cannot read {path}: {reason}", path = .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("no WAV files in {path}", path = .0.display())]
    Empty(PathBuf),
}

/// Loads `audio` (a WAV file or a directory) with references from `refs` (a `file<TAB>text`
/// TSV), or from the corpus's `refs.tsv` (inside the directory, or beside the file or one level
/// up) when there is one.
pub fn load(audio: &Path, refs: Option<&Path>) -> Result<Vec<Clip>, ClipError> {
    let (files, default_refs) = if audio.is_dir() {
        let wav_dir = if audio.join("wav").is_dir() {
            audio.join("wav")
        } else {
            audio.to_path_buf()
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&wav_dir)
            .map_err(|err| read_error(&wav_dir, err))?
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("wav"))
            })
            .collect();
        files.sort();
        (files, audio.join("refs.tsv"))
    } else {
        // Beside the file, or one level up in the corpus layout (`refs.tsv` and `wav/`).
        let parent = audio.parent().unwrap_or(Path::new("."));
        let beside = [parent.join("refs.tsv"), parent.join("../refs.tsv")]
            .into_iter()
            .find(|path| path.is_file())
            .unwrap_or_else(|| parent.join("refs.tsv"));
        (vec![audio.to_path_buf()], beside)
    };
    if files.is_empty() {
        return Err(ClipError::Empty(audio.to_path_buf()));
    }
    let references = match refs {
        Some(path) => read_refs(path)?,
        None if default_refs.is_file() => read_refs(&default_refs)?,
        None => HashMap::new(),
    };
    files
        .iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Clip {
                reference: references.get(&name).cloned(),
                pcm: pcm16_at_16k(path)?.into(),
                name,
            })
        })
        .collect()
}

fn read_refs(path: &Path) -> Result<HashMap<String, String>, ClipError> {
    let text = std::fs::read_to_string(path).map_err(|err| read_error(path, err))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, text)| (name.trim().to_string(), text.trim().to_string()))
        .collect())
}

fn pcm16_at_16k(path: &Path) -> Result<Vec<u8>, ClipError> {
    let audio = read_wav(path).map_err(|err| read_error(path, err))?;
    if audio.sample_rate == 16_000 {
        return Ok(encode_pcm16(&audio.samples));
    }
    let mut resampler =
        StreamResampler::new(audio.sample_rate).map_err(|err| read_error(path, err))?;
    let mut samples = resampler.process(&audio.samples);
    samples.extend(resampler.flush());
    Ok(encode_pcm16(&samples))
}

fn read_error(path: &Path, err: impl std::fmt::Display) -> ClipError {
    ClipError::Read {
        path: path.to_path_buf(),
        reason: err.to_string(),
    }
}
