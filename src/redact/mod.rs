//! The redactor: masks every secret value in a byte stream, streaming.
//!
//! What is masked and why: `docs/redaction.md`. Pieces: [`patterns`] derives the byte
//! strings to mask from secret values, [`stream`] is the streaming matcher, `filter`
//! the `cc-ci redact` command, `secrets` reads secret dirs; [`fuzz`] holds the fuzz
//! target's body so `cargo test` runs it too.
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

mod filter;
#[doc(hidden)]
pub mod fuzz;
pub mod patterns;
#[cfg(test)]
mod proofs;
mod secrets;
pub mod stream;

pub const MASK: &[u8] = b"[MASKED]";
pub const DEFAULT_MIN_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read secrets dir {0}: {1}")]
    ReadDir(PathBuf, #[source] io::Error),
    #[error("cannot read secret file {0}: {1}")]
    ReadFile(PathBuf, #[source] io::Error),
    #[error("cannot run {0}: {1}")]
    Spawn(String, #[source] io::Error),
    #[error("cannot wait for {0}: {1}")]
    Wait(String, #[source] io::Error),
    #[error("cannot install the signal forwarder: {0}")]
    Signals(#[source] io::Error),
    #[error("cannot read input: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write output: {0}")]
    Write(#[source] io::Error),
}

/// The set of secret values to mask, compiled for search. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Masker {
    compiled: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    patterns: Vec<Vec<u8>>,
    automaton: Option<stream::Automaton>,
}

impl Masker {
    /// Build from raw secret values; values shorter than `min_len` are not masked.
    /// Derives each value's lines and encodings itself (see [`patterns`]).
    pub fn new<I, S>(secrets: I, min_len: usize) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Masker::from_patterns(patterns::derive(secrets, min_len))
    }

    /// Build from exact byte patterns, with no derivation (tests, fuzzing).
    pub fn from_patterns(mut patterns: Vec<Vec<u8>>) -> Masker {
        patterns.retain(|p| !p.is_empty());
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        let automaton = stream::Automaton::new(&patterns, stream::DFA_LIMIT);
        Masker {
            compiled: Arc::new(Compiled {
                patterns,
                automaton,
            }),
        }
    }

    /// As [`Masker::from_patterns`], always with the compact NFA engine (which is
    /// otherwise used only for large pattern sets); for cross-checking in tests.
    #[doc(hidden)]
    pub fn from_patterns_nfa(mut patterns: Vec<Vec<u8>>) -> Masker {
        patterns.retain(|p| !p.is_empty());
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        let automaton = stream::Automaton::new(&patterns, 0);
        Masker {
            compiled: Arc::new(Compiled {
                patterns,
                automaton,
            }),
        }
    }

    /// Every byte string that is masked (values, lines, encodings).
    pub fn patterns(&self) -> &[Vec<u8>] {
        &self.compiled.patterns
    }

    /// Length of the longest pattern: the writer holds back at most one less.
    pub fn max_pattern_len(&self) -> usize {
        self.compiled
            .automaton
            .as_ref()
            .map_or(0, |a| a.max_pattern_len())
    }

    /// Mask a whole buffer at once.
    pub fn mask_all(&self, input: &[u8]) -> Vec<u8> {
        let ac = self.compiled.automaton.as_ref();
        let mut s = stream::Stream::new(ac);
        let mut result = Vec::with_capacity(input.len());
        let mut out = Vec::new();
        for piece in input.chunks(stream::PIECE) {
            result.extend_from_slice(s.feed(ac, piece, &mut out));
        }
        result.extend_from_slice(s.finish(&mut out));
        result
    }

    /// Whether `haystack` contains any secret value or any derived variant.
    pub fn contains_secret(&self, haystack: &[u8]) -> bool {
        self.compiled
            .automaton
            .as_ref()
            .is_some_and(|a| a.is_match(haystack))
    }

    /// A writer that masks what passes through it into `inner`.
    pub fn writer<W: Write>(self: &Arc<Self>, inner: W) -> MaskingWriter<W> {
        let masker = Masker::clone(self);
        let stream = stream::Stream::new(masker.compiled.automaton.as_ref());
        MaskingWriter {
            masker,
            inner,
            stream,
            out: Vec::new(),
        }
    }
}

/// Streaming masking writer: bytes that cannot begin a secret go to `inner` on every
/// `write`; at most (longest pattern − 1) raw bytes are held back. `flush` flushes
/// `inner` only; call [`MaskingWriter::finish`] at end of stream to release the tail.
pub struct MaskingWriter<W: Write> {
    masker: Masker,
    inner: W,
    stream: stream::Stream,
    out: Vec<u8>,
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let ac = self.masker.compiled.automaton.as_ref();
        for piece in buf.chunks(stream::PIECE) {
            let ready = self.stream.feed(ac, piece, &mut self.out);
            if !ready.is_empty() {
                self.inner.write_all(ready)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> MaskingWriter<W> {
    /// Raw input bytes currently held back (they could still become a secret).
    pub fn held_back(&self) -> usize {
        self.stream.held()
    }

    /// The writer this one writes into.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// End of stream: release the held-back tail, flush, return `inner`.
    pub fn finish(mut self) -> io::Result<W> {
        let ready = self.stream.finish(&mut self.out);
        self.inner.write_all(ready)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

pub use filter::main;
pub use secrets::load_secret_dirs;
