//! A job's `[hooks]`: commands run after a run's report and result file are written, chosen
//! by the exit code (README "Hooks"):
//!
//! | exit code | hook |
//! |---|---|
//! | 0 | `on_success` |
//! | 1, 2 | `on_failure` (could not run to the end; finished with failures) |
//! | 3 | `on_attention` (rows unresolved or NEEDS_ATTENTION, or interrupted) |
//!
//! Codes 4, 64 and 75 end a command before any run is driven, so no hook runs for them.
//!
//! Each hook is an argv array run without a shell, in its own process group, with the result
//! JSON on stdin and `STARPAY_RESULT_FILE`, `STARPAY_EXIT_CODE`, `STARPAY_JOB`,
//! `STARPAY_RUN_ID` and `STARPAY_HOOK` in its environment. Every other `STARPAY_*` variable
//! of ours is removed first (key paths included): hooks never see secrets or key locations.
//! A hook that fails, cannot start or outlives `timeout_secs` (its whole process group is
//! then killed) is logged in one line and never changes the run's exit code. Its stdout and
//! stderr are captured (the last [`TAIL_BYTES`] of each kept for the log), never mixed into
//! ours: stdout may be carrying the result JSON.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::HookSettings;
use crate::exit;

/// Bytes of a hook's stdout/stderr kept for the log line.
pub const TAIL_BYTES: usize = 1024;
/// How long the captured output is waited for once the hook has exited (a child it left
/// behind may hold the pipes open).
const DRAIN: Duration = Duration::from_millis(500);

/// The hook for an exit code: its table key and argv, when the job has one.
pub fn hook_for(hooks: &HookSettings, code: i32) -> Option<(&'static str, &[String])> {
    let (key, argv) = match code {
        exit::OK => ("on_success", &hooks.on_success),
        exit::COULD_NOT_RUN | exit::FINISHED_WITH_FAILURES => ("on_failure", &hooks.on_failure),
        exit::UNRESOLVED => ("on_attention", &hooks.on_attention),
        _ => return None,
    };
    argv.as_deref().map(|a| (key, a))
}

/// What a hook is told.
pub struct HookInput<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub exit_code: i32,
    /// Absent when the result file could not be written (the JSON still comes on stdin).
    pub result_file: Option<&'a Path>,
    pub json: &'a str,
}

/// How a hook ended (also logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Ok,
    Failed(String),
    CannotStart(String),
    TimedOut,
}

/// Runs the hook for `input.exit_code`, if the job has one; logs how it ended.
pub async fn run(hooks: &HookSettings, input: &HookInput<'_>) -> Option<HookOutcome> {
    let (key, argv) = hook_for(hooks, input.exit_code)?;
    let started = Instant::now();
    let outcome = run_one(key, argv, hooks.timeout, input).await;
    let program = &argv[0];
    let secs = started.elapsed().as_secs_f64();
    match &outcome {
        HookOutcome::Ok => crate::say!("hook {key} ({program}) done in {secs:.1} s"),
        HookOutcome::Failed(why) => crate::say_warn!(
            "hook {key} ({program}) failed after {secs:.1} s; the exit code stays {}: {why}",
            input.exit_code
        ),
        HookOutcome::CannotStart(why) => crate::say_warn!(
            "hook {key} could not start; the exit code stays {}: {program}: {why}",
            input.exit_code
        ),
        HookOutcome::TimedOut => crate::say_warn!(
            "hook {key} ({program}) still running after {} s: killed; the exit code stays {}",
            hooks.timeout.as_secs(),
            input.exit_code
        ),
    }
    Some(outcome)
}

async fn run_one(
    key: &'static str,
    argv: &[String],
    timeout: Duration,
    input: &HookInput<'_>,
) -> HookOutcome {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own group: a timeout kills what it started too, and a Ctrl-C on our terminal
        // does not reach it.
        .process_group(0);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STARPAY_") {
            cmd.env_remove(name);
        }
    }
    if let Some(p) = input.result_file {
        cmd.env("STARPAY_RESULT_FILE", p);
    }
    cmd.env("STARPAY_EXIT_CODE", input.exit_code.to_string())
        .env("STARPAY_JOB", input.job)
        .env("STARPAY_RUN_ID", input.run_id.to_string())
        .env("STARPAY_HOOK", key);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HookOutcome::CannotStart(e.to_string()),
    };
    let pid = child.id();
    // Written from a task: a hook that never reads stdin must not block us (a closed pipe is
    // its choice, not an error).
    let stdin = child.stdin.take().map(|mut w| {
        let json = input.json.as_bytes().to_vec();
        tokio::spawn(async move {
            let _ = w.write_all(&json).await;
            let _ = w.shutdown().await;
        })
    });
    let out = child.stdout.take().map(|r| tokio::spawn(tail(r)));
    let err = child.stderr.take().map(|r| tokio::spawn(tail(r)));
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let kill_group = || {
        if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    };
    let outcome = match status {
        Err(_) => {
            kill_group();
            let _ = child.kill().await;
            HookOutcome::TimedOut
        }
        Ok(Err(e)) => HookOutcome::Failed(format!("cannot wait for it: {e}")),
        Ok(Ok(status)) if status.success() => HookOutcome::Ok,
        Ok(Ok(status)) => {
            let stderr = collect(err).await;
            let stdout = collect(out).await;
            let said = [stderr, stdout]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" | ");
            let how = match status.code() {
                Some(c) => format!("exit {c}"),
                None => format!("{status}"),
            };
            return HookOutcome::Failed(if said.is_empty() {
                how
            } else {
                format!("{how}; it said: {said}")
            });
        }
    };
    for h in [out, err].into_iter().flatten() {
        h.abort();
    }
    if let Some(h) = stdin {
        h.abort();
    }
    outcome
}

/// Reads everything, keeps the last [`TAIL_BYTES`].
async fn tail(mut r: impl AsyncRead + Unpin) -> String {
    let mut kept: VecDeque<u8> = VecDeque::with_capacity(TAIL_BYTES);
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend(&buf[..n]);
        while kept.len() > TAIL_BYTES {
            kept.pop_front();
        }
    }
    let bytes: Vec<u8> = kept.into_iter().collect();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The captured tail, waiting at most [`DRAIN`].
async fn collect(h: Option<tokio::task::JoinHandle<String>>) -> String {
    let Some(h) = h else {
        return String::new();
    };
    let abort = h.abort_handle();
    match tokio::time::timeout(DRAIN, h).await {
        Ok(Ok(s)) => s,
        _ => {
            abort.abort();
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks() -> HookSettings {
        HookSettings {
            on_success: Some(vec!["s".into()]),
            on_failure: Some(vec!["f".into()]),
            on_attention: Some(vec!["a".into()]),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn exit_code_picks_the_hook() {
        let h = hooks();
        let key = |c| hook_for(&h, c).map(|(k, _)| k);
        assert_eq!(key(0), Some("on_success"));
        assert_eq!(key(1), Some("on_failure"));
        assert_eq!(key(2), Some("on_failure"));
        assert_eq!(key(3), Some("on_attention"));
        assert_eq!(key(4), None);
        assert_eq!(key(75), None);
        let none = HookSettings::default();
        assert_eq!(hook_for(&none, 0), None);
    }
}
