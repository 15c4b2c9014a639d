//! Ed25519 key files: 64 hex characters of secret seed and a newline, created
//! with mode 0600. Nodes keep their identity in one; `p2pctl --key` uses the
//! same format, so an operator can sign for a node with its own file.

use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot create key file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("key file {path} does not hold 64 hex characters (an ed25519 seed)")]
    Malformed { path: String },
    #[error("no randomness available to create a key: {0}")]
    Random(String),
}

/// Loads the key at `path`, creating it (and its directory) when missing.
/// Returns the key and whether it was just created.
pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), KeyFileError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let seed = hex::decode(text.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
            let seed = seed.ok_or(KeyFileError::Malformed { path: shown })?;
            Ok((SigningKey::from_bytes(&seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
            write_new(path, &seed).map_err(|source| KeyFileError::Write { path: shown, source })?;
            Ok((SigningKey::from_bytes(&seed), true))
        }
        Err(source) => Err(KeyFileError::Read { path: shown, source }),
    }
}

fn write_new(path: &Path, seed: &[u8; 32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    writeln!(f, "{}", hex::encode(seed))?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_loads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyFileError::Malformed { .. })));
    }
}
