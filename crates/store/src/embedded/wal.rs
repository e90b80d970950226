//! Write-ahead log segments: `wal-<seq>.log` files holding group-commit frames.
//!
//! Recovery reads every frame; a damaged frame at the very end of the newest
//! segment is a torn write from a crash and is truncated away, while damage
//! followed by an intact frame (or in an older, sealed segment) is reported as
//! [`StoreError::Corrupt`].

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::codec::{decode_batch, frame_crc, parse_header, WalOp, FRAME_HEADER, MAX_FRAME};
use crate::{Result, StoreError};

/// First bytes of every WAL segment.
pub(crate) const WAL_MAGIC: &[u8; 8] = b"NVWAL001";

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";

/// File name of segment `seq`.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{PREFIX}{seq:020}{SUFFIX}")
}

/// WAL segments in `dir`, ordered by sequence number.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let seq = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(SUFFIX))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, entry.path()));
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// Makes directory entry changes (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment currently being appended to.
pub(crate) struct WalFile {
    file: File,
    pub(crate) seq: u64,
}

impl WalFile {
    /// Creates segment `seq` with its header, durably (file and directory entry).
    pub(crate) fn create(dir: &Path, seq: u64) -> std::io::Result<WalFile> {
        let path = dir.join(segment_name(seq));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        file.write_all(WAL_MAGIC)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(WalFile { file, seq })
    }

    /// Opens an existing, already validated segment for appending. A segment
    /// whose header was lost (`valid_len == 0`) gets it rewritten.
    pub(crate) fn open_append(path: &Path, seq: u64, valid_len: u64) -> std::io::Result<WalFile> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        if valid_len == 0 {
            file.set_len(0)?;
            file.write_all(WAL_MAGIC)?;
            file.sync_all()?;
        } else {
            file.seek(SeekFrom::Start(valid_len))?;
        }
        Ok(WalFile { file, seq })
    }

    /// Appends bytes (not yet durable).
    pub(crate) fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// Reads every intact frame of the segment at `path`, passing each batch to
/// `apply`, and returns the length of the valid prefix. In the newest segment
/// (`is_last`) a torn tail is truncated; anywhere else damage is `Corrupt`.
pub(crate) fn replay_segment(
    path: &Path,
    is_last: bool,
    mut apply: impl FnMut(Vec<WalOp>) -> Result<()>,
) -> Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let magic_len = WAL_MAGIC.len() as u64;

    if file_len < magic_len {
        return torn_tail(&file, path, is_last, 0, "incomplete segment header");
    }
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != WAL_MAGIC {
        if is_last && magic.iter().all(|b| *b == 0) {
            return torn_tail(&file, path, is_last, 0, "zeroed segment header");
        }
        return Err(StoreError::Corrupt(format!(
            "{}: not a WAL segment (bad magic)",
            path.display()
        )));
    }

    let mut pos = magic_len;
    let mut payload = Vec::new();
    loop {
        if pos == file_len {
            return Ok(pos);
        }
        let remaining = file_len - pos;
        if remaining < FRAME_HEADER as u64 {
            return torn_tail(&file, path, is_last, pos, "partial frame header");
        }
        let mut header = [0u8; FRAME_HEADER];
        reader.read_exact(&mut header)?;
        let (len, crc) = parse_header(&header);
        if len == 0 || len > MAX_FRAME || u64::from(len) > remaining - FRAME_HEADER as u64 {
            return torn_tail(&file, path, is_last, pos, "incomplete frame");
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload)?;
        let next = pos + FRAME_HEADER as u64 + u64::from(len);
        if frame_crc(len, &payload) != crc {
            if next < file_len && intact_frame_follows(&mut reader, file_len - next)? {
                return Err(StoreError::Corrupt(format!(
                    "{}: checksum mismatch at offset {pos} followed by intact data",
                    path.display()
                )));
            }
            return torn_tail(&file, path, is_last, pos, "checksum mismatch");
        }
        let ops = decode_batch(&payload).map_err(|e| {
            StoreError::Corrupt(format!("{}: frame at offset {pos}: {e}", path.display()))
        })?;
        apply(ops)?;
        pos = next;
    }
}

/// Whether the reader is positioned at a complete frame with a valid checksum.
fn intact_frame_follows(reader: &mut impl Read, remaining: u64) -> Result<bool> {
    if remaining < FRAME_HEADER as u64 {
        return Ok(false);
    }
    let mut header = [0u8; FRAME_HEADER];
    reader.read_exact(&mut header)?;
    let (len, crc) = parse_header(&header);
    if len == 0 || len > MAX_FRAME || u64::from(len) > remaining - FRAME_HEADER as u64 {
        return Ok(false);
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload)?;
    Ok(frame_crc(len, &payload) == crc)
}

/// Handles damage at `pos`: truncates the newest segment there, or fails.
fn torn_tail(file: &File, path: &Path, is_last: bool, pos: u64, what: &str) -> Result<u64> {
    if !is_last {
        return Err(StoreError::Corrupt(format!(
            "{}: {what} at offset {pos} in a sealed segment",
            path.display()
        )));
    }
    let len = file.metadata()?.len();
    tracing::warn!(
        path = %path.display(),
        offset = pos,
        dropped_bytes = len - pos,
        "WAL has a torn tail ({what}); truncating"
    );
    file.set_len(pos)?;
    file.sync_all()?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::super::codec::encode_batch_frame;
    use super::*;

    fn put(rev: i64) -> WalOp {
        WalOp::Put {
            revision: rev,
            create_revision: rev,
            key: format!("k{rev}"),
            value: bytes::Bytes::from(vec![b'v'; 40]),
        }
    }

    fn write_segment(dir: &Path, frames: &[Vec<u8>]) -> PathBuf {
        let mut wal = WalFile::create(dir, 1).unwrap();
        for f in frames {
            wal.append(f).unwrap();
        }
        wal.sync().unwrap();
        dir.join(segment_name(1))
    }

    fn replay_all(path: &Path, is_last: bool) -> Result<(u64, Vec<WalOp>)> {
        let mut ops = Vec::new();
        let len = replay_segment(path, is_last, |batch| {
            ops.extend(batch);
            Ok(())
        })?;
        Ok((len, ops))
    }

    #[test]
    fn replays_all_frames() {
        let dir = tempfile::tempdir().unwrap();
        let frames = vec![
            encode_batch_frame(&[put(1), put(2)]).unwrap(),
            encode_batch_frame(&[put(3)]).unwrap(),
        ];
        let path = write_segment(dir.path(), &frames);
        let (len, ops) = replay_all(&path, true).unwrap();
        assert_eq!(ops, vec![put(1), put(2), put(3)]);
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn half_written_frame_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let good = encode_batch_frame(&[put(1)]).unwrap();
        let torn = encode_batch_frame(&[put(2)]).unwrap();
        let half = torn[..torn.len() / 2].to_vec();
        let path = write_segment(dir.path(), &[good.clone(), half]);
        let (len, ops) = replay_all(&path, true).unwrap();
        assert_eq!(ops, vec![put(1)]);
        let expected = (WAL_MAGIC.len() + good.len()) as u64;
        assert_eq!(len, expected);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), expected);
    }

    #[test]
    fn bad_checksum_on_last_frame_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let good = encode_batch_frame(&[put(1)]).unwrap();
        let mut bad = encode_batch_frame(&[put(2)]).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let path = write_segment(dir.path(), &[good, bad]);
        let (_, ops) = replay_all(&path, true).unwrap();
        assert_eq!(ops, vec![put(1)]);
    }

    #[test]
    fn zero_filled_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let good = encode_batch_frame(&[put(1)]).unwrap();
        let path = write_segment(dir.path(), &[good, vec![0u8; 4096]]);
        let (_, ops) = replay_all(&path, true).unwrap();
        assert_eq!(ops, vec![put(1)]);
    }

    #[test]
    fn damage_before_intact_frame_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = encode_batch_frame(&[put(1)]).unwrap();
        first[FRAME_HEADER + 3] ^= 0x55;
        let second = encode_batch_frame(&[put(2)]).unwrap();
        let path = write_segment(dir.path(), &[first, second]);
        assert!(matches!(
            replay_all(&path, true),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn torn_tail_in_sealed_segment_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let good = encode_batch_frame(&[put(1)]).unwrap();
        let path = write_segment(dir.path(), &[good, vec![1, 2, 3]]);
        assert!(matches!(
            replay_all(&path, false),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn segments_are_listed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [3u64, 1, 2] {
            WalFile::create(dir.path(), seq).unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), b"x").unwrap();
        let seqs: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}
