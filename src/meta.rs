//! Per-recipe CI settings: `<config dir>/recipes/<recipe>/meta.toml`.
//!
//! The one loader of recipe meta (the older system had six that drifted apart). Keys
//! are strict: an unknown key is an error naming the nearest valid key. Every key is
//! documented in `docs/enroll-recipe.md` and read by the runner.
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

pub const FILE_NAME: &str = "meta.toml";

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct RecipeMeta {
    /// Release tag to upgrade from; default: the newest release tag below the tested ref.
    pub UPGRADE_BASE_VERSION: Option<String>,
    /// Service whose volume holds the data the upgrade and restore tiers check;
    /// default: the first service with a `backupbot.backup.path` label.
    pub DATA_SERVICE: Option<String>,
    /// Directory inside `DATA_SERVICE` where the data check writes its marker file.
    pub DATA_PATH: Option<String>,
    /// Instead of a marker file: a command run with `sh -c` in `DATA_SERVICE`'s
    /// container that records the value `$1` in the app's data (e.g. an SQL insert).
    pub DATA_WRITE_CMD: Option<String>,
    /// With `DATA_WRITE_CMD`: a command run likewise that prints the recorded values,
    /// one a line (e.g. an SQL select).
    pub DATA_READ_CMD: Option<String>,
    /// Seconds to wait for a deploy to converge and become healthy (default 120).
    pub CONVERGE_TIMEOUT_S: Option<u64>,
    /// Seconds each custom test may run (default 300).
    pub TEST_TIMEOUT_S: Option<u64>,
    /// Extra `KEY=value` lines set in the app's env file after `abra app new`.
    #[serde(default)]
    pub APP_ENV: BTreeMap<String, String>,
    /// What the compose policy allows, per service: `docker-socket`, `bind:<host
    /// path>`, `host-network`, `host-pid`, `host-ipc`, `privileged`, `cap:<NAME>`,
    /// `device:<host path>` (e.g. `POLICY_ALLOW = { bot = ["docker-socket"] }`).
    #[serde(default)]
    pub POLICY_ALLOW: BTreeMap<String, Vec<String>>,
}

impl RecipeMeta {
    /// Load `dir/meta.toml`; a missing file means all defaults.
    pub fn load(dir: &Path) -> Result<RecipeMeta, crate::strict::Error> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(RecipeMeta::default());
        }
        let meta: RecipeMeta = crate::strict::load_toml(&path)?;
        Ok(meta)
    }

    pub fn converge_timeout_s(&self) -> u64 {
        self.CONVERGE_TIMEOUT_S.unwrap_or(120)
    }

    pub fn test_timeout_s(&self) -> u64 {
        self.TEST_TIMEOUT_S.unwrap_or(300)
    }

    /// Whether the compose policy allows `token` for `service`.
    pub fn allows(&self, service: &str, token: &str) -> bool {
        self.POLICY_ALLOW
            .get(service)
            .is_some_and(|t| t.iter().any(|a| a == token))
    }

    /// `DATA_SERVICE` and `DATA_PATH`, when both are set.
    pub fn data_probe(&self) -> Option<(&str, &str)> {
        match (&self.DATA_SERVICE, &self.DATA_PATH) {
            (Some(s), Some(p)) => Some((s, p)),
            _ => None,
        }
    }

    /// `DATA_SERVICE`, `DATA_WRITE_CMD` and `DATA_READ_CMD`, when all are set.
    pub fn data_commands(&self) -> Option<(&str, &str, &str)> {
        match (
            &self.DATA_SERVICE,
            &self.DATA_WRITE_CMD,
            &self.DATA_READ_CMD,
        ) {
            (Some(s), Some(w), Some(r)) => Some((s, w, r)),
            _ => None,
        }
    }

    /// Checks beyond the types, with the fix in the message.
    pub fn validate(&self) -> Result<(), String> {
        let commands = self.DATA_WRITE_CMD.is_some() || self.DATA_READ_CMD.is_some();
        if self.DATA_WRITE_CMD.is_some() != self.DATA_READ_CMD.is_some() {
            return Err("DATA_WRITE_CMD and DATA_READ_CMD must be set together".into());
        }
        if commands && self.DATA_PATH.is_some() {
            return Err(
                "set either DATA_PATH (a marker file) or DATA_WRITE_CMD and DATA_READ_CMD \
                 (commands), not both"
                    .into(),
            );
        }
        if commands && self.DATA_SERVICE.is_none() {
            return Err(
                "DATA_WRITE_CMD and DATA_READ_CMD need DATA_SERVICE (the service they run in)"
                    .into(),
            );
        }
        if !commands && self.DATA_SERVICE.is_some() != self.DATA_PATH.is_some() {
            return Err("DATA_SERVICE and DATA_PATH must be set together".into());
        }
        if let Some(p) = self.DATA_PATH.as_ref().filter(|p| !p.starts_with('/')) {
            return Err(format!(
                "DATA_PATH {p:?} must be an absolute path in the container"
            ));
        }
        for (service, tokens) in &self.POLICY_ALLOW {
            if let Some(bad) = tokens
                .iter()
                .find(|t| !crate::runner::policy::valid_allow_token(t))
            {
                return Err(format!(
                    "POLICY_ALLOW.{service} entry {bad:?} is not one of \"docker-socket\", \
                     \"bind:<host path>\", \"host-network\", \"host-pid\", \"host-ipc\", \
                     \"privileged\", \"cap:<NAME>\", \"device:<host path>\""
                ));
            }
        }
        for key in self.APP_ENV.keys() {
            let ok = !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !key.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(format!(
                    "APP_ENV key {key:?} is not a valid env variable name"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RecipeMeta::load(dir.path()).unwrap(), RecipeMeta::default());
    }

    #[test]
    fn typo_suggests_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "UPGRADE_BASE_VERSON = \"1.0.0+1\"\n",
        )
        .unwrap();
        let err = RecipeMeta::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("meta.toml"), "{err}");
        assert!(
            err.contains("did you mean `UPGRADE_BASE_VERSION`?"),
            "{err}"
        );
    }

    #[test]
    fn lowercase_key_suggests_uppercase() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "data_path = \"/data\"\n").unwrap();
        let err = RecipeMeta::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("did you mean `DATA_PATH`?"), "{err}");
    }

    #[test]
    fn validate_rejects_half_probe_and_bad_env() {
        let mut m = RecipeMeta {
            DATA_SERVICE: Some("app".into()),
            ..Default::default()
        };
        assert!(m.validate().unwrap_err().contains("together"));
        m.DATA_PATH = Some("/data".into());
        assert!(m.validate().is_ok());
        m.APP_ENV.insert("1BAD".into(), "x".into());
        assert!(m.validate().is_err());
        m.APP_ENV.clear();
        m.POLICY_ALLOW
            .insert("bot".into(), vec!["docker-socket".into()]);
        assert!(m.validate().is_ok());
        assert!(m.allows("bot", "docker-socket") && !m.allows("app", "docker-socket"));
        m.POLICY_ALLOW.insert("app".into(), vec!["socket".into()]);
        assert!(
            m.validate()
                .unwrap_err()
                .contains("POLICY_ALLOW.app entry \"socket\"")
        );
    }

    #[test]
    fn probe_commands_come_in_pairs_with_a_service_and_without_a_path() {
        let mut m = RecipeMeta {
            DATA_SERVICE: Some("db".into()),
            DATA_WRITE_CMD: Some("db insert \"$1\"".into()),
            ..Default::default()
        };
        assert!(m.validate().unwrap_err().contains("set together"));
        m.DATA_READ_CMD = Some("db select".into());
        assert!(m.validate().is_ok());
        assert_eq!(
            m.data_commands(),
            Some(("db", "db insert \"$1\"", "db select"))
        );
        assert_eq!(m.data_probe(), None);
        m.DATA_PATH = Some("/data".into());
        assert!(m.validate().unwrap_err().contains("not both"));
        m.DATA_PATH = None;
        m.DATA_SERVICE = None;
        assert!(m.validate().unwrap_err().contains("need DATA_SERVICE"));
    }

    #[test]
    fn a_misspelt_probe_key_suggests_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "DATA_WRITE_COMMAND = \"x\"\n").unwrap();
        let err = RecipeMeta::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("did you mean `DATA_WRITE_CMD`?"), "{err}");
    }
}
