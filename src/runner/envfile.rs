//! App env files (`$ABRA_DIR/servers/<server>/<domain>.env`, started from the recipe's
//! `.env.sample`) read the way abra reads them, and edited without breaking that.
//!
//! abra reads env files with (a fork of) Go's `joho/godotenv`; this is a port of that
//! parser's rules, not a general dotenv reader (the Rust dotenv crates expand
//! differently, e.g. lowercase names and `${VAR:-default}`, and drop the trailing
//! comments that carry `# length=N`). `docs/abra-contract.md` lists each rule and
//! what it was checked against; the abra test double (`tests/doubles/abra`) reads env
//! files by the same rules, checked on the same fixtures
//! (`tests/doubles/fixtures/env/`).
//!
//! - One `KEY=VALUE` (or `KEY: VALUE`) per statement, an optional `export ` before
//!   it; blank lines and lines starting with `#` are skipped.
//! - Unquoted values end at the line's end or at the first `#` preceded by white
//!   space (a comment); surrounding white space is trimmed.
//! - `'single'` quotes are literal. `"double"` quotes may span lines and understand
//!   `\n`, `\r` and `\<c>` escapes.
//! - `$VAR` and `${VAR}` (names of `A-Z`, `0-9`, `_` only) in unquoted and
//!   double-quoted values expand to the value the file gave `VAR` *above* that line,
//!   so `COMPOSE_FILE="$COMPOSE_FILE:compose.db.yml"` appends; a variable the file has
//!   not defined yet expands to nothing (and is recorded in [`EnvFile::undefined`]).
//!   `\$` is a literal `$`.
//! - A later definition of a key replaces the earlier one.
//! - The comment after a value carries modifiers, `KEY=v1 # length=32`:
//!   [`Entry::modifiers`].
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{path}:{line}: {detail}")]
    Syntax {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error(
        "{path}: COMPOSE_FILE={value:?} has an empty entry{hint}; list compose files separated by ':'"
    )]
    EmptyComposeFile {
        path: PathBuf,
        value: String,
        hint: String,
    },
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, #[source] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// One definition in an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// The value after quotes, escapes and expansion.
    pub value: String,
    /// `k=v` words of the comment after the value (`# length=32` → `length` = `32`).
    pub modifiers: BTreeMap<String, String>,
    /// 1-based line of the key.
    pub line: usize,
    /// The statement's bytes in the (CRLF-normalised) text, for edits.
    span: Range<usize>,
}

/// A variable used before the file defined it (it expanded to nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undefined {
    pub name: String,
    pub line: usize,
}

/// A secret of the app: `SECRET_<NAME>_VERSION=<version> # length=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    /// `<name>` in lowercase, as in the compose file's `secrets:`.
    pub name: String,
    pub version: String,
    pub length: Option<usize>,
}

/// An env file, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Every definition in file order (a key may appear more than once).
    pub entries: Vec<Entry>,
    pub undefined: Vec<Undefined>,
    /// The text the spans refer to.
    text: String,
}

/// The compose file abra deploys when the env has no `COMPOSE_FILE`.
pub const DEFAULT_COMPOSE_FILE: &str = "compose.yml";

impl EnvFile {
    pub fn read(path: &Path) -> Result<EnvFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read(path.to_owned(), e))?;
        EnvFile::parse(path, &text)
    }

    /// Parse `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<EnvFile> {
        let text = text.replace("\r\n", "\n");
        let mut parser = Parser {
            s: &text,
            i: 0,
            vars: BTreeMap::new(),
            entries: Vec::new(),
            undefined: Vec::new(),
        };
        parser
            .statements()
            .map_err(|(line, detail)| Error::Syntax {
                path: path.to_owned(),
                line,
                detail,
            })?;
        let (entries, undefined) = (parser.entries, parser.undefined);
        Ok(EnvFile {
            path: path.to_owned(),
            entries,
            undefined,
            text,
        })
    }

    /// The value of `key` (its last definition).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.last(key).map(|e| e.value.as_str())
    }

    fn last(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }

    /// Every variable with its final value.
    pub fn vars(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    /// The compose files abra deploys: `COMPOSE_FILE` split at `:`, or `compose.yml`.
    pub fn compose_files(&self) -> Result<Vec<String>> {
        let Some(value) = self.get("COMPOSE_FILE") else {
            return Ok(vec![DEFAULT_COMPOSE_FILE.to_string()]);
        };
        let files: Vec<String> = value.split(':').map(str::to_string).collect();
        if files.iter().any(String::is_empty) {
            let hint = if self.undefined.iter().any(|u| u.name == "COMPOSE_FILE") {
                " (the file uses $COMPOSE_FILE before it defines it)".to_string()
            } else {
                String::new()
            };
            return Err(Error::EmptyComposeFile {
                path: self.path.clone(),
                value: value.to_string(),
                hint,
            });
        }
        Ok(files)
    }

    /// The app's secrets, from its `SECRET_<NAME>_VERSION` lines.
    pub fn secret_versions(&self) -> Vec<SecretVersion> {
        let mut out: Vec<SecretVersion> = Vec::new();
        for e in &self.entries {
            let Some(name) = e
                .key
                .strip_prefix("SECRET_")
                .and_then(|k| k.strip_suffix("_VERSION"))
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            let secret = SecretVersion {
                name: name.to_lowercase(),
                version: e.value.clone(),
                length: e.modifiers.get("length").and_then(|l| l.parse().ok()),
            };
            match out.iter_mut().find(|s| s.name == secret.name) {
                Some(s) => *s = secret,
                None => out.push(secret),
            }
        }
        out
    }

    /// The text with `vars` set: each key's first definition replaced in place (so
    /// lines below it that use `$KEY` see the new value), its later definitions
    /// removed, and keys not defined yet appended. Values are written literally
    /// (single-quoted when they need quoting).
    pub fn with_vars(&self, vars: &[(String, String)]) -> String {
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        let mut appended = String::new();
        for (key, value) in vars {
            let line = format!("{key}={}", quote(value));
            let mut defs = self.entries.iter().filter(|e| &e.key == key);
            match defs.next() {
                Some(first) => {
                    edits.push((first.span.clone(), line));
                    for later in defs {
                        edits.push((self.whole_lines(&later.span), String::new()));
                    }
                }
                None => {
                    appended.push_str(&line);
                    appended.push('\n');
                }
            }
        }
        edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut text = self.text.clone();
        for (range, replacement) in edits {
            text.replace_range(range, &replacement);
        }
        append(text, &appended)
    }

    /// The text with `file` added to the end of `COMPOSE_FILE`, as recipes add their
    /// optional parts: a last line `COMPOSE_FILE="$COMPOSE_FILE:<file>"`.
    pub fn with_compose_file(&self, file: &str) -> String {
        let line = if self.get("COMPOSE_FILE").is_some() {
            format!("COMPOSE_FILE=\"$COMPOSE_FILE:{file}\"\n")
        } else {
            format!("COMPOSE_FILE=\"{DEFAULT_COMPOSE_FILE}:{file}\"\n")
        };
        append(self.text.clone(), &line)
    }

    /// `span` widened to whole lines, with the line break after it.
    fn whole_lines(&self, span: &Range<usize>) -> Range<usize> {
        let start = self.text[..span.start].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[span.end..]
            .find('\n')
            .map_or(self.text.len(), |i| span.end + i + 1);
        start..end
    }
}

/// Read `path`, set `vars` in it (see [`EnvFile::with_vars`]) and write it back.
pub fn set_vars(path: &Path, vars: &[(String, String)]) -> Result<()> {
    let env = EnvFile::read(path)?;
    std::fs::write(path, env.with_vars(vars)).map_err(|e| Error::Write(path.to_owned(), e))
}

/// Read `path`, add `file` to its `COMPOSE_FILE` and write it back.
pub fn add_compose_file(path: &Path, file: &str) -> Result<()> {
    let env = EnvFile::read(path)?;
    std::fs::write(path, env.with_compose_file(file)).map_err(|e| Error::Write(path.to_owned(), e))
}

fn append(mut text: String, lines: &str) -> String {
    if !lines.is_empty() && !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(lines);
    text
}

/// A value as the parser reads it back unchanged.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:/@+%=".contains(c));
    if plain {
        value.to_string()
    } else if !value.contains('\'') {
        format!("'{value}'")
    } else {
        let escaped: String = value
            .chars()
            .flat_map(|c| match c {
                '\\' | '"' | '$' => vec!['\\', c],
                '\n' => vec!['\\', 'n'],
                '\r' => vec!['\\', 'r'],
                _ => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// `export K=V` lines of a recipe's `abra.sh`, which abra adds to the app's env when
/// it deploys (config versions). The shell script is never run.
pub fn abra_sh_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("export")?;
            if !rest.starts_with([' ', '\t']) {
                return None;
            }
            let (key, value) = rest.trim_start().split_once('=')?;
            let valid_key = !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !key.as_bytes()[0].is_ascii_digit();
            if !valid_key {
                return None;
            }
            let value = value.split(" #").next().unwrap_or("").trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            if value.contains(char::is_whitespace) {
                return None;
            }
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// godotenv's white space within a line (not line breaks).
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
    vars: BTreeMap<String, String>,
    entries: Vec<Entry>,
    undefined: Vec<Undefined>,
}

type Failure = (usize, String);

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }

    fn line_at(&self, i: usize) -> usize {
        self.s[..i].matches('\n').count() + 1
    }

    fn skip(&mut self, pred: impl Fn(char) -> bool) {
        while let Some(c) = self.peek().filter(|c| pred(*c)) {
            self.i += c.len_utf8();
        }
    }

    fn statements(&mut self) -> std::result::Result<(), Failure> {
        loop {
            self.skip(char::is_whitespace);
            match self.peek() {
                None => return Ok(()),
                Some('#') => match self.s[self.i..].find('\n') {
                    Some(n) => self.i += n,
                    None => return Ok(()),
                },
                Some(_) => self.statement()?,
            }
        }
    }

    fn statement(&mut self) -> std::result::Result<(), Failure> {
        let start = self.i;
        let line = self.line_at(start);
        if let Some(rest) = self.s[self.i..].strip_prefix("export")
            && rest.starts_with(is_space)
        {
            self.i += "export".len();
            self.skip(is_space);
        }
        let key_start = self.i;
        let key = loop {
            match self.peek() {
                None => {
                    return Err((
                        line,
                        format!(
                            "no '=' after {:?}: expected KEY=VALUE",
                            self.s[key_start..].trim()
                        ),
                    ));
                }
                Some('=' | ':') => {
                    let key = self.s[key_start..self.i].trim_end_matches(is_space);
                    self.i += 1;
                    break key.to_string();
                }
                Some(c) if is_space(c) || c == '_' || c == '.' || c.is_alphanumeric() => {
                    self.i += c.len_utf8();
                }
                Some(c) => {
                    let near: String = self.s[key_start..].lines().next().unwrap_or("").into();
                    return Err((
                        line,
                        format!("unexpected character {c:?} in variable name near {near:?}"),
                    ));
                }
            }
        };
        if key.is_empty() {
            return Err((line, "a line starts with '=' (no variable name)".into()));
        }
        self.skip(is_space);
        let (value, comment) = self.value(line)?;
        let modifiers = comment
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.vars.insert(key.clone(), value.clone());
        self.entries.push(Entry {
            key,
            value,
            modifiers,
            line,
            span: start..self.i,
        });
        Ok(())
    }

    /// The value at the cursor and the comment after it; the cursor ends after the
    /// value (and its comment).
    fn value(&mut self, line: usize) -> std::result::Result<(String, String), Failure> {
        let rest = &self.s[self.i..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
            let raw = &rest[..end];
            let cut = raw
                .char_indices()
                .find(|(i, c)| *c == '#' && raw[..*i].ends_with(is_space))
                .map(|(i, _)| i);
            let (value, comment) = match cut {
                Some(i) => (&raw[..i], &raw[i + 1..]),
                None => (raw, ""),
            };
            let value = self.expand(value.trim_matches(is_space), line);
            let comment = comment.to_string();
            self.i += end;
            return Ok((value, comment));
        };
        // The closing quote: the next one not preceded by a backslash.
        let bytes = rest.as_bytes();
        let close = (1..bytes.len())
            .find(|&j| bytes[j] == quote as u8 && bytes[j - 1] != b'\\')
            .ok_or_else(|| {
                let shown = rest.lines().next().unwrap_or("");
                (line, format!("unterminated quoted value {shown}"))
            })?;
        let inner = rest[..close].trim_matches(quote).trim_end_matches(quote);
        let value = if quote == '"' {
            self.expand(&unescape(inner), line)
        } else {
            inner.to_string()
        };
        self.i += close + 1;
        // A comment may follow on the same line.
        let after = &self.s[self.i..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let tail = after[..line_end].trim_start_matches(is_space);
        let comment = match tail.strip_prefix('#') {
            Some(c) => {
                self.i += line_end;
                c.to_string()
            }
            None => String::new(),
        };
        Ok((value, comment))
    }

    /// `$VAR`, `${VAR}` and `\$` as godotenv expands them, from the variables defined
    /// above.
    fn expand(&mut self, v: &str, line: usize) -> String {
        let is_name = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
        let mut out = String::new();
        let mut rest = v;
        while let Some(at) = rest.find('$') {
            let escaped = rest[..at].ends_with('\\');
            let before = if escaped {
                &rest[..at - 1]
            } else {
                &rest[..at]
            };
            out.push_str(before);
            // The match: `$`, an optional `(` and `{`, a name, an optional `}`.
            let mut m = &rest[at + 1..];
            let mut matched = String::from("$");
            for opener in ['(', '{'] {
                if let Some(r) = m.strip_prefix(opener) {
                    matched.push(opener);
                    m = r;
                }
            }
            let name_len = m.find(|c: char| !is_name(c)).unwrap_or(m.len());
            let name = &m[..name_len];
            matched.push_str(name);
            m = &m[name_len..];
            if let Some(r) = m.strip_prefix('}') {
                matched.push('}');
                m = r;
            }
            if escaped || name.is_empty() {
                out.push_str(&matched);
            } else {
                match self.vars.get(name) {
                    Some(value) => out.push_str(value),
                    None => self.undefined.push(Undefined {
                        name: name.to_string(),
                        line,
                    }),
                }
            }
            rest = m;
        }
        out.push_str(rest);
        out
    }
}

/// Escapes inside double quotes: `\n` and `\r` are line breaks, `\<c>` is `<c>`
/// except `\$` (left for expansion, where it means a literal `$`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('$') => out.push_str("\\$"),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> EnvFile {
        EnvFile::parse(Path::new("app.env"), text).unwrap()
    }

    fn err(text: &str) -> String {
        EnvFile::parse(Path::new("app.env"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn compose_file_parts_expand_in_order_of_definition() {
        let env = parse(
            "TYPE=guestbook\n\
             COMPOSE_FILE=\"compose.yml\"\n\
             COMPOSE_FILE=\"$COMPOSE_FILE:compose.db.yml\"\n\
             #COMPOSE_FILE=\"$COMPOSE_FILE:compose.mail.yml\"\n\
             COMPOSE_FILE=\"${COMPOSE_FILE}:compose.cache.yml\"\n",
        );
        assert_eq!(
            env.compose_files().unwrap(),
            ["compose.yml", "compose.db.yml", "compose.cache.yml"]
        );
        assert!(env.undefined.is_empty());
        // A variable is what the file said *above*, not its final value.
        let env = parse("A=1\nB=$A\nA=2\nC=${A}$B\n");
        assert_eq!(env.get("B"), Some("1"));
        assert_eq!(env.get("C"), Some("21"));
        assert_eq!(env.get("A"), Some("2"));
    }

    #[test]
    fn undefined_variables_expand_to_nothing_and_are_recorded() {
        let env = parse("COMPOSE_FILE=\"$COMPOSE_FILE:compose.db.yml\"\nX=${NOPE}y\n");
        assert_eq!(env.get("COMPOSE_FILE"), Some(":compose.db.yml"));
        assert_eq!(env.get("X"), Some("y"));
        assert_eq!(
            env.undefined,
            [
                Undefined {
                    name: "COMPOSE_FILE".into(),
                    line: 1
                },
                Undefined {
                    name: "NOPE".into(),
                    line: 2
                }
            ]
        );
        let e = env.compose_files().unwrap_err().to_string();
        assert!(e.contains("empty entry"), "{e}");
        assert!(e.contains("uses $COMPOSE_FILE before it defines it"), "{e}");
        // Not the runner's environment either: a run must not depend on it.
        // SAFETY-free: PATH is always set in the test's environment.
        assert_eq!(parse("P=$PATH\n").get("P"), Some(""));
    }

    #[test]
    fn quotes_escapes_and_literal_dollars() {
        let env = parse(concat!(
            "A=plain\n",
            "S='single $A \\n # not a comment'\n",
            "D=\"double $A\\n\\\"q\\\" \\\\ \\$A\"\n",
            "U=un\\$A $A\n",
            "L=$lower ${lower} $\n",
            "M=\"first\nsecond\"\n",
            "  export   E = spaced  \n",
            "Y: yaml-style\n",
        ));
        assert_eq!(env.get("S"), Some("single $A \\n # not a comment"));
        assert_eq!(env.get("D"), Some("double plain\n\"q\" \\ $A"));
        assert_eq!(env.get("U"), Some("un$A plain"));
        assert_eq!(env.get("L"), Some("$lower ${lower} $"));
        assert_eq!(env.get("M"), Some("first\nsecond"));
        assert_eq!(env.get("E"), Some("spaced"));
        assert_eq!(env.get("Y"), Some("yaml-style"));
    }

    #[test]
    fn comments_and_secret_lengths() {
        let env = parse(concat!(
            "# a comment\n",
            "   # an indented comment\n",
            "SECRET_DB_PASSWORD_VERSION=v1 # length=32\n",
            "SECRET_API_KEY_VERSION=\"v2\"   # length=64 charset=hex\n",
            "SECRET_PLAIN_VERSION=v3\n",
            "URL=http://x/#anchor # a comment with # inside\n",
            "EMPTY=\n",
            "HASH=#not-a-comment-without-space\n",
        ));
        assert_eq!(
            env.secret_versions(),
            [
                SecretVersion {
                    name: "db_password".into(),
                    version: "v1".into(),
                    length: Some(32)
                },
                SecretVersion {
                    name: "api_key".into(),
                    version: "v2".into(),
                    length: Some(64)
                },
                SecretVersion {
                    name: "plain".into(),
                    version: "v3".into(),
                    length: None
                },
            ]
        );
        assert_eq!(
            env.last("SECRET_API_KEY_VERSION").unwrap().modifiers["charset"],
            "hex"
        );
        assert_eq!(env.get("URL"), Some("http://x/#anchor"));
        assert_eq!(env.get("EMPTY"), Some(""));
        assert_eq!(env.get("HASH"), Some("#not-a-comment-without-space"));
        assert_eq!(
            parse("X=1\n").compose_files().unwrap(),
            [DEFAULT_COMPOSE_FILE]
        );
    }

    #[test]
    fn what_is_not_understood_is_named_with_its_line() {
        let e = err("A=1\nB=\"never closed\n");
        assert!(e.starts_with("app.env:2: unterminated quoted value"), "{e}");
        let e = err("A=1\nBAD-KEY=2\n");
        assert!(e.contains("app.env:2: unexpected character '-'"), "{e}");
        let e = err("A=1\nJUSTAWORD\nB=2\n");
        assert!(e.contains("app.env:2: unexpected character '\\n'"), "{e}");
        let e = err("A=1\nTRAILING");
        assert!(e.contains("app.env:2: no '=' after \"TRAILING\""), "{e}");
    }

    #[test]
    fn set_replaces_in_place_drops_later_definitions_and_appends() {
        let text = "TYPE=x\nCOMPOSE_FILE=compose.yml\nA=1 # keep?\nCOMPOSE_FILE=\"$COMPOSE_FILE:b.yml\"\nB=$A\n";
        let env = parse(text);
        let out = env.with_vars(&[
            ("A".into(), "two words".into()),
            ("COMPOSE_FILE".into(), "c.yml".into()),
            ("NEW".into(), "it's $x".into()),
        ]);
        assert_eq!(
            out,
            "TYPE=x\nCOMPOSE_FILE=c.yml\nA='two words'\nB=$A\nNEW=\"it's \\$x\"\n"
        );
        let back = parse(&out);
        assert_eq!(back.get("B"), Some("two words"));
        assert_eq!(back.get("NEW"), Some("it's $x"));
        assert_eq!(back.compose_files().unwrap(), ["c.yml"]);
    }

    #[test]
    fn a_compose_file_is_added_as_recipes_add_theirs() {
        let env = parse("COMPOSE_FILE=compose.yml\nCOMPOSE_FILE=\"$COMPOSE_FILE:db.yml\"");
        let out = parse(&env.with_compose_file("compose.ccci.yml"));
        assert_eq!(
            out.compose_files().unwrap(),
            ["compose.yml", "db.yml", "compose.ccci.yml"]
        );
        let out = parse(&parse("TYPE=x\n").with_compose_file("compose.ccci.yml"));
        assert_eq!(
            out.compose_files().unwrap(),
            ["compose.yml", "compose.ccci.yml"]
        );
    }

    #[test]
    fn abra_sh_exports_are_read_without_running_it() {
        let text = "#!/usr/bin/env bash\nexport NGINX_CONF_VERSION=v3\nexport  ENTRY=\"v1\" # bump\n\
                    exported=1\nfunction x() { export INSIDE=$(date); }\n";
        assert_eq!(
            abra_sh_exports(text),
            [
                ("NGINX_CONF_VERSION".to_string(), "v3".to_string()),
                ("ENTRY".to_string(), "v1".to_string()),
            ]
        );
    }

    /// The fixtures the abra test double is checked on too
    /// (`tests/doubles/test-abra-double.sh`): both must read them alike.
    #[test]
    fn the_shared_fixtures_read_as_expected() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/doubles/fixtures/env");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("env") {
                continue;
            }
            let env = EnvFile::read(&path).unwrap();
            let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
            let mut want = BTreeMap::new();
            for line in expected.lines().filter(|l| !l.is_empty()) {
                let (k, v) = line.split_once('\t').unwrap();
                want.insert(k.to_string(), v.replace("\\n", "\n"));
            }
            assert_eq!(env.vars(), want, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 2, "fixtures in {}", dir.display());
    }
}
