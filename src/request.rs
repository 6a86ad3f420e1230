//! The run request: the file the poller writes (atomically, before launch) and the
//! runner reads. It is the record of truth that a comment was acted on.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub run_id: String,
    /// `owner/name` of the recipe repository on the forge.
    pub repo: String,
    pub recipe: String,
    pub pr: Option<u64>,
    /// The commit commented on: the runner tests exactly this commit.
    pub sha: String,
    /// The git ref to fetch it from (e.g. `refs/pull/7/head`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub clone_url: String,
    pub comment_id: Option<u64>,
    pub requested_by: String,
    pub requested_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read run request {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("run request {0} is not valid: {1}")]
    Parse(PathBuf, #[source] serde_json::Error),
    #[error("cannot write run request {0}: {1}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("run request {0}: run_id {1:?} is not a valid run id")]
    BadRunId(PathBuf, String),
}

impl RunRequest {
    pub fn load(path: &Path) -> Result<RunRequest, Error> {
        let text = std::fs::read(path).map_err(|e| Error::Read(path.to_owned(), e))?;
        let req: RunRequest =
            serde_json::from_slice(&text).map_err(|e| Error::Parse(path.to_owned(), e))?;
        if !crate::runid::is_valid(&req.run_id) {
            return Err(Error::BadRunId(path.to_owned(), req.run_id));
        }
        Ok(req)
    }

    /// Write to `dir/<run_id>.json` atomically (temp file, fsync, rename).
    pub fn store(&self, dir: &Path) -> Result<PathBuf, Error> {
        let path = dir.join(format!("{}.json", self.run_id));
        let json = serde_json::to_vec_pretty(self).expect("a request serialises");
        crate::atomic::write(&path, &json).map_err(|e| Error::Write(path.clone(), e))?;
        Ok(path)
    }
}
