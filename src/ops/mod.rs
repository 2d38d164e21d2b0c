//! What an unattended run leaves for machines and people after its report (issue 10): the
//! result file (`result`), the hooks (`hooks`) and the metrics file (`metrics`).
//!
//! Owns: the outputs of one command that drove a run, chosen on the command line and set once
//! by `cmd::run` ([`set_outputs`]), like the log format. Must not: decide row states or exit
//! codes (the engine and `report` do; this only writes down what they said), or ever see key
//! material. Invariant: every file here is written to a temporary file in the same directory,
//! fsynced and renamed into place ([`write_atomic`]), so a reader sees the old file or the
//! new one, never half of one.

pub mod hooks;
pub mod metrics;
pub mod result;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::cli::OutputFormat;

/// The outputs asked for on the command line.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// `--output`: the table, or the result as one JSON document on stdout.
    pub format: OutputFormat,
    /// `--metrics-file`.
    pub metrics_file: Option<PathBuf>,
    /// `--metrics-interval-secs`.
    pub metrics_interval: Duration,
    /// The command (`run`, `retry`, `reconcile`), named in the result.
    pub command: &'static str,
    /// When the command started (UTC milliseconds).
    pub started_ms: i64,
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            format: OutputFormat::Table,
            metrics_file: None,
            metrics_interval: Duration::from_secs(15),
            command: "run",
            started_ms: crate::store::now_ms(),
        }
    }
}

static OUTPUTS: OnceLock<Outputs> = OnceLock::new();

/// Sets this process's outputs (once, before the command runs; later calls are ignored).
pub fn set_outputs(outputs: Outputs) {
    let _ = OUTPUTS.set(outputs);
}

/// This process's outputs (defaults when none were set: the table, no metrics).
pub fn outputs() -> &'static Outputs {
    OUTPUTS.get_or_init(Outputs::default)
}

/// Whether stdout carries the result as JSON (then nothing else may be printed there).
pub fn json_stdout() -> bool {
    outputs().format == OutputFormat::Json
}

/// A temporary file's name beside `path`, unique in this process and across processes. A
/// leading dot: the textfile collector reads only `*.prom`, and nobody mistakes it for a report.
pub fn temp_beside(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` to `path` through a temporary file in the same directory (fsynced), renamed
/// into place; the directory is fsynced too so the rename survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = temp_beside(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // Best effort: some file systems refuse to open a directory for syncing.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("x.prom");
        write_atomic(&p, b"one\n").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
