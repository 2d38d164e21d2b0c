//! `keys generate` and `keys check`.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::cli::{KeysCheckArgs, KeysCommand, KeysGenerateArgs};
use crate::cmd::exit;
use crate::starpay::sign::{PrivateKey, PublicKey};

pub fn run(cmd: KeysCommand) -> anyhow::Result<i32> {
    match cmd {
        KeysCommand::Generate(a) => generate(&a),
        KeysCommand::Check(a) => check(&a),
    }
}

fn write_new(path: &Path, contents: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(path).with_context(|| {
        if path.exists() && !force {
            format!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        } else {
            format!("cannot create {}", path.display())
        }
    })?;
    #[cfg(unix)]
    {
        // `mode` applies only to new files; make an overwritten file private too.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    }
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn generate(a: &KeysGenerateArgs) -> anyhow::Result<i32> {
    fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create directory {}", a.out.display()))?;
    let private_path = a.out.join("merchant-private.pem");
    let public_path = a.out.join("merchant-public.pem");
    if !a.force {
        for p in [&private_path, &public_path] {
            if p.exists() {
                bail!(
                    "{} already exists; pass --force to overwrite it",
                    p.display()
                );
            }
        }
    }
    let key = PrivateKey::generate()?;
    write_new(&private_path, &key.to_pkcs8_pem(), 0o600, a.force)?;
    write_new(&public_path, &key.public_key().to_pem(), 0o644, a.force)?;
    crate::say!(
        "wrote {} (mode 0600) and {}",
        private_path.display(),
        public_path.display()
    );
    crate::say!(
        "Give Starpay this public key (single-line X.509 form); keep the private key file secret:"
    );
    println!("{}", key.public_key().to_one_line_b64());
    Ok(exit::OK)
}

/// Short fingerprint of a public key (SHA-256 of the SubjectPublicKeyInfo DER), safe to print.
pub fn fingerprint(key: &PublicKey) -> String {
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        key.to_one_line_b64(),
    )
    .unwrap_or_default();
    let digest = Sha256::digest(&der);
    digest[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The key, or `None` after printing why it does not load.
fn loaded<K>(what: &str, key: Result<K, crate::starpay::sign::KeyError>) -> Option<K> {
    key.inspect_err(|e| println!("FAIL {what} key: {e}")).ok()
}

fn check(a: &KeysCheckArgs) -> anyhow::Result<i32> {
    let Some(private) = loaded("private", PrivateKey::from_file(&a.private_key)) else {
        return Ok(exit::COULD_NOT_RUN);
    };
    println!(
        "ok   private key {} loads: RSA {} bits, its public key fingerprint {}",
        a.private_key.display(),
        private.public_key().bits(),
        fingerprint(private.public_key())
    );
    let Some(public) = loaded("public", PublicKey::from_file(&a.public_key)) else {
        return Ok(exit::COULD_NOT_RUN);
    };
    println!(
        "ok   public key {} loads: RSA {} bits, fingerprint {}",
        a.public_key.display(),
        public.bits(),
        fingerprint(&public)
    );
    let probe = br#"{"mchId":"000000000000","msgId":"KEYCHECKPROBE","service":"probe"}"#;
    let sig = private.sign_b64(probe).context("signing the probe")?;
    if public.verify_b64(probe, &sig).is_err() {
        println!(
            "FAIL the public key does not belong to this private key: a probe signed with {} does not verify with {}",
            a.private_key.display(),
            a.public_key.display()
        );
        return Ok(exit::COULD_NOT_RUN);
    }
    println!("ok   probe signed with the private key verifies with the public key");
    Ok(exit::OK)
}
