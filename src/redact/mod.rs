//! The redactor: masks every secret value in a byte stream, streaming.
//!
//! INTERIM implementation (correct but not streaming: it holds the whole stream until
//! `finish`). The redactor issue replaces the internals; the interface below is what
//! the runner relies on.
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MASK: &[u8] = b"[MASKED]";
pub const DEFAULT_MIN_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read secrets dir {0}: {1}")]
    ReadDir(PathBuf, #[source] io::Error),
    #[error("cannot read secret file {0}: {1}")]
    ReadFile(PathBuf, #[source] io::Error),
}

/// The set of secret values to mask, compiled for search.
#[derive(Debug, Clone)]
pub struct Masker {
    patterns: Vec<Vec<u8>>,
}

impl Masker {
    /// Build from raw secret values; values shorter than `min_len` are not masked.
    pub fn new<I, S>(secrets: I, min_len: usize) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut patterns: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_vec())
            .filter(|s| s.len() >= min_len)
            .collect();
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        Masker { patterns }
    }

    /// Mask a whole buffer at once.
    pub fn mask_all(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        'outer: while i < input.len() {
            for p in &self.patterns {
                if input[i..].starts_with(p) {
                    out.extend_from_slice(MASK);
                    i += p.len();
                    continue 'outer;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    /// Whether `haystack` contains any secret value.
    pub fn contains_secret(&self, haystack: &[u8]) -> bool {
        self.patterns
            .iter()
            .any(|p| haystack.windows(p.len()).any(|w| w == p.as_slice()))
    }

    /// A writer that masks what passes through it into `inner`.
    pub fn writer<W: Write>(self: &Arc<Self>, inner: W) -> MaskingWriter<W> {
        MaskingWriter {
            masker: Arc::clone(self),
            inner,
            pending: Vec::new(),
        }
    }
}

/// Streaming masking writer. Call [`MaskingWriter::finish`] at end of stream to
/// release held-back bytes.
pub struct MaskingWriter<W: Write> {
    masker: Arc<Masker>,
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> MaskingWriter<W> {
    pub fn finish(mut self) -> io::Result<W> {
        let out = self.masker.mask_all(&self.pending);
        self.inner.write_all(&out)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Every regular file under `dirs` (recursively) is a secret: its content with one
/// trailing newline trimmed. An unreadable file or dir is an error naming it.
pub fn load_secret_dirs(dirs: &[PathBuf]) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    for dir in dirs {
        collect(dir, &mut out)?;
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<Vec<u8>>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::ReadDir(dir.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::ReadDir(dir.to_owned(), e))?;
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| Error::ReadFile(path.clone(), e))?;
        if meta.is_dir() {
            collect(&path, out)?;
        } else if meta.is_file() {
            let mut value = std::fs::read(&path).map_err(|e| Error::ReadFile(path.clone(), e))?;
            if value.last() == Some(&b'\n') {
                value.pop();
            }
            out.push(value);
        }
    }
    Ok(())
}

/// `cc-ci redact`: filter stdin (or a command's output) to stdout.
pub fn main(args: crate::cli::RedactArgs) -> anyhow::Result<i32> {
    let secrets = load_secret_dirs(&args.secrets_dirs)?;
    let masker = Arc::new(Masker::new(secrets, args.min_len));
    anyhow::ensure!(args.command.is_empty(), "redact -- CMD is not implemented yet");
    let mut w = masker.writer(io::stdout().lock());
    io::copy(&mut io::stdin().lock(), &mut w)?;
    w.finish()?;
    Ok(0)
}
