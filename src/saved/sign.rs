//! Signed saved plans (opt-in): HMAC-SHA256 over the saved plan's bytes,
//! keyed by `ETCDPLAN_SIGNING_KEY`.
//!
//! HMAC with a shared secret, not ed25519: the plan job and the apply job of
//! one pipeline already share that pipeline's secret store, so one masked CI
//! variable is all the setup; there is no key pair to generate, encode and
//! rotate. The cost is that whoever can apply can also sign: the key guards
//! the artifact between the jobs, not the jobs from each other.
//!
//! The MAC covers every byte of the file, with the signature's own 64 hex
//! digits read as `0`: the file is written with that placeholder, then the
//! digits are put in place. Any edit, even of whitespace, breaks it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use miette::Diagnostic;
use sha2::Sha256;

use super::SavedPlan;

/// The environment variable holding the signing key.
pub const KEY_ENV: &str = "ETCDPLAN_SIGNING_KEY";
/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
const SCHEME: &str = "hmac-sha256:";
const HEAD: usize = 4096;

/// A signing key from the environment (never shown).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum SignatureError {
    #[error(
        "{KEY_ENV} is set but holds {found} bytes; a signing key needs at least {MIN_KEY_BYTES}"
    )]
    #[diagnostic(
        code(etcdplan::saved_plan::weak_key),
        help("make one with `openssl rand -hex 32` and store it as a masked CI secret")
    )]
    WeakKey { found: usize },

    #[error("{KEY_ENV} is set, and this saved plan is not signed")]
    #[diagnostic(
        code(etcdplan::saved_plan::unsigned),
        help(
            "only plans made by `etcdplan plan --out` with the same key are applied; plan again in the job that has the key"
        )
    )]
    Unsigned,

    #[error("this saved plan is signed, and {KEY_ENV} is not set to check it")]
    #[diagnostic(
        code(etcdplan::saved_plan::no_key),
        help("set {KEY_ENV} to the key the plan job signed with")
    )]
    NoKey,

    #[error("the saved plan's signature does not match: it was edited, or signed with another key")]
    #[diagnostic(
        code(etcdplan::saved_plan::bad_signature),
        help(
            "nothing was written; apply only the artifact the plan job produced, or plan again and review that plan"
        )
    )]
    Mismatch,
}

impl SigningKey {
    /// The key in `ETCDPLAN_SIGNING_KEY`, if set and not empty.
    pub fn from_env() -> Result<Option<SigningKey>, SignatureError> {
        match std::env::var_os(KEY_ENV) {
            Some(v) if !v.is_empty() => SigningKey::new(v.as_encoded_bytes().to_vec()).map(Some),
            _ => Ok(None),
        }
    }

    pub fn new(bytes: Vec<u8>) -> Result<SigningKey, SignatureError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(SignatureError::WeakKey { found: bytes.len() });
        }
        Ok(SigningKey(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
    }
}

/// Feeds whatever is written to both `out` and, when signing, the MAC.
struct Tee<'a, W> {
    out: W,
    mac: Option<&'a mut Hmac<Sha256>>,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        if let Some(mac) = self.mac.as_mut() {
            mac.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn placeholder() -> String {
    format!("{SCHEME}{}", "0".repeat(64))
}

/// Writes `saved` to `file` (empty, at its start), signed when `key` is set.
pub fn write_signed(
    saved: &SavedPlan,
    file: &mut std::fs::File,
    key: Option<&SigningKey>,
) -> std::io::Result<()> {
    let mut mac = key.map(SigningKey::mac);
    let mut doc = saved.clone();
    doc.signature = key.map(|_| placeholder());
    {
        let mut out = Tee {
            out: std::io::BufWriter::with_capacity(256 << 10, &mut *file),
            mac: mac.as_mut(),
        };
        crate::escape::to_json_writer_pretty(&mut out, &doc)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    let Some(mac) = mac else { return Ok(()) };
    let tag = hex::encode(mac.finalize().into_bytes());
    let mut head = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    (&mut *file).take(HEAD as u64).read_to_end(&mut head)?;
    let at = find(&head, placeholder().as_bytes())
        .ok_or_else(|| std::io::Error::other("the signature placeholder is missing"))?;
    file.seek(SeekFrom::Start((at + SCHEME.len()) as u64))?;
    file.write_all(tag.as_bytes())?;
    file.flush()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Checks the signature of the saved plan at `path` against `key`: both
/// absent is fine; one without the other, or a mismatch, is refused.
pub fn verify_file(
    path: &Path,
    signature: Option<&str>,
    key: Option<&SigningKey>,
) -> Result<(), super::SavedPlanError> {
    let (signature, key) = match (signature, key) {
        (None, None) => return Ok(()),
        (None, Some(_)) => return Err(SignatureError::Unsigned.into()),
        (Some(_), None) => return Err(SignatureError::NoKey.into()),
        (Some(s), Some(k)) => (s, k),
    };
    let tag = signature
        .strip_prefix(SCHEME)
        .filter(|t| t.len() == 64)
        .and_then(|t| hex::decode(t).ok())
        .ok_or(SignatureError::Mismatch)?;
    let read_err = |source| super::SavedPlanError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = crate::files::open_regular(path).map_err(read_err)?;
    let mut head = Vec::new();
    (&mut file)
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let at = find(&head, signature.as_bytes()).ok_or(SignatureError::Mismatch)?;
    head[at + SCHEME.len()..at + signature.len()].fill(b'0');
    let mut mac = key.mac();
    mac.update(&head);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        mac.update(&buf[..n]);
    }
    mac.verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch.into())
}
