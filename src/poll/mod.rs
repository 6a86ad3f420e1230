//! The poller (`cc-ci poll`): `!testme` on a Gitea pull request starts a run, and the
//! run's results are reported back as a commit status and one PR comment.
//!
//! One module per concept, in the order a comment meets them: [`service`] (the loop
//! and systemd), [`discovery`] (which repos a cycle lists), [`comments`] (listing a
//! repo's new comments), [`trigger`] (whether a comment asks for a run), [`triggers`]
//! (the pipeline: authorize → dedupe → request → launch), [`auth`] (who may trigger),
//! [`ledger`] (exactly-once bookkeeping), [`launch`] (starting the runner),
//! [`report`] (what status and comment a run asks for); [`gitea`] is the REST client,
//! [`heartbeat`] the watchdog and stop flag, and [`webhook`] the optional push path.
pub mod auth;
pub mod comments;
pub mod discovery;
pub mod gitea;
pub mod heartbeat;
pub mod launch;
pub mod ledger;
pub mod report;
pub mod service;
pub mod trigger;
pub mod triggers;
pub mod webhook;

use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// `cc-ci poll`: load the config, refuse to start on a bad token file or state dir,
/// then serve until SIGTERM (or one cycle with `--once`).
pub fn main(args: crate::cli::PollArgs) -> anyhow::Result<i32> {
    init_logging();
    let config = crate::config::Config::load(&args.config)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("cannot handle signals")?;
    }
    let webhook = config.webhook.clone();
    let mut poller = service::Poller::new(config, stop).context("the poller cannot start")?;
    let events = match (&webhook, args.once) {
        (Some(hook), false) => {
            let secret =
                service::read_secret(&hook.secret_path().context("the webhook cannot start")?)
                    .context("the webhook cannot start")?;
            let listener = webhook::listener(hook.listen.as_deref())?;
            tracing::info!(addr = ?listener.local_addr().ok(), "webhook listening");
            let (tx, rx) = std::sync::mpsc::channel();
            webhook::spawn(listener, secret.into_bytes(), hook.max_body_bytes, tx);
            Some(rx)
        }
        _ => None,
    };
    poller.check_bot();
    poller.run(args.once, events);
    Ok(crate::cli::EXIT_OK)
}

/// Logs go to the journal with structured fields (REPO, PR, COMMENT_ID, RUN_ID) when
/// running under systemd, else to stderr.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| l.with_field_prefix(None));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match journald {
        Some(layer) => registry.with(layer).try_init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    let _ = result;
}
