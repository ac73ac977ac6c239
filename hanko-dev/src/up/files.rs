//! Small state files in the `up` data directory: generated passwords and
//! recorded choices, written owner-only.

use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Returns the trimmed contents of `path`, or `None` when it does not exist.
///
/// # Errors
///
/// Fails when the file exists but cannot be read.
pub fn read_trimmed(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `contents` to `path` with mode 0600, replacing it.
///
/// # Errors
///
/// Fails when the file cannot be written.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Returns the secret stored in `path`, generating and storing a new one
/// (32 hex digits from a random v4 UUID, 122 random bits) on the first call.
/// Hex digits need no quoting in a URL or an SQL literal.
///
/// # Errors
///
/// Fails when the file cannot be read or written.
pub fn read_or_create_secret(path: &Path) -> Result<String> {
    if let Some(secret) = read_trimmed(path)?.filter(|secret| !secret.is_empty()) {
        return Ok(secret);
    }
    let secret = uuid::Uuid::new_v4().simple().to_string();
    write_private(path, &secret)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once_and_kept() {
        let temp = tempfile::tempdir().expect("temp dir");
        let path = temp.path().join("secret");

        let first = read_or_create_secret(&path).expect("create");
        let second = read_or_create_secret(&path).expect("read");

        assert_eq!(first, second);
        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn missing_file_reads_as_none() {
        let temp = tempfile::tempdir().expect("temp dir");

        assert_eq!(
            read_trimmed(&temp.path().join("absent")).expect("read"),
            None
        );
    }
}
