//! The per-app-domain lock: `flock` on `<runtime_dir>/locks/<domain>.lock`.
//!
//! The holder is the runner process (the kernel drops the lock when it dies). The file
//! records the holder's run id so a waiting run can say whom it waits for; liveness is
//! only ever decided by the lock itself, never by the file's content.
//!
//! The janitor removes the lock files of dead runs. A lock taken on a file that was
//! removed (or replaced) meanwhile locks nothing anyone else can see, so both sides
//! check, once they hold the lock, that the file they locked is still the file at the
//! path (inode identity), and start again if it is not.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
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
    #[error("cannot remove lock file {0}: {1}")]
    Remove(PathBuf, #[source] std::io::Error),
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

    /// Remove the lock file while holding it, then release it: a run that opened the
    /// file meanwhile finds, once it gets the lock, that the file is gone, and opens
    /// the path again.
    pub fn remove_file(self) -> Result<(), Error> {
        std::fs::remove_file(&self.path).map_err(|e| Error::Remove(self.path.clone(), e))
    }
}

/// Whether `file` is still the file at `path` (not removed or replaced since opened).
fn is_file_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What a non-blocking probe of a lock found.
#[derive(Debug)]
pub enum Probe {
    /// A live process holds it (its run id, as the file records it).
    Held { holder: String },
    /// Nobody held it: the caller holds it now (and the file is still at the path).
    Taken(DomainLock),
    /// There is no lock file.
    Absent,
}

/// Probe the lock at `path` without waiting. A `Taken` lock keeps a run of the same
/// app from starting until the caller drops it.
pub fn probe(path: &Path) -> Result<Probe, Error> {
    probe_between(path, || {})
}

/// [`probe`], with `between` run between opening the file and locking it (where a
/// concurrent replacement of the file would land), for tests.
#[cfg(test)]
pub(crate) fn probe_with(path: &Path, between: impl FnMut()) -> Result<Probe, Error> {
    probe_between(path, between)
}

fn probe_between(path: &Path, mut between: impl FnMut()) -> Result<Probe, Error> {
    loop {
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Absent),
            Err(e) => return Err(Error::Open(path.to_owned(), e)),
        };
        between();
        match file.try_lock() {
            Ok(()) if is_file_at(&file, path) => {
                return Ok(Probe::Taken(DomainLock {
                    file,
                    path: path.to_owned(),
                }));
            }
            // Removed or replaced between open and lock: look again.
            Ok(()) => continue,
            Err(TryLockError::WouldBlock) => {
                return Ok(Probe::Held {
                    holder: read_holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::Lock(path.to_owned(), e)),
        }
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
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::Open(path.to_owned(), e))
    };
    let mut file = open()?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) if is_file_at(&file, path) => break,
            // The janitor removed the file of a dead holder while we waited on it.
            Ok(()) => file = open()?,
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
    fn probe_tells_held_taken_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "d");
        assert!(matches!(probe(&path).unwrap(), Probe::Absent));
        let held = acquire(&path, "run-a", Duration::ZERO, |_| {}, || false).unwrap();
        match probe(&path).unwrap() {
            Probe::Held { holder } => assert_eq!(holder, "run-a"),
            other => panic!("{other:?}"),
        }
        drop(held);
        let Probe::Taken(taken) = probe(&path).unwrap() else {
            panic!("a free lock is taken by the probe")
        };
        // Taken by the probe: a run must wait for it.
        let err = acquire(&path, "run-b", Duration::from_millis(200), |_| {}, || false);
        assert!(matches!(err, Err(Error::Timeout { .. })));
        taken.remove_file().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_waiter_on_a_removed_lock_file_locks_the_new_one() {
        // The janitor holds a dead run's lock and removes the file while a new run
        // waits on it: the new run must not end up holding the removed file (which
        // nobody else can see) but the file at the path.
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "d");
        std::fs::write(&path, "dead-run 1\n").unwrap();
        let Probe::Taken(janitor) = probe(&path).unwrap() else {
            panic!()
        };
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                acquire(&path, "run-new", Duration::from_secs(10), |_| {}, || false).unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        janitor.remove_file().unwrap();
        let held = waiter.join().unwrap();
        assert!(
            is_file_at(&held.file, &path),
            "the waiter holds the file at the path"
        );
        match probe(&path).unwrap() {
            Probe::Held { holder } => assert_eq!(holder, "run-new"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "d");
        drop(acquire(&path, "a", Duration::ZERO, |_| {}, || false).unwrap());
        acquire(&path, "b", Duration::ZERO, |_| {}, || false).unwrap();
    }
}
