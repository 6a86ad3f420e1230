//! Step 2: the run's cgroup, a child of the runner's own cgroup in the cgroup v2
//! hierarchy. Tests in it share the run's limits (those of the runner's unit), die
//! with `systemctl stop` (which kills the unit's whole cgroup) and cannot hide from
//! the runner: what a test leaves running is killed through `cgroup.kill`.
//!
//! Under systemd the runner's unit needs `Delegate=yes` for the runner to create it
//! (systemd then leaves the sub-cgroup alone). Where no cgroup v2 hierarchy is
//! mounted, or the runner may not create a cgroup in its own, the step is missing:
//! the run fails closed unless `allow_unconfined`.
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mountinfo)")]
    NoHierarchy,
    #[error("cannot read the runner's cgroup from {0}: {1}")]
    ReadOwn(PathBuf, #[source] io::Error),
    #[error("the runner is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")]
    NoOwn,
    #[error("cannot create the run's cgroup {0} (give the runner's unit Delegate=yes): {1}")]
    Create(PathBuf, #[source] io::Error),
    #[error("cannot open {0}: {1}")]
    OpenProcs(PathBuf, #[source] io::Error),
}

/// The run's cgroup; removed (after killing what is in it) by [`RunCgroup::remove`].
#[derive(Debug)]
pub struct RunCgroup {
    /// Absolute path in the mounted hierarchy.
    path: PathBuf,
    /// Path relative to the hierarchy's root, as `/proc/<pid>/cgroup` shows it.
    relative: PathBuf,
}

impl RunCgroup {
    /// Create `<runner's cgroup>/<name>` (emptied first if a dead run left it).
    pub fn create(name: &str) -> Result<RunCgroup, Error> {
        let (mount, root) = hierarchy()?;
        let own = own_cgroup()?;
        let relative = own.join(name);
        let path = under(&mount, &root, &relative);
        if path.exists() {
            let stale = RunCgroup {
                path: path.clone(),
                relative: relative.clone(),
            };
            stale.kill_all();
            stale.remove();
        }
        std::fs::create_dir(&path).map_err(|e| Error::Create(path.clone(), e))?;
        Ok(RunCgroup { path, relative })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// As `/proc/<pid>/cgroup` names it (`0::<relative>`).
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// `cgroup.procs`, opened for the child to write itself into.
    pub fn procs_file(&self) -> Result<File, Error> {
        let p = self.path.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(|e| Error::OpenProcs(p, e))
    }

    /// The pids in the cgroup and its descendants.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        collect_pids(&self.path, &mut pids);
        pids
    }

    /// SIGKILL everything in the cgroup (`cgroup.kill`, or pid by pid on kernels
    /// before 5.14) and wait up to 5 s for it to be empty; returns how many
    /// processes there were.
    pub fn kill_all(&self) -> usize {
        let found = self.pids().len();
        if found == 0 {
            return 0;
        }
        let kill = self.path.join("cgroup.kill");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            if std::fs::write(&kill, "1").is_err() {
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        found
    }

    /// Remove the cgroup (and any sub-cgroups a test could not have made: tests
    /// cannot write to it). Best effort: a cgroup with processes stays.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// In the child: move the calling process into the cgroup ("0" is the writer).
pub fn enter(procs: &File) -> io::Result<()> {
    let mut f = procs;
    f.write_all(b"0")
}

/// The cgroup of process `pid` in the v2 hierarchy (`0::` line), if any.
pub fn of_pid(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(PathBuf::from)
}

fn own_cgroup() -> Result<PathBuf, Error> {
    let p = PathBuf::from("/proc/self/cgroup");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::ReadOwn(p, e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(PathBuf::from)
        .ok_or(Error::NoOwn)
}

/// The cgroup2 mount point and the cgroup path it shows as its root.
fn hierarchy() -> Result<(PathBuf, PathBuf), Error> {
    let p = PathBuf::from("/proc/self/mountinfo");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::ReadOwn(p, e))?;
    for line in text.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = left.split(' ').collect();
        if fields.len() >= 5 {
            return Ok((
                PathBuf::from(unescape(fields[4])),
                PathBuf::from(unescape(fields[3])),
            ));
        }
    }
    Err(Error::NoHierarchy)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn under(mount: &Path, root: &Path, relative: &Path) -> PathBuf {
    let rel = relative.strip_prefix(root).unwrap_or(relative);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    mount.join(rel)
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_a_mount_with_a_root() {
        assert_eq!(
            under(
                Path::new("/sys/fs/cgroup"),
                Path::new("/"),
                Path::new("/system.slice/x.service/t")
            ),
            PathBuf::from("/sys/fs/cgroup/system.slice/x.service/t")
        );
        assert_eq!(
            under(
                Path::new("/sys/fs/cgroup"),
                Path::new("/a"),
                Path::new("/a/b")
            ),
            PathBuf::from("/sys/fs/cgroup/b")
        );
        assert_eq!(unescape("/x\\040y"), "/x y");
    }
}
