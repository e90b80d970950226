//! Values as the in-memory index holds them: zstd-compressed when that pays,
//! raw otherwise.
//!
//! Every live key keeps its value in memory for as long as it lives, so the
//! index compresses each value on its own (one zstd frame per value) once it
//! is at least [`MIN_COMPRESS_LEN`] bytes long. Values that do not shrink by
//! at least an eighth stay raw, so small or incompressible values cost nothing
//! to read. Readers always get the raw bytes back ([`StoredValue::to_bytes`]);
//! nothing outside the index sees the compressed form. The WAL and snapshots
//! keep raw values (the on-disk format is unchanged), so recovery compresses
//! again while loading.
//!
//! Objects of one kind share most of their bytes (field names, managed
//! fields, defaults), which one ~1 KiB value alone cannot exploit. So keys are
//! grouped by their first path segments ([`Dictionaries`]; for the API
//! server's `/registry/<group>/<resource>/...` keys, one group per resource),
//! and once a group has seen [`DICT_MIN_VALUES`] values, its first few values,
//! concatenated, become a raw-content zstd dictionary for the group's later
//! values. A dictionary is never replaced; values compressed with it keep it
//! alive.
//!
//! Compression and decompression reuse one zstd context per thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use zstd::zstd_safe::{self, CCtx, CDict, DCtx, DDict};

use crate::StoreError;

/// Values shorter than this are kept raw: a zstd frame's own overhead (about
/// a dozen bytes) would eat most of the gain.
pub(crate) const MIN_COMPRESS_LEN: usize = 128;

/// zstd level: 1 is the fastest; on ~1 KiB JSON objects higher levels gain
/// a few percent at a multiple of the cost.
const LEVEL: i32 = 1;

/// Largest value the index will decompress (a corrupt frame header must not
/// make it allocate without bound). Matches the WAL's frame limit.
const MAX_VALUE_LEN: u64 = 1 << 30;

/// Values of a group that make up its dictionary (its first ones).
const DICT_SAMPLES: usize = 4;
/// A group gets a dictionary once it has seen this many sample-sized values:
/// a dictionary costs about 100 KiB of zstd tables, which only pays off for
/// groups with many values (saving some 500 bytes each).
pub(crate) const DICT_MIN_VALUES: usize = 64;
/// Only values at least this long are taken as dictionary samples.
const MIN_SAMPLE_LEN: usize = 256;
/// Dictionary content is cut at this many bytes.
const MAX_DICT_LEN: usize = 16 << 10;
/// Most key groups tracked; keys of further groups are compressed without a
/// dictionary (bounds the memory of arbitrary key spaces).
const MAX_GROUPS: usize = 128;
/// First bytes of a zstd dictionary: content starting with them would not be
/// taken as raw content.
const DICT_MAGIC: [u8; 4] = [0x37, 0xa4, 0x30, 0xec];

thread_local! {
    static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
    /// Output buffer of the compressor, reused (a value is copied out of it
    /// into an exact-size allocation).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A raw-content dictionary, prepared for both directions.
pub(crate) struct Dictionary {
    cdict: CDict<'static>,
    ddict: DDict<'static>,
    len: usize,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("len", &self.len)
            .finish()
    }
}

impl Dictionary {
    /// Bytes zstd holds for this dictionary (both directions).
    #[cfg(test)]
    pub(crate) fn memory(&self) -> usize {
        self.cdict.sizeof() + self.ddict.sizeof()
    }

    /// Prepares `content` (e.g. a few sample values) as a dictionary.
    pub(crate) fn new(content: &[u8]) -> Option<Dictionary> {
        if content.is_empty() || content.starts_with(&DICT_MAGIC) {
            return None;
        }
        Some(Dictionary {
            cdict: CDict::try_create(content, LEVEL)?,
            ddict: DDict::try_create(content)?,
            len: content.len(),
        })
    }
}

/// One value in the index.
#[derive(Clone, Debug)]
pub(crate) enum StoredValue {
    /// The value as written.
    Raw(Bytes),
    /// A zstd frame (with the content size in its header) holding the value.
    Zstd(Bytes),
    /// A zstd frame compressed with a dictionary.
    ZstdDict(Arc<Dictionary>, Bytes),
}

impl StoredValue {
    /// Stores `value` compressed (without a dictionary) when it is long enough
    /// and compression saves at least an eighth; otherwise keeps an
    /// exact-size copy.
    pub(crate) fn from_slice(value: &[u8]) -> StoredValue {
        match compress(value, None) {
            Some(frame) => StoredValue::Zstd(frame),
            None => StoredValue::Raw(Bytes::copy_from_slice(value)),
        }
    }

    /// Like [`StoredValue::from_slice`], but keeps `value` itself (no copy)
    /// when it stays raw. For values whose buffer is already exact-size.
    pub(crate) fn from_bytes(value: Bytes) -> StoredValue {
        match compress(&value, None) {
            Some(frame) => StoredValue::Zstd(frame),
            None => StoredValue::Raw(value),
        }
    }

    /// Compresses `value` with `dict`, or without a dictionary if that fails.
    fn with_dictionary(value: &[u8], dict: Arc<Dictionary>) -> StoredValue {
        match compress(value, Some(&dict)) {
            Some(frame) => StoredValue::ZstdDict(dict, frame),
            None => StoredValue::from_slice(value),
        }
    }

    /// Whether the value is held compressed.
    #[cfg(test)]
    pub(crate) fn is_compressed(&self) -> bool {
        !matches!(self, StoredValue::Raw(_))
    }

    /// Whether the value is held compressed with a dictionary.
    #[cfg(test)]
    pub(crate) fn uses_dictionary(&self) -> bool {
        matches!(self, StoredValue::ZstdDict(..))
    }

    /// Bytes held in memory for this value (excluding bookkeeping and any
    /// dictionary).
    #[cfg(test)]
    pub(crate) fn stored_len(&self) -> usize {
        match self {
            StoredValue::Raw(b) | StoredValue::Zstd(b) | StoredValue::ZstdDict(_, b) => b.len(),
        }
    }

    /// The value as written. Cheap for raw values (shared), a decompression
    /// for compressed ones.
    pub(crate) fn to_bytes(&self) -> Result<Bytes, StoreError> {
        match self {
            StoredValue::Raw(b) => Ok(b.clone()),
            StoredValue::Zstd(frame) => decompress(frame, None),
            StoredValue::ZstdDict(dict, frame) => decompress(frame, Some(dict)),
        }
    }
}

/// Where a group of keys stands: collecting samples, or compressing with its
/// dictionary.
enum Group {
    Sampling { seen: usize, samples: Vec<Bytes> },
    Ready(Arc<Dictionary>),
}

/// Per-key-group dictionaries (see the module docs).
pub(crate) struct Dictionaries {
    /// Keys are grouped by their first `depth` path segments; 0 disables
    /// dictionaries.
    depth: usize,
    groups: RwLock<HashMap<Box<str>, Group>>,
}

impl Dictionaries {
    /// Groups keys by their first `depth` `/`-separated segments (0: no
    /// dictionaries).
    pub(crate) fn new(depth: usize) -> Dictionaries {
        Dictionaries {
            depth,
            groups: RwLock::new(HashMap::new()),
        }
    }

    /// The group of `key`: its prefix up to and including the `depth + 1`-th
    /// `/` (the first being the leading one), if the key goes on past it.
    fn group_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.depth == 0 {
            return None;
        }
        let (end, _) = key.match_indices('/').nth(self.depth)?;
        (end + 1 < key.len()).then(|| &key[..=end])
    }

    /// The index's form of `value` stored at `key`: compressed with the key
    /// group's dictionary once there is one, else as
    /// [`StoredValue::from_slice`] does. Early values of a group become its
    /// dictionary.
    pub(crate) fn encode(&self, key: &str, value: &[u8]) -> StoredValue {
        if value.len() < MIN_COMPRESS_LEN {
            return StoredValue::Raw(Bytes::copy_from_slice(value));
        }
        let Some(group) = self.group_of(key) else {
            return StoredValue::from_slice(value);
        };
        let ready = match self.groups.read().get(group) {
            Some(Group::Ready(dict)) => Some(Arc::clone(dict)),
            _ => None,
        };
        if let Some(dict) = ready {
            return StoredValue::with_dictionary(value, dict);
        }
        if value.len() < MIN_SAMPLE_LEN || value.starts_with(&DICT_MAGIC) {
            return StoredValue::from_slice(value);
        }
        let dict = self.sample(group, value);
        match dict {
            Some(dict) => StoredValue::with_dictionary(value, dict),
            None => StoredValue::from_slice(value),
        }
    }

    /// Records `value` as a sample of `group`; returns the group's dictionary
    /// if it has (or now has) one.
    fn sample(&self, group: &str, value: &[u8]) -> Option<Arc<Dictionary>> {
        let mut groups = self.groups.write();
        if !groups.contains_key(group) {
            if groups.len() >= MAX_GROUPS {
                return None;
            }
            groups.insert(
                group.into(),
                Group::Sampling {
                    seen: 0,
                    samples: Vec::new(),
                },
            );
        }
        let entry = groups.get_mut(group)?;
        let (seen, samples) = match entry {
            Group::Ready(dict) => return Some(Arc::clone(dict)),
            Group::Sampling { seen, samples } => (seen, samples),
        };
        *seen += 1;
        let total: usize = samples.iter().map(Bytes::len).sum();
        if samples.len() < DICT_SAMPLES && total < MAX_DICT_LEN {
            samples.push(Bytes::copy_from_slice(value));
        }
        if *seen < DICT_MIN_VALUES || samples.is_empty() {
            return None;
        }
        let mut content = Vec::with_capacity(total.min(MAX_DICT_LEN));
        for s in samples.iter() {
            let room = MAX_DICT_LEN.saturating_sub(content.len());
            content.extend_from_slice(&s[..s.len().min(room)]);
        }
        match Dictionary::new(&content) {
            Some(dict) => {
                let dict = Arc::new(dict);
                *entry = Group::Ready(Arc::clone(&dict));
                Some(dict)
            }
            None => {
                // zstd could not build it: start sampling this group afresh.
                *seen = 0;
                samples.clear();
                None
            }
        }
    }

    /// Number of groups with a dictionary (a diagnostic).
    #[cfg(test)]
    pub(crate) fn ready(&self) -> usize {
        self.groups
            .read()
            .values()
            .filter(|g| matches!(g, Group::Ready(_)))
            .count()
    }
}

/// Compresses `value` into an exact-size buffer, or `None` when it should stay
/// raw (too short, not worth it, or zstd failed).
fn compress(value: &[u8], dict: Option<&Dictionary>) -> Option<Bytes> {
    if value.len() < MIN_COMPRESS_LEN {
        return None;
    }
    CCTX.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.is_none() {
            *slot = Some(CCtx::try_create()?);
        }
        let cctx = slot.as_mut()?;
        SCRATCH.with(|scratch| {
            let mut out = scratch.try_borrow_mut().ok()?;
            out.clear();
            out.reserve(zstd_safe::compress_bound(value.len()));
            let n = match dict {
                Some(dict) => cctx.compress_using_cdict(&mut *out, value, &dict.cdict),
                None => cctx.compress(&mut *out, value, LEVEL),
            }
            .ok()?;
            // Keep it only if it saves at least an eighth.
            (n + value.len() / 8 <= value.len()).then(|| Bytes::copy_from_slice(&out[..n]))
        })
    })
}

/// Decompresses one frame written by [`compress`] (with the same dictionary).
fn decompress(frame: &[u8], dict: Option<&Dictionary>) -> Result<Bytes, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("compressed value: {what}"));
    let size = zstd_safe::get_frame_content_size(frame)
        .map_err(|_| corrupt("bad frame header"))?
        .ok_or_else(|| corrupt("no content size"))?;
    if size > MAX_VALUE_LEN {
        return Err(corrupt("content size too large"));
    }
    let size = size as usize;
    let mut out = Vec::with_capacity(size);
    DCTX.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| corrupt("decompressor busy"))?;
        if slot.is_none() {
            *slot = Some(DCtx::try_create().ok_or_else(|| corrupt("no zstd context"))?);
        }
        let dctx = slot.as_mut().ok_or_else(|| corrupt("no zstd context"))?;
        match dict {
            Some(dict) => dctx.decompress_using_ddict(&mut out, frame, &dict.ddict),
            None => dctx.decompress(&mut out, frame),
        }
        .map_err(|code| corrupt(zstd_safe::get_error_name(code)))
    })?;
    if out.len() != size {
        return Err(corrupt("length mismatch"));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_like(n: usize) -> Vec<u8> {
        let mut s = String::from("{\"kind\":\"ConfigMap\",\"data\":{");
        for i in 0..n {
            s.push_str(&format!("\"key-{i}\":\"value number {i}\","));
        }
        s.push_str("\"end\":\"\"}}");
        s.into_bytes()
    }

    #[test]
    fn compressible_value_round_trips_compressed() {
        let raw = json_like(50);
        let stored = StoredValue::from_slice(&raw);
        assert!(stored.is_compressed());
        assert!(stored.stored_len() * 2 < raw.len());
        assert_eq!(stored.to_bytes().unwrap(), Bytes::from(raw));
    }

    #[test]
    fn small_value_stays_raw() {
        let raw = b"{\"a\":1}";
        let stored = StoredValue::from_slice(raw);
        assert!(!stored.is_compressed());
        assert_eq!(stored.stored_len(), raw.len());
        assert_eq!(stored.to_bytes().unwrap(), Bytes::from_static(raw));
    }

    #[test]
    fn incompressible_value_stays_raw_and_is_shared() {
        // A xorshift byte stream does not compress.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let raw: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let bytes = Bytes::from(raw);
        let stored = StoredValue::from_bytes(bytes.clone());
        assert!(!stored.is_compressed());
        let back = stored.to_bytes().unwrap();
        assert_eq!(back, bytes);
        // Raw values are shared, not copied.
        assert_eq!(back.as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn value_starting_like_a_zstd_frame_round_trips() {
        // The flag, not the content, says whether a value is compressed.
        let mut raw = vec![0x28, 0xb5, 0x2f, 0xfd];
        raw.extend_from_slice(b"not really a frame");
        let stored = StoredValue::from_slice(&raw);
        assert!(!stored.is_compressed());
        assert_eq!(stored.to_bytes().unwrap(), Bytes::from(raw));
    }

    #[test]
    fn corrupt_frame_is_an_error_not_a_panic() {
        let stored = StoredValue::from_slice(&json_like(50));
        let StoredValue::Zstd(frame) = stored else {
            panic!("expected a compressed value");
        };
        let mut bad = frame.to_vec();
        let last = bad.len() - 1;
        bad.truncate(last);
        assert!(matches!(
            StoredValue::Zstd(Bytes::from(bad)).to_bytes(),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            StoredValue::Zstd(Bytes::from_static(b"garbage")).to_bytes(),
            Err(StoreError::Corrupt(_))
        ));
    }

    fn object(i: usize) -> Vec<u8> {
        format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"cm-{i}\",\"namespace\":\"default\",\"uid\":\"{:032x}\",\"labels\":{{\"app\":\"web\"}},\"managedFields\":[{{\"manager\":\"kubectl\",\"operation\":\"Update\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{{\"f:data\":{{\".\":{{}},\"f:config\":{{}}}}}}}}]}},\"data\":{{\"config\":\"replicas={i}\"}}}}",
            (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
        )
        .into_bytes()
    }

    #[test]
    fn dictionary_memory_is_bounded() {
        let content: Vec<u8> = (0..100).flat_map(object).take(MAX_DICT_LEN).collect();
        let dict = Dictionary::new(&content).unwrap();
        let bytes = dict.memory();
        eprintln!("dictionary of {} bytes holds {bytes} bytes", content.len());
        assert!(bytes <= 256 << 10, "{bytes}");
    }

    #[test]
    fn group_of_uses_leading_segments() {
        let d = Dictionaries::new(3);
        assert_eq!(
            d.group_of("/registry/core/configmaps/ns/cm-1"),
            Some("/registry/core/configmaps/")
        );
        assert_eq!(
            d.group_of("/registry/core/namespaces/default"),
            Some("/registry/core/namespaces/")
        );
        assert_eq!(d.group_of("/registry/core/configmaps/"), None);
        assert_eq!(d.group_of("/a/b"), None);
        assert_eq!(Dictionaries::new(0).group_of("/registry/core/x/y"), None);
    }

    #[test]
    fn group_dictionary_is_built_from_early_values_and_helps() {
        let d = Dictionaries::new(3);
        let key = |i: usize| format!("/registry/core/configmaps/default/cm-{i}");
        let early: Vec<StoredValue> = (0..DICT_MIN_VALUES)
            .map(|i| d.encode(&key(i), &object(i)))
            .collect();
        assert_eq!(d.ready(), 1);
        // The value that completed the count already uses the dictionary.
        assert!(early[DICT_MIN_VALUES - 1].uses_dictionary());
        assert!(!early[DICT_MIN_VALUES - 2].uses_dictionary());

        let raw = object(1000);
        let plain = StoredValue::from_slice(&raw);
        let with_dict = d.encode(&key(1000), &raw);
        assert!(with_dict.uses_dictionary());
        assert!(
            with_dict.stored_len() * 2 < plain.stored_len(),
            "dictionary: {} bytes, plain: {} bytes",
            with_dict.stored_len(),
            plain.stored_len()
        );
        assert_eq!(with_dict.to_bytes().unwrap(), Bytes::from(raw));
        for (i, v) in early.iter().enumerate() {
            assert_eq!(v.to_bytes().unwrap(), Bytes::from(object(i)));
        }
        // Another group has its own (not yet any) dictionary.
        let other = d.encode("/registry/core/secrets/default/s", &object(1));
        assert!(!other.uses_dictionary());
    }

    #[test]
    fn dictionaries_off_or_ungrouped_keys_compress_plainly() {
        let off = Dictionaries::new(0);
        for i in 0..DICT_MIN_VALUES + 1 {
            let v = off.encode("/registry/core/configmaps/default/x", &object(i));
            assert!(v.is_compressed() && !v.uses_dictionary());
        }
        let d = Dictionaries::new(3);
        for i in 0..DICT_MIN_VALUES + 1 {
            let v = d.encode("/short/key", &object(i));
            assert!(v.is_compressed() && !v.uses_dictionary());
        }
        assert_eq!(d.ready(), 0);
        // Small values stay raw whatever the group.
        assert!(!d
            .encode("/registry/core/configmaps/default/x", b"{}")
            .is_compressed());
    }

    #[test]
    fn many_threads_compress_independently() {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let raw = json_like(20 + t * 7 + i);
                        let stored = StoredValue::from_slice(&raw);
                        assert_eq!(stored.to_bytes().unwrap(), Bytes::from(raw));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
