//! The streaming matcher: one Aho–Corasick DFA walked byte by byte across chunk
//! boundaries, so a secret split over any number of writes is still one match.
//!
//! Semantics (identical to [`reference`]): every byte covered by *any* occurrence of
//! *any* pattern is masked, and each maximal run of covered bytes becomes one
//! [`MASK`](super::MASK). That is "longest wins" for a prefix, and for two overlapping
//! secrets it masks their union, so no partial secret bytes are left behind (a
//! leftmost-longest replacement would leave the tail of the second one).
//!
//! Streaming: the DFA state after byte `p` is the longest suffix of the input that is
//! a prefix of some pattern; its length `d` (the state's *depth*) bounds where any
//! future match can start, `p + 1 - d`. Everything before that frontier is final and is
//! released at once; at most `d ≤ longest pattern − 1` raw bytes are held back.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// State ids are small distinct integers: a multiplicative hash is plenty, and SipHash
/// made building the tables for a few hundred secrets take tens of milliseconds.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<StateID, V, BuildHasherDefault<IdHasher>>;

use aho_corasick::automaton::{Automaton as AcAutomaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, MatchKind, StartKind};

use super::MASK;

/// Largest piece scanned before output is released; bounds the matcher's buffers
/// regardless of how big a single `write` is.
pub const PIECE: usize = 256 * 1024;

/// The compiled pattern set.
#[derive(Debug, Clone)]
pub struct Automaton {
    engine: Engine,
    start: StateID,
    /// Depth (length of the represented string) of every reachable state.
    depth: IdMap<u32>,
    /// For each match state: the longest pattern ending there.
    match_len: IdMap<u32>,
    /// `next_state(start, b)`: a state equal to it has depth ≤ 1, where the DFA may
    /// hand back to the prefilter.
    start_next: [StateID; 256],
    max_pattern_len: usize,
    /// Skips stretches where no pattern can start; `None` if a pattern is too short.
    prefilter: Option<Prefilter>,
}

/// The Aho–Corasick automaton proper. A DFA is fastest per byte but costs
/// states × alphabet × 4 bytes and about 1.4 ms of build time per KiB of patterns
/// (a few PEM keys with all their encodings would need hundreds of MiB). Above
/// [`DFA_LIMIT`] pattern bytes we use the compact contiguous NFA, which builds in a
/// fraction of that; behind the prefilter the automaton sees ~1 % of a typical log, so
/// its per-byte speed matters little (measured: 100 secrets, 560 patterns, 17 KiB —
/// the NFA starts in 4.5 ms instead of 23 ms and relays the bench log as fast).
#[derive(Debug, Clone)]
enum Engine {
    Dfa(DFA),
    Nfa(NFA),
}

/// Total pattern bytes up to which the DFA is built (≈ 8 MiB of DFA at most).
pub const DFA_LIMIT: usize = 8 * 1024;

/// A q-gram filter in the spirit of Wu–Manber: every pattern is at least `stride + 3`
/// bytes long, so whichever of `stride` consecutive positions a pattern starts at, the
/// 4 bytes at the next multiple of `stride` are one of the pattern's 4-grams at offsets
/// `0..stride` (stride ≤ 8). Looking up one 4-gram per `stride` bytes in a bitmap of those grams
/// proves "no pattern starts here" for most of a log, without the DFA's dependent
/// per-byte loads.
#[derive(Debug, Clone)]
struct Prefilter {
    bits: Box<[u64]>,
    stride: usize,
}

/// 2^19 bits (64 KiB): base64 edge variants (16 leading characters per value and
/// offset) put ~4 000 grams in the map per 100 secrets; at 2^17 bits the false hits
/// cost a quarter of the throughput, at 2^19 nearly nothing (benches/redact.sh).
const GRAM_BITS: u32 = 19;

impl Prefilter {
    fn new(patterns: &[Vec<u8>]) -> Option<Prefilter> {
        let min = patterns.iter().map(Vec::len).min()?;
        if min < 4 {
            return None;
        }
        let stride = (min - 3).min(8);
        let mut bits = vec![0u64; 1 << (GRAM_BITS - 6)].into_boxed_slice();
        for p in patterns {
            for off in 0..stride {
                let h = Self::hash(u32::from_le_bytes(
                    p[off..off + 4].try_into().expect("4 bytes"),
                ));
                bits[h >> 6] |= 1 << (h & 63);
            }
        }
        Some(Prefilter { bits, stride })
    }

    #[inline(always)]
    fn hash(gram: u32) -> usize {
        (gram.wrapping_mul(0x9E37_79B1) >> (32 - GRAM_BITS)) as usize
    }

    /// From `from` (where the automaton is in its start state), the first position a
    /// pattern may start at, or the first position the filter could not check.
    #[inline(always)]
    fn skip(&self, hay: &[u8], from: usize) -> usize {
        let k = self.stride;
        let mut j = from;
        let bits: &[u64; 1 << (GRAM_BITS - 6)] = (&*self.bits).try_into().expect("bitmap size");
        let test = |at: usize| {
            let h = Self::hash(u32::from_le_bytes(
                hay[at..at + 4].try_into().expect("4 bytes"),
            ));
            bits[h >> 6] & (1 << (h & 63))
        };
        // Two independent lookups per iteration, one branch.
        while j + k + 4 <= hay.len() {
            let (a, b) = (test(j), test(j + k));
            if a | b != 0 {
                if a == 0 {
                    j += k;
                }
                return (j + 1).saturating_sub(k).max(from);
            }
            j += 2 * k;
        }
        while j + 4 <= hay.len() {
            if test(j) != 0 {
                break;
            }
            j += k;
        }
        // Positions up to `j - k` are proven clear (those before `from` don't matter).
        (j + 1).saturating_sub(k).max(from)
    }
}

impl Automaton {
    /// `None` when there is nothing to mask. `dfa_limit`: see [`DFA_LIMIT`].
    pub fn new(patterns: &[Vec<u8>], dfa_limit: usize) -> Option<Automaton> {
        if patterns.is_empty() {
            return None;
        }
        // Standard semantics: match states report every pattern ending there (the
        // overlapping set), which is what the union rule needs. No built-in
        // prefilter: ours (below) keeps the state exact across chunks.
        let total: usize = patterns.iter().map(Vec::len).sum();
        let engine = if total <= dfa_limit {
            Engine::Dfa(
                DFA::builder()
                    .match_kind(MatchKind::Standard)
                    .start_kind(StartKind::Unanchored)
                    .prefilter(false)
                    .build(patterns)
                    .expect("a DFA over a bounded pattern set builds"),
            )
        } else {
            Engine::Nfa(
                NFA::builder()
                    .match_kind(MatchKind::Standard)
                    .prefilter(false)
                    .build(patterns)
                    .expect("an NFA over secret patterns builds"),
            )
        };
        match &engine {
            Engine::Dfa(a) => Self::tables(a, patterns, engine.clone()),
            Engine::Nfa(a) => Self::tables(a, patterns, engine.clone()),
        }
    }

    fn tables<A: AcAutomaton>(a: &A, patterns: &[Vec<u8>], engine: Engine) -> Option<Automaton> {
        let start = a.start_state(Anchored::No).expect("unanchored start state");
        // Every state is a trie node, i.e. a prefix of some pattern, and reading a
        // pattern from the start state passes through the nodes of its prefixes (the
        // longest suffix of `p[..i]` that is a pattern prefix is `p[..i]` itself). So
        // walking each pattern once labels every state with its depth.
        let mut depth = IdMap::default();
        let mut match_len = IdMap::default();
        depth.insert(start, 0u32);
        for p in patterns {
            let mut sid = start;
            for (i, &b) in p.iter().enumerate() {
                sid = a.next_state(Anchored::No, sid, b);
                if depth.insert(sid, i as u32 + 1).is_none() && a.is_match(sid) {
                    let longest = (0..a.match_len(sid))
                        .map(|k| a.pattern_len(a.match_pattern(sid, k)))
                        .max()
                        .unwrap_or(0);
                    match_len.insert(sid, longest as u32);
                }
            }
        }
        let max_pattern_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        Some(Automaton {
            start,
            depth,
            match_len,
            max_pattern_len,
            prefilter: Prefilter::new(patterns),
            start_next: std::array::from_fn(|b| a.next_state(Anchored::No, start, b as u8)),
            engine,
        })
    }

    pub fn max_pattern_len(&self) -> usize {
        self.max_pattern_len
    }

    /// Walk `hay` from state `sid`; record each match as a covered interval
    /// (absolute offsets, `base` is `hay[0]`'s offset). Returns the final state.
    #[inline]
    fn scan(&self, sid: StateID, hay: &[u8], base: u64, covered: &mut Vec<(u64, u64)>) -> StateID {
        match &self.engine {
            Engine::Dfa(a) => self.scan_with(a, sid, hay, base, covered),
            Engine::Nfa(a) => self.scan_with(a, sid, hay, base, covered),
        }
    }

    #[inline(always)]
    fn scan_with<A: AcAutomaton>(
        &self,
        a: &A,
        mut sid: StateID,
        hay: &[u8],
        base: u64,
        covered: &mut Vec<(u64, u64)>,
    ) -> StateID {
        let Some(pf) = &self.prefilter else {
            for (i, &b) in hay.iter().enumerate() {
                sid = a.next_state(Anchored::No, sid, b);
                if a.is_special(sid) && a.is_match(sid) {
                    self.record(sid, base + i as u64 + 1, covered);
                }
            }
            return sid;
        };
        // The DFA state at position `i` tracks every pattern that may have started at
        // or after the last restart; the prefilter proves that none starts at the
        // positions it skips. So whenever the live partial match is at most the byte
        // just read (depth ≤ 1), restarting from the start state at that byte, after
        // skipping, is exact. `floor` (the last skip's landing) forbids restarting at
        // the same position twice, so every restart makes progress.
        let mut i = 0;
        let mut skip = sid == self.start;
        let mut floor = 0;
        loop {
            if skip {
                i = pf.skip(hay, i);
                floor = i;
            }
            let Some(&b) = hay.get(i) else { break };
            sid = a.next_state(Anchored::No, sid, b);
            if a.is_special(sid) && a.is_match(sid) {
                self.record(sid, base + i as u64 + 1, covered);
            }
            if sid == self.start_next[b as usize] && i > floor {
                // Depth ≤ 1 (no match state: patterns here are ≥ 4 bytes). Re-read `b`.
                sid = self.start;
                skip = true;
                continue;
            }
            skip = false;
            i += 1;
        }
        sid
    }

    #[cold]
    fn record(&self, sid: StateID, end: u64, covered: &mut Vec<(u64, u64)>) {
        cover(covered, end - u64::from(self.match_len[&sid]), end);
    }

    /// Whether `hay` contains any pattern.
    pub fn is_match(&self, hay: &[u8]) -> bool {
        let mut covered = Vec::new();
        let mut sid = self.start;
        for (i, piece) in hay.chunks(PIECE).enumerate() {
            sid = self.scan(sid, piece, (i * PIECE) as u64, &mut covered);
            if !covered.is_empty() {
                return true;
            }
        }
        false
    }

    fn depth(&self, sid: StateID) -> u64 {
        u64::from(self.depth[&sid])
    }
}

/// Add `[a, b)` to the sorted list of disjoint, non-adjacent intervals. Matches arrive
/// in order of their end, so only the back of the list can merge.
fn cover(covered: &mut Vec<(u64, u64)>, mut a: u64, mut b: u64) {
    while let Some(&(la, lb)) = covered.last() {
        if a <= lb {
            a = a.min(la);
            b = b.max(lb);
            covered.pop();
        } else {
            break;
        }
    }
    covered.push((a, b));
}

/// The matcher's state between chunks.
#[derive(Debug, Clone)]
pub struct Stream {
    sid: Option<StateID>,
    /// Absolute offset of the next input byte.
    pos: u64,
    /// Output is decided for every input byte before this offset.
    emitted: u64,
    /// Input bytes `[emitted, pos)`, not yet decided.
    tail: Vec<u8>,
    /// Covered intervals not yet fully released (sorted, disjoint, non-adjacent).
    covered: Vec<(u64, u64)>,
    /// The last released byte was masked: a covered run starting right here continues
    /// the same `[MASKED]`.
    in_mask: bool,
}

impl Stream {
    pub fn new(ac: Option<&Automaton>) -> Stream {
        Stream {
            sid: ac.map(|a| a.start),
            pos: 0,
            emitted: 0,
            tail: Vec::new(),
            covered: Vec::new(),
            in_mask: false,
        }
    }

    /// Raw (unmasked) input bytes currently held back; bytes already known to be
    /// part of a secret are not counted, they will never be shown.
    pub fn held(&self) -> usize {
        let masked: u64 = self
            .covered
            .iter()
            .map(|&(a, b)| b.min(self.pos) - a.max(self.emitted))
            .sum();
        self.tail.len() - masked as usize
    }

    /// Feed `chunk` (at most [`PIECE`] bytes is best); returns what may be released now,
    /// either a slice of `chunk` or of `out`.
    pub fn feed<'a>(
        &mut self,
        ac: Option<&Automaton>,
        chunk: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        let Some(ac) = ac else {
            self.pos += chunk.len() as u64;
            self.emitted = self.pos;
            return chunk;
        };
        let base = self.pos;
        let sid = ac.scan(
            self.sid.expect("state with automaton"),
            chunk,
            base,
            &mut self.covered,
        );
        self.sid = Some(sid);
        self.pos += chunk.len() as u64;
        let frontier = self.pos - ac.depth(sid);
        self.release(frontier, chunk, base, out)
    }

    /// End of stream: release everything.
    pub fn finish<'a>(&mut self, out: &'a mut Vec<u8>) -> &'a [u8] {
        let pos = self.pos;
        self.release(pos, &[], pos, out)
    }

    /// Release output for input `[emitted, frontier)`. `chunk` holds input from
    /// `chunk_start`; `tail` holds `[emitted, chunk_start)`.
    fn release<'a>(
        &mut self,
        frontier: u64,
        chunk: &'a [u8],
        chunk_start: u64,
        out: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        let tail_start = self.emitted;
        debug_assert_eq!(tail_start + self.tail.len() as u64, chunk_start);
        out.clear();
        if self.covered.is_empty() && self.tail.is_empty() {
            // Fast path: nothing held, nothing masked — release a slice of the input.
            let cut = (frontier - chunk_start) as usize;
            if frontier > self.emitted {
                self.in_mask = false;
            }
            self.emitted = frontier;
            self.tail.extend_from_slice(&chunk[cut..]);
            return &chunk[..cut];
        }
        let tail = std::mem::take(&mut self.tail);
        let push = |out: &mut Vec<u8>, a: u64, b: u64| {
            if a < chunk_start {
                let t_end = b.min(chunk_start);
                out.extend_from_slice(
                    &tail[(a - tail_start) as usize..(t_end - tail_start) as usize],
                );
            }
            if b > chunk_start {
                let c_start = a.max(chunk_start);
                out.extend_from_slice(
                    &chunk[(c_start - chunk_start) as usize..(b - chunk_start) as usize],
                );
            }
        };
        let mut e = self.emitted;
        let mut done = 0;
        for iv in self.covered.iter_mut() {
            let (a, b) = *iv;
            if a > frontier {
                break;
            }
            if a > e {
                push(out, e, a);
                self.in_mask = false;
                e = a;
            }
            if !self.in_mask {
                out.extend_from_slice(MASK);
                self.in_mask = true;
            }
            if b <= frontier {
                e = e.max(b);
                done += 1;
            } else {
                e = e.max(frontier);
                iv.0 = e;
                break;
            }
        }
        self.covered.drain(..done);
        if frontier > e {
            push(out, e, frontier);
            self.in_mask = false;
            e = frontier;
        }
        // Keep the undecided input [e, pos).
        let mut new_tail = Vec::with_capacity((self.pos - e) as usize);
        push(&mut new_tail, e, self.pos);
        self.tail = new_tail;
        self.emitted = e;
        out
    }
}

/// The specification, on a whole buffer: mark every byte covered by any occurrence of
/// any pattern, replace each maximal run of marked bytes with one `[MASKED]`.
pub fn reference(patterns: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let mut marked = vec![false; input.len()];
    // Patterns by first byte, so each position is compared only with the patterns
    // that can start there (the same naive check, fast enough for MiB-sized proofs).
    let mut by_first: Vec<Vec<&[u8]>> = vec![Vec::new(); 256];
    for p in patterns.iter().filter(|p| !p.is_empty()) {
        by_first[p[0] as usize].push(p);
    }
    for start in 0..input.len() {
        for p in &by_first[input[start] as usize] {
            if input[start..].starts_with(p) {
                marked[start..start + p.len()]
                    .iter_mut()
                    .for_each(|m| *m = true);
            }
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if marked[i] {
            out.extend_from_slice(MASK);
            while i < input.len() && marked[i] {
                i += 1;
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}
