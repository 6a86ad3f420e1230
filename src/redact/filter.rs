//! `cc-ci redact`: filter stdin, or a command's stdout and stderr, through the masker.
use std::io::{self, Write};
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{Error, Masker, load_secret_dirs};

/// Read size: large enough that the pipe, not the syscalls, sets the pace.
const BUF: usize = 256 * 1024;

/// Run the subcommand; returns the exit code (the command's, in command mode).
pub fn main(args: crate::cli::RedactArgs) -> anyhow::Result<i32> {
    // Secrets first: if any cannot be read, fail before the child runs, so nothing it
    // prints can escape unmasked.
    let secrets = load_secret_dirs(&args.secrets_dirs)?;
    let masker = Arc::new(Masker::new(secrets, args.min_len));
    if args.command.is_empty() {
        grow_pipe(1);
        pump(&masker, 0, 1)?;
        return Ok(0);
    }
    Ok(run_filtered(&masker, &args.command)?)
}

/// Copy `from` to `to` through a masking writer until end of input. A closed output
/// (EPIPE) ends the copy quietly, as for `cat`. Returns whether the output broke.
fn pump(masker: &Arc<Masker>, from: RawFd, to: RawFd) -> Result<bool, Error> {
    let mut w = masker.writer(Fd(to));
    let mut buf = vec![0u8; BUF];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes for the whole call.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Read(err));
        }
        if n == 0 {
            break;
        }
        if let Err(err) = w.write_all(&buf[..n as usize]) {
            if err.kind() == io::ErrorKind::BrokenPipe {
                return Ok(true);
            }
            return Err(Error::Write(err));
        }
    }
    match w.finish() {
        Ok(_) => Ok(false),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        Err(err) => Err(Error::Write(err)),
    }
}

/// Run `command` with stdout and stderr each masked onto ours; forward SIGTERM and
/// SIGINT; return its exit code, 128 + signal for a signal death.
fn run_filtered(masker: &Arc<Masker>, command: &[std::ffi::OsString]) -> Result<i32, Error> {
    let name = command[0].to_string_lossy().into_owned();
    // Register before spawning: a signal arriving in between is queued, then forwarded.
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(Error::Signals)?;
    let handle = signals.handle();
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The child gets SIGTERM if we die without forwarding (kill -9 of the filter).
    crate::process::tie_to_parent(&mut cmd, Signal::SIGTERM, false);
    let mut child = cmd.spawn().map_err(|e| Error::Spawn(name.clone(), e))?;
    let pid = Pid::from_raw(child.id() as i32);

    // Until the child is reaped its pid cannot be reused, so forwarding under this
    // lock, checked against `reaped`, never signals a stranger.
    let reaped = Arc::new(Mutex::new(false));
    let forwarder = {
        let reaped = Arc::clone(&reaped);
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let guard = reaped.lock().unwrap_or_else(|p| p.into_inner());
                if !*guard {
                    if let Ok(sig) = Signal::try_from(sig) {
                        let _ = kill(pid, sig);
                    }
                } else {
                    // The command is gone and we are only draining pipes a background
                    // grandchild holds open: the signal is for us, act as by default.
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
            }
        })
    };

    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    for fd in [out.as_raw_fd(), err.as_raw_fd(), 1, 2] {
        grow_pipe(fd);
    }
    let pumps = [(out.as_raw_fd(), 1), (err.as_raw_fd(), 2)].map(|(from, to)| {
        let masker = Arc::clone(masker);
        std::thread::spawn(move || -> Result<(), Error> {
            if pump(&masker, from, to)? {
                // Our output is gone: keep draining so the child is not blocked on a
                // full pipe, but show nothing.
                drain(from);
            }
            Ok(())
        })
    });

    // Wait without reaping, then reap under the lock.
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Wait(name, e.into())),
        }
    }
    let status = {
        let mut guard = reaped.lock().unwrap_or_else(|p| p.into_inner());
        let status = child.wait().map_err(|e| Error::Wait(name.clone(), e))?;
        *guard = true;
        status
    };
    // All output is shown before we exit: wait for both pipes to reach end of file
    // (a background grandchild holding them open keeps us here, as it would `cmd | cat`;
    // SIGTERM or SIGINT then ends us).
    let mut result = Ok(());
    for p in pumps {
        if let Err(e) = p.join().expect("pump thread does not panic") {
            result = Err(e);
        }
    }
    handle.close();
    let _ = forwarder.join();
    drop((out, err));
    result?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => crate::cli::EXIT_ERROR,
    })
}

/// If `fd` is a pipe, ask for a 1 MiB buffer (the default is 64 KiB): a reader on the
/// other side then wakes once per big write instead of once per 64 KiB, which is most
/// of the cost of relaying a fast stream. Best effort; the limit is
/// /proc/sys/fs/pipe-max-size.
fn grow_pipe(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we hold; F_SETPIPE_SZ fails harmlessly (EBADF,
    // EINVAL on a non-pipe, EPERM over the limit) without side effects.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

fn drain(from: RawFd) {
    let mut buf = vec![0u8; BUF];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes for the whole call.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted) {
            return;
        }
    }
}

/// Unbuffered writes to a file descriptor we do not own (our stdout or stderr):
/// `io::Stdout` is line-buffered, which would cost throughput and split writes.
struct Fd(RawFd);

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes for the whole call.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
