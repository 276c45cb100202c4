//! What a lab says is not part of the acquisition (`exclude:` in a targets file, `--exclude`): the
//! acquisition software's own log, kept open for the whole run, a preview it rewrites. An excluded
//! file is never copied, never waited for, never verified, and is named in the report
//! (docs/design.md, "Excluded files").
//!
//! A glob without `/` matches a file's or a folder's name at any depth (`*.log`); one with `/`
//! matches the path from the source root (`logs/*`, `previews/**/*.png`). `*` and `?` match within
//! one name, `**` any number of folders, `[a-z]` and `[!0-9]` one character of a set. A folder that
//! matches excludes everything in it. On Windows names are compared without case, as NTFS does.

use std::path::Path;

/// A folder name no lab excludes, to ask whether a glob meets metadata below the root.
const PROBE_FOLDER: &str = "softcopy-probe-folder";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `?`: one byte that is not `/`.
    One,
    /// `*`: any bytes but `/`.
    Star,
    /// `**/`: nothing, or any folders (each ending in `/`).
    Folders,
    /// `**` at the end: anything.
    Rest,
    /// `[...]`: one byte in (or, negated, not in) the ranges.
    Set {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

#[derive(Clone, Debug)]
struct Glob {
    tokens: Vec<Token>,
    /// Matched against each ancestor path from the root (a `/` in it), or each name.
    anchored: bool,
}

/// The exclude globs of one target. Empty: nothing is excluded.
#[derive(Clone, Debug, Default)]
pub struct Exclude {
    globs: Vec<Glob>,
    written: Vec<String>,
}

impl Exclude {
    /// Parses the globs; an empty one is refused (it would match nothing a person meant).
    pub fn new(globs: &[String]) -> Result<Self, String> {
        let mut parsed = Vec::with_capacity(globs.len());
        for g in globs {
            let folded = fold(g.trim_start_matches('/'));
            if folded.is_empty() {
                return Err(format!("an exclude glob must not be empty, got {g:?}"));
            }
            parsed.push(Glob { tokens: parse(folded.as_bytes()), anchored: folded.contains('/') });
        }
        let exclude = Exclude { globs: parsed, written: globs.to_vec() };
        // Metadata is part of every acquisition: a copy without it cannot be read, and freeing its
        // chunks would leave them nowhere readable. Said at the start for the names a glob meets
        // anywhere (`*.json`); one that meets metadata only deeper is caught by the verification.
        for name in crate::vocab::METADATA {
            if exclude.matches(Path::new(name)) || exclude.matches(&Path::new(PROBE_FOLDER).join(name)) {
                return Err(format!("exclude must not match Zarr metadata ({name}): it is part of every acquisition"));
            }
        }
        Ok(exclude)
    }

    /// The globs as given.
    pub fn globs(&self) -> &[String] {
        &self.written
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// Whether `rel` (relative to the source root), or a folder it is in, is excluded.
    pub fn matches(&self, rel: &Path) -> bool {
        if self.globs.is_empty() {
            return false;
        }
        let path = fold(&rel.to_string_lossy().replace('\\', "/"));
        let path = path.trim_matches('/').as_bytes();
        // Each ancestor from the root, the path itself last: (its path, its name).
        let mut start = 0;
        for (end, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/').chain([(path.len(), &b'/')]) {
            let (prefix, name) = (&path[..end], &path[start..end]);
            start = end + 1;
            if self.globs.iter().any(|g| glob_match(&g.tokens, if g.anchored { prefix } else { name })) {
                return true;
            }
        }
        false
    }
}

/// Names as the platform compares them (docs/design.md, "Windows").
fn fold(s: &str) -> String {
    if cfg!(windows) {
        s.to_lowercase()
    } else {
        s.to_owned()
    }
}

fn parse(g: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < g.len() {
        match g[i] {
            b'*' if g.get(i + 1) == Some(&b'*') => {
                let slash = g.get(i + 2) == Some(&b'/');
                out.push(if slash { Token::Folders } else { Token::Rest });
                i += if slash { 3 } else { 2 };
                continue;
            }
            b'*' => out.push(Token::Star),
            b'?' => out.push(Token::One),
            b'[' => match parse_set(&g[i + 1..]) {
                Some((set, used)) => {
                    out.push(set);
                    i += used + 1;
                    continue;
                }
                // An unclosed `[` is itself, as in fnmatch.
                None => out.push(Token::Byte(b'[')),
            },
            b => out.push(Token::Byte(b)),
        }
        i += 1;
    }
    out
}

/// The set after a `[`, and how many bytes it took (its `]` included).
fn parse_set(g: &[u8]) -> Option<(Token, usize)> {
    let negated = matches!(g.first(), Some(b'!' | b'^'));
    let mut i = usize::from(negated);
    let mut ranges = Vec::new();
    // A `]` first in the set is a member, as in fnmatch.
    while i < g.len() && (g[i] != b']' || ranges.is_empty()) {
        let lo = g[i];
        if g.get(i + 1) == Some(&b'-') && g.get(i + 2).is_some_and(|b| *b != b']') {
            ranges.push((lo, g[i + 2]));
            i += 3;
        } else {
            ranges.push((lo, lo));
            i += 1;
        }
    }
    (i < g.len()).then_some((Token::Set { negated, ranges }, i + 1))
}

fn glob_match(tokens: &[Token], s: &[u8]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match first {
        Token::Byte(b) => s.first() == Some(b) && glob_match(rest, &s[1..]),
        Token::One => s.first().is_some_and(|b| *b != b'/') && glob_match(rest, &s[1..]),
        Token::Set { negated, ranges } => s.first().is_some_and(|b| {
            *b != b'/' && ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&b)) != *negated && glob_match(rest, &s[1..])
        }),
        Token::Rest => true,
        Token::Star => {
            let name = s.iter().position(|b| *b == b'/').unwrap_or(s.len());
            (0..=name).any(|n| glob_match(rest, &s[n..]))
        }
        Token::Folders => {
            glob_match(rest, s) || s.iter().enumerate().any(|(i, b)| *b == b'/' && glob_match(rest, &s[i + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(globs: &[&str], rel: &str) -> bool {
        let globs: Vec<String> = globs.iter().map(|g| (*g).to_owned()).collect();
        Exclude::new(&globs).unwrap().matches(Path::new(rel))
    }

    /// (globs, path, excluded): names at any depth, paths from the root, folders holding what
    /// they hold, `**`, sets, single characters, and fnmatch's literal `[`.
    const CASES: &[(&[&str], &str, bool)] = &[
        (&["*.log"], "acquisition.log", true),
        (&["*.log"], "0/1/acquisition.log", true),
        (&["*.log"], "acquisition.log.1/c/0", false),
        (&["logs/*"], "logs/a.txt", true),
        (&["logs/*"], "x/logs/a.txt", false),
        (&["/logs"], "logs/deep/a.txt", true),
        (&["previews/**/*.png"], "previews/a.png", true),
        (&["previews/**/*.png"], "previews/t/0/a.png", true),
        (&["previews/**/*.png"], "data/t/0/a.png", false),
        (&["previews/**"], "previews/t/0/a.png", true),
        (&["scratch"], "scratch/a/b", true),
        (&["tmp*"], "0/tmp1/c", true),
        (&["tmp*"], "0/atmp/c", false),
        (&["c[0-9].txt"], "c7.txt", true),
        (&["c[!0-9].txt"], "c7.txt", false),
        (&["c?.txt"], "cx.txt", true),
        (&["c?.txt"], "c/.txt", false),
        (&["a[b"], "a[b", true),
        (&["[]]x"], "]x", true),
        (&["*.png", "*.log"], "a/b.log", true),
    ];

    #[test]
    fn globs_match_as_documented() {
        for (globs, rel, want) in CASES {
            assert_eq!(excluded(globs, rel), *want, "{globs:?} on {rel}");
        }
    }

    #[test]
    fn nothing_is_excluded_without_globs_and_an_empty_glob_is_refused() {
        assert!(!Exclude::default().matches(Path::new("a.log")));
        assert!(Exclude::new(&[String::new()]).is_err());
        assert!(Exclude::new(&["/".to_owned()]).is_err());
    }

    #[test]
    fn a_glob_that_meets_zarr_metadata_is_refused() {
        for glob in ["*.json", "zarr.json", ".z*", "*", "**/.zarray", "softcopy-probe-folder"] {
            let refused = Exclude::new(&[glob.to_owned()]);
            assert!(refused.is_err_and(|e| e.contains("Zarr metadata")), "{glob}");
        }
        for glob in ["*.log", "a", "logs", "*.tif", "c/0/*"] {
            assert!(Exclude::new(&[glob.to_owned()]).is_ok(), "{glob}");
        }
    }

    #[test]
    fn case_is_folded_only_on_windows() {
        assert_eq!(excluded(&["*.log"], "RUN.LOG"), cfg!(windows));
    }
}
