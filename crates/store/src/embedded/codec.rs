//! On-disk encoding shared by the WAL and snapshots.
//!
//! Both files are a magic header followed by *frames*:
//! `[len: u32 LE][crc32: u32 LE][payload: len bytes]`, where the checksum covers
//! the length bytes and the payload. Frame payloads are made of little-endian
//! integers and length-prefixed byte strings.

use bytes::Bytes;

use crate::Revision;

/// Size of a frame header (length + checksum).
pub(crate) const FRAME_HEADER: usize = 8;

/// Upper bound on a frame's payload; anything larger is treated as garbage.
pub(crate) const MAX_FRAME: u32 = 1 << 30;

/// Why a byte string could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("unexpected end of data")]
    Truncated,
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Checksum of a frame: covers the length field and the payload.
pub(crate) fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one frame holding `payload` to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME && *len > 0)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Parses a frame header into `(len, crc)`.
pub(crate) fn parse_header(header: &[u8; FRAME_HEADER]) -> (u32, u32) {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (len, crc)
}

/// Little-endian writer helpers over a `Vec<u8>`.
pub(crate) trait PutExt {
    fn put_u8(&mut self, v: u8);
    fn put_u32(&mut self, v: u32);
    fn put_i64(&mut self, v: i64);
    /// A `u32` length followed by the bytes.
    fn put_blob(&mut self, v: &[u8]) -> std::io::Result<()>;
}

impl PutExt for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_blob(&mut self, v: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(v.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "value too large")
        })?;
        self.put_u32(len);
        self.extend_from_slice(v);
        Ok(())
    }
}

/// A cursor decoding little-endian values from a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn blob(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.blob()?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid("utf-8 key"))
    }

    /// A blob copied into its own allocation, so the source buffer can be freed.
    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.blob()?))
    }
}

/// One logged mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WalOp {
    Put {
        revision: Revision,
        create_revision: Revision,
        key: String,
        value: Bytes,
    },
    Delete {
        revision: Revision,
        key: String,
    },
    Compact {
        revision: Revision,
    },
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_COMPACT: u8 = 3;
const BATCH_V1: u8 = 1;

/// Encodes a batch of operations as one complete frame (header included), ready
/// to append to the WAL.
pub(crate) fn encode_batch_frame(ops: &[WalOp]) -> std::io::Result<Vec<u8>> {
    let size: usize = ops
        .iter()
        .map(|op| match op {
            WalOp::Put { key, value, .. } => 25 + key.len() + value.len(),
            WalOp::Delete { key, .. } => 13 + key.len(),
            WalOp::Compact { .. } => 9,
        })
        .sum();
    let mut out = Vec::with_capacity(FRAME_HEADER + 5 + size);
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    out.put_u8(BATCH_V1);
    let count = u32::try_from(ops.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "batch too large"))?;
    out.put_u32(count);
    for op in ops {
        match op {
            WalOp::Put {
                revision,
                create_revision,
                key,
                value,
            } => {
                out.put_u8(OP_PUT);
                out.put_i64(*revision);
                out.put_i64(*create_revision);
                out.put_blob(key.as_bytes())?;
                out.put_blob(value)?;
            }
            WalOp::Delete { revision, key } => {
                out.put_u8(OP_DELETE);
                out.put_i64(*revision);
                out.put_blob(key.as_bytes())?;
            }
            WalOp::Compact { revision } => {
                out.put_u8(OP_COMPACT);
                out.put_i64(*revision);
            }
        }
    }
    let len = u32::try_from(out.len() - FRAME_HEADER)
        .ok()
        .filter(|len| *len <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "batch too large"))?;
    let crc = frame_crc(len, &out[FRAME_HEADER..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes the payload of a frame written by [`encode_batch_frame`].
pub(crate) fn decode_batch(payload: &[u8]) -> Result<Vec<WalOp>, DecodeError> {
    let mut r = Reader::new(payload);
    if r.u8()? != BATCH_V1 {
        return Err(DecodeError::Invalid("batch version"));
    }
    let count = r.u32()? as usize;
    // Every op takes at least 9 bytes: bound the allocation by the payload size.
    let mut ops = Vec::with_capacity(count.min(payload.len() / 9));
    for _ in 0..count {
        let op = match r.u8()? {
            OP_PUT => WalOp::Put {
                revision: r.i64()?,
                create_revision: r.i64()?,
                key: r.string()?,
                value: r.bytes()?,
            },
            OP_DELETE => WalOp::Delete {
                revision: r.i64()?,
                key: r.string()?,
            },
            OP_COMPACT => WalOp::Compact { revision: r.i64()? },
            _ => return Err(DecodeError::Invalid("op tag")),
        };
        ops.push(op);
    }
    if !r.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes in batch"));
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let ops = vec![
            WalOp::Put {
                revision: 7,
                create_revision: 3,
                key: "/a/b".into(),
                value: Bytes::from_static(b"hello"),
            },
            WalOp::Delete {
                revision: 8,
                key: "/a/c".into(),
            },
            WalOp::Compact { revision: 5 },
        ];
        let frame = encode_batch_frame(&ops).unwrap();
        let header: [u8; FRAME_HEADER] = frame[..FRAME_HEADER].try_into().unwrap();
        let (len, crc) = parse_header(&header);
        assert_eq!(len as usize, frame.len() - FRAME_HEADER);
        assert_eq!(crc, frame_crc(len, &frame[FRAME_HEADER..]));
        assert_eq!(decode_batch(&frame[FRAME_HEADER..]).unwrap(), ops);
    }

    #[test]
    fn truncated_batch_is_an_error() {
        let ops = vec![WalOp::Delete {
            revision: 1,
            key: "k".into(),
        }];
        let frame = encode_batch_frame(&ops).unwrap();
        assert!(matches!(
            decode_batch(&frame[FRAME_HEADER..frame.len() - 1]),
            Err(DecodeError::Truncated)
        ));
    }

    #[test]
    fn frame_checksum_covers_length_and_payload() {
        let mut out = Vec::new();
        push_frame(&mut out, b"abc").unwrap();
        let header: [u8; FRAME_HEADER] = out[..FRAME_HEADER].try_into().unwrap();
        let (len, crc) = parse_header(&header);
        assert_eq!(len, 3);
        assert_eq!(crc, frame_crc(3, b"abc"));
        assert_ne!(crc, frame_crc(4, b"abc"));
        assert_ne!(crc, frame_crc(3, b"abd"));
    }

    #[test]
    fn empty_frames_are_rejected() {
        assert!(push_frame(&mut Vec::new(), b"").is_err());
    }
}
