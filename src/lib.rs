//! cc-ci: continuous integration for Co-op Cloud recipes.
//!
//! Each concept is one module; `main.rs` only parses and dispatches through [`cli`].
pub mod artifacts;
pub mod cli;
pub mod config;
pub mod lock;
pub mod poll;
pub mod redact;
pub mod request;
pub mod run;
pub mod runid;
pub mod strict;
