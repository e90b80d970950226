//! Container logs in the CRI format the kubelet reads:
//! `2016-10-06T00:17:09.669794202Z stdout F hello` (`P` marks a partial line),
//! with rotation by size (one old file, `<path>.1`, is kept).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Lines longer than this are split into partial (`P`) records.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Appends CRI-formatted records to a log file and rotates it by size.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
}

impl CriLogWriter {
    /// Open (append) `path`, creating parent directories. `max_size` 0 disables rotation.
    pub fn open(path: &Path, max_size: u64) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(CriLogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
        })
    }

    /// Write one record; `partial` marks a line continued by the next record.
    pub fn write_record(
        &mut self,
        stream: LogStream,
        partial: bool,
        line: &[u8],
    ) -> io::Result<()> {
        let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ");
        let mut rec = Vec::with_capacity(line.len() + 48);
        write!(
            rec,
            "{ts} {} {} ",
            stream.as_str(),
            if partial { 'P' } else { 'F' }
        )?;
        rec.extend_from_slice(line);
        rec.push(b'\n');
        if self.max_size > 0 && self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Splits a byte stream into CRI records: complete lines become `F` records, a
/// line that grows past [`MAX_LINE`] is flushed as `P` records.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; calls `emit(partial, line)` for each record ready.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(bool, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            if self.buf.is_empty() && line.len() <= MAX_LINE {
                emit(false, line)?;
            } else {
                self.buf.extend_from_slice(line);
                self.flush_partials(&mut emit)?;
                let whole = std::mem::take(&mut self.buf);
                emit(false, &whole)?;
            }
            rest = &tail[1..];
        }
        self.buf.extend_from_slice(rest);
        self.flush_partials(&mut emit)
    }

    /// Emit `P` records while more than [`MAX_LINE`] bytes are buffered.
    fn flush_partials(
        &mut self,
        emit: &mut impl FnMut(bool, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while self.buf.len() > MAX_LINE {
            let chunk: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
            emit(true, &chunk)?;
        }
        Ok(())
    }

    /// At end of stream: an unterminated last line is written as a full record.
    pub(crate) fn finish(
        &mut self,
        mut emit: impl FnMut(bool, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if !self.buf.is_empty() {
            let whole = std::mem::take(&mut self.buf);
            emit(false, &whole)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        for c in chunks {
            s.feed(c, |p, l| {
                out.push((p, l.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        s.finish(|p, l| {
            out.push((p, l.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let r = records(&[b"he", b"llo\nwor", b"ld\n\nend"]);
        assert_eq!(
            r,
            vec![
                (false, b"hello".to_vec()),
                (false, b"world".to_vec()),
                (false, b"".to_vec()),
                (false, b"end".to_vec())
            ]
        );
    }

    #[test]
    fn long_lines_become_partial() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut data = long.clone();
        data.push(b'\n');
        let r = records(&[&data]);
        assert_eq!(r.len(), 2);
        assert!(r[0].0);
        assert_eq!(r[0].1.len(), MAX_LINE);
        assert!(!r[1].0);
        assert_eq!(r[1].1.len(), 10);
    }

    #[test]
    fn long_lines_across_chunks() {
        let chunk = vec![b'y'; 10_000];
        let r = records(&[&chunk, &chunk, b"z\nnext\n"]);
        let lens: Vec<(bool, usize)> = r.iter().map(|(p, l)| (*p, l.len())).collect();
        assert_eq!(
            lens,
            vec![(true, MAX_LINE), (false, 20_001 - MAX_LINE), (false, 4)]
        );
    }

    #[test]
    fn writes_cri_format_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/0.log");
        let mut w = CriLogWriter::open(&path, 200).unwrap();
        w.write_record(LogStream::Stdout, false, b"hi").unwrap();
        w.write_record(LogStream::Stderr, true, b"err").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let (ts, rest) = lines[0].split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
        assert_eq!(rest, "stdout F hi");
        assert!(lines[1].ends_with(" stderr P err"));
        for i in 0..10 {
            w.write_record(LogStream::Stdout, false, format!("line {i}").as_bytes())
                .unwrap();
        }
        let rotated = dir.path().join("sub/0.log.1");
        assert!(rotated.exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        let cur = std::fs::read_to_string(&path).unwrap();
        assert!(cur.ends_with("stdout F line 9\n"));
    }
}
