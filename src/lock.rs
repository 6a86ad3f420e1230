//! The per-app-domain lock: `flock` on `<runtime_dir>/locks/<domain>.lock`.
//!
//! The holder is the runner process (the kernel drops the lock when it dies). The file
//! records the holder's run id so a waiting run can say whom it waits for; liveness is
//! only ever decided by the lock itself, never by the file's content.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open lock file {0}: {1}")]
    Open(PathBuf, #[source] std::io::Error),
    #[error("cannot lock {0}: {1}")]
    Lock(PathBuf, #[source] std::io::Error),
    #[error(
        "timed out after {waited_s} s waiting for the lock {path} (held by run {holder}); \
         wait for that run to end or cancel it, or raise runner.lock_timeout_s"
    )]
    Timeout {
        path: PathBuf,
        holder: String,
        waited_s: u64,
    },
    #[error("stopped (cancelled, or the run's deadline passed) while waiting for the lock {0}")]
    Cancelled(PathBuf),
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DomainLock {
    file: File,
    path: PathBuf,
}

impl DomainLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DomainLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The lock file path of `domain` under `locks_dir`.
pub fn lock_path(locks_dir: &Path, domain: &str) -> PathBuf {
    locks_dir.join(format!("{domain}.lock"))
}

/// Take the lock, waiting up to `timeout`. `on_wait` is called once, with the holder's
/// run id, if the lock is busy; `cancelled` is polled while waiting.
pub fn acquire(
    path: &Path,
    run_id: &str,
    timeout: Duration,
    mut on_wait: impl FnMut(&str),
    cancelled: impl Fn() -> bool,
) -> Result<DomainLock, Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::Open(parent.to_owned(), e))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::Open(path.to_owned(), e))?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                if !told {
                    on_wait(&holder);
                    told = true;
                }
                if cancelled() {
                    return Err(Error::Cancelled(path.to_owned()));
                }
                if start.elapsed() >= timeout {
                    return Err(Error::Timeout {
                        path: path.to_owned(),
                        holder,
                        waited_s: start.elapsed().as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(e)) => return Err(Error::Lock(path.to_owned(), e)),
        }
    }
    // Record the holder for waiters' messages (content is informational only).
    let _ = file.set_len(0);
    let _ = file.seek(SeekFrom::Start(0));
    let _ = writeln!(file, "{run_id} {}", std::process::id());
    Ok(DomainLock {
        file,
        path: path.to_owned(),
    })
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    text.split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_waits_then_times_out_naming_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "hello.ci.localhost");
        let _held = acquire(&path, "run-a", Duration::ZERO, |_| {}, || false).unwrap();
        let mut waited_for = String::new();
        let err = acquire(
            &path,
            "run-b",
            Duration::from_millis(300),
            |h| waited_for = h.to_string(),
            || false,
        )
        .unwrap_err();
        assert_eq!(waited_for, "run-a");
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("run-a"));
    }

    #[test]
    fn released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "d");
        drop(acquire(&path, "a", Duration::ZERO, |_| {}, || false).unwrap());
        acquire(&path, "b", Duration::ZERO, |_| {}, || false).unwrap();
    }
}
