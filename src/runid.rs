//! Run ids: unique and sortable (UTC time, then random), safe as file and unit names.
use chrono::{DateTime, Utc};

/// A new run id such as `20261125T120301Z-3f9a1c`.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    let mut bytes = [0u8; 3];
    getrandom::fill(&mut bytes).expect("the kernel's random source is available");
    format!(
        "{}-{:02x}{:02x}{:02x}",
        now.format("%Y%m%dT%H%M%SZ"),
        bytes[0],
        bytes[1],
        bytes[2]
    )
}

/// Whether `id` can name a directory and a systemd instance: `[A-Za-z0-9_-]`, 1..=64.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_valid() {
        let a = new_run_id("2026-01-01T00:00:00Z".parse().unwrap());
        let b = new_run_id("2026-01-01T00:00:01Z".parse().unwrap());
        assert!(a < b);
        assert!(is_valid(&a) && is_valid(&b));
        assert_ne!(new_run_id(Utc::now()), new_run_id(Utc::now()));
    }

    #[test]
    fn rejects_path_like_ids() {
        assert!(!is_valid("../x"));
        assert!(!is_valid("a/b"));
        assert!(!is_valid(""));
    }
}
