//! `cc-ci redact` as a real process: pipes, live output, exit statuses, signals.
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cc-ci");
const SECRET: &str = "hunter2-correct-horse";

fn secrets_dir(values: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in values {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, value).unwrap();
    }
    dir
}

fn redact(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("redact").arg("--secrets-dir").arg(dir);
    c
}

fn filter(dir: &Path, input: &[u8]) -> std::process::Output {
    let mut child = redact(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The filter may exit (on a secrets error) before reading: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// Read `child`'s stdout on a thread; chunks arrive on the channel as they come.
fn stdout_chunks(child: &mut Child) -> mpsc::Receiver<Vec<u8>> {
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

fn read_until(
    rx: &mpsc::Receiver<Vec<u8>>,
    acc: &mut Vec<u8>,
    needle: &[u8],
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !acc.windows(needle.len()).any(|w| w == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => acc.extend_from_slice(&chunk),
            Err(_) => return false,
        }
    }
    true
}

#[test]
fn stdin_is_masked_and_bytes_pass_through() {
    let dir = secrets_dir(&[
        ("db/password", format!("{SECRET}\n").as_bytes()),
        ("short", b"abc"),
    ]);
    let input = format!("a\r50%\r100%\0 {SECRET}!abc\u{fffd}\n").into_bytes();
    let mut input = input;
    input.extend_from_slice(b"\xff\xfe end");
    let out = filter(dir.path(), &input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = "a\r50%\r100%\0 [MASKED]!abc\u{fffd}\n".as_bytes().to_vec();
    expected.extend_from_slice(b"\xff\xfe end");
    assert_eq!(out.stdout, expected);
}

#[test]
fn min_len_and_several_dirs() {
    let a = secrets_dir(&[("x", b"sixsix")]);
    let b = secrets_dir(&[("nested/deeper/y", b"another-secret")]);
    let mut child = Command::new(BIN)
        .args(["redact", "--min-len", "6", "--secrets-dir"])
        .arg(a.path())
        .arg("--secrets-dir")
        .arg(b.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sixsix another-secret sixsi")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"[MASKED] [MASKED] sixsi");
}

#[test]
fn secret_split_across_slow_writes_is_masked() {
    let dir = secrets_dir(&[("s", SECRET.as_bytes())]);
    let mut child = redact(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for piece in ["log: hunt", "er2-cor", "rect-h", "orse done\n"] {
        stdin.write_all(piece.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"log: [MASKED] done\n");
}

#[test]
fn output_is_live() {
    let dir = secrets_dir(&[("s", SECRET.as_bytes())]);
    let mut child = redact(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_chunks(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("first line {SECRET}\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let mut acc = Vec::new();
    assert!(
        read_until(
            &rx,
            &mut acc,
            b"first line [MASKED]\n",
            Duration::from_secs(5)
        ),
        "line not released while the writer is still open: {:?}",
        String::from_utf8_lossy(&acc)
    );
    // A possible secret prefix is held back, then released at end of stream.
    stdin.write_all(b"tail hunter2").unwrap();
    stdin.flush().unwrap();
    assert!(read_until(&rx, &mut acc, b"tail ", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(c) = rx.try_recv() {
        acc.extend_from_slice(&c);
    }
    assert!(
        !acc.ends_with(b"hunter2"),
        "a secret prefix was released early"
    );
    drop(stdin);
    assert!(read_until(
        &rx,
        &mut acc,
        b"tail hunter2",
        Duration::from_secs(5)
    ));
    assert!(child.wait().unwrap().success());
}

#[test]
fn command_mode_masks_both_streams_and_keeps_exit_status() {
    let dir = secrets_dir(&[("s", SECRET.as_bytes())]);
    let script = format!(
        "printf 'out: hunter2-'; sleep 0.1; printf 'correct-horse\\n'; echo 'err: {SECRET}' >&2; \
         printf '%s' '{SECRET}' | base64; exit 3"
    );
    let out = redact(dir.path())
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("out: [MASKED]\n"), "{stdout}");
    assert!(!stdout.contains(SECRET));
    assert!(stdout.contains("[MASKED]"));
    // The base64 line: no 8-char run of the value's encoding survives.
    assert!(!stdout.contains("aHVudGVyMi1jb3JyZWN0LWhvcnNl"), "{stdout}");
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "err: [MASKED]\n");
}

#[test]
fn base64_edges_shared_with_neighbours_are_masked_too() {
    // The value at byte offsets 0, 1 and 2 of a base64 blob, as `echo "user:$P" |
    // base64` prints it: every character holding any bit of the value is masked (the
    // edge ones it shares with `user:` or the newline too), nothing else is.
    use base64::Engine as _;
    let value = "Pa55word-with-a-bng!";
    let dir = secrets_dir(&[("s", value.as_bytes())]);
    for prefix in ["", "u", "u:", "user", "user:"] {
        let whole = format!("{prefix}{value}\n");
        let enc = base64::engine::general_purpose::STANDARD.encode(&whole);
        let first = 8 * prefix.len() / 6;
        let end = (8 * (prefix.len() + value.len())).div_ceil(6);
        let out = filter(dir.path(), format!("auth {enc} ok\n").as_bytes());
        let got = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            got,
            format!("auth {}[MASKED]{} ok\n", &enc[..first], &enc[end..]),
            "{prefix:?}: {enc}"
        );
    }
}

#[test]
fn signal_death_is_128_plus_signal() {
    let dir = secrets_dir(&[("s", SECRET.as_bytes())]);
    let out = redact(dir.path())
        .args(["--", "sh", "-c", "kill -KILL $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 9));
}

fn forwards(signal: libc::c_int, trap: &str) {
    let dir = secrets_dir(&[("s", SECRET.as_bytes())]);
    let script = format!(
        "trap 'echo got {trap} {SECRET}; exit 42' {trap}; echo ready; while :; do sleep 0.05; done"
    );
    let mut child = redact(dir.path())
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_chunks(&mut child);
    let mut acc = Vec::new();
    assert!(read_until(
        &rx,
        &mut acc,
        b"ready\n",
        Duration::from_secs(5)
    ));
    // SAFETY: plain kill(2) of our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    assert!(read_until(
        &rx,
        &mut acc,
        format!("got {trap} [MASKED]\n").as_bytes(),
        Duration::from_secs(5)
    ));
    assert_eq!(status.code(), Some(42));
}

#[test]
fn sigterm_is_forwarded() {
    forwards(libc::SIGTERM, "TERM");
}

#[test]
fn sigint_is_forwarded() {
    forwards(libc::SIGINT, "INT");
}

#[test]
fn missing_secrets_dir_fails_before_the_child_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let marker = tmp.path().join("ran");
    let out = redact(&missing)
        .args([
            "--",
            "sh",
            "-c",
            &format!("echo hi; touch {}", marker.display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
    assert!(!marker.exists(), "the child ran");
}

#[test]
fn unreadable_secret_file_is_named() {
    let dir = secrets_dir(&[("good", SECRET.as_bytes())]);
    let bad = dir.path().join("dangling");
    std::os::unix::fs::symlink("/nonexistent/target", &bad).unwrap();
    let out = filter(dir.path(), b"x");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read secret file") && stderr.contains(&*bad.to_string_lossy()),
        "{stderr}"
    );
}

#[test]
fn missing_command_is_an_error() {
    let dir = secrets_dir(&[("s", SECRET.as_bytes())]);
    let out = redact(dir.path())
        .args(["--", "/nonexistent/cmd"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/cmd"));
}

#[test]
fn large_stream_equals_the_reference() {
    // 2 MiB of mixed bytes with secrets (and their derived encodings) sprinkled in,
    // through real pipes in uneven writes; compared with the whole-buffer reference.
    use base64::Engine as _;
    let secrets: Vec<String> = (0..20)
        .map(|i| format!("s3cret-{i:02}-{}", "xyz".repeat(i % 4 + 1)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (i, s) in secrets.iter().enumerate() {
        std::fs::write(dir.path().join(format!("v{i}")), format!("{s}\n")).unwrap();
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut input = Vec::new();
    while input.len() < 2 << 20 {
        let r = next();
        match r % 50 {
            0 => input.extend_from_slice(secrets[(r >> 8) as usize % secrets.len()].as_bytes()),
            1 => input.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(format!("u:{}", secrets[(r >> 8) as usize % secrets.len()]))
                    .as_bytes(),
            ),
            2..=5 => input.extend_from_slice(&r.to_le_bytes()),
            _ => input.extend_from_slice(b"2026-11-25 deploy ok \r50%\r100%\n"),
        }
    }
    let masker = ccci::redact::Masker::new(&secrets, 8);
    let expected = ccci::redact::stream::reference(masker.patterns(), &input);
    let mut child = redact(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut i = 0;
        let mut n = 1;
        while i < input.len() {
            let end = (i + n).min(input.len());
            stdin.write_all(&input[i..end]).unwrap();
            i = end;
            n = n * 7 % 100_003 + 1;
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == expected, "output differs from the reference");
    for s in &secrets {
        assert!(!out.stdout.windows(s.len()).any(|w| w == s.as_bytes()));
    }
}

#[test]
fn sigterm_while_a_grandchild_holds_the_pipes_ends_the_filter() {
    let dir = secrets_dir(&[("s", SECRET.as_bytes())]);
    // The command exits at once; a background `sleep` keeps its stdout open.
    let mut child = redact(dir.path())
        .args(["--", "sh", "-c", "sleep 30 & echo \"bg $!\""])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stdout_chunks(&mut child);
    let mut acc = Vec::new();
    assert!(read_until(&rx, &mut acc, b"\n", Duration::from_secs(5)));
    let bg: i32 = String::from_utf8_lossy(&acc)
        .trim()
        .trim_start_matches("bg ")
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "filter should still drain the open pipe"
    );
    // SAFETY: plain kill(2) of our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "filter ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) of the background sleep the script started.
    unsafe { libc::kill(bg, libc::SIGKILL) };
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}
