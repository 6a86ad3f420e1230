//! Step 4: every capability set emptied, with the `caps` crate.
use caps::{CapSet, Capability, CapsHashSet};
use std::io;

/// Whether this process can empty the bounding set of its children (CAP_SETPCAP).
pub fn can_drop() -> Result<(), String> {
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        Ok(())
    } else {
        Err("the runner lacks CAP_SETPCAP, needed to empty the bounding set: run it as root".into())
    }
}

/// What the child needs, prepared in the parent so the child allocates nothing.
pub struct Drop {
    all: Vec<Capability>,
    setpcap: CapsHashSet,
}

impl Drop {
    pub fn prepare() -> Drop {
        // Only those the kernel knows: dropping an unknown one is EINVAL.
        let mut all: Vec<Capability> = caps::all()
            .into_iter()
            .filter(|&c| caps::has_cap(None, CapSet::Bounding, c).is_ok())
            .collect();
        all.sort_by_key(|c| c.index());
        Drop {
            all,
            setpcap: [Capability::CAP_SETPCAP].into_iter().collect(),
        }
    }

    /// In the child, after the identity switch (which kept the permitted set):
    /// raise CAP_SETPCAP to empty the bounding set, then clear ambient, inheritable,
    /// permitted and effective.
    pub fn apply(&self) -> io::Result<()> {
        let err = |_| io::Error::last_os_error();
        caps::set(None, CapSet::Effective, &self.setpcap).map_err(err)?;
        for &c in &self.all {
            caps::drop(None, CapSet::Bounding, c).map_err(err)?;
        }
        caps::clear(None, CapSet::Ambient).map_err(err)?;
        caps::clear(None, CapSet::Inheritable).map_err(err)?;
        // Clearing the permitted set clears the effective set with it.
        caps::clear(None, CapSet::Permitted).map_err(err)?;
        nix::sys::prctl::set_keepcaps(false)?;
        Ok(())
    }
}
