//! The hanko-dev data directory: signing keys that survive restarts and the
//! list of revoked sessions.
//!
//! Layout, all plain files so a developer can inspect them:
//!
//! ```text
//! <data-dir>/keys/000001/kid           the key id (a UUID)
//! <data-dir>/keys/000001/private.pem   PKCS#8 private key, mode 0600
//! <data-dir>/keys/000002/...           a rotated-in key; the highest number signs
//! <data-dir>/revoked_sessions          one revoked session id per line
//! ```
//!
//! Every read goes to the disk, so a `hanko-dev rotate` or `revoke` run by
//! another process is seen by a running `serve` on its next request. Keys
//! are never deleted here: Hanko keeps every stored key published.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use uuid::Uuid;

use crate::keys::SigningKey;

const KEYS_DIR: &str = "keys";
const KID_FILE: &str = "kid";
const PEM_FILE: &str = "private.pem";
const REVOKED_FILE: &str = "revoked_sessions";

/// How many times creating a key retries when another process took the
/// same sequence number first.
const CREATE_ATTEMPTS: u32 = 16;

/// A hanko-dev data directory.
pub struct DataDir {
    root: PathBuf,
    /// Parsed keys by their directory name. Parsing an RSA key is the slow
    /// part of a read, and a key directory never changes once renamed in.
    parsed: Mutex<HashMap<String, Arc<SigningKey>>>,
}

impl DataDir {
    /// Opens `root`, creating it (mode 0700) when missing.
    ///
    /// # Errors
    ///
    /// Fails when the directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(KEYS_DIR))
            .with_context(|| format!("creating the data directory {}", root.display()))?;

        Ok(Self {
            root,
            parsed: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the directory this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Returns every stored key, newest (the signing key) first.
    ///
    /// # Errors
    ///
    /// Fails when the key directory cannot be read or a key file is broken.
    pub fn keys(&self) -> Result<Vec<Arc<SigningKey>>> {
        let keys_dir = self.root.join(KEYS_DIR);
        let mut numbered = Vec::new();
        let entries = fs::read_dir(&keys_dir)
            .with_context(|| format!("reading the key directory {}", keys_dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", keys_dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Half-written keys live in `.new-*` directories and are skipped.
            if let Ok(number) = name.parse::<u64>() {
                numbered.push((number, name));
            }
        }
        numbered.sort_unstable_by_key(|(number, _)| std::cmp::Reverse(*number));

        let mut keys = Vec::with_capacity(numbered.len());
        for (_, name) in numbered {
            keys.push(self.load_key(&name)?);
        }
        Ok(keys)
    }

    /// Returns the signing key, generating the first key of `bits` bits
    /// when the directory contains none.
    ///
    /// # Errors
    ///
    /// Fails when the keys cannot be read or a new key cannot be written.
    pub fn signing_key(&self, bits: usize) -> Result<Arc<SigningKey>> {
        if let Some(newest) = self.keys()?.into_iter().next() {
            return Ok(newest);
        }
        self.add_key(bits, Some(1))?;

        // Another process may have created the first key at the same time;
        // whichever won is the signing key for both.
        self.keys()?
            .into_iter()
            .next()
            .context("the key written a moment ago is missing")
    }

    /// Generates a new key of `bits` bits and puts it in front, so it signs
    /// from now on; older keys stay published.
    ///
    /// # Errors
    ///
    /// Fails when key generation fails or the key cannot be written.
    pub fn rotate(&self, bits: usize) -> Result<Arc<SigningKey>> {
        let name = self.add_key(bits, None)?;
        self.load_key(&name)
    }

    /// Records `session_id` as revoked, so `/sessions/validate` returns
    /// `is_valid: false` for its tokens from now on.
    ///
    /// # Errors
    ///
    /// Fails when the revocation file cannot be written.
    pub fn revoke(&self, session_id: Uuid) -> Result<()> {
        let path = self.root.join(REVOKED_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // One short write with O_APPEND, so concurrent revocations do not
        // interleave within a line.
        file.write_all(format!("{session_id}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Returns whether `session_id` has been revoked.
    ///
    /// # Errors
    ///
    /// Fails when the revocation file exists but cannot be read.
    pub fn is_revoked(&self, session_id: &str) -> Result<bool> {
        let path = self.root.join(REVOKED_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(false),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        };
        Ok(text.lines().any(|line| line.trim() == session_id))
    }

    fn load_key(&self, name: &str) -> Result<Arc<SigningKey>> {
        let mut parsed = self
            .parsed
            .lock()
            .expect("no code panics while holding this lock");
        if let Some(key) = parsed.get(name) {
            return Ok(Arc::clone(key));
        }

        let dir = self.root.join(KEYS_DIR).join(name);
        let kid_path = dir.join(KID_FILE);
        let kid = fs::read_to_string(&kid_path)
            .with_context(|| format!("reading {}", kid_path.display()))?;
        let pem_path = dir.join(PEM_FILE);
        let pem = fs::read_to_string(&pem_path)
            .with_context(|| format!("reading {}", pem_path.display()))?;
        let key = SigningKey::from_pem(kid.trim(), &pem)
            .with_context(|| format!("loading the key in {}", dir.display()))?;

        let key = Arc::new(key);
        parsed.insert(name.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    /// Writes a new key into a temporary directory and renames it to the
    /// next free number (or exactly `only_number`), returning its name.
    /// `rename` of a directory onto an existing non-empty one fails, which
    /// makes the claim on a number atomic between processes.
    fn add_key(&self, bits: usize, only_number: Option<u64>) -> Result<String> {
        let key = SigningKey::generate(bits)?;
        let keys_dir = self.root.join(KEYS_DIR);
        let staging = keys_dir.join(format!(".new-{}", Uuid::new_v4()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        write_new_file(&staging.join(KID_FILE), key.kid().as_bytes())?;
        write_new_file(&staging.join(PEM_FILE), key.to_pem().as_bytes())?;

        for _ in 0..CREATE_ATTEMPTS {
            let number = match only_number {
                Some(number) => number,
                None => self.highest_number()? + 1,
            };
            let name = format!("{number:06}");
            match fs::rename(&staging, keys_dir.join(&name)) {
                Ok(()) => return Ok(name),
                Err(error) if is_taken(&error) => {
                    if only_number.is_some() {
                        // Another process wrote this exact key number; its
                        // key serves as well as ours would.
                        let _ = fs::remove_dir_all(&staging);
                        return Ok(name);
                    }
                }
                Err(error) => {
                    let _ = fs::remove_dir_all(&staging);
                    return Err(error).with_context(|| {
                        format!("moving the new key into {}", keys_dir.display())
                    });
                }
            }
        }

        let _ = fs::remove_dir_all(&staging);
        bail!(
            "could not claim a key number in {} after {CREATE_ATTEMPTS} attempts; \
             is another process rotating keys in a loop?",
            keys_dir.display()
        )
    }

    fn highest_number(&self) -> Result<u64> {
        let keys_dir = self.root.join(KEYS_DIR);
        let mut highest = 0;
        for entry in
            fs::read_dir(&keys_dir).with_context(|| format!("reading {}", keys_dir.display()))?
        {
            let entry = entry.with_context(|| format!("reading {}", keys_dir.display()))?;
            if let Ok(number) = entry.file_name().to_string_lossy().parse::<u64>() {
                highest = highest.max(number);
            }
        }
        Ok(highest)
    }
}

fn is_taken(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::AlreadyExists | ErrorKind::DirectoryNotEmpty
    )
}

fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DEFAULT_KEY_BITS;

    #[test]
    fn first_key_is_created_once_and_persists() {
        let temp = tempfile::tempdir().expect("temp dir");
        let first = DataDir::open(temp.path())
            .expect("open")
            .signing_key(DEFAULT_KEY_BITS)
            .expect("first key");
        let again = DataDir::open(temp.path())
            .expect("reopen")
            .signing_key(DEFAULT_KEY_BITS)
            .expect("same key");

        assert_eq!(first.kid(), again.kid());
        assert_eq!(first.public_jwk(), again.public_jwk());
    }

    #[test]
    fn rotate_puts_new_key_first_and_keeps_old() {
        let temp = tempfile::tempdir().expect("temp dir");
        let store = DataDir::open(temp.path()).expect("open");
        let old = store.signing_key(DEFAULT_KEY_BITS).expect("first key");

        let new = store.rotate(DEFAULT_KEY_BITS).expect("rotate");
        let kids: Vec<String> = store
            .keys()
            .expect("keys")
            .iter()
            .map(|key| key.kid().to_owned())
            .collect();

        assert_eq!(kids, [new.kid(), old.kid()]);
        assert_eq!(
            store
                .signing_key(DEFAULT_KEY_BITS)
                .expect("signing key")
                .kid(),
            new.kid()
        );
    }

    #[test]
    fn rotation_by_another_handle_is_seen() {
        let temp = tempfile::tempdir().expect("temp dir");
        let serving = DataDir::open(temp.path()).expect("open");
        serving.signing_key(DEFAULT_KEY_BITS).expect("first key");

        let new = DataDir::open(temp.path())
            .expect("second handle")
            .rotate(DEFAULT_KEY_BITS)
            .expect("rotate");

        assert_eq!(serving.keys().expect("keys")[0].kid(), new.kid());
    }

    #[test]
    fn private_key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let temp = tempfile::tempdir().expect("temp dir");
        DataDir::open(temp.path())
            .expect("open")
            .signing_key(DEFAULT_KEY_BITS)
            .expect("first key");

        let mode = fs::metadata(temp.path().join("keys/000001/private.pem"))
            .expect("key file exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn revoked_session_is_reported() {
        let temp = tempfile::tempdir().expect("temp dir");
        let store = DataDir::open(temp.path()).expect("open");
        let revoked = Uuid::new_v4();
        let other = Uuid::new_v4();

        assert!(!store.is_revoked(&revoked.to_string()).expect("read"));
        store.revoke(revoked).expect("revoke");

        assert!(store.is_revoked(&revoked.to_string()).expect("read"));
        assert!(!store.is_revoked(&other.to_string()).expect("read"));
    }
}
