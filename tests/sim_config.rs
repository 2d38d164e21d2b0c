//! Simulator configuration file and the `sim` command (real binary).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use starpay_batch::server::sim::SimConfig;

#[test]
fn sample_config_loads_and_unknown_keys_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(dir).unwrap();
    let c = SimConfig::from_toml_file(&dir.join("samples/sim.toml")).unwrap();
    assert_eq!(c.seed, 7);
    assert_eq!(c.merchants.len(), 2);
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "seed = 1\nsettle_delay = 5\n").unwrap();
    let e = SimConfig::from_toml_file(&bad).unwrap_err().to_string();
    assert!(e.contains("settle_delay"), "{e}");
    std::fs::write(&bad, "[faults]\nhang = 1.5\n").unwrap();
    assert!(SimConfig::from_toml_file(&bad).is_err());
    std::fs::write(&bad, "[faults]\nnotify_lost = 0.5\n").unwrap();
    assert_eq!(
        SimConfig::from_toml_file(&bad).unwrap().faults.notify_lost,
        0.5
    );
}

#[test]
fn sim_command_prints_base_url_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "3",
            "--fault",
            "latency_ms=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().to_string();
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/finance-payment-service"),
        "{base}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{base}/checkconnections"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(body, r#"{"code":"200","message":"success"}"#);

    let out = Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
        .args(["sim", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
        .args(["sim", "--fault", "nope=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
