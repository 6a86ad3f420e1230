//! Whether a comment body asks for a run: one of its lines, trimmed, is exactly the
//! trigger command. Quoted lines (`> …`) and fenced code (``` or ~~~) never trigger,
//! so quoting someone's `!testme` or documenting it does not start a run.

/// Whether `body` contains `command` as a line of its own, outside quotes and fences.
pub fn is_trigger(body: &str, command: &str) -> bool {
    let command = command.trim();
    // The open fence: its character and length (a closing fence must match both).
    let mut fence: Option<(char, usize)> = None;
    for line in body.lines() {
        let t = line.trim();
        if let Some((ch, len)) = fence_of(t) {
            match fence {
                None => {
                    fence = Some((ch, len));
                    continue;
                }
                Some((open, open_len)) if open == ch && len >= open_len && is_bare(t, ch) => {
                    fence = None;
                    continue;
                }
                Some(_) => continue,
            }
        }
        if fence.is_some() || t.starts_with('>') {
            continue;
        }
        if t == command {
            return true;
        }
    }
    false
}

/// A fence line: at least three backticks or tildes.
fn fence_of(t: &str) -> Option<(char, usize)> {
    let ch = t.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let len = t.chars().take_while(|&c| c == ch).count();
    (len >= 3).then_some((ch, len))
}

/// A closing fence carries no info string.
fn is_bare(t: &str, ch: char) -> bool {
    t.chars().all(|c| c == ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_line_triggers() {
        assert!(is_trigger("!testme", "!testme"));
        assert!(is_trigger("  !testme  \r\n", "!testme"));
        assert!(is_trigger("please run\n\n\t!testme\nthanks", "!testme"));
    }

    #[test]
    fn inline_or_variants_do_not() {
        assert!(!is_trigger("please !testme", "!testme"));
        assert!(!is_trigger("!testme now", "!testme"));
        assert!(!is_trigger("!TESTME", "!testme"));
        assert!(!is_trigger("`!testme`", "!testme"));
        assert!(!is_trigger("", "!testme"));
    }

    #[test]
    fn quotes_and_fences_do_not() {
        assert!(!is_trigger("> !testme", "!testme"));
        assert!(!is_trigger("  >!testme", "!testme"));
        assert!(!is_trigger("```\n!testme\n```", "!testme"));
        assert!(!is_trigger("~~~~sh\n!testme\n~~~~", "!testme"));
        // A shorter or different closing fence does not close the block.
        assert!(!is_trigger("````\n```\n!testme\n", "!testme"));
        assert!(!is_trigger("```\n~~~\n!testme\n", "!testme"));
        // After the fence closes, a trigger counts again.
        assert!(is_trigger("```\ncode\n```\n!testme", "!testme"));
    }

    #[test]
    fn custom_command() {
        assert!(is_trigger("/ci run", "/ci run"));
        assert!(!is_trigger("!testme", "/ci run"));
    }
}
