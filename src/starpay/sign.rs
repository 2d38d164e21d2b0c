//! Canonical request bytes, key loading, RSASSA-PKCS1-v1_5/SHA-256 signing and verification
//! (reference §3; vectors in `test-vectors.md`).
//!
//! Owns: the only code that sees private keys. Must not: log or format key material (the key
//! types have hand-written `Debug`), re-serialize bytes after signing, sort before verifying.
//!
//! Hot path: `aws-lc-rs` (≈4× faster than `rsa`, byte-identical because PKCS#1 v1.5 is
//! deterministic). `rsa` parses and converts key formats and is the independent reference
//! implementation the tests compare against.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Minimum accepted modulus size (reference §3.3).
pub const MIN_KEY_BITS: usize = 2048;
/// Length of a Base64 signature made with a 2048-bit key.
pub const SIGNATURE_B64_LEN_2048: usize = 344;

const FORMATS_PRIVATE: &str =
    "PKCS#8 PEM (BEGIN PRIVATE KEY), PKCS#1 PEM (BEGIN RSA PRIVATE KEY) or one-line Base64 PKCS#8 DER";
const FORMATS_PUBLIC: &str =
    "X.509 SubjectPublicKeyInfo PEM (BEGIN PUBLIC KEY), PKCS#1 PEM (BEGIN RSA PUBLIC KEY) or one-line Base64 SubjectPublicKeyInfo DER";

/// Key loading failures. Messages name the file and the accepted formats; they never contain
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The cause's text is in the message, so it is not also a `#[source]` (printed twice).
    #[error("cannot read key file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// `strict_key_permissions = true` and the private key file is readable by group or others.
    #[error("private key file {path} has mode {mode:04o}: readable by group or others, and the job sets strict_key_permissions = true; run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{origin}: this is a public key, but a private key is needed here (expected {FORMATS_PRIVATE})")]
    PublicGivenAsPrivate { origin: String },
    #[error("{origin}: this is a private key, but a public key is needed here (expected {FORMATS_PUBLIC}); never hand a private key to a place that wants a public one")]
    PrivateGivenAsPublic { origin: String },
    #[error("{origin}: not a recognised {what} key ({detail}); expected {expected}")]
    Unrecognised {
        origin: String,
        what: &'static str,
        detail: String,
        expected: &'static str,
    },
    #[error(
        "{origin}: RSA key of {bits} bits is too small; at least {MIN_KEY_BITS} bits are required"
    )]
    TooSmall { origin: String, bits: usize },
    #[error("{origin}: encrypted private keys are not supported; decrypt it first (openssl pkcs8 -in KEY -nocrypt -topk8)")]
    Encrypted { origin: String },
    #[error("key generation failed")]
    Generate,
}

/// Verification failures: every variant means *Unverified* (reference §3.4 step 5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("message is not a JSON envelope: {0}")]
    NotEnvelope(String),
    #[error("envelope has no `{0}` member")]
    MissingPayload(&'static str),
    #[error("`{0}` is neither a JSON object, an array nor a string holding one")]
    BadPayload(&'static str),
    #[error("envelope has no signature")]
    MissingSignature,
    #[error("signature is not standard Base64")]
    SignatureNotBase64,
    #[error("signature does not verify under any configured platform key")]
    Mismatch,
}

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("request must serialize to a JSON object")]
    NotAnObject,
    #[error("request field `{0}` is {1}; only strings and integers may be sent")]
    BadValue(String, &'static str),
    #[error("request could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

/// A merchant (or, in the simulator, platform) private key, ready to sign.
pub struct PrivateKey {
    signer: aws_lc_rs::rsa::KeyPair,
    /// PKCS#8 DER, kept for the reference signer in tests and for exporting.
    pkcs8_der: Vec<u8>,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A public key that verifies RSASSA-PKCS1-v1_5/SHA-256.
#[derive(Clone)]
pub struct PublicKey {
    parsed: ParsedPublicKey,
    spki_der: Vec<u8>,
    bits: usize,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(rsa{})", self.bits)
    }
}

enum KeyText {
    Pem { label: String, der: Vec<u8> },
    Der(Vec<u8>),
}

/// Reads PEM (any line width, since platform keys circulate as one-line bodies) or one-line
/// Base64 DER. Never echoes the content in errors.
/// Which half of a key pair a text must hold, for the errors that say what was expected.
/// What tells the other half apart (PEM labels, DER that parses as it) and the error given
/// when a text holds the other half instead.
#[derive(Clone, Copy)]
struct Half {
    what: &'static str,
    expected: &'static str,
    other_labels: &'static [&'static str],
    other_der: fn(&[u8]) -> bool,
    other_given: fn(String) -> KeyError,
}

const PRIVATE: Half = Half {
    what: "private",
    expected: FORMATS_PRIVATE,
    other_labels: &["PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"],
    other_der: |der| public_der(der).is_some(),
    other_given: |origin| KeyError::PublicGivenAsPrivate { origin },
};
const PUBLIC: Half = Half {
    what: "public",
    expected: FORMATS_PUBLIC,
    other_labels: &["PRIVATE KEY", "RSA PRIVATE KEY"],
    other_der: |der| private_der(der).is_some(),
    other_given: |origin| KeyError::PrivateGivenAsPublic { origin },
};

impl Half {
    fn unrecognised(self, origin: &str, detail: impl Into<String>) -> KeyError {
        KeyError::Unrecognised {
            origin: origin.to_string(),
            what: self.what,
            detail: detail.into(),
            expected: self.expected,
        }
    }

    /// Parses key text for this half: `pem` parses a PEM body by its label (`None`: not a
    /// label of this half), `der` a bare Base64 DER body. An encrypted key is refused by
    /// [`decode_key_text`] before either is asked.
    fn parse<K>(
        self,
        text: &str,
        origin: &str,
        pem: impl Fn(&str, &[u8]) -> Option<Result<K, String>>,
        der: impl Fn(&[u8]) -> Option<K>,
    ) -> Result<K, KeyError> {
        let other_given = || (self.other_given)(origin.to_string());
        match decode_key_text(text, origin, self)? {
            KeyText::Pem { label, der: body } => match pem(&label, &body) {
                Some(parsed) => parsed.map_err(|detail| self.unrecognised(origin, detail)),
                None if self.other_labels.contains(&label.as_str()) => Err(other_given()),
                None => Err(self.unrecognised(origin, format!("unsupported PEM label {label:?}"))),
            },
            KeyText::Der(body) => match der(&body) {
                Some(k) => Ok(k),
                None if (self.other_der)(&body) => Err(other_given()),
                None => Err(self.unrecognised(
                    origin,
                    format!("Base64 decodes, but not to an RSA {} key", self.what),
                )),
            },
        }
    }
}

/// DER that parses as an RSA private key (PKCS#8 or PKCS#1).
fn private_der(der: &[u8]) -> Option<rsa::PrivateKey> {
    rsa::PrivateKey::from_pkcs8_der(der)
        .or_else(|_| rsa::PrivateKey::from_pkcs1_der(der))
        .ok()
}

/// DER that parses as an RSA public key (SubjectPublicKeyInfo or PKCS#1).
fn public_der(der: &[u8]) -> Option<rsa::PublicKey> {
    rsa::PublicKey::from_public_key_der(der)
        .or_else(|_| rsa::PublicKey::from_pkcs1_der(der))
        .ok()
}

/// Refuses a key under the minimum size.
fn check_bits(bits: usize, origin: &str) -> Result<(), KeyError> {
    if bits < MIN_KEY_BITS {
        return Err(KeyError::TooSmall {
            origin: origin.to_string(),
            bits,
        });
    }
    Ok(())
}

fn decode_key_text(text: &str, origin: &str, half: Half) -> Result<KeyText, KeyError> {
    let unrecognised = |detail: &str| half.unrecognised(origin, detail);
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(unrecognised("the file is empty"));
    }
    if let Some(rest) = trimmed.strip_prefix("-----BEGIN ") {
        let (label, after) = rest
            .split_once("-----")
            .ok_or_else(|| unrecognised("broken PEM header"))?;
        let end_marker = format!("-----END {label}-----");
        let body_end = after
            .find(&end_marker)
            .ok_or_else(|| unrecognised("PEM end line missing or does not match the BEGIN line"))?;
        let body = &after[..body_end];
        if body.contains("Proc-Type:") || label.contains("ENCRYPTED") {
            return Err(KeyError::Encrypted {
                origin: origin.to_string(),
            });
        }
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = B64
            .decode(compact.as_bytes())
            .map_err(|_| unrecognised("PEM body is not valid Base64"))?;
        return Ok(KeyText::Pem {
            label: label.to_string(),
            der,
        });
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    let der = B64
        .decode(compact.as_bytes())
        .map_err(|_| unrecognised("neither PEM nor Base64 DER"))?;
    Ok(KeyText::Der(der))
}

/// Like ssh: a private key file readable by group or others (mode & 0o077 != 0) gets a warning
/// naming the file and its mode (never the key), or, when `strict`, is refused. A file that
/// cannot be read is left to the loader, which says so.
pub fn check_private_key_permissions(path: &Path, strict: bool) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    if strict {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    crate::say_warn!(
        "warning: private key file {} has mode {mode:04o}: readable by group or others; run `chmod 600 {}` (strict_key_permissions = true in [starpay] refuses such a file)",
        path.display(),
        path.display()
    );
    Ok(())
}

/// A key file's text (bytes that are not UTF-8 are replaced; the format check then names what
/// is wrong). The text is never logged.
fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let bytes = std::fs::read(path).map_err(|cause| KeyError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl PrivateKey {
    /// Loads a private key file in any accepted format (reference §3.3).
    pub fn from_file(path: &Path) -> Result<PrivateKey, KeyError> {
        PrivateKey::from_text(&read_key_file(path)?, &path.display().to_string())
    }

    /// Parses key text; `origin` names where it came from in error messages.
    pub fn from_text(text: &str, origin: &str) -> Result<PrivateKey, KeyError> {
        let pem = |label: &str, der: &[u8]| match label {
            "PRIVATE KEY" => Some(
                rsa::PrivateKey::from_pkcs8_der(der)
                    .map_err(|e| format!("PKCS#8 body does not parse as RSA: {e}")),
            ),
            "RSA PRIVATE KEY" => Some(
                rsa::PrivateKey::from_pkcs1_der(der)
                    .map_err(|e| format!("PKCS#1 body does not parse: {e}")),
            ),
            _ => None,
        };
        let key = PRIVATE.parse(text, origin, pem, private_der)?;
        PrivateKey::from_rsa(&key, origin)
    }

    fn from_rsa(key: &rsa::PrivateKey, origin: &str) -> Result<PrivateKey, KeyError> {
        check_bits(key.size() * 8, origin)?;
        let unrecognised = |detail: String| PRIVATE.unrecognised(origin, detail);
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|e| unrecognised(format!("cannot re-encode as PKCS#8: {e}")))?;
        let pkcs8_der = pkcs8.as_bytes().to_vec();
        let signer = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8_der)
            .map_err(|e| unrecognised(format!("rejected by the signer: {e}")))?;
        let spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| unrecognised(format!("cannot derive the public key: {e}")))?;
        let public = PublicKey::from_spki_der(spki.as_bytes(), origin)?;
        Ok(PrivateKey {
            signer,
            pkcs8_der,
            public,
        })
    }

    /// A new 2048-bit key pair (e = 65537).
    pub fn generate() -> Result<PrivateKey, KeyError> {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| KeyError::Generate)?;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
            .map_err(|_| KeyError::Generate)?;
        let key = rsa::PrivateKey::from_pkcs8_der(der.as_ref()).map_err(|_| KeyError::Generate)?;
        PrivateKey::from_rsa(&key, "generated key")
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `bytes` exactly; returns standard Base64 with padding.
    pub fn sign_b64(&self, bytes: &[u8]) -> Result<String, SignError> {
        let mut sig = vec![0u8; self.signer.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.signer
            .sign(&RSA_PKCS1_SHA256, &rng, bytes, &mut sig)
            .map_err(|_| SignError)?;
        Ok(B64.encode(sig))
    }

    /// The reference implementation (`rsa` crate): same output, slower. Tests and the
    /// benchmark compare the two.
    pub fn sign_b64_reference(&self, bytes: &[u8]) -> Result<String, SignError> {
        use rsa::signature::{SignatureEncoding, Signer};
        let key = rsa::PrivateKey::from_pkcs8_der(&self.pkcs8_der).map_err(|_| SignError)?;
        let signing = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key);
        let sig = signing.try_sign(bytes).map_err(|_| SignError)?;
        Ok(B64.encode(sig.to_bytes()))
    }

    /// PKCS#8 PEM at 64 columns (for `keys generate`). Only ever written to a 0600 file.
    pub fn to_pkcs8_pem(&self) -> String {
        pem_wrap("PRIVATE KEY", &self.pkcs8_der)
    }
}

fn pem_wrap(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl PublicKey {
    pub fn from_file(path: &Path) -> Result<PublicKey, KeyError> {
        PublicKey::from_text(&read_key_file(path)?, &path.display().to_string())
    }

    pub fn from_text(text: &str, origin: &str) -> Result<PublicKey, KeyError> {
        let pem = |label: &str, der: &[u8]| match label {
            "PUBLIC KEY" => Some(
                rsa::PublicKey::from_public_key_der(der)
                    .map_err(|e| format!("SubjectPublicKeyInfo does not parse as RSA: {e}")),
            ),
            "RSA PUBLIC KEY" => Some(
                rsa::PublicKey::from_pkcs1_der(der)
                    .map_err(|e| format!("PKCS#1 body does not parse: {e}")),
            ),
            _ => None,
        };
        let key = PUBLIC.parse(text, origin, pem, public_der)?;
        let unrecognised = |detail: String| PUBLIC.unrecognised(origin, detail);
        let spki = key
            .to_public_key_der()
            .map_err(|e| unrecognised(format!("cannot re-encode: {e}")))?;
        PublicKey::from_spki_der(spki.as_bytes(), origin)
    }

    fn from_spki_der(der: &[u8], origin: &str) -> Result<PublicKey, KeyError> {
        let key = rsa::PublicKey::from_public_key_der(der)
            .map_err(|e| PUBLIC.unrecognised(origin, e.to_string()))?;
        let bits = key.size() * 8;
        check_bits(bits, origin)?;
        let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| PUBLIC.unrecognised(origin, format!("rejected by the verifier: {e}")))?;
        Ok(PublicKey {
            parsed,
            spki_der: der.to_vec(),
            bits,
        })
    }

    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The single-line Base64 SubjectPublicKeyInfo form Starpay's Java tooling uses.
    pub fn to_one_line_b64(&self) -> String {
        B64.encode(&self.spki_der)
    }

    pub fn to_pem(&self) -> String {
        pem_wrap("PUBLIC KEY", &self.spki_der)
    }

    /// Verifies a Base64 signature over exactly `bytes` (aws-lc-rs).
    pub fn verify_b64(&self, bytes: &[u8], signature_b64: &str) -> Result<(), VerifyError> {
        let sig = B64
            .decode(signature_b64.as_bytes())
            .map_err(|_| VerifyError::SignatureNotBase64)?;
        self.verify_raw(bytes, &sig)
    }

    pub fn verify_raw(&self, bytes: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        self.parsed
            .verify_sig(bytes, signature)
            .map_err(|_| VerifyError::Mismatch)
    }

    /// The reference verifier (`rsa` crate).
    pub fn verify_b64_reference(
        &self,
        bytes: &[u8],
        signature_b64: &str,
    ) -> Result<(), VerifyError> {
        use rsa::signature::Verifier;
        let sig = B64
            .decode(signature_b64.as_bytes())
            .map_err(|_| VerifyError::SignatureNotBase64)?;
        let key = rsa::PublicKey::from_public_key_der(&self.spki_der)
            .map_err(|_| VerifyError::Mismatch)?;
        let vk = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key);
        let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice())
            .map_err(|_| VerifyError::Mismatch)?;
        vk.verify(bytes, &sig).map_err(|_| VerifyError::Mismatch)
    }

    /// Verifies a signature over a SHA-256 digest (the docs' 6.2 example is only usable so).
    pub fn verify_prehash_b64(
        &self,
        digest: &[u8],
        signature_b64: &str,
    ) -> Result<(), VerifyError> {
        use rsa::signature::hazmat::PrehashVerifier;
        let sig = B64
            .decode(signature_b64.as_bytes())
            .map_err(|_| VerifyError::SignatureNotBase64)?;
        let key = rsa::PublicKey::from_public_key_der(&self.spki_der)
            .map_err(|_| VerifyError::Mismatch)?;
        let vk = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key);
        let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice())
            .map_err(|_| VerifyError::Mismatch)?;
        vk.verify_prehash(digest, &sig)
            .map_err(|_| VerifyError::Mismatch)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

/// Serializes a request once: keys sorted by byte value, compact, raw UTF-8 (reference §3.2).
/// `extra` members (e.g. `service`) are merged in before sorting.
pub fn canonical_bytes<T: Serialize>(
    request: &T,
    extra: &[(&str, &str)],
) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(request)?;
    let Value::Object(map) = value else {
        return Err(CanonicalError::NotAnObject);
    };
    let mut sorted: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in map {
        match &v {
            Value::String(_) => {}
            Value::Number(n) if n.is_i64() || n.is_u64() => {}
            Value::Number(_) => return Err(CanonicalError::BadValue(k, "a non-integer number")),
            Value::Null => return Err(CanonicalError::BadValue(k, "null")),
            Value::Bool(_) => return Err(CanonicalError::BadValue(k, "a boolean")),
            Value::Array(_) | Value::Object(_) => {
                return Err(CanonicalError::BadValue(k, "nested"))
            }
        }
        sorted.insert(k, v);
    }
    for (k, v) in extra {
        sorted.insert((*k).to_string(), Value::String((*v).to_string()));
    }
    Ok(serde_json::to_vec(&sorted)?)
}

/// Signed request: the exact bytes and their signature. Resending reuses both unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub bytes: Vec<u8>,
    pub signature: String,
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedRequest({} bytes)", self.bytes.len())
    }
}

impl SignedRequest {
    pub fn sign(key: &PrivateKey, bytes: Vec<u8>) -> Result<SignedRequest, SignError> {
        let signature = key.sign_b64(&bytes)?;
        Ok(SignedRequest { bytes, signature })
    }

    /// `{"request":<bytes>,"signature":"<b64>"}`, written by hand byte for byte (reference §2).
    pub fn envelope(&self) -> Vec<u8> {
        envelope_bytes("request", &self.bytes, &self.signature)
    }
}

/// Builds `{"<member>":<bytes>,"signature":"<b64>"}` without re-serializing `bytes`.
pub fn envelope_bytes(member: &str, bytes: &[u8], signature_b64: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + signature_b64.len() + member.len() + 20);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b",\"signature\":\"");
    out.extend_from_slice(signature_b64.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// A message whose signature checked out. `payload` holds the JSON text of the object (or
/// array) to parse: the raw bytes as received, or the decoded string when it came as a string.
#[derive(Debug, Clone)]
pub struct Verified {
    pub payload: Vec<u8>,
    /// How it verified (for the audit log).
    pub form: VerifiedForm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifiedForm {
    RawBytes,
    StringValue,
    CompactedWhitespace,
}

/// The parts of an envelope before verification, for callers that must still read `code` of an
/// unverified message (reference §3.4: safe control actions only).
#[derive(Debug, Clone)]
pub struct Unverified {
    pub payload: Option<Vec<u8>>,
    pub error: VerifyError,
}

#[derive(serde::Deserialize)]
struct EnvelopeParts<'a> {
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    signature: Option<&'a RawValue>,
}

/// Which member carries the signed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Response,
    Request,
}

impl Member {
    pub fn name(self) -> &'static str {
        match self {
            Member::Response => "response",
            Member::Request => "request",
        }
    }
}

/// The payload text and the signature string of an envelope, without any verification.
pub struct SplitEnvelope<'a> {
    /// Raw JSON text of the member's value exactly as received.
    pub raw: &'a str,
    /// Bytes the signature should cover, and the JSON text to parse: the raw text, or the
    /// decoded content when the value was a JSON string.
    pub signed_text: std::borrow::Cow<'a, str>,
    pub is_string: bool,
    pub signature: Option<String>,
}

pub fn split_envelope<'a>(
    body: &'a [u8],
    member: Member,
) -> Result<SplitEnvelope<'a>, VerifyError> {
    let text =
        std::str::from_utf8(body).map_err(|_| VerifyError::NotEnvelope("not UTF-8".into()))?;
    let parts: EnvelopeParts<'a> =
        serde_json::from_str(text).map_err(|e| VerifyError::NotEnvelope(e.to_string()))?;
    let raw = match member {
        Member::Response => parts.response,
        Member::Request => parts.request,
    }
    .ok_or(VerifyError::MissingPayload(member.name()))?;
    let raw_text = raw.get();
    let (signed_text, is_string) = match raw_text.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(raw_text)
                .map_err(|_| VerifyError::BadPayload(member.name()))?;
            (std::borrow::Cow::Owned(s), true)
        }
        Some(b'{') | Some(b'[') => (std::borrow::Cow::Borrowed(raw_text), false),
        _ => return Err(VerifyError::BadPayload(member.name())),
    };
    let signature = match parts.signature {
        None => None,
        Some(s) => serde_json::from_str::<Option<String>>(s.get())
            .ok()
            .flatten(),
    };
    Ok(SplitEnvelope {
        raw: raw_text,
        signed_text,
        is_string,
        signature,
    })
}

/// The verification procedure of reference §3.4. `keys` is the environment's accepted platform
/// keys (any may verify). On failure the payload text is still returned (as `Unverified`) so the
/// caller can read `code` for safe control actions; it must never change a state from it.
pub fn verify_envelope(
    body: &[u8],
    member: Member,
    keys: &[PublicKey],
) -> Result<Verified, Unverified> {
    let split = split_envelope(body, member).map_err(|error| Unverified {
        payload: None,
        error,
    })?;
    let payload = split.signed_text.as_bytes().to_vec();
    let fail = |error: VerifyError| Unverified {
        payload: Some(payload.clone()),
        error,
    };
    let Some(sig_b64) = split.signature.as_deref() else {
        return Err(fail(VerifyError::MissingSignature));
    };
    let sig = B64
        .decode(sig_b64.as_bytes())
        .map_err(|_| fail(VerifyError::SignatureNotBase64))?;
    let verifies = |bytes: &[u8]| keys.iter().any(|k| k.verify_raw(bytes, &sig).is_ok());
    if verifies(split.signed_text.as_bytes()) {
        let form = if split.is_string {
            VerifiedForm::StringValue
        } else {
            VerifiedForm::RawBytes
        };
        return Ok(Verified { payload, form });
    }
    // Step 4: only for a raw object with whitespace outside strings, try its compact,
    // order-preserving form (serde_json is built with `preserve_order`). Never sort.
    if !split.is_string && has_whitespace_outside_strings(split.raw) {
        if let Ok(v) = serde_json::from_str::<Value>(split.raw) {
            if let Ok(compact) = serde_json::to_vec(&v) {
                if verifies(&compact) {
                    return Ok(Verified {
                        payload: compact,
                        form: VerifiedForm::CompactedWhitespace,
                    });
                }
            }
        }
    }
    Err(fail(VerifyError::Mismatch))
}

fn has_whitespace_outside_strings(text: &str) -> bool {
    let mut in_str = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_str = true,
                b' ' | b'\n' | b'\r' | b'\t' => return true,
                _ => {}
            }
        }
    }
    false
}

/// Sandbox demo merchant key and the platform keys, from `test-vectors.md` (public test
/// material; see `samples/keys/README.md`).
pub mod known {
    pub const DEMO_MCH_ID: &str = "101510000001";
    pub const DEMO_PRIVATE_PKCS8_PEM: &str =
        include_str!("../../samples/keys/TEST-ONLY-demo-merchant-private.pem");
    pub const DEMO_PUBLIC_PEM: &str =
        include_str!("../../samples/keys/TEST-ONLY-demo-merchant-public.pem");
    pub const UAT_PLATFORM_PUBLIC_PEM: &str =
        include_str!("../../samples/keys/starpay-uat-platform-public.pem");
    pub const PROD_PLATFORM_PUBLIC_PEM: &str =
        include_str!("../../samples/keys/starpay-prod-platform-public.pem");
    pub const SIM_PLATFORM_PRIVATE_PEM: &str =
        include_str!("../../samples/keys/TEST-ONLY-sim-platform-private.pem");
    pub const SIM_PLATFORM_PUBLIC_PEM: &str =
        include_str!("../../samples/keys/TEST-ONLY-sim-platform-public.pem");
}
