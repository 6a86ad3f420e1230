//! Running child processes for a run: every child's stdout and stderr pass through the
//! redactor into `run.log` and the live progress view; children die with the runner
//! (PDEATHSIG) and live in their own process group so the runner can stop them as a
//! group on cancel or deadline and then run its teardown.
use crate::progress::Progress;
use crate::redact::Masker;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Why the run has to stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Deadline,
}

/// The run's stop conditions: a cancel flag (set by SIGTERM/SIGINT) and a deadline.
#[derive(Debug, Clone)]
pub struct Stop {
    pub cancel: Arc<AtomicBool>,
    pub deadline: Instant,
}

impl Stop {
    pub fn check(&self) -> Option<StopReason> {
        if self.cancel.load(Ordering::SeqCst) {
            Some(StopReason::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(StopReason::Deadline)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    Code(i32),
    Signal(i32),
    /// The command's own time limit ran out.
    TimedOut,
    /// The run was stopped while the command ran.
    Stopped(StopReason),
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Success
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Success => write!(f, "exit 0"),
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::TimedOut => write!(f, "timed out"),
            Exit::Stopped(StopReason::Cancelled) => write!(f, "cancelled"),
            Exit::Stopped(StopReason::Deadline) => write!(f, "stopped at the run's deadline"),
        }
    }
}

/// What a child produced.
#[derive(Debug)]
pub struct Output {
    pub exit: Exit,
    /// Raw stdout, when captured (for parsing only; never stored unmasked).
    pub stdout: Vec<u8>,
    /// Masked stderr, kept for error messages.
    pub stderr: String,
}

/// One command to run.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    timeout: Option<Duration>,
    capture: bool,
    quiet: bool,
    /// Pull-request code: run under the run's confinement (`crate::confine`).
    confined: Option<crate::confine::Confined>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            timeout: None,
            capture: false,
            quiet: false,
            confined: None,
        }
    }
    /// Run it confined: unprivileged, no capabilities, landlock, the run's cgroup, the
    /// Docker engine only through the run's endpoint.
    pub fn confined(mut self, c: crate::confine::Confined) -> Cmd {
        self.confined = Some(c);
        self
    }
    pub fn arg(mut self, a: impl Into<OsString>) -> Cmd {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Cmd {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn envs(mut self, vars: &[(String, String)]) -> Cmd {
        for (k, v) in vars {
            self.env.push((k.into(), v.into()));
        }
        self
    }
    pub fn dir(mut self, d: impl Into<PathBuf>) -> Cmd {
        self.dir = Some(d.into());
        self
    }
    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = Some(t);
        self
    }
    /// Capture raw stdout for the caller instead of logging it (the caller logs it,
    /// masked, once it has learnt any secrets it contains).
    pub fn capture(mut self) -> Cmd {
        self.capture = true;
        self
    }
    /// A query: output is not written to run.log (stderr is still kept, masked).
    pub fn quiet(mut self) -> Cmd {
        self.quiet = true;
        self
    }
    /// The file name of the script this runs (`bash hook.sh` → `hook.sh`), for
    /// scripted engines.
    #[cfg(test)]
    pub fn file_name(&self) -> String {
        let base = |p: &OsString| {
            std::path::Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match (base(&self.program).as_str(), self.args.first()) {
            ("bash" | "sh", Some(script)) => base(script),
            (name, _) => name.to_string(),
        }
    }

    fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {0}: {1}")]
    Spawn(String, #[source] io::Error),
    #[error("waiting for {0}: {1}")]
    Wait(String, #[source] io::Error),
}

/// Where a run's child output goes: `run.log` and the progress view.
pub struct Sink {
    log: File,
    progress: Progress,
    /// Children's output bytes written to run.log so far.
    child_bytes: u64,
    /// Beyond this, children's output is dropped (counted, not stored): a child that
    /// floods its output must not fill the disk or the journal. The runner's own notes
    /// are always written.
    child_limit: u64,
    dropped: u64,
}

/// The default cap on children's output in one run.log.
pub const LOG_LIMIT: u64 = 128 * 1024 * 1024;

impl Sink {
    /// Take `n` bytes of child output: how many of them may be stored. Says once in
    /// run.log when the cap is reached.
    fn admit(&mut self, n: usize) -> usize {
        let room = self.child_limit.saturating_sub(self.child_bytes);
        let taken = (n as u64).min(room);
        self.child_bytes += taken;
        if taken < n as u64 {
            if self.dropped == 0 {
                let _ = write!(
                    self.log,
                    "\n[cc-ci: children's output reached run.log's limit of {} bytes; the rest \
                     is dropped, the runner's own notes go on]\n",
                    self.child_limit
                );
            }
            self.dropped += n as u64 - taken;
        }
        taken as usize
    }
}

/// Time accounting for the overhead benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    /// Wall time spent inside child commands (abra, docker, git hooks, tests).
    pub external: Duration,
    /// Time spent deliberately waiting (polling intervals, lock waits).
    pub waiting: Duration,
    pub commands: u32,
}

/// Runs a run's children.
pub struct Executor {
    pub stop: Stop,
    /// Set once teardown begins: cancel and deadline no longer stop children (the
    /// teardown funnel must run to the end); per-command timeouts still bound it.
    teardown: AtomicBool,
    sink: Arc<Mutex<Sink>>,
    masker: RwLock<Arc<Masker>>,
    secrets: Mutex<Vec<Vec<u8>>>,
    min_len: usize,
    timing: Mutex<Timing>,
}

impl Executor {
    pub fn new(
        stop: Stop,
        log: File,
        progress: Progress,
        secrets: Vec<Vec<u8>>,
        min_len: usize,
    ) -> Executor {
        let masker = Arc::new(Masker::new(&secrets, min_len));
        Executor {
            stop,
            teardown: AtomicBool::new(false),
            sink: Arc::new(Mutex::new(Sink {
                log,
                progress,
                child_bytes: 0,
                child_limit: LOG_LIMIT,
                dropped: 0,
            })),
            masker: RwLock::new(masker),
            secrets: Mutex::new(secrets),
            min_len,
            timing: Mutex::new(Timing::default()),
        }
    }

    /// Why children must stop now, if they must (never during teardown).
    pub fn stop_reason(&self) -> Option<StopReason> {
        if self.teardown.load(Ordering::SeqCst) {
            None
        } else {
            self.stop.check()
        }
    }

    /// From now on, only per-command timeouts bound children.
    pub fn begin_teardown(&self) {
        self.teardown.store(true, Ordering::SeqCst);
    }

    /// Add secret values learnt during the run (e.g. generated app secrets).
    pub fn add_secrets(&self, values: impl IntoIterator<Item = Vec<u8>>) {
        let mut secrets = self.secrets.lock().expect("secrets lock");
        secrets.extend(values);
        *self.masker.write().expect("masker lock") = Arc::new(Masker::new(&*secrets, self.min_len));
    }

    pub fn masker(&self) -> Arc<Masker> {
        Arc::clone(&self.masker.read().expect("masker lock"))
    }

    pub fn progress(&self) -> Progress {
        self.sink.lock().expect("sink lock").progress.clone()
    }

    pub fn timing(&self) -> Timing {
        *self.timing.lock().expect("timing lock")
    }

    /// Sleep `d` (or until the run must stop), counted as waiting.
    pub fn wait(&self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d && self.stop_reason().is_none() {
            std::thread::sleep(Duration::from_millis(25).min(d));
        }
        self.timing.lock().expect("timing lock").waiting += start.elapsed();
    }

    pub fn add_waiting(&self, d: Duration) {
        self.timing.lock().expect("timing lock").waiting += d;
    }

    /// Cap children's output in run.log at `bytes` (default [`LOG_LIMIT`]).
    #[cfg(test)]
    pub fn set_log_limit(&self, bytes: u64) {
        self.sink.lock().expect("sink lock").child_limit = bytes;
    }

    /// Children's output bytes dropped at the cap.
    #[cfg(test)]
    pub fn log_dropped(&self) -> u64 {
        self.sink.lock().expect("sink lock").dropped
    }

    /// Write a line of the runner's own to run.log (masked).
    pub fn note(&self, line: &str) {
        self.log_bytes(line.as_bytes());
    }

    /// Write bytes to run.log and the progress view through the current masker,
    /// ending what is not empty with a newline.
    pub fn log_bytes(&self, bytes: &[u8]) {
        let masked = self.masker().mask_all(bytes);
        let mut sink = self.sink.lock().expect("sink lock");
        let _ = sink.log.write_all(&masked);
        if !masked.is_empty() && !masked.ends_with(b"\n") {
            let _ = sink.log.write_all(b"\n");
        }
        for l in String::from_utf8_lossy(&masked).lines() {
            sink.progress.line(l);
        }
    }

    /// Run `cmd` to completion, or until its timeout or the run's stop.
    pub fn run(&self, mut cmd: Cmd) -> Result<Output, Error> {
        let shown = cmd.display();
        if !cmd.quiet {
            self.note(&format!("$ {shown}"));
        }
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(d) = &cmd.dir {
            command.current_dir(d);
        }
        // Die with the runner, even on SIGKILL of the runner. Own process group:
        // signals to the runner do not hit children directly; the runner stops them
        // as a group, then tears down.
        tie_to_parent(&mut command, nix::sys::signal::Signal::SIGKILL, true);
        if let Some(confined) = cmd.confined.take() {
            // Last: its steps run after the ones above, in their documented order.
            confined.apply(&mut command);
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| Error::Spawn(shown.clone(), e))?;
        let pid = child.id() as i32;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let masker = self.masker();

        let out_thread = {
            let sink = Arc::clone(&self.sink);
            let masker = Arc::clone(&masker);
            let (capture, quiet) = (cmd.capture, cmd.quiet);
            std::thread::spawn(move || pump(stdout, &masker, &sink, capture, quiet || capture))
        };
        let err_thread = {
            let sink = Arc::clone(&self.sink);
            let quiet = cmd.quiet;
            std::thread::spawn(move || pump(stderr, &masker, &sink, true, quiet))
        };

        let mut stopped: Option<Exit> = None;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(Error::Wait(shown, e)),
            }
            if stopped.is_none() {
                if let Some(reason) = self.stop_reason() {
                    stopped = Some(Exit::Stopped(reason));
                } else if cmd.timeout.is_some_and(|t| started.elapsed() >= t) {
                    stopped = Some(Exit::TimedOut);
                }
                if stopped.is_some() {
                    terminate_group(pid, &mut child);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A background process the child left behind (`cmd &` in a hook) may hold the
        // pipes open forever: after a short grace, stop what is left of the group.
        let grace = Instant::now();
        while !(out_thread.is_finished() && err_thread.is_finished()) {
            if grace.elapsed() >= Duration::from_secs(2) {
                self.note(&format!("{shown}: stopping the processes it left running"));
                // SAFETY: kill(2) on the process group our child led; a reader still
                // open means a member of that group still exists.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stdout = out_thread.join().unwrap_or_default();
        let stderr = err_thread.join().unwrap_or_default();
        {
            let mut t = self.timing.lock().expect("timing lock");
            t.external += started.elapsed();
            t.commands += 1;
        }
        let exit = stopped.unwrap_or_else(|| match (status.code(), status.signal()) {
            (Some(0), _) => Exit::Success,
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(-1),
        });
        if !cmd.quiet && !exit.success() {
            self.note(&format!("  -> {exit}"));
        }
        Ok(Output {
            exit,
            stdout,
            stderr: String::from_utf8_lossy(&self.masker().mask_all(&stderr)).into_owned(),
        })
    }
}

/// Make `command`'s child get `signal` when this process dies (even by SIGKILL), and
/// with `own_group` lead a process group of its own.
pub fn tie_to_parent(command: &mut Command, signal: nix::sys::signal::Signal, own_group: bool) {
    // SAFETY: only async-signal-safe calls (prctl, setpgid) run between fork and exec,
    // and they touch no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)?;
            if own_group {
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
            }
            Ok(())
        });
    }
}

/// SIGTERM the child's process group, then SIGKILL it if it lingers.
fn terminate_group(pid: i32, child: &mut std::process::Child) {
    // SAFETY: kill(2) on our own child's process group.
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            // The leader is gone; make sure no member of its group survives.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

/// Copy one pipe: masked into the sink (unless `quiet`), raw into the returned buffer
/// when `keep` (bounded to the last 1 MiB).
fn pump(
    mut from: impl Read,
    masker: &Arc<Masker>,
    sink: &Arc<Mutex<Sink>>,
    keep: bool,
    quiet: bool,
) -> Vec<u8> {
    const KEEP_MAX: usize = 1 << 20;
    let mut kept = Vec::new();
    let mut writer = masker.writer(SinkWriter {
        sink: Arc::clone(sink),
        line: Vec::new(),
        quiet,
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if keep {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > KEEP_MAX {
                        let cut = kept.len() - KEEP_MAX;
                        kept.drain(..cut);
                    }
                }
                let _ = writer.write_all(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if let Ok(mut w) = writer.finish() {
        w.end();
    }
    kept
}

/// Receives masked bytes: appends them to run.log and feeds whole lines to progress.
struct SinkWriter {
    sink: Arc<Mutex<Sink>>,
    line: Vec<u8>,
    quiet: bool,
}

impl SinkWriter {
    fn end(&mut self) {
        if !self.line.is_empty() && !self.quiet {
            let mut sink = self.sink.lock().expect("sink lock");
            let _ = sink.log.write_all(b"\n");
            sink.progress.line(&String::from_utf8_lossy(&self.line));
        }
        self.line.clear();
    }
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len();
        if self.quiet {
            return Ok(len);
        }
        let mut sink = self.sink.lock().expect("sink lock");
        let buf = &buf[..sink.admit(buf.len())];
        sink.log.write_all(buf)?;
        for &b in buf {
            if b == b'\n' || b == b'\r' {
                if !self.line.is_empty() {
                    sink.progress.line(&String::from_utf8_lossy(&self.line));
                    self.line.clear();
                }
            } else if self.line.len() < 4096 {
                self.line.push(b);
            }
        }
        Ok(len)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sink.lock().expect("sink lock").log.flush()
    }
}

/// An executor for unit tests: `run.log` in `dir`, no progress, one secret
/// (`supersecret-value`), ten minutes to the deadline.
#[cfg(test)]
pub fn test_executor(dir: &std::path::Path) -> Executor {
    let stop = Stop {
        cancel: Arc::new(AtomicBool::new(false)),
        deadline: Instant::now() + Duration::from_secs(600),
    };
    let log = File::create(dir.join("run.log")).unwrap();
    Executor::new(
        stop,
        log,
        Progress::stderr(false),
        vec![b"supersecret-value".to_vec()],
        8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_output_is_capped_and_said_and_notes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let exec = test_executor(dir.path());
        exec.set_log_limit(100_000);
        let out = exec
            .run(Cmd::new("sh").args(["-c", "yes flood | head -c 5000000; echo done >&2"]))
            .unwrap();
        assert!(out.exit.success());
        exec.note("after the flood");
        let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
        assert!(log.len() < 101_000, "{}", log.len());
        assert!(
            log.contains("reached run.log's limit of 100000 bytes"),
            "{log}"
        );
        assert!(log.ends_with("after the flood\n"));
        assert_eq!(log.matches("limit of").count(), 1);
        assert!(exec.log_dropped() >= 4_900_000 - 100_000);
    }

    #[test]
    fn output_is_masked_into_the_log_and_exit_codes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let exec = test_executor(dir.path());
        let out = exec
            .run(Cmd::new("sh").args(["-c", "echo value=supersecret-value; echo err >&2; exit 3"]))
            .unwrap();
        assert_eq!(out.exit, Exit::Code(3));
        assert_eq!(out.stderr.trim(), "err");
        let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
        assert!(log.contains("value=[MASKED]"), "{log}");
        assert!(!log.contains("supersecret-value"));
    }

    #[test]
    fn a_background_process_holding_the_pipes_does_not_hang_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let exec = test_executor(dir.path());
        let start = Instant::now();
        let out = exec
            .run(Cmd::new("sh").args(["-c", "sleep 600 & echo started"]))
            .unwrap();
        assert!(out.exit.success());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn per_command_timeout_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let exec = test_executor(dir.path());
        let start = Instant::now();
        let out = exec
            .run(
                Cmd::new("sh")
                    .args(["-c", "sleep 600; echo never"])
                    .timeout(Duration::from_millis(300)),
            )
            .unwrap();
        assert_eq!(out.exit, Exit::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn cancel_stops_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let exec = test_executor(dir.path());
        let cancel = Arc::clone(&exec.stop.cancel);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.store(true, Ordering::SeqCst);
        });
        let out = exec.run(Cmd::new("sleep").arg("600")).unwrap();
        assert_eq!(out.exit, Exit::Stopped(StopReason::Cancelled));
        // During teardown the cancel no longer stops children.
        exec.begin_teardown();
        assert!(exec.run(Cmd::new("true")).unwrap().exit.success());
    }
}
