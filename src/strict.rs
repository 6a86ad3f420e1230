//! Strict parsing of TOML files: unknown keys are errors, and the error names the
//! nearest valid key ("did you mean ...?").
//!
//! Every loader (CI config, recipe meta) goes through [`parse_toml`] so the rule is
//! written once.
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{path}: {message}{hint}")]
    Parse {
        path: PathBuf,
        message: String,
        hint: String,
    },
}

/// Read and parse `path` as TOML into `T` (which should use `deny_unknown_fields`).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.to_owned(), e))?;
    parse_toml(path, &text)
}

/// Parse `text` (read from `path`, used in messages) as TOML into `T`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| {
        let message = e.to_string().trim_end().to_string();
        let hint = did_you_mean(&message)
            .map(|s| format!("\nhint: did you mean `{s}`?"))
            .unwrap_or_default();
        Error::Parse {
            path: path.to_owned(),
            message,
            hint,
        }
    })
}

/// From serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`"),
/// the candidate nearest to `x`, if any is near enough to be a likely typo.
pub fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    nearest(unknown, &candidates).map(str::to_string)
}

/// The candidate with the smallest edit distance to `word` (case-insensitive), when
/// that distance is small relative to the word's length.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_nearest_key() {
        let msg = "unknown field `UPGRADE_BASE_VERSON`, expected one of `UPGRADE_BASE_VERSION`, `DATA_PATH`";
        assert_eq!(did_you_mean(msg).as_deref(), Some("UPGRADE_BASE_VERSION"));
    }

    #[test]
    fn no_suggestion_when_nothing_is_close() {
        let msg = "unknown field `zzzzzzzzzz`, expected one of `abra`, `domain`";
        assert_eq!(did_you_mean(msg), None);
    }

    #[test]
    fn parse_error_carries_path_and_hint() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            interval_s: u64,
        }
        let err = parse_toml::<T>(Path::new("x.toml"), "intervl_s = 3").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.toml:"), "{text}");
        assert!(text.contains("did you mean `interval_s`?"), "{text}");
    }
}
