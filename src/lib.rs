//! cc-ci: continuous integration for Co-op Cloud recipes.
//!
//! Four rooms, each a module: the [`runner`] (one run of the level ladder), the
//! [`poll`]er (Gitea triggers and reports), the [`redact`]or (secret masking) and the
//! [`janitor`] (what dead runs left). What they share sits beside them: the config, the
//! run's results, the engine seam ([`docker`]), locks, reaping and child processes.
//! `main.rs` only parses and dispatches through [`cli`].
pub mod atomic;
pub mod cli;
pub mod config;
pub mod confine;
pub mod docker;
pub mod janitor;
pub mod lock;
pub mod meta;
pub mod poll;
pub mod process;
pub mod progress;
pub mod reap;
pub mod redact;
pub mod request;
pub mod results;
pub mod runid;
pub mod runner;
pub mod strict;
pub mod text;
