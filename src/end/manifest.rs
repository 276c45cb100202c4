//! Content hashes (`--checksum`): BLAKE3 truncated to 128 bits, computed while a file is copied, the
//! destination read back and compared, and a manifest (hash, size, path per line) written next to
//! the destination so the cluster side can check the copy later without the source.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use crate::vocab::Hash;

pub use crate::content::hash_reader;

/// The hash of the file at `path`.
pub fn hash_file(path: &Path) -> io::Result<Hash> {
    hash_reader(File::open(path)?)
}

/// Lowercase hex, as written in the manifest.
pub fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a manifest atomically: a header line, then `hash<TAB>size<TAB>path` per file, by path.
pub fn write(path: &Path, entries: &mut [(PathBuf, u64, Hash)]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut out = File::create(&tmp)?;
    out.write_all(&render(entries))?;
    out.sync_all()?;
    std::fs::rename(tmp, path)
}

/// A manifest's bytes (see [`write()`]), its entries sorted by path.
pub fn render(entries: &mut [(PathBuf, u64, Hash)]) -> Vec<u8> {
    use std::fmt::Write as _;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("{HEADER_V2}\n");
    for (rel, size, hash) in entries.iter() {
        let _ = writeln!(out, "{}\t{size}\t{}", hex(hash), crate::end::names::escape(rel));
    }
    out.into_bytes()
}

/// The first line of a manifest whose paths are escaped ([`crate::end::names`]): a name with a newline
/// or bytes that are not UTF-8 broke a v1 manifest's lines or named another file.
const HEADER_V2: &str = "# softcopy manifest v2: blake3-128<TAB>size<TAB>path (escaped: \\\\ \\n \\t \\r \\xNN)";

/// Reads a manifest back: (path, size, hash hex) per line. A v1 manifest's paths are as written.
pub fn read(path: &Path) -> io::Result<Vec<(PathBuf, u64, String)>> {
    let text = std::fs::read_to_string(path)?;
    let escaped = text.lines().next() == Some(HEADER_V2);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(hash), Some(size), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("line {}: not hash, size, path", n + 1)));
        };
        let size = size
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("line {}: bad size {size:?}", n + 1)))?;
        let rel = if escaped { crate::end::names::unescape(rel) } else { PathBuf::from(rel) };
        out.push((rel, size, hash.to_owned()));
    }
    Ok(out)
}

/// Whether two files hold the same bytes.
pub fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    crate::content::same_bytes(File::open(a)?, File::open(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_hashes_are_content_hashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"hello").unwrap();
        let h = hash_file(&dir.path().join("a")).unwrap();
        assert_eq!(hex(&h), hex(&hash_reader(&b"hello"[..]).unwrap()));
        assert_ne!(h, hash_reader(&b"hellp"[..]).unwrap());
        let m = dir.path().join("m.tsv");
        write(&m, &mut [(PathBuf::from("c/0/1"), 5, h), (PathBuf::from("a"), 5, h)]).unwrap();
        let back = read(&m).unwrap();
        assert_eq!(back[0], (PathBuf::from("a"), 5, hex(&h)));
        assert_eq!(back[1].0, PathBuf::from("c/0/1"));
    }

    #[test]
    fn any_name_reads_back_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.tsv");
        #[cfg(unix)]
        let odd = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"c/bad\xff");
        #[cfg(not(unix))]
        let odd = std::ffi::OsStr::new("c/odd");
        let names = [PathBuf::from("new\nline"), PathBuf::from("back\\slash\ttab"), PathBuf::from(odd)];
        let mut entries: Vec<_> = names.iter().map(|n| (n.clone(), 1, [0u8; 16])).collect();
        write(&m, &mut entries).unwrap();
        let mut back: Vec<_> = read(&m).unwrap().into_iter().map(|e| e.0).collect();
        let mut want = names.to_vec();
        back.sort();
        want.sort();
        assert_eq!(back, want);
    }
}
