//! Live progress on the terminal: the current stage, its elapsed time and the last
//! lines of its (masked) output. On a non-terminal (the journal, a pipe) it prints a
//! line per stage and every masked output line. Under systemd the stage and what it
//! waits for are also the unit's status line (`sd_notify STATUS=`), so
//! `systemctl status` shows where a run is.
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TAIL: usize = 3;

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<State>>,
}

struct State {
    live: bool,
    enabled: bool,
    stage: String,
    /// The stage's current status line (starts as the stage's name).
    status: String,
    stage_start: Instant,
    run_start: Instant,
    tail: VecDeque<String>,
    drawn: usize,
}

impl Progress {
    /// Progress on stderr; live redraws only when stderr is a terminal.
    pub fn stderr(enabled: bool) -> Progress {
        let live = enabled && std::io::stderr().is_terminal();
        let p = Progress {
            inner: Arc::new(Mutex::new(State {
                live,
                enabled,
                stage: String::new(),
                status: String::new(),
                stage_start: Instant::now(),
                run_start: Instant::now(),
                tail: VecDeque::new(),
                drawn: 0,
            })),
        };
        if live {
            let ticker = p.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    if !ticker.redraw() {
                        break;
                    }
                }
            });
        }
        p
    }

    /// What the current stage is doing now (e.g. `upgrade: waiting for convergence
    /// (12 s)`): the unit's status line and the live view's heading, never a log line.
    pub fn status(&self, text: &str) {
        let mut s = self.inner.lock().expect("progress lock");
        if s.status != text {
            s.status = text.to_string();
            notify_status(text);
        }
    }

    /// A new stage begins.
    pub fn stage(&self, name: &str) {
        let mut s = self.inner.lock().expect("progress lock");
        s.stage = name.to_string();
        s.status = name.to_string();
        notify_status(name);
        s.stage_start = Instant::now();
        s.tail.clear();
        if s.enabled && !s.live {
            let elapsed = s.run_start.elapsed().as_secs();
            // A closed stderr (journald restarted, a pipe reader gone) must never stop
            // a run: write errors are ignored, never panics as with eprintln!.
            let _ = writeln!(std::io::stderr(), "[{elapsed:>3}s] {name}");
        }
        drop(s);
        self.redraw();
    }

    /// A line of output of the current stage (already masked).
    pub fn line(&self, line: &str) {
        let mut s = self.inner.lock().expect("progress lock");
        if !s.live {
            // Not a terminal (the journal under systemd, a pipe): every masked line,
            // so `journalctl -u cc-ci-runner@…` shows the run's log.
            if s.enabled {
                let _ = writeln!(std::io::stderr(), "  {}", line.trim_end());
            }
            return;
        }
        let line: String = line.chars().filter(|c| !c.is_control()).take(160).collect();
        if line.trim().is_empty() {
            return;
        }
        s.tail.push_back(line);
        while s.tail.len() > TAIL {
            s.tail.pop_front();
        }
    }

    /// Print a final message, clearing the live view first.
    pub fn finish(&self) {
        let mut s = self.inner.lock().expect("progress lock");
        if s.live {
            clear(&mut s);
            s.live = false;
        }
    }

    fn redraw(&self) -> bool {
        let mut s = self.inner.lock().expect("progress lock");
        if !s.live {
            return false;
        }
        clear(&mut s);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "\x1b[1m▶ {}\x1b[0m  {}s (run {}s)",
            s.status,
            s.stage_start.elapsed().as_secs(),
            s.run_start.elapsed().as_secs()
        );
        for l in &s.tail {
            let _ = writeln!(err, "  \x1b[2m{l}\x1b[0m");
        }
        s.drawn = 1 + s.tail.len();
        true
    }
}

fn clear(s: &mut State) {
    let mut err = std::io::stderr().lock();
    for _ in 0..s.drawn {
        let _ = write!(err, "\x1b[1A\x1b[2K");
    }
    s.drawn = 0;
}

/// Tell systemd the unit's status line, when it runs under systemd (`NOTIFY_SOCKET`;
/// the unit needs `NotifyAccess=main`). Elsewhere this does nothing.
fn notify_status(text: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]);
    }
}
