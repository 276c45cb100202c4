//! Whether a shard file is whole (Zarr v3 `sharding_indexed`): its index where the codec puts it,
//! its checksum, and every chunk it points to inside the file. Verification asks it of every shard.

use std::fs;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

/// Where a shard keeps its index, and how to check it (Zarr v3 `sharding_indexed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardIndex {
    /// Inner chunks per shard: the index has one (offset, nbytes) pair of u64 for each.
    pub chunks: u64,
    /// `index_location: "end"` (the default) or `"start"`.
    pub at_end: bool,
    /// The index codecs end with `crc32c`: 4 bytes of CRC32C after the index.
    pub crc32c: bool,
}

impl ShardIndex {
    fn len(&self) -> u64 {
        self.chunks * 16 + if self.crc32c { 4 } else { 0 }
    }

    /// Checks that the file holds a whole shard: an index where the codec puts it, a matching
    /// CRC32C, and every chunk it points to inside the file. This is what an interrupted writer
    /// (acquire-zarr writes the index last) or a truncated copy fails.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let f = fs::File::open(path).map_err(|e| e.to_string())?;
        let size = f.metadata().map_err(|e| e.to_string())?.len();
        self.check_bytes(f, size)
    }

    /// [`ShardIndex::check`] of a file of `size` bytes opened as `f` (a copy at the destination,
    /// read through its storage: only the index is read).
    pub fn check_bytes(&self, mut f: impl std::io::Read + std::io::Seek, size: u64) -> Result<(), String> {
        use std::io::SeekFrom;
        let want = self.len();
        if size < want {
            return Err(format!("{size} bytes, too short for its {want}-byte index"));
        }
        f.seek(if self.at_end { SeekFrom::End(-(want as i64)) } else { SeekFrom::Start(0) })
            .map_err(|e| e.to_string())?;
        let mut index = vec![0u8; want as usize];
        f.read_exact(&mut index).map_err(|e| e.to_string())?;
        let entries = &index[..(self.chunks * 16) as usize];
        if self.crc32c {
            let stored = u32::from_le_bytes(index[entries.len()..].try_into().expect("4 bytes"));
            if crc32c::crc32c(entries) != stored {
                return Err("index checksum (CRC32C) does not match".into());
            }
        }
        for pair in entries.chunks_exact(16) {
            let offset = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
            let nbytes = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
            if offset == u64::MAX && nbytes == u64::MAX {
                continue; // an empty inner chunk (fill value)
            }
            if offset.checked_add(nbytes).is_none_or(|end| end > size) {
                return Err(format!("index points past the end of the file ({offset} + {nbytes} > {size})"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_file(dir: &Path, chunks: &[&[u8]], crc: bool, at_end: bool) -> PathBuf {
        let mut index = Vec::new();
        let mut data = Vec::new();
        let base = if at_end { 0 } else { chunks.len() as u64 * 16 + if crc { 4 } else { 0 } };
        for c in chunks {
            if c.is_empty() {
                index.extend(u64::MAX.to_le_bytes());
                index.extend(u64::MAX.to_le_bytes());
            } else {
                index.extend((base + data.len() as u64).to_le_bytes());
                index.extend((c.len() as u64).to_le_bytes());
                data.extend_from_slice(c);
            }
        }
        if crc {
            let sum = crc32c::crc32c(&index);
            index.extend(sum.to_le_bytes());
        }
        let file = if at_end { [data, index].concat() } else { [index, data].concat() };
        let path = dir.join("shard");
        fs::write(&path, file).unwrap();
        path
    }

    #[test]
    fn whole_shards_pass_and_broken_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        for (crc, at_end) in [(true, true), (false, true), (true, false)] {
            let shard = ShardIndex { chunks: 3, at_end, crc32c: crc };
            let p = shard_file(dir.path(), &[b"abcd", b"", b"efgh"], crc, at_end);
            assert_eq!(shard.check(&p), Ok(()), "crc {crc} at_end {at_end}");
        }
        let shard = ShardIndex { chunks: 3, at_end: true, crc32c: true };
        let p = shard_file(dir.path(), &[b"abcd", b"", b"efgh"], true, true);
        // A killed acquire-zarr writer: chunk data, no index.
        fs::write(&p, b"abcdefgh").unwrap();
        assert!(shard.check(&p).unwrap_err().contains("too short"));
        // One flipped bit in the index.
        let p = shard_file(dir.path(), &[b"abcd", b"", b"efgh"], true, true);
        let mut bytes = fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        fs::write(&p, &bytes).unwrap();
        assert!(shard.check(&p).unwrap_err().contains("CRC32C"));
        // Truncated data with an index that still claims it (no CRC to catch it).
        let unchecked = ShardIndex { chunks: 1, at_end: false, crc32c: false };
        let p = shard_file(dir.path(), &[b"abcdefgh"], false, false);
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 2]).unwrap();
        assert!(unchecked.check(&p).unwrap_err().contains("past the end"));
    }
}
