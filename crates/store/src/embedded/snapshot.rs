//! Snapshots: the whole multi-version index at one revision, in
//! `snap-<revision>.snap`. Written to a temporary file, fsynced, renamed into
//! place and the directory fsynced, so a snapshot file is always complete.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{frame_crc, parse_header, push_frame, PutExt, Reader, FRAME_HEADER, MAX_FRAME};
use super::mvcc::{State, Version, Versions};
use super::value::Dictionaries;
use super::wal::sync_dir;
use crate::{Result, Revision, StoreError};

/// First bytes of every snapshot.
const SNAP_MAGIC: &[u8; 8] = b"NVSNAP01";
const PREFIX: &str = "snap-";
const SUFFIX: &str = ".snap";
/// Suffix of files being written; leftovers are deleted on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// File name of the snapshot at `revision`.
pub(crate) fn snapshot_name(revision: Revision) -> String {
    format!("{PREFIX}{revision:020}{SUFFIX}")
}

/// Snapshots in `dir`, ordered by revision.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<(Revision, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let rev = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(SUFFIX))
            .and_then(|digits| digits.parse::<Revision>().ok());
        if let Some(rev) = rev {
            out.push((rev, entry.path()));
        }
    }
    out.sort_by_key(|(rev, _)| *rev);
    Ok(out)
}

fn io_other(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg.to_owned())
}

/// Writes a snapshot of `entries` at `revision` durably; returns its path.
pub(crate) fn write_snapshot(
    dir: &Path,
    revision: Revision,
    compacted: Revision,
    entries: &[(Arc<str>, Versions)],
) -> std::io::Result<PathBuf> {
    let final_path = dir.join(snapshot_name(revision));
    let tmp_path = dir.join(format!("{}{TMP_SUFFIX}", snapshot_name(revision)));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp_path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(SNAP_MAGIC)?;

    let mut frame = Vec::new();
    let mut payload = Vec::with_capacity(24);
    payload.put_i64(revision);
    payload.put_i64(compacted);
    payload.put_i64(i64::try_from(entries.len()).map_err(|_| io_other("too many keys"))?);
    push_frame(&mut frame, &payload)?;
    out.write_all(&frame)?;

    for (key, versions) in entries {
        payload.clear();
        frame.clear();
        payload.put_blob(key.as_bytes())?;
        let vs = versions.as_slice();
        payload.put_u32(u32::try_from(vs.len()).map_err(|_| io_other("too many versions"))?);
        for v in vs {
            payload.put_i64(v.mod_revision);
            payload.put_i64(v.create_revision);
            match &v.value {
                Some(value) => {
                    // Snapshots hold raw values (the format predates
                    // in-memory compression).
                    let raw = value
                        .to_bytes()
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                    payload.put_u8(1);
                    payload.put_blob(&raw)?;
                }
                None => payload.put_u8(0),
            }
        }
        push_frame(&mut frame, &payload)?;
        out.write_all(&frame)?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path)?;
    sync_dir(dir)?;
    Ok(final_path)
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("snapshot {}: {what}", path.display()))
}

fn read_frame(reader: &mut impl Read, path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    let mut header = [0u8; FRAME_HEADER];
    reader
        .read_exact(&mut header)
        .map_err(|e| corrupt(path, format!("reading frame header: {e}")))?;
    let (len, crc) = parse_header(&header);
    if len == 0 || len > MAX_FRAME {
        return Err(corrupt(path, "bad frame length"));
    }
    buf.resize(len as usize, 0);
    reader
        .read_exact(buf)
        .map_err(|e| corrupt(path, format!("reading frame: {e}")))?;
    if frame_crc(len, buf) != crc {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok(())
}

/// Loads the snapshot at `path` into an empty `state`.
pub(crate) fn load_snapshot(path: &Path, state: &mut State, dicts: &Dictionaries) -> Result<()> {
    let file = File::open(path)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| corrupt(path, format!("reading header: {e}")))?;
    if &magic != SNAP_MAGIC {
        return Err(corrupt(path, "bad magic"));
    }
    let mut buf = Vec::new();
    read_frame(&mut reader, path, &mut buf)?;
    let mut r = Reader::new(&buf);
    let header = (|| Ok::<_, super::codec::DecodeError>((r.i64()?, r.i64()?, r.i64()?)))();
    let (revision, compacted, count) = header.map_err(|e| corrupt(path, e))?;
    if revision < 0 || compacted < 0 || compacted > revision || count < 0 {
        return Err(corrupt(path, "invalid header"));
    }
    for _ in 0..count {
        read_frame(&mut reader, path, &mut buf)?;
        let (key, versions) = decode_key(&buf, dicts).map_err(|e| corrupt(path, e))?;
        state.load_key(&key, versions);
    }
    let mut rest = [0u8; 1];
    if reader.read(&mut rest)? != 0 {
        return Err(corrupt(path, "trailing data"));
    }
    state.revision = revision;
    state.compacted = compacted;
    Ok(())
}

fn decode_key(
    buf: &[u8],
    dicts: &Dictionaries,
) -> Result<(String, Versions), super::codec::DecodeError> {
    use super::codec::DecodeError;
    let mut r = Reader::new(buf);
    let key = r.string()?;
    let n = r.u32()? as usize;
    let mut vs = Vec::with_capacity(n.min(buf.len() / 17));
    for _ in 0..n {
        let mod_revision = r.i64()?;
        let create_revision = r.i64()?;
        let value = match r.u8()? {
            0 => None,
            1 => Some(dicts.encode(&key, r.blob()?)),
            _ => return Err(DecodeError::Invalid("version tag")),
        };
        vs.push(Version {
            mod_revision,
            create_revision,
            value,
        });
    }
    if !r.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes in key record"));
    }
    let versions = if vs.len() == 1 {
        match vs.pop() {
            Some(only) => Versions::One(only),
            None => return Err(DecodeError::Invalid("empty version list")),
        }
    } else if vs.is_empty() {
        return Err(DecodeError::Invalid("empty version list"));
    } else {
        Versions::Many(vs)
    };
    Ok((key, versions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::value::StoredValue;
    use bytes::Bytes;

    #[test]
    fn snapshot_round_trips_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::new(0);
        let raw = |v: &'static [u8]| StoredValue::Raw(Bytes::from_static(v));
        state.apply_put("a", raw(b"1"), 1, 1);
        state.apply_put("b", raw(b"2"), 2, 2);
        state.apply_put("a", raw(b"3"), 1, 3);
        state.apply_delete("b", 4);
        let entries = state.snapshot_entries();
        let path = write_snapshot(dir.path(), 4, 1, &entries).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            snapshot_name(4)
        );

        let mut loaded = State::new(0);
        load_snapshot(&path, &mut loaded, &Dictionaries::new(3)).unwrap();
        assert_eq!(loaded.revision, 4);
        assert_eq!(loaded.compacted, 1);
        assert_eq!(
            loaded.get("a").unwrap().unwrap().value,
            Bytes::from_static(b"3")
        );
        assert!(loaded.get("b").unwrap().is_none());
        let old = loaded.range("a", "z", 2, 0).unwrap();
        assert_eq!(old.kvs.len(), 2);
        assert_eq!(old.kvs[0].value, Bytes::from_static(b"1"));
    }

    #[test]
    fn damaged_snapshot_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::new(0);
        state.apply_put("a", StoredValue::Raw(Bytes::from_static(b"value")), 1, 1);
        let path = write_snapshot(dir.path(), 1, 0, &state.snapshot_entries()).unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        let mut loaded = State::new(0);
        assert!(matches!(
            load_snapshot(&path, &mut loaded, &Dictionaries::new(3)),
            Err(StoreError::Corrupt(_))
        ));
    }
}
