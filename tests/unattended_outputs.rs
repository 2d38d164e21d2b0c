//! Unattended operation (issue 10, phase 2): the result file, `--output json`, the job's
//! `[hooks]` and the metrics file. Real binary, real simulator over HTTP on 127.0.0.1, real
//! SQLite files in temp dirs. Together well under 20 s.

mod payout_common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use payout_common::*;
use serde_json::Value;

const LIMITS: &str = "requests_per_second = 200\nburst = 50\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2\nconnect_retry_secs = 0";

/// Runs the binary with extra environment variables, off the async threads.
async fn run_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut c = bin();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(&args).stdin(Stdio::null()).output().unwrap()
    })
    .await
    .unwrap()
}

/// A payout job against `sim` with a `[hooks]` table appended.
fn job_with_hooks(dir: &Path, name: &str, sim_url_job: PathBuf, hooks: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(&sim_url_job).unwrap();
    text.push_str("\n[hooks]\n");
    text.push_str(hooks);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// An executable shell script (the hook itself is run without a shell: argv[0] is this file).
fn script(path: &Path, body: &str) -> String {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    s(path)
}

/// The one JSON document on stdout, or a panic saying what else was there.
fn one_json_document(out: &Output) -> Value {
    let mut docs = serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>();
    let first = docs
        .next()
        .unwrap_or_else(|| panic!("no JSON on stdout\n{}", show(out)))
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", show(out)));
    assert!(
        docs.next().is_none(),
        "more than one document\n{}",
        show(out)
    );
    first
}

// ------------------------------------------------------------------ a strict text-format parser

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text exposition format 0.0.4 strictly: HELP and TYPE at most once per
/// family and before its samples, every sample of a declared family, names and label names
/// valid, label values with only the three escapes, no duplicate series, a float value.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    fn name_ok(n: &str) -> bool {
        let mut c = n.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped: HashMap<String, ()> = HashMap::new();
    let mut seen_samples: HashMap<String, ()> = HashMap::new();
    let mut series = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            match (kw, name) {
                (Some("TYPE"), Some(name)) => {
                    if !name_ok(name) || typed.contains_key(name) || seen_samples.contains_key(name)
                    {
                        return Err(at("bad or late TYPE"));
                    }
                    let t = arg.unwrap_or("");
                    if !["counter", "gauge", "untyped", "summary", "histogram"].contains(&t) {
                        return Err(at("unknown type"));
                    }
                    typed.insert(name.to_string(), t.to_string());
                }
                (Some("HELP"), Some(name))
                    if !name_ok(name) || helped.insert(name.to_string(), ()).is_some() =>
                {
                    return Err(at("bad or repeated HELP"));
                }
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return Err(at("no value")),
        };
        if !name_ok(name) {
            return Err(at("bad metric name"));
        }
        if !typed.contains_key(name) {
            return Err(at("sample without TYPE"));
        }
        seen_samples.insert(name.to_string(), ());
        let mut labels = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                let mut lname = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '=' || c == '}' {
                        break;
                    }
                    lname.push(c);
                    chars.next();
                }
                if chars.next() == Some('}') && lname.is_empty() {
                    break;
                }
                if !name_ok(&lname) || chars.next() != Some('"') {
                    return Err(at("bad label"));
                }
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('\\') => v.push('\\'),
                            Some('"') => v.push('"'),
                            Some('n') => v.push('\n'),
                            _ => return Err(at("bad escape")),
                        },
                        Some('"') => break,
                        Some('\n') | None => return Err(at("unterminated label value")),
                        Some(c) => v.push(c),
                    }
                }
                if labels.insert(lname, v).is_some() {
                    return Err(at("label twice"));
                }
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => return Err(at("bad label list")),
                }
            }
        }
        let rest: String = chars.collect();
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before value"))?;
        let value: f64 = value.trim_end().parse().map_err(|_| at("bad value"))?;
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series"));
        }
        out.push((name.to_string(), labels, value));
    }
    Ok(out)
}

fn metric(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Vec<f64> {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name && label.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| *v)
        .collect()
}

#[test]
fn the_parser_refuses_what_it_should() {
    let ok = "# HELP a x\n# TYPE a gauge\na{job=\"q\\\"\\\\\\n\"} 1\n";
    let parsed = parse_prometheus(ok).unwrap();
    assert_eq!(parsed[0].1["job"], "q\"\\\n");
    for bad in [
        "a 1\n",                                        // no TYPE
        "# TYPE a gauge\na{job=\"x} 1\n",               // unterminated
        "# TYPE a gauge\na{job=\"x\"} one\n",           // value
        "# TYPE a gauge\na 1\n# TYPE a gauge\n",        // TYPE twice / late
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n", // duplicate
        "# TYPE a gauge\na{x=\"\\t\"} 1\n",             // bad escape
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}

// ------------------------------------------------------------------ the tests

/// One run with a FAILED row (exit 2): `--output json` prints exactly one JSON document, the
/// same as the result file; its counts and amounts agree with the summary CSV; the FAILED row
/// is listed for a human; the on_failure hook gets the result on stdin and its path in the
/// environment, and no key path; the metrics file parses and its row counts agree with the
/// report, its send count with the simulator's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_file_json_output_hook_and_metrics_agree_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(2001)).await;
    let input = dir.path().join("in.csv");
    let n = 6;
    write_csv(&input, n, |i| if i == 2 { "0401" } else { "1358" });
    let base = write_job(dir.path(), "base", &sim, &input, LIMITS, FAST_RESOLVE);
    let hook = script(
        &dir.path().join("record.sh"),
        "env | grep '^STARPAY_' | sort > \"$1/env.txt\"\ncat > \"$1/stdin.json\"",
    );
    let job = job_with_hooks(
        dir.path(),
        "nightly",
        base,
        &format!(
            "on_failure = [{hook:?}, {:?}]\non_success = [\"/nonexistent/never\"]\ntimeout_secs = 10\n",
            s(dir.path())
        ),
    );
    let metrics_path = dir.path().join("textfile/nightly.prom");
    let key = root().join("samples/keys/TEST-ONLY-demo-merchant-private.pem");
    let out = run_env(
        vec![
            "run".into(),
            s(&job),
            "--output".into(),
            "json".into(),
            "--metrics-file".into(),
            s(&metrics_path),
        ],
        // A key path from the environment: the hook must not see it.
        vec![("STARPAY_PRIVATE_KEY_FILE", s(&key))],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let doc = one_json_document(&out);

    // The result file: the same object, at <reports>/<job>-<run>-result.json.
    let result_path = dir.path().join("reports/nightly-1-result.json");
    let file: Value = serde_json::from_slice(&std::fs::read(&result_path).unwrap()).unwrap();
    assert_eq!(file, doc);
    assert_eq!(doc["job"], "nightly");
    assert_eq!(doc["run_id"], 1);
    assert_eq!(doc["kind"], "payout");
    assert_eq!(doc["command"], "run");
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["exit_meaning"].as_str().unwrap().contains("FAILED"));
    assert_eq!(doc["input"]["path"], s(&input));
    assert_eq!(doc["input"]["sha256"].as_str().unwrap().len(), 64);
    assert!(
        doc["started_at"].as_str().unwrap().ends_with("+08:00"),
        "{doc}"
    );
    assert!(doc["ended_at"].as_str().unwrap() >= doc["started_at"].as_str().unwrap());
    assert_eq!(doc["result_file"], s(&result_path));

    // Counts and amounts: the summary CSV's, as integers and as decimal strings.
    let summary = read_summary(&dir.path().join("reports/nightly-1-summary.csv"));
    let counts = doc["counts"].as_array().unwrap();
    assert_eq!(
        counts.len() + 1,
        summary.len(),
        "every state, and TOTAL in the CSV"
    );
    for c in counts.iter().chain([&doc["total"]]) {
        let name = c["name"].as_str().unwrap();
        let (rows, cents) = summary[name];
        assert_eq!(c["rows"].as_u64(), Some(rows), "{name}");
        assert_eq!(c["amount_centavos"].as_i64(), Some(cents), "{name}");
        assert!(
            c["amount_centavos"].is_i64() && c["amount"].is_string(),
            "{c}"
        );
        assert_eq!(centavos(c["amount"].as_str().unwrap()), cents, "{name}");
    }
    assert_eq!(summary["FAILED"].0, 1);
    assert_eq!(summary["SUCCESS"].0, (n - 1) as u64);

    // The row that needs a human.
    let human = doc["needs_human"].as_array().unwrap();
    assert_eq!(human.len(), 1, "{doc}");
    assert_eq!(human[0]["reference"], "REF-000002");
    assert_eq!(human[0]["line"], 4);
    assert_eq!(human[0]["state"], "FAILED");
    assert!(
        human[0]["reason"].as_str().unwrap().contains("AC01"),
        "{doc}"
    );
    assert!(!human[0]["action"].as_str().unwrap().is_empty());
    assert_eq!(doc["needs_human_omitted"], 0);

    // The hook: the JSON on stdin, the file's path and the exit code in its environment, no key.
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    let env: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        env.get("STARPAY_RESULT_FILE"),
        Some(&s(&result_path).as_str())
    );
    assert_eq!(env.get("STARPAY_EXIT_CODE"), Some(&"2"));
    assert_eq!(env.get("STARPAY_JOB"), Some(&"nightly"));
    assert_eq!(env.get("STARPAY_RUN_ID"), Some(&"1"));
    assert_eq!(env.get("STARPAY_HOOK"), Some(&"on_failure"));
    assert!(!env.contains_key("STARPAY_PRIVATE_KEY_FILE"), "{env:?}");
    let stdin: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stdin.json")).unwrap()).unwrap();
    assert_eq!(stdin, doc);

    // The metrics file.
    let text = std::fs::read_to_string(&metrics_path).unwrap();
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(samples
        .iter()
        .all(|(_, l, _)| l["job"] == "nightly" && l["kind"] == "payout"));
    for (state, (rows, cents)) in &summary {
        if state == "TOTAL" {
            continue;
        }
        assert_eq!(
            metric(&samples, "starpay_batch_rows", Some(("state", state))),
            vec![*rows as f64],
            "{state}\n{text}"
        );
        assert_eq!(
            metric(
                &samples,
                "starpay_batch_amount_centavos",
                Some(("state", state))
            ),
            vec![*cents as f64],
            "{state}"
        );
    }
    let sent: f64 = metric(
        &samples,
        "starpay_batch_requests_total",
        Some(("class", "send")),
    )
    .iter()
    .sum();
    assert_eq!(sent as usize, sends(&sim).len(), "{text}");
    let queried: f64 = metric(&samples, "starpay_batch_queries_total", None)
        .iter()
        .sum();
    assert_eq!(queried as usize, queries(&sim).len(), "{text}");
    assert_eq!(metric(&samples, "starpay_batch_exit_code", None), vec![2.0]);
    assert_eq!(
        metric(&samples, "starpay_batch_in_progress", None),
        vec![0.0]
    );
    assert_eq!(metric(&samples, "starpay_batch_retries", None), vec![0.0]);
    assert_eq!(
        metric(
            &samples,
            "starpay_batch_last_success_timestamp_seconds",
            None
        ),
        vec![0.0],
        "never exited 0"
    );
    assert_eq!(
        metric(&samples, "starpay_batch_limiter_rate_per_second", None),
        vec![200.0]
    );
    let leftovers: Vec<_> = std::fs::read_dir(metrics_path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
}

/// A failing hook (exit 1) and a hanging one (killed at its 1 s timeout) leave the exit code
/// alone and say so in one log line (JSON in JSON mode); the heartbeat metric gets the time of
/// the run that exited 0; the table (not JSON) is printed without `--output json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hanging_hooks_do_not_change_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(2002)).await;
    let input = dir.path().join("ok.csv");
    write_csv(&input, 3, |_| "1358");
    let base = write_job(dir.path(), "base", &sim, &input, LIMITS, FAST_RESOLVE);
    let failing = script(
        &dir.path().join("fail.sh"),
        "echo broken webhook >&2\nexit 1",
    );
    let job = job_with_hooks(
        dir.path(),
        "fails",
        base.clone(),
        &format!("on_success = [{failing:?}]\n"),
    );
    let metrics_path = dir.path().join("fails.prom");
    let before = chrono::Utc::now().timestamp();
    let out = run(vec![
        "--log-format".into(),
        "json".into(),
        "run".into(),
        s(&job),
        "--metrics-file".into(),
        s(&metrics_path),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SUCCESS") && stdout.contains("result:"),
        "{}",
        show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", show(&out)));
    }
    let hook_lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("hook on_success"))
        .collect();
    assert_eq!(hook_lines.len(), 1, "{}", show(&out));
    assert!(hook_lines[0].contains("exit 1") && hook_lines[0].contains("broken webhook"));
    let text = std::fs::read_to_string(&metrics_path).unwrap();
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let last = metric(
        &samples,
        "starpay_batch_last_success_timestamp_seconds",
        None,
    );
    assert_eq!(last.len(), 1);
    assert!(
        last[0] >= before as f64 && last[0] <= chrono::Utc::now().timestamp() as f64,
        "{text}"
    );

    // A hook that outlives its timeout is killed; the command does not wait for it.
    let hanging = script(&dir.path().join("hang.sh"), "sleep 30");
    let job = job_with_hooks(
        dir.path(),
        "hangs",
        base.clone(),
        &format!("on_success = [{hanging:?}]\ntimeout_secs = 1\n"),
    );
    let t0 = Instant::now();
    let input = dir.path().join("hang.csv");
    write_csv_with(&input, 2, "HANG-", "7", |_| "1358");
    let out = run(vec![
        "--output".into(),
        "json".into(),
        "run".into(),
        s(&job),
        "--input".into(),
        s(&input),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let doc = one_json_document(&out);
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["needs_human"].as_array().unwrap().len(), 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hook on_success") && stderr.contains("killed"),
        "{}",
        show(&out)
    );

    // A missing program is logged, and the exit code stays.
    let job = job_with_hooks(
        dir.path(),
        "missing",
        base,
        "on_success = [\"./no-such-hook.sh\"]\n",
    );
    let input = dir.path().join("missing.csv");
    write_csv_with(&input, 2, "MISS-", "8", |_| "1358");
    let out = run(vec!["run".into(), s(&job), "--input".into(), s(&input)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not start"),
        "{}",
        show(&out)
    );
}

/// `--output json` is refused where no run's result is printed.
#[test]
fn output_json_is_refused_where_there_is_no_result() {
    let out = bin()
        .args([
            "--output",
            "json",
            "keys",
            "generate",
            "--out",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(out.stdout.is_empty());
}
