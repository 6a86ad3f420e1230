//! The poller's memory: which comments were acted on, where each repo's listing
//! resumes, and what was last reported for each run. Everything is a small file
//! written atomically under `<state.dir>`, so restarts and crashes lose nothing.
//!
//! ```text
//! <state.dir>/requests/<run-id>.json         the run request: the record of truth that
//!                                            a comment started a run (written before launch)
//! <state.dir>/poller/cursors.json            per repo: the `since` of the next listing
//! <state.dir>/poller/comments/<id>.json      a comment acted on without a run (refused,
//!                                            PR closed or deleted), and whether replied
//! <state.dir>/poller/runs/<run-id>.json      launch and reporting state of one run
//! ```
//!
//! Gitea comment ids are unique across the whole instance, so they key everything.
use crate::request::RunRequest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state dir {0} is not writable: {1}")]
    NotWritable(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(transparent)]
    Request(#[from] crate::request::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A comment acted on without starting a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub comment_id: u64,
    pub repo: String,
    pub pr: Option<u64>,
    /// `refused`, `pr-closed`, `pr-deleted`.
    pub outcome: String,
    pub user: String,
    /// Whether the reply comment was posted (refusals only).
    pub replied: bool,
}

/// What the poller knows about one run it requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub repo: String,
    pub pr: Option<u64>,
    pub sha: String,
    pub comment_id: Option<u64>,
    /// When the run was requested (RFC 3339).
    #[serde(default)]
    pub requested_at: Option<String>,
    /// When the runner was started (RFC 3339); `None` until launch succeeded.
    pub launched_at: Option<String>,
    /// The PR comment edited in place as the run progresses.
    pub status_comment_id: Option<u64>,
    /// Last commit status posted: `state|description`.
    pub last_status: Option<String>,
    /// Last PR comment body posted (a digest, to skip identical edits).
    pub last_body: Option<String>,
    /// The final report was posted; nothing more to do.
    pub done: bool,
}

impl RunRecord {
    /// The record of a run just requested: nothing launched or reported yet.
    pub fn requested(req: &RunRequest) -> RunRecord {
        RunRecord {
            run_id: req.run_id.clone(),
            repo: req.repo.clone(),
            pr: req.pr,
            sha: req.sha.clone(),
            comment_id: req.comment_id,
            requested_at: Some(req.requested_at.clone()),
            ..RunRecord::default()
        }
    }
}

/// A time for the ledger's own records: milliseconds, so that a start timeout measured
/// from it is not shortened by up to a second of truncation.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Run(String),
    Outcome(String),
}

pub struct Ledger {
    state_dir: PathBuf,
    by_comment: HashMap<u64, Handled>,
    cursors: BTreeMap<String, String>,
}

impl Ledger {
    pub fn requests_dir(&self) -> PathBuf {
        self.state_dir.join("requests")
    }
    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir.join("runs")
    }
    fn poller_dir(&self) -> PathBuf {
        self.state_dir.join("poller")
    }
    fn comments_dir(&self) -> PathBuf {
        self.poller_dir().join("comments")
    }
    fn records_dir(&self) -> PathBuf {
        self.poller_dir().join("runs")
    }
    fn cursors_path(&self) -> PathBuf {
        self.poller_dir().join("cursors.json")
    }

    /// Open (creating dirs) and index the state under `state_dir`. Refuses when the
    /// directory cannot be written, so a bad deployment fails at start, not at launch.
    pub fn open(state_dir: &Path) -> Result<Ledger> {
        let ledger = Ledger {
            state_dir: state_dir.to_owned(),
            by_comment: HashMap::new(),
            cursors: BTreeMap::new(),
        };
        for dir in [
            ledger.requests_dir(),
            ledger.comments_dir(),
            ledger.records_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::NotWritable(dir.clone(), e))?;
            let probe = dir.join(format!(".probe.{}", std::process::id()));
            crate::atomic::write(&probe, b"").map_err(|e| Error::NotWritable(dir.clone(), e))?;
            let _ = std::fs::remove_file(&probe);
        }
        let mut ledger = ledger;
        ledger.index()?;
        Ok(ledger)
    }

    fn index(&mut self) -> Result<()> {
        for req in self.requests()? {
            if let Some(id) = req.comment_id {
                self.by_comment.insert(id, Handled::Run(req.run_id.clone()));
            }
        }
        for path in json_files(&self.comments_dir())? {
            match read_json::<Outcome>(&path) {
                Ok(o) => {
                    self.by_comment
                        .insert(o.comment_id, Handled::Outcome(o.outcome.clone()));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable outcome: {e}")
                }
            }
        }
        let path = self.cursors_path();
        if path.exists() {
            self.cursors = read_json(&path)?;
        }
        Ok(())
    }

    /// All run requests on disk, oldest first.
    pub fn requests(&self) -> Result<Vec<RunRequest>> {
        let mut out = Vec::new();
        for path in json_files(&self.requests_dir())? {
            match RunRequest::load(&path) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable run request: {e}")
                }
            }
        }
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(out)
    }

    pub fn handled(&self, comment_id: u64) -> Option<&Handled> {
        self.by_comment.get(&comment_id)
    }

    /// Record the run request (atomically): from here on the comment is acted on.
    pub fn record_request(&mut self, req: &RunRequest) -> Result<PathBuf> {
        let path = req.store(&self.requests_dir())?;
        if let Some(id) = req.comment_id {
            self.by_comment.insert(id, Handled::Run(req.run_id.clone()));
        }
        Ok(path)
    }

    pub fn record_outcome(&mut self, o: &Outcome) -> Result<()> {
        let path = self.comments_dir().join(format!("{}.json", o.comment_id));
        write_json(&path, o)?;
        self.by_comment
            .insert(o.comment_id, Handled::Outcome(o.outcome.clone()));
        Ok(())
    }

    pub fn outcome(&self, comment_id: u64) -> Option<Outcome> {
        read_json(&self.comments_dir().join(format!("{comment_id}.json"))).ok()
    }

    /// Outcomes still waiting for their reply comment.
    pub fn unreplied(&self) -> Result<Vec<Outcome>> {
        let mut out = Vec::new();
        for path in json_files(&self.comments_dir())? {
            if let Ok(o) = read_json::<Outcome>(&path)
                && o.outcome == "refused"
                && !o.replied
            {
                out.push(o);
            }
        }
        Ok(out)
    }

    pub fn record(&self, run_id: &str) -> Option<RunRecord> {
        read_json(&self.records_dir().join(format!("{run_id}.json"))).ok()
    }

    pub fn save_record(&self, r: &RunRecord) -> Result<()> {
        write_json(&self.records_dir().join(format!("{}.json", r.run_id)), r)
    }

    /// Records of runs not yet fully reported.
    pub fn open_records(&self) -> Result<Vec<RunRecord>> {
        let mut out = Vec::new();
        for path in json_files(&self.records_dir())? {
            if let Ok(r) = read_json::<RunRecord>(&path)
                && !r.done
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(out)
    }

    pub fn cursor(&self, repo: &str) -> Option<&str> {
        self.cursors.get(repo).map(String::as_str)
    }

    pub fn set_cursor(&mut self, repo: &str, since: &str) -> Result<()> {
        if self.cursors.get(repo).map(String::as_str) == Some(since) {
            return Ok(());
        }
        self.cursors.insert(repo.to_owned(), since.to_owned());
        write_json(&self.cursors_path(), &self.cursors)
    }
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Read(dir.to_owned(), e))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::Read(path.to_owned(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Read(
            path.to_owned(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("state serialises");
    crate::atomic::write(path, &bytes).map_err(|e| Error::Write(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(run_id: &str, comment: u64) -> RunRequest {
        RunRequest {
            run_id: run_id.into(),
            repo: "o/r".into(),
            recipe: "r".into(),
            pr: Some(1),
            sha: "a".repeat(40),
            git_ref: "refs/pull/1/head".into(),
            clone_url: "https://git.example.org/o/r.git".into(),
            comment_id: Some(comment),
            requested_by: "u".into(),
            requested_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path()).unwrap();
            l.record_request(&req("20260101T000000Z-aaaaaa", 42))
                .unwrap();
            l.record_outcome(&Outcome {
                comment_id: 43,
                repo: "o/r".into(),
                pr: Some(1),
                outcome: "refused".into(),
                user: "x".into(),
                replied: false,
            })
            .unwrap();
            l.set_cursor("o/r", "2026-01-01T00:00:00Z").unwrap();
        }
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(
            l.handled(42),
            Some(&Handled::Run("20260101T000000Z-aaaaaa".into()))
        );
        assert_eq!(l.handled(43), Some(&Handled::Outcome("refused".into())));
        assert_eq!(l.handled(44), None);
        assert_eq!(l.cursor("o/r"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(l.unreplied().unwrap().len(), 1);
    }
}
