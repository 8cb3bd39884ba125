//! The speech corpus used by tests and benchmarks: recordings with reference transcripts.
//!
//! The full corpus lives in `../shared/speech` beside the repository when it is there; the
//! repository ships a few recordings of its own in `tests/fixtures/speech` so that tests run
//! anywhere.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Recording {
    /// File name, e.g. `jfk.wav`; its prefix up to the first `_` is its group.
    pub name: String,
    pub path: PathBuf,
    pub reference: String,
}

impl Recording {
    pub fn group(&self) -> &str {
        match self.name.split_once('_') {
            Some((prefix, _)) => prefix,
            None => self.name.trim_end_matches(".wav"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads `refs.tsv` (`file<TAB>transcript`) in `dir` and returns the recordings present in
/// `dir/wav`, in file order.
pub fn load(dir: &Path) -> Result<Vec<Recording>, CorpusError> {
    let refs_path = dir.join("refs.tsv");
    let text = std::fs::read_to_string(&refs_path).map_err(|source| CorpusError::Io {
        path: refs_path.clone(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, reference)| Recording {
            name: name.trim().to_string(),
            path: dir.join("wav").join(name.trim()),
            reference: reference.trim().to_string(),
        })
        .filter(|recording| recording.path.is_file())
        .collect())
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The recordings shipped with the repository.
pub fn fixtures_dir() -> PathBuf {
    workspace_root()
        .join("tests")
        .join("fixtures")
        .join("speech")
}

/// The full shared corpus (`$EARSHOT_SPEECH_DIR`, else `../shared/speech`), if present.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("EARSHOT_SPEECH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared").join("speech"));
    dir.join("refs.tsv").is_file().then_some(dir)
}
