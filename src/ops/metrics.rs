//! The metrics file (`--metrics-file PATH`): Prometheus text format (exposition format 0.0.4)
//! for the node-exporter textfile collector, written atomically every
//! `--metrics-interval-secs` during a run and once at its end (`cmd::drive`).
//!
//! Every sample carries `job` (the job file's stem) and `kind` (`payout`, `reconcile`,
//! `repayment-recon`, `disbursement-recon`). What each family counts:
//!
//! - `starpay_batch_rows`, `starpay_batch_amount_centavos` {state}: the run's rows and amounts
//!   by report state (payout) or category (reconciliation), every one listed, zeros too.
//! - `starpay_batch_requests_total` {operation, class, code}: this command's signed requests by
//!   reference section (`5.2`), class (`send`, `query`, `other`) and answer code (Starpay's
//!   code, or `not_sent`, `no_answer`, `unverified`, `bad_payload`).
//! - `starpay_batch_queries_total`: this command's status queries (class `query`).
//! - `starpay_batch_retries`: re-sends of an already-sent msgId (the same signed bytes) over
//!   the whole payout run, every command that drove it included (absent for reconciliation).
//! - `starpay_batch_duration_seconds`: this command's time so far.
//! - `starpay_batch_limiter_rate_per_second`: the rate the adaptive limiter stands at (halved
//!   on each 406, back up on successes).
//! - `starpay_batch_run_id`, `starpay_batch_in_progress` (1 while running, 0 at the end),
//!   `starpay_batch_exit_code` (at the end only), `starpay_batch_last_update_timestamp_seconds`.
//! - `starpay_batch_last_success_timestamp_seconds`: when a command on a run of this job and
//!   kind last exited 0 (from the store; 0 when none ever did): the heartbeat to alert on.
//!
//! Written by hand (HELP and TYPE once per family, label values escaped): the format is
//! small, and the maintained client crates emit OpenMetrics (`# EOF`, `_total` outside the
//! TYPE name) rather than the 0.0.4 text the textfile collector documents.

use std::fmt::Write as _;

use crate::domain::Centavos;
use crate::starpay::stats;

/// One moment of a run, as the metrics file shows it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub job: String,
    pub kind: String,
    pub run_id: i64,
    /// (state or category, rows, amount), every one in report order.
    pub rows: Vec<(String, i64, Centavos)>,
    /// (section, code, count) of this command's requests.
    pub requests: Vec<(&'static str, String, u64)>,
    pub retries: Option<i64>,
    pub duration_secs: f64,
    pub limiter_rate: Option<u32>,
    pub in_progress: bool,
    pub exit_code: Option<i32>,
    /// UTC milliseconds.
    pub last_success_ms: Option<i64>,
    pub now_ms: i64,
}

/// `\`, `"` and newline escaped, as the format requires inside a label value.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out {
    text: String,
    base: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let mut l = self.base.clone();
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.text, "{name}{{{l}}} {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The file's text.
///
/// Longer than ~100 lines on purpose: one `family` (or `single`) call per metric, in the order the README
/// lists them, so the whole exported surface (names, types, help texts, labels) reads as one
/// table and a reviewer can check it against the README at a glance.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out {
        text: String::new(),
        base: format!(
            "job=\"{}\",kind=\"{}\"",
            escape_label(&s.job),
            escape_label(&s.kind)
        ),
    };
    o.family(
        "starpay_batch_rows",
        "gauge",
        "Rows of the run by report state (payout) or category (reconciliation).",
    );
    for (state, n, _) in &s.rows {
        o.sample("starpay_batch_rows", &[("state", state)], n);
    }
    o.family(
        "starpay_batch_amount_centavos",
        "gauge",
        "Amount of the run's rows by report state or category, in centavos.",
    );
    for (state, _, a) in &s.rows {
        o.sample(
            "starpay_batch_amount_centavos",
            &[("state", state)],
            a.get(),
        );
    }
    o.family(
        "starpay_batch_requests_total",
        "counter",
        "Signed requests of this command by operation (reference section), class and answer code.",
    );
    let mut queries = 0u64;
    for (section, code, n) in &s.requests {
        let class = stats::class_of(section);
        if class == "query" {
            queries += n;
        }
        o.sample(
            "starpay_batch_requests_total",
            &[("operation", section), ("class", class), ("code", code)],
            n,
        );
    }
    // The families with one unlabelled sample; `None` leaves a family out.
    #[rustfmt::skip]
    let singles: [(&str, &str, &str, Option<String>); 9] = [
        ("starpay_batch_queries_total", "counter", "Status queries (5.4, 6.2, 6.8) of this command.",
            Some(queries.to_string())),
        ("starpay_batch_retries", "gauge", "Re-sends of an already-sent msgId (same signed bytes) over the whole payout run.",
            s.retries.map(|r| r.to_string())),
        ("starpay_batch_duration_seconds", "gauge", "Time this command has been driving the run.",
            Some(format!("{:.3}", s.duration_secs))),
        ("starpay_batch_limiter_rate_per_second", "gauge", "Requests per second the adaptive rate limiter stands at (halved on each 406).",
            s.limiter_rate.map(|rate| rate.to_string())),
        ("starpay_batch_run_id", "gauge", "The run being driven.",
            Some(s.run_id.to_string())),
        ("starpay_batch_in_progress", "gauge", "1 while the command runs, 0 once it has ended.",
            Some(u8::from(s.in_progress).to_string())),
        ("starpay_batch_exit_code", "gauge", "Exit code of the command (README: exit codes).",
            s.exit_code.map(|code| code.to_string())),
        ("starpay_batch_last_update_timestamp_seconds", "gauge", "When this file was written (Unix time).",
            Some((s.now_ms / 1000).to_string())),
        ("starpay_batch_last_success_timestamp_seconds", "gauge", "When a command on a run of this job and kind last exited 0 (Unix time; 0: never).",
            Some(s.last_success_ms.map_or(0, |ms| ms / 1000).to_string())),
    ];
    for (name, kind, help, value) in singles {
        if let Some(v) = value {
            o.single(name, kind, help, v);
        }
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_once_with_escaped_labels() {
        let s = Snapshot {
            job: "night\"ly\\\n".into(),
            kind: "payout".into(),
            run_id: 7,
            rows: vec![
                ("SUCCESS".into(), 2, Centavos::new(150_050)),
                ("FAILED".into(), 1, Centavos::new(5)),
            ],
            requests: vec![("5.2", "200".into(), 3), ("5.4", "404".into(), 2)],
            retries: Some(1),
            duration_secs: 1.5,
            limiter_rate: Some(5),
            in_progress: false,
            exit_code: Some(2),
            last_success_ms: Some(1_700_000_000_123),
            now_ms: 1_700_000_100_000,
        };
        let t = render(&s);
        assert!(t.contains(r#"job="night\"ly\\\n""#), "{t}");
        assert!(t.contains(
            r#"starpay_batch_rows{job="night\"ly\\\n",kind="payout",state="SUCCESS"} 2"#
        ));
        assert!(t.contains("state=\"SUCCESS\"} 150050\n"));
        assert!(t.contains("operation=\"5.4\",class=\"query\",code=\"404\"} 2\n"));
        assert!(t.contains(
            "starpay_batch_queries_total{job=\"night\\\"ly\\\\\\n\",kind=\"payout\"} 2\n"
        ));
        assert!(
            t.contains("starpay_batch_last_success_timestamp_seconds{")
                && t.ends_with("} 1700000000\n")
        );
        let types = t.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = t.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        let mut names: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a family twice");
    }
}
