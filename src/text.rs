//! Text that came from a child process (abra's or git's stderr, a test's message) on
//! its way into a report: a JUnit attribute, a Markdown table cell, a PR comment.
//! Such text may carry terminal escapes, control bytes that XML 1.0 forbids, or
//! Markdown and HTML that Gitea would render (links, images that load from elsewhere,
//! `@mentions` that notify people). It is shown, never interpreted.

/// One line of plain text: ANSI escape sequences removed (with the well-kept
/// `strip-ansi-escapes` crate), every other control character and line break turned
/// into a space, runs of spaces collapsed, cut to `max` characters (with `…`).
pub fn plain_line(s: &str, max: usize) -> String {
    let stripped = strip_ansi_escapes::strip_str(s);
    let mut out = String::with_capacity(stripped.len().min(max + 4));
    let mut count = 0;
    let mut last_space = true;
    for c in stripped.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        if count == max {
            out.push('…');
            return out.trim_end().to_string();
        }
        last_space = c == ' ';
        out.push(c);
        count += 1;
    }
    out.trim_end().to_string()
}

/// `s` as a Markdown inline code span that is safe in a GFM table cell: nothing in it
/// is rendered (no links, images, HTML or mentions), pipes are escaped for the table,
/// and the fence is longer than any run of backticks inside. Empty text stays empty.
pub fn md_code(s: &str, max: usize) -> String {
    let line = plain_line(s, max).replace('|', "\\|");
    if line.is_empty() {
        return line;
    }
    let longest_run = line.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    // A span that starts or ends with a backtick needs a space inside the fence.
    let pad = if line.starts_with('`') || line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{line}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_strips_escapes_and_controls() {
        assert_eq!(
            plain_line("\x1b[31merror:\x1b[0m bad\r\n\tthing\x07\x00end", 100),
            "error: bad thingend"
        );
        assert_eq!(plain_line("abcdef", 3), "abc…");
        assert_eq!(plain_line("ünïcödé ok", 100), "ünïcödé ok");
    }

    #[test]
    fn md_code_renders_nothing() {
        assert_eq!(md_code("", 10), "");
        assert_eq!(
            md_code("see [x](http://a) ![i](http://b) <img src=x> @admin", 200),
            "`see [x](http://a) ![i](http://b) <img src=x> @admin`"
        );
        assert_eq!(md_code("a | b", 10), "`a \\| b`");
        assert_eq!(md_code("use `ls` here", 100), "``use `ls` here``");
        assert_eq!(md_code("`x`", 100), "`` `x` ``");
    }
}
