//! A file's bytes, hashed and compared (`--checksum`, the proof by content): BLAKE3 truncated to
//! 128 bits, computed while a file is copied or read back. Shared by the destination (a copy
//! hashed on its way, read back) and the end steps (the manifest, freeing's proof). Imports `sys`
//! (the paced user-space copy) and `vocab` only.

use std::fs::File;
use std::io::{self, Read};

use crate::sys::Pacing;
use crate::vocab::Hash;

/// The hash of everything `reader` yields.
pub fn hash_reader(mut reader: impl Read) -> io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(truncate(&hasher))
}

/// The hash kept: BLAKE3's first 128 bits.
pub(crate) fn truncate(hasher: &blake3::Hasher) -> Hash {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// Copies `src` to `dst` in user space while hashing what passes through; returns (bytes, hash).
/// To the end of the file: the caller compares the bytes with the size it expected.
pub fn copy_hashed(src: &File, dst: &File, pace: &impl Pacing) -> io::Result<(u64, Hash)> {
    let mut hasher = blake3::Hasher::new();
    let bytes = crate::sys::read_write_seeing(src, dst, u64::MAX, pace, &mut |block| {
        hasher.update(block);
    })?;
    Ok((bytes, truncate(&hasher)))
}

/// Whether two readers yield the same bytes, read side by side in 1 MiB blocks.
pub fn same_bytes(mut a: impl Read, mut b: impl Read) -> io::Result<bool> {
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
