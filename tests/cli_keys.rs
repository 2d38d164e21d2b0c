//! Black-box tests of `keys generate` and `keys check` (the real binary).

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/keys")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn generate_writes_a_private_0600_pair_and_prints_the_one_line_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k");
    let o = bin()
        .args(["keys", "generate", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let printed = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(printed.starts_with("MIIBIjAN"), "{}", show(&o));
    assert!(!printed.contains('\n'));
    let private = out.join("merchant-private.pem");
    let public = out.join("merchant-public.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let private_text = std::fs::read_to_string(&private).unwrap();
    assert!(private_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    // Nothing secret reached stdout or stderr.
    let body_line = private_text.lines().nth(1).unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains(body_line));
    assert!(!String::from_utf8_lossy(&o.stderr).contains(body_line));

    // The pair checks out, and the printed key is the same public key.
    let o = bin()
        .args(["keys", "check", "--private-key"])
        .arg(&private)
        .arg("--public-key")
        .arg(&public)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let one_line = dir.path().join("printed.b64");
    std::fs::write(&one_line, &printed).unwrap();
    let o = bin()
        .args(["keys", "check", "--private-key"])
        .arg(&private)
        .arg("--public-key")
        .arg(&one_line)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));

    // A second generate refuses to overwrite.
    let o = bin()
        .args(["keys", "generate", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn check_names_what_is_wrong() {
    let o = bin()
        .args([
            "keys",
            "check",
            "--private-key",
            &sample("TEST-ONLY-demo-merchant-private.pem"),
            "--public-key",
            &sample("starpay-uat-platform-public.pem"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("does not belong"),
        "{}",
        show(&o)
    );

    let o = bin()
        .args([
            "keys",
            "check",
            "--private-key",
            &sample("TEST-ONLY-demo-merchant-public.pem"),
            "--public-key",
            &sample("TEST-ONLY-demo-merchant-public.pem"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("this is a public key"),
        "{}",
        show(&o)
    );

    let o = bin()
        .args([
            "keys",
            "check",
            "--private-key",
            "/nonexistent/k.pem",
            "--public-key",
            &sample("TEST-ONLY-demo-merchant-public.pem"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("/nonexistent/k.pem"),
        "{}",
        show(&o)
    );

    // All three demo private key formats pass against the demo public key.
    for f in [
        "TEST-ONLY-demo-merchant-private.pem",
        "TEST-ONLY-demo-merchant-private.b64",
        "TEST-ONLY-demo-merchant-private-pkcs1.pem",
    ] {
        let o = bin()
            .args([
                "keys",
                "check",
                "--private-key",
                &sample(f),
                "--public-key",
                &sample("TEST-ONLY-demo-merchant-public.b64"),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{f}: {}", show(&o));
    }
}
