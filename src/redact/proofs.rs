//! Property tests: the streaming writer equals the whole-buffer reference for random
//! secrets, random chunkings and random surrounding bytes.
use std::io::Write;
use std::sync::Arc;

use proptest::prelude::*;

use super::fuzz::{check_chunked, check_stream};
use super::{MASK, Masker, stream};

fn mask_stream(m: &Arc<Masker>, chunks: &[&[u8]]) -> Vec<u8> {
    let mut w = m.writer(Vec::new());
    for c in chunks {
        w.write_all(c).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn split_across_every_boundary() {
    let m = Arc::new(Masker::new(["s3cr3t-value"], 8));
    let input = b"before s3cr3t-value after";
    for cut in 0..=input.len() {
        let out = mask_stream(&m, &[&input[..cut], &input[cut..]]);
        assert_eq!(out, b"before [MASKED] after", "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(mask_stream(&m, &bytes), b"before [MASKED] after");
}

#[test]
fn prefix_and_overlap_mask_the_union() {
    let m = Masker::from_patterns(vec![
        b"abcdefgh".to_vec(),
        b"abcdefghijkl".to_vec(),
        b"ijklmnop".to_vec(),
    ]);
    assert_eq!(m.mask_all(b"x abcdefghijklmnop y"), b"x [MASKED] y");
    assert_eq!(m.mask_all(b"x abcdefghij y"), b"x [MASKED]ij y");
    let m = Masker::from_patterns(vec![b"abcdefgh".to_vec(), b"efghijkl".to_vec()]);
    assert_eq!(m.mask_all(b"-abcdefghijkl-"), b"-[MASKED]-");
}

#[test]
fn arbitrary_bytes_pass_through() {
    let m = Masker::new([&b"\xffsecret\x00value"[..]], 8);
    let input = b"\r50%\r100%\x00\xfe\xff\xffsecret\x00value\x80\n";
    assert_eq!(m.mask_all(input), b"\r50%\r100%\x00\xfe\xff[MASKED]\x80\n");
    assert_eq!(Masker::new(["unused-secret"], 8).mask_all(input), input);
}

#[test]
fn short_values_are_not_masked() {
    let m = Masker::new(["short", "true"], 8);
    assert!(m.patterns().is_empty());
    assert_eq!(m.mask_all(b"short true"), b"short true");
}

#[test]
fn multi_line_values_mask_each_line() {
    let pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\nx\n-----END KEY-----\n";
    let m = Masker::new([pem.trim_end()], 8);
    let out = m.mask_all(b"line: MIIBOgIBAAJBAKj34GkxFhD9\n");
    assert_eq!(out, b"line: [MASKED]\n");
    assert!(!m.patterns().iter().any(|p| p == b"x"));
}

#[test]
fn encodings_are_masked() {
    use base64::Engine as _;
    let secret = "p@ss word/with+stuff";
    let m = Masker::new([secret], 8);
    for shown in [
        base64::engine::general_purpose::STANDARD.encode(format!("{secret}\n")),
        base64::engine::general_purpose::URL_SAFE.encode(format!("user:{secret}")),
        "p%40ss%20word%2Fwith%2Bstuff".to_string(),
        "p%40ss+word%2Fwith%2Bstuff".to_string(),
        serde_json::to_string(secret).unwrap(),
    ] {
        assert!(m.contains_secret(shown.as_bytes()), "{shown}");
        let out = m.mask_all(shown.as_bytes());
        assert!(out.windows(MASK.len()).any(|w| w == MASK), "{shown}");
    }
}

#[test]
fn contains_secret_detects_every_pattern() {
    let m = Masker::new(["correct horse battery"], 8);
    for p in m.patterns() {
        let mut hay = b"xx".to_vec();
        hay.extend_from_slice(p);
        assert!(m.contains_secret(&hay));
    }
    assert!(!m.contains_secret(b"nothing to see"));
}

#[test]
fn fuzz_smoke_loop() {
    // A deterministic pseudo-random corpus through the fuzz target body.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let mut data = Vec::new();
        x ^= x << 7;
        x ^= x >> 9;
        let len = (x % 120) as usize;
        for _ in 0..len {
            x ^= x << 7;
            x ^= x >> 9;
            data.push((x >> 24) as u8);
        }
        check_stream(&data);
    }
}

/// `input` cut at `cuts` (clamped, sorted) into consecutive chunks.
fn cut(input: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
    cuts.sort();
    let mut chunks = Vec::new();
    let mut last = 0;
    for c in cuts.into_iter().chain([input.len()]) {
        chunks.push(&input[last..c]);
        last = c;
    }
    chunks
}

fn alphabet_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"abcd\n\x00\xff".to_vec()), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn stream_equals_reference_small_alphabet(
        patterns in prop::collection::vec(prop::collection::vec(prop::sample::select(b"abcd\n\x00\xff".to_vec()), 1..10), 1..5),
        input in alphabet_bytes(200),
        seed in any::<u8>(),
    ) {
        check_chunked(&patterns, &input, seed);
    }

    #[test]
    fn stream_equals_reference_with_prefilter(
        // All patterns ≥ 4 bytes, so the q-gram prefilter and DFA restarts are in play
        // (stride 1 to 8 depending on the shortest).
        patterns in prop::collection::vec(prop::collection::vec(prop::sample::select(b"abc\n".to_vec()), 4..12), 1..6),
        input in prop::collection::vec(prop::sample::select(b"abcx\n".to_vec()), 0..600),
        seed in any::<u8>(),
    ) {
        check_chunked(&patterns, &input, seed);
    }
}

proptest! {
    // Fewer cases: each builds a masker with every derived encoding.
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn stream_equals_reference_any_bytes(
        secrets in prop::collection::vec(prop::collection::vec(any::<u8>(), 8..24), 1..4),
        noise in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
        cuts in prop::collection::vec(0usize..300, 0..8),
    ) {
        // Random secrets (with their derived encodings) embedded in random bytes.
        let m = Arc::new(Masker::new(&secrets, 8));
        let mut input = Vec::new();
        for (i, n) in noise.iter().enumerate() {
            input.extend_from_slice(n);
            input.extend_from_slice(&secrets[i % secrets.len()]);
        }
        let expected = stream::reference(m.patterns(), &input);
        let chunks = cut(&input, cuts);
        let got = mask_stream(&m, &chunks);
        prop_assert_eq!(&got, &expected);
        for s in &secrets {
            prop_assert!(!got.windows(s.len()).any(|w| w == s.as_slice()));
        }
    }

    #[test]
    fn base64_masks_every_character_with_secret_bits_and_no_other(
        secret in prop::collection::vec(any::<u8>(), 8..24),
        prefix in prop::collection::vec(any::<u8>(), 0..8),
        suffix in prop::collection::vec(any::<u8>(), 0..5),
        url_safe in any::<bool>(),
        cuts in prop::collection::vec(0usize..60, 0..4),
    ) {
        // The secret at any byte offset inside a base64 blob: every character holding
        // any of its bits is masked (the edge characters shared with the neighbours
        // too), no character holding only neighbour bits is, streamed in any chunks.
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let m = Arc::new(Masker::new([&secret], 8));
        let whole = [&prefix[..], &secret, &suffix].concat();
        let enc = if url_safe { URL_SAFE.encode(&whole) } else { STANDARD.encode(&whole) };
        let first = 8 * prefix.len() / 6;
        let end = (8 * (prefix.len() + secret.len())).div_ceil(6);
        let expected = [&enc.as_bytes()[..first], MASK, &enc.as_bytes()[end..]].concat();
        let input = format!("auth {enc} ok").into_bytes();
        let expected = [&b"auth "[..], &expected, b" ok"].concat();
        prop_assert_eq!(&stream::reference(m.patterns(), &input), &expected);
        let chunks = cut(&input, cuts);
        prop_assert_eq!(mask_stream(&m, &chunks), expected);
    }

    #[test]
    fn fuzz_body_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
        check_stream(&data);
    }
}

#[test]
fn contains_secret_across_piece_boundaries() {
    let m = Masker::new(["straddling-secret"], 8);
    for shift in 0..20 {
        let mut hay = vec![b'.'; stream::PIECE - shift];
        hay.extend_from_slice(b"straddling-secret");
        hay.extend_from_slice(&[b'.'; 10]);
        assert!(m.contains_secret(&hay), "shift {shift}");
    }
}

#[test]
fn large_secrets_use_the_compact_engine_and_still_mask() {
    // Five 3 KiB PEM-like keys: with all derived variants well over DFA_LIMIT.
    let mut x: u32 = 7;
    let keys: Vec<String> = (0..5)
        .map(|_| {
            let mut body = String::from("-----BEGIN PRIVATE KEY-----\n");
            for _ in 0..48 {
                for _ in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    body.push(
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                            [(x % 64) as usize] as char,
                    );
                }
                body.push('\n');
            }
            body + "-----END PRIVATE KEY-----"
        })
        .collect();
    let t = std::time::Instant::now();
    let m = Arc::new(Masker::new(&keys, 8));
    let total: usize = m.patterns().iter().map(Vec::len).sum();
    assert!(total > stream::DFA_LIMIT);
    let mut input = b"start\n".to_vec();
    input.extend_from_slice(keys[3].as_bytes());
    input.extend_from_slice(b"\nmiddle ");
    input.extend_from_slice(keys[1].lines().nth(7).unwrap().as_bytes());
    input.extend_from_slice(b" end\n");
    let chunks: Vec<&[u8]> = input.chunks(100).collect();
    assert_eq!(
        mask_stream(&m, &chunks),
        b"start\n[MASKED]\nmiddle [MASKED] end\n"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn masker_is_shareable() {
    fn check<T: Clone + std::fmt::Debug + Send + Sync>() {}
    check::<Masker>();
    fn send<T: Send>() {}
    send::<super::MaskingWriter<Vec<u8>>>();
}
