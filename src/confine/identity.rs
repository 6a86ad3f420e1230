//! Step 3: the unprivileged identity tests run as, and the directories made
//! writable for it.
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Uid};

/// The identity must not reach the engine: not the socket's owner, not its group,
/// and the socket must not be open to everyone.
pub fn check_not_docker(uid: u32, gid: u32, socket: &Path) -> super::Result<()> {
    let meta = match std::fs::metadata(socket) {
        Ok(m) => m,
        // No engine socket here: nothing to reach (the endpoint will say so).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(super::Error::EngineSocket(socket.to_path_buf(), e)),
    };
    if meta.uid() == uid || meta.gid() == gid || meta.mode() & 0o002 != 0 {
        return Err(super::Error::DockerIdentity(uid, gid, socket.to_path_buf()));
    }
    Ok(())
}

/// Whether this process may switch identity (root, or CAP_SETUID and CAP_SETGID).
pub fn can_switch() -> Result<(), String> {
    use caps::{CapSet, Capability};
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    if has(Capability::CAP_SETUID) && has(Capability::CAP_SETGID) {
        Ok(())
    } else {
        Err(format!(
            "the runner (uid {}) lacks CAP_SETUID/CAP_SETGID: run it as root",
            nix::unistd::geteuid()
        ))
    }
}

/// In the child: keep the permitted capabilities across the switch when they are
/// dropped next (step 4 needs CAP_SETPCAP for the bounding set), drop the
/// supplementary groups, then setgid and setuid (real, effective and saved).
pub fn switch(uid: u32, gid: u32, keep_caps_for_dropping: bool) -> io::Result<()> {
    if keep_caps_for_dropping {
        nix::sys::prctl::set_keepcaps(true)?;
    }
    nix::unistd::setgroups(&[])?;
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    Ok(())
}

/// Give `dir` to the test identity (owner, mode 0700 plus what it had for others to
/// traverse), creating it if missing.
pub fn make_writable(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// Let others traverse `dir` (x bit), so the test identity reaches what is inside.
pub fn make_traversable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)?.mode() & 0o7777;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
}
