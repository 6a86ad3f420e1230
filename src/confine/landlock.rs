//! Step 6: landlock, with the crate's best-effort ABI.
//!
//! Landlock only allows (a rule on a directory covers everything beneath it), so "the
//! system read-only except the hidden paths" is built as a set of rules: every entry
//! of `/` that has no hidden path beneath it is readable as a whole; an entry with a
//! hidden path beneath is opened up one level further, and so on down to the hidden
//! path itself, which gets no rule. Symbolic links get no rule (a rule on one would
//! cover its target: `/var/run` is `/run`); they are resolved through the rules of
//! their targets. So the directories on the way to a hidden path (`/`, `/run`, …)
//! cannot be listed, though everything else in them can be read.
use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
};
use std::io;
use std::path::{Path, PathBuf};

/// The newest ABI this code asks for; older kernels enforce what they can (ABI 9 adds
/// `ResolveUnix`: connecting to a Unix socket needs a rule, so the engine's socket is
/// then refused by landlock as well as by its owner and group).
const ABI_WANTED: ABI = ABI::V9;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("landlock: cannot build the ruleset: {0}")]
    Ruleset(#[source] RulesetError),
    #[error("landlock: cannot open {0} for a rule: {1}")]
    Open(PathBuf, #[source] landlock::PathFdError),
}

/// What the kernel enforces, learnt once per run on a throwaway thread.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The kernel's landlock ABI (`None`: not available).
    pub abi: Option<i32>,
    /// `fully_enforced`, `partially_enforced`, `not_enforced`.
    pub status: &'static str,
    pub error: Option<String>,
}

impl Probe {
    pub fn enforced(&self) -> bool {
        self.status != "not_enforced"
    }

    pub fn describe(&self) -> String {
        match (&self.error, self.abi) {
            (Some(e), _) => format!("the probe failed: {e}"),
            (None, None) => {
                "the kernel has no landlock (or it is disabled at boot: lsm=…,landlock)".into()
            }
            (None, Some(abi)) => format!("landlock ABI {abi} enforced nothing"),
        }
    }
}

/// Restrict a throwaway thread with a ruleset handling the same rights as the tests'
/// and report what the kernel enforced (landlock applies per thread; the thread
/// ends right after).
pub fn probe() -> Probe {
    std::thread::spawn(|| {
        let abi = kernel_abi();
        let result = (|| -> Result<RulesetStatus, RulesetError> {
            let status = base()?
                .add_rules(landlock::path_beneath_rules(
                    ["/"],
                    AccessFs::from_read(ABI_WANTED),
                ))?
                .restrict_self()?;
            Ok(status.ruleset)
        })();
        match result {
            Ok(s) => Probe {
                abi,
                status: status_name(&s),
                error: None,
            },
            Err(e) => Probe {
                abi,
                status: "not_enforced",
                error: Some(e.to_string()),
            },
        }
    })
    .join()
    .unwrap_or(Probe {
        abi: None,
        status: "not_enforced",
        error: Some("the probe thread panicked".into()),
    })
}

fn status_name(s: &RulesetStatus) -> &'static str {
    match s {
        RulesetStatus::FullyEnforced => "fully_enforced",
        RulesetStatus::PartiallyEnforced => "partially_enforced",
        RulesetStatus::NotEnforced => "not_enforced",
    }
}

/// The kernel's landlock ABI version, as `landlock_create_ruleset(NULL, 0,
/// LANDLOCK_CREATE_RULESET_VERSION)` reports it.
pub fn kernel_abi() -> Option<i32> {
    // SAFETY: the version query takes no pointer (NULL, size 0) and only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    (v > 0).then_some(v as i32)
}

/// The handled rights and scopes, best effort: a kernel with an older ABI handles
/// fewer (the status is then `partially_enforced`).
fn base() -> Result<RulesetCreated, RulesetError> {
    landlock::Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_WANTED))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()
}

/// What one test may touch.
pub struct Rules<'a> {
    pub hidden: &'a [PathBuf],
    pub readable: &'a [PathBuf],
    pub writable: &'a [PathBuf],
    /// The run's endpoint socket (connecting to it is a right from ABI 9 on).
    pub socket: &'a Path,
}

/// Devices a shell script writes to (`>/dev/null`) and reads from.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Build one test's ruleset in the parent (opening every rule's path); the child
/// only restricts itself with it.
pub fn ruleset(rules: &Rules) -> Result<RulesetCreated, Error> {
    let hidden: Vec<PathBuf> = rules.hidden.iter().map(|h| canonical(h)).collect();
    let mut visible = Vec::new();
    visible_beneath(Path::new("/"), &hidden, &mut visible);
    let read = AccessFs::from_read(ABI_WANTED);
    let all = AccessFs::from_all(ABI_WANTED);
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let mut all_rules = Vec::new();
    let mut add = |path: &Path, access: BitFlags<AccessFs>| -> Result<(), Error> {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // Gone since it was listed (or never there): nothing to allow.
            Err(_) if !path.exists() => return Ok(()),
            Err(e) => return Err(Error::Open(path.to_path_buf(), e)),
        };
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(ABI_WANTED)
        };
        all_rules.push(Ok(PathBeneath::new(fd, access)));
        Ok(())
    };
    for p in &visible {
        add(p, read)?;
    }
    for p in rules.readable {
        add(p, read)?;
    }
    for p in rules.writable {
        add(p, all)?;
    }
    for d in DEVICES {
        add(Path::new(d), device)?;
    }
    if let Some(dir) = rules.socket.parent() {
        // Connecting to the endpoint (a right from ABI 9 on; dropped before).
        add(dir, AccessFs::ResolveUnix.into())?;
    }
    base()
        .and_then(|r| r.add_rules(all_rules))
        .map_err(Error::Ruleset)
}

/// In the child: restrict the process with `ruleset`; an error if the kernel
/// enforced nothing (the start-up probe said it would).
pub fn restrict(ruleset: RulesetCreated) -> io::Result<()> {
    match ruleset.restrict_self() {
        Ok(s) if s.ruleset != RulesetStatus::NotEnforced => Ok(()),
        Ok(_) => Err(io::Error::from_raw_os_error(libc::EPERM)),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Collect the largest paths beneath `dir` (itself included) with no hidden path
/// beneath them; skip hidden paths and symbolic links.
fn visible_beneath(dir: &Path, hidden: &[PathBuf], out: &mut Vec<PathBuf>) {
    if hidden.iter().any(|h| h == dir) {
        return;
    }
    if !hidden.iter().any(|h| h.starts_with(dir)) {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        visible_beneath(&e.path(), hidden, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_paths_get_no_rule_and_their_siblings_do() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for p in ["a/secret", "a/open", "b", "c/deep/er/token"] {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
        std::fs::write(root.join("c/deep/file"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let hidden = vec![root.join("a/secret"), root.join("c/deep/er/token")];
        let mut out = Vec::new();
        visible_beneath(root, &hidden, &mut out);
        out.sort();
        let rel: Vec<String> = out
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(rel, ["a/open", "b", "c/deep/file"]);
    }
}
