//! systemd's watchdog and the stop flag, for work that takes many requests (a cycle's
//! listings, watching every repo at start): [`Heartbeat::beat`] between steps keeps
//! the watchdog fed, [`Heartbeat::stopping`] says SIGTERM arrived.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    /// A third of `WatchdogSec=`, when systemd asked for pings.
    every: Option<Duration>,
    last: Instant,
}

impl Heartbeat {
    pub fn new(stop: Arc<AtomicBool>) -> Heartbeat {
        let mut usec = 0;
        let every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 3).max(Duration::from_millis(100)));
        Heartbeat {
            stop,
            every,
            last: Instant::now(),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Tell the watchdog we are alive (at most once per third of its interval).
    pub fn beat(&mut self) {
        if let Some(every) = self.every
            && self.last.elapsed() >= every
        {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            self.last = Instant::now();
        }
    }
}
