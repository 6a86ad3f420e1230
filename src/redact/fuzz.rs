//! The fuzz target's body, as a plain function so `cargo test` (smoke loop and
//! proptest) runs the same check the nightly-only `cargo fuzz` target runs
//! (`fuzz/fuzz_targets/stream.rs`).
use std::io::Write;
use std::sync::Arc;

use super::{Masker, stream};

/// Decode `data` into patterns, a chunking and an input; panic if the streaming
/// writer disagrees with [`stream::reference`] on the whole buffer, or ever holds back
/// more than (longest pattern − 1) raw bytes.
///
/// Layout: `data[0] % 4 + 1` patterns, each a length byte (`% 12 + 1`) then its
/// bytes; then one byte seeding the chunk sizes; the rest is the input. Patterns and
/// input are folded onto a 4-letter alphabet half of the time so that matches,
/// overlaps and prefixes are common.
pub fn check_stream(data: &[u8]) {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let fold = head & 0x80 != 0;
    let fold_byte = |b: u8| if fold { b"abc\n"[(b % 4) as usize] } else { b };
    let mut patterns = Vec::new();
    for _ in 0..(head % 4 + 1) {
        let Some((&len, r)) = rest.split_first() else {
            return;
        };
        let len = (len % 12 + 1) as usize;
        if r.len() < len {
            return;
        }
        patterns.push(r[..len].iter().map(|&b| fold_byte(b)).collect::<Vec<u8>>());
        rest = &r[len..];
    }
    let Some((&seed, input)) = rest.split_first() else {
        return;
    };
    let input: Vec<u8> = input.iter().map(|&b| fold_byte(b)).collect();
    check_chunked(&patterns, &input, seed);
}

/// Stream `input` through a writer over `patterns` in chunks drawn from `seed`; compare
/// with the reference and check the hold-back bound after every write.
pub fn check_chunked(patterns: &[Vec<u8>], input: &[u8], seed: u8) {
    check_chunked_with(Masker::from_patterns(patterns.to_vec()), input, seed);
    check_chunked_with(Masker::from_patterns_nfa(patterns.to_vec()), input, seed);
}

fn check_chunked_with(masker: Masker, input: &[u8], seed: u8) {
    let patterns = masker.patterns().to_vec();
    let masker = Arc::new(masker);
    let expected = stream::reference(masker.patterns(), input);
    let limit = masker.max_pattern_len().saturating_sub(1);
    let mut w = masker.writer(Vec::new());
    let mut rng = u32::from(seed) | 1;
    let mut i = 0;
    while i < input.len() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = match rng % 4 {
            0 => 1,
            1 => (rng >> 8) as usize % 4 + 1,
            2 => (rng >> 8) as usize % 32 + 1,
            _ => input.len(),
        }
        .min(input.len() - i);
        w.write_all(&input[i..i + n]).unwrap();
        i += n;
        assert!(
            w.held_back() <= limit,
            "held back {} > {limit}",
            w.held_back()
        );
        assert!(
            expected.starts_with(w.get_ref()),
            "released output is not a prefix of the expected output"
        );
    }
    let got = w.finish().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "patterns {patterns:?} input {:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(masker.mask_all(input), expected);
}
