//! Which byte strings count as "a secret": each value, each line of a multi-line
//! value, and the encodings a child process commonly prints a value in.
//!
//! Every variant here answers a leak that a peer CI system has shipped or been
//! reported for (see `docs/redaction.md`). GitHub's runner derives the same family in
//! `src/Sdk/DTLogging/Logging/ValueEncoders.cs` (actions/runner); Drone, Woodpecker
//! and buildbot mask the exact string only.
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// All byte strings to mask for `secrets`, each at least `min_len` bytes long,
/// deduplicated and sorted (longest first, then bytewise) so the set is deterministic.
pub fn derive<I, S>(secrets: I, min_len: usize) -> Vec<Vec<u8>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let min_len = min_len.max(1);
    let mut out = Vec::new();
    for secret in secrets {
        let value = secret.as_ref();
        if value.len() < min_len {
            // Short values (and short lines, below) would mask half the log: GitHub
            // and Woodpecker users report `{` or `true` turning every line into
            // `***`. The threshold is the operator's `--min-len`.
            continue;
        }
        variants_of(value, min_len, &mut out);
        // Lines of a multi-line value (PEM keys, JSON blobs): tools print them one
        // line at a time, or reflow them, so each line must be masked on its own.
        if value.contains(&b'\n') {
            for line in value.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() >= min_len {
                    variants_of(line, min_len, &mut out);
                }
            }
        }
    }
    out.retain(|p| p.len() >= min_len);
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// The value itself and its encodings.
fn variants_of(value: &[u8], min_len: usize, out: &mut Vec<Vec<u8>>) {
    out.push(value.to_vec());
    base64_edges(value, min_len, out);
    // Percent-encoding: a secret in a URL query or a form body (`curl -v`, proxies,
    // access logs). GitHub masks `Uri.EscapeDataString` (ValueEncoders.UriDataEscape);
    // upper- and lower-case hex both occur in the wild, and form encoding writes a
    // space as `+`.
    out.push(percent(value, b"0123456789ABCDEF", false));
    out.push(percent(value, b"0123456789abcdef", false));
    out.push(percent(value, b"0123456789ABCDEF", true));
    // JSON string escaping: a secret inside a JSON document a tool prints
    // (`docker inspect`, API responses). GitHub masks JsonConvert's escaping
    // (ValueEncoders.JsonStringEscape). Encoders differ; we cover the minimal form
    // (serde_json, JavaScript's JSON.stringify), Python's default `ensure_ascii`
    // (`\uXXXX` for non-ASCII, lower-case hex) and Go's HTML-safe form (`<>&` as
    // `\u003c` …), the three most common producers on a Co-op Cloud host.
    out.push(json(value, JsonStyle::Minimal));
    out.push(json(value, JsonStyle::AsciiOnly));
    out.push(json(value, JsonStyle::HtmlSafe));
    // XML/HTML escaping: a secret in an XML config or an HTML error page. GitHub
    // masks it too (ValueEncoders.XmlDataEscape).
    out.push(xml(value));
    // Identical variants (most values need no escaping) are deduplicated by `derive`.
}

/// Base64 of `value` as it appears inside the base64 of a larger byte string, at each
/// of the three byte offsets the value can start at.
///
/// GitHub's runner masks base64 "shifted" by 1 and 2 bytes because `user:password`
/// encodes differently depending on what precedes it (ValueEncoders
/// `Base64StringEscapeShift1/2`). It still encodes through the value's end with
/// padding, so base64 of the value *followed by anything* — `echo $SECRET | base64`
/// adds a newline — leaks (the peer complaint in FACTS.md).
///
/// Every base64 character carrying any of the value's bits is masked, and none that
/// carries only its neighbours' bits. At an offset that is not a multiple of 3 the
/// characters at each end mix the value's bits with a neighbour's (2 or 4 bits of
/// it): those are enumerated over every neighbour bit pattern (4 or 16 characters;
/// the padded end of a stream is the all-zero one). One pattern per leading variant
/// (edge character + the first [`LEAD_CONTEXT`] characters fully determined by the
/// value) and one per
/// trailing variant (the same + edge character); since the masker masks the union of
/// overlapping matches, the whole run from first to last edge is masked. The fully
/// determined characters alone are a pattern too. Standard (`+/`) and URL-safe
/// (`-_`, JWTs, Kubernetes tooling) alphabets.
/// Characters of the value's run that follow a leading edge variant (see below).
const LEAD_CONTEXT: usize = 12;

fn base64_edges(value: &[u8], min_len: usize, out: &mut Vec<Vec<u8>>) {
    let n = value.len();
    for offset in 0..3 {
        // Characters (6 bits each) of the aligned encoding that hold value bits, in
        // value-relative bit positions [8·offset, 8·(offset+n)).
        let (lo, hi) = (8 * offset, 8 * (offset + n));
        let first = lo / 6; // first character with value bits (maybe mixed)
        let first_whole = lo.div_ceil(6); // first with value bits only
        let end_whole = hi / 6; // past the last with value bits only
        let end = hi.div_ceil(6); // past the last with value bits
        if end_whole.saturating_sub(first_whole) < min_len {
            continue;
        }
        // Neighbour bits sharing the edge characters: the low `lead_bits` of the byte
        // just before the value, the high `trail_bits` of the byte just after it.
        let lead_bits = (first_whole - first) * (2 * offset);
        let tail = (offset + n) % 3;
        let trail_bits = [0, 4, 2][tail];
        let aligned = |lead: u8, trail: u8| {
            let mut bytes = vec![0u8; offset];
            if offset > 0 {
                bytes[offset - 1] = lead;
            }
            bytes.extend_from_slice(value);
            if tail > 0 {
                let mut after = vec![0u8; 3 - tail];
                after[0] = trail << (8 - trail_bits);
                bytes.extend_from_slice(&after);
            }
            bytes
        };
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = |bytes: Vec<u8>| engine.encode(bytes).into_bytes();
            let plain = enc(aligned(0, 0));
            out.push(plain[first_whole..end_whole].to_vec());
            // A leading variant need not repeat the whole run: the union with the run
            // masks the rest, and its first LEAD_CONTEXT characters (72 bits of the
            // value) already pin it down. Keeps 16 variants from costing 16 copies.
            let lead_end = end_whole.min(first_whole + LEAD_CONTEXT.max(min_len));
            for lead in 0..(1u8 << lead_bits) {
                out.push(enc(aligned(lead, 0))[first..lead_end].to_vec());
            }
            for trail in 0..(1u8 << trail_bits) {
                out.push(enc(aligned(0, trail))[first_whole..end].to_vec());
            }
        }
    }
}

fn percent(value: &[u8], hex: &[u8; 16], form: bool) -> Vec<u8> {
    let mut s = Vec::with_capacity(value.len() * 3);
    for &b in value {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => s.push(b),
            b' ' if form => s.push(b'+'),
            _ => s.extend_from_slice(&[b'%', hex[(b >> 4) as usize], hex[(b & 15) as usize]]),
        }
    }
    s
}

#[derive(Clone, Copy, PartialEq)]
enum JsonStyle {
    Minimal,
    AsciiOnly,
    HtmlSafe,
}

fn json(value: &[u8], style: JsonStyle) -> Vec<u8> {
    let mut s = Vec::with_capacity(value.len() + 8);
    let text = String::from_utf8_lossy(value);
    if style != JsonStyle::Minimal && matches!(text, std::borrow::Cow::Owned(_)) {
        // Not UTF-8: JSON producers would have replaced or rejected the bytes.
        return value.to_vec();
    }
    for c in text.chars() {
        match c {
            '"' => s.extend_from_slice(b"\\\""),
            '\\' => s.extend_from_slice(b"\\\\"),
            '\n' => s.extend_from_slice(b"\\n"),
            '\r' => s.extend_from_slice(b"\\r"),
            '\t' => s.extend_from_slice(b"\\t"),
            '\u{8}' => s.extend_from_slice(b"\\b"),
            '\u{c}' => s.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => {
                s.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style == JsonStyle::HtmlSafe => {
                s.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c if !c.is_ascii() && style == JsonStyle::AsciiOnly => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    s.extend_from_slice(format!("\\u{:04x}", u).as_bytes());
                }
            }
            c => {
                let mut buf = [0u8; 4];
                s.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if style == JsonStyle::Minimal && matches!(text, std::borrow::Cow::Owned(_)) {
        // Invalid UTF-8 stays as the raw value; the lossy text is not what a tool prints.
        return value.to_vec();
    }
    s
}

fn xml(value: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(value.len() + 8);
    for &b in value {
        match b {
            b'&' => s.extend_from_slice(b"&amp;"),
            b'<' => s.extend_from_slice(b"&lt;"),
            b'>' => s.extend_from_slice(b"&gt;"),
            b'"' => s.extend_from_slice(b"&quot;"),
            b'\'' => s.extend_from_slice(b"&apos;"),
            b => s.push(b),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(pats: &[Vec<u8>], p: &[u8]) -> bool {
        pats.iter().any(|x| x == p)
    }

    #[test]
    fn short_values_and_lines_are_dropped() {
        let pats = derive([&b"short"[..], b"{\nline-long-enough\n}"], 8);
        assert!(!has(&pats, b"short"));
        assert!(!has(&pats, b"{"));
        assert!(has(&pats, b"line-long-enough"));
        assert!(has(&pats, b"{\nline-long-enough\n}"));
    }

    #[test]
    fn base64_masks_exactly_the_characters_with_value_bits() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let secret = b"user:hunter2-password!";
        let masker = crate::redact::Masker::new([secret], 8);
        for prefix in ["", "a", "ab", "abc", "auth "] {
            for suffix in ["", "\n", "xy", "xyz"] {
                let mut whole = prefix.as_bytes().to_vec();
                whole.extend_from_slice(secret);
                whole.extend_from_slice(suffix.as_bytes());
                // Characters [first, end) hold bits of the value.
                let first = 8 * prefix.len() / 6;
                let end = (8 * (prefix.len() + secret.len())).div_ceil(6);
                for enc in [STANDARD.encode(&whole), URL_SAFE.encode(&whole)] {
                    let expected = format!("{}[MASKED]{}", &enc[..first], &enc[end..]);
                    let got = String::from_utf8(masker.mask_all(enc.as_bytes())).unwrap();
                    assert_eq!(got, expected, "{prefix:?}+secret+{suffix:?} = {enc}");
                }
            }
        }
    }

    #[test]
    fn the_issues_leak_is_closed() {
        // `auth OlBh[MASKED]IQ== ok` used to show the last byte (`!`) of the value.
        use base64::engine::general_purpose::STANDARD;
        let masker = crate::redact::Masker::new([b"Pa55word-with-a-bng!"], 8);
        let line = format!("auth {} ok", STANDARD.encode(b"user:Pa55word-with-a-bng!"));
        let got = String::from_utf8(masker.mask_all(line.as_bytes())).unwrap();
        // "user:" is 5 bytes: characters 0..6 carry only its bits, the 7th mixes.
        assert_eq!(got, format!("auth {}[MASKED]== ok", &line[5..11]));
    }

    #[test]
    fn escapes() {
        let pats = derive(["pa ss\"wörd<&>/x"], 8);
        assert!(has(&pats, b"pa%20ss%22w%C3%B6rd%3C%26%3E%2Fx"));
        assert!(has(&pats, b"pa+ss%22w%C3%B6rd%3C%26%3E%2Fx"));
        assert!(has(&pats, "pa ss\\\"wörd<&>/x".as_bytes()));
        assert!(has(&pats, b"pa ss\\\"w\\u00f6rd<&>/x"));
        assert!(has(
            &pats,
            "pa ss\\\"wörd\\u003c\\u0026\\u003e/x".as_bytes()
        ));
        assert!(has(&pats, "pa ss&quot;wörd&lt;&amp;&gt;/x".as_bytes()));
    }
}
