//! cc-ci: continuous integration for Co-op Cloud recipes.
//!
//! Each concept is one module; `main.rs` only parses and dispatches through [`cli`].
pub mod abra;
pub mod artifacts;
pub mod cli;
pub mod config;
pub mod confine;
pub mod ladder;
pub mod lock;
pub mod meta;
pub mod poll;
pub mod process;
pub mod progress;
pub mod recipe;
pub mod redact;
pub mod request;
pub mod results;
pub mod run;
pub mod runid;
pub mod strict;
pub mod swarm;
pub mod text;
