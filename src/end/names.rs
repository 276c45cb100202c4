//! File names in softcopy's line-based records (docs/design.md, invariant 11; the move journal,
//! the manifest): one entry per line whatever the name. A name may hold a newline, a tab, a backslash, or (on Unix) bytes that
//! are not UTF-8; written lossily, such a name would read back as another file's, so a journal
//! entry would miss the copy it speaks for (which then looks stale) and a manifest would name a
//! file that is not there. Escapes: `\\`, `\n`, `\t`, `\r`, and `\xNN` for a byte that is not
//! part of valid UTF-8. Names are written with `/` between components on every platform.

use std::path::{Component, Path, PathBuf};

/// `rel` as one line-safe field.
pub fn escape(rel: &Path) -> String {
    let mut out = String::new();
    for (i, part) in rel.components().filter(|c| matches!(c, Component::Normal(_))).enumerate() {
        if i > 0 {
            out.push('/');
        }
        escape_bytes(&bytes_of(part.as_os_str()), &mut out);
    }
    out
}

fn escape_bytes(bytes: &[u8], out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

/// The name [`escape`] wrote. An escape it does not know is kept as written.
pub fn unescape(field: &str) -> PathBuf {
    let mut out: Vec<u8> = Vec::with_capacity(field.len());
    let mut rest = field.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let (decoded, used) = match rest {
            [b'n', ..] => (Some(b'\n'), 1),
            [b't', ..] => (Some(b'\t'), 1),
            [b'r', ..] => (Some(b'\r'), 1),
            [b'\\', ..] => (Some(b'\\'), 1),
            [b'x', h, l, ..] => match u8::from_str_radix(&format!("{}{}", *h as char, *l as char), 16) {
                Ok(v) => (Some(v), 3),
                Err(_) => (None, 0),
            },
            _ => (None, 0),
        };
        match decoded {
            Some(v) => out.push(v),
            None => out.push(b'\\'),
        }
        rest = &rest[used..];
    }
    path_of(out)
}

#[cfg(unix)]
fn bytes_of(s: &std::ffi::OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    s.as_bytes().to_vec()
}

#[cfg(unix)]
fn path_of(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

// Windows names are UTF-16: only an unpaired surrogate (which no Windows writer of Zarr makes) is
// not representable, and is written lossily.
#[cfg(not(unix))]
fn bytes_of(s: &std::ffi::OsStr) -> Vec<u8> {
    s.to_string_lossy().into_owned().into_bytes()
}

#[cfg(not(unix))]
fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_survives_a_line_of_its_own() {
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut names: Vec<PathBuf> =
            ["a\nb", "tab\there", "cr\r", "plain/0/1", "é/ü"].iter().map(PathBuf::from).collect();
        // A backslash is a separator on Windows, never part of a name there.
        #[cfg(unix)]
        names.extend(["a\\nb", "c\\", "\\x41"].map(PathBuf::from));
        #[cfg(unix)]
        names.push(path_of(b"bad\xff\xfe/ok\xc3".to_vec()));
        for name in names {
            let field = escape(&name);
            assert!(!field.contains('\n') && !field.contains('\t') && !field.contains('\r'), "{field:?}");
            assert_eq!(unescape(&field), name, "{field:?}");
        }
    }

    #[test]
    fn older_records_read_the_same() {
        // The journal's first escaping (`\\`, `\n`) is a subset.
        assert_eq!(unescape("a\\\\b\\nc"), PathBuf::from("a\\b\nc"));
    }
}
