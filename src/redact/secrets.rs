//! Reading secret values from directories (`/run/secrets`, `$CREDENTIALS_DIRECTORY`).
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::Error;

/// Every regular file under `dirs` (recursively, following symlinks as Docker and
/// Kubernetes secret mounts use them) is a secret: its content with one trailing
/// newline trimmed. An unreadable file or dir is an error naming it, never a skip: a
/// secret we failed to read is a secret we would fail to mask.
pub fn load_secret_dirs(dirs: &[PathBuf]) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for dir in dirs {
        collect(dir, &mut out, &mut seen)?;
    }
    Ok(out)
}

fn collect(
    dir: &Path,
    out: &mut Vec<Vec<u8>>,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<(), Error> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::ReadDir(dir.to_owned(), e))?;
    if !seen.insert((meta.dev(), meta.ino())) {
        return Ok(()); // a symlink loop or the same dir given twice
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::ReadDir(dir.to_owned(), e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::ReadDir(dir.to_owned(), e))?;
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        let meta = std::fs::metadata(&path).map_err(|e| Error::ReadFile(path.clone(), e))?;
        if meta.is_dir() {
            collect(&path, out, seen)?;
        } else if meta.is_file() {
            let mut value = std::fs::read(&path).map_err(|e| Error::ReadFile(path.clone(), e))?;
            if value.last() == Some(&b'\n') {
                value.pop();
            }
            out.push(value);
        }
    }
    Ok(())
}
