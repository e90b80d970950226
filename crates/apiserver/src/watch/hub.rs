//! The watch hub: one thread that writes the live events of every watch handed
//! over by an HTTP/1.1 connection (see [`super::direct`]).
//!
//! A watch served through hyper costs a task wake-up per event and watcher:
//! the connection task polls the body, frames the chunk, encrypts and writes
//! it. With a thousand watchers the wake-ups of the two runtime workers, not
//! the writes, set the tail (the `watchfloor` baseline shows it:
//! `docs/performance.md`). The hub instead owns the socket and the TLS state
//! of each watch it serves and, when its resource's cache has news, walks the
//! watchers in turn: filter, frame, encrypt, one `writev` each, no wake-up
//! between them. Events that arrive while it is busy are joined into the next
//! chunk of each watcher.
//!
//! A socket that cannot take more keeps what is owed in rustls and in a
//! bounded buffer, retried on the next event or sweep. Sweeps (every
//! [`SWEEP`]) end watches at their deadline, send bookmarks, and notice
//! clients that went away.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;

use super::{Feed, BOOKMARK_EVERY};
use crate::watchcache::WatchCache;

/// How often the hub looks at deadlines, bookmarks and blocked sockets.
const SWEEP: Duration = Duration::from_millis(50);

/// How often it checks whether clients are still there.
const LIVENESS: Duration = Duration::from_secs(1);

/// Plaintext owed to one client beyond what rustls buffers; a client further
/// behind loses its watch (and resumes from its last resourceVersion).
const MAX_OWED: usize = 16 * 1024 * 1024;

/// How long an ended watch may take to write its last bytes before its
/// connection is dropped anyway (a client that stopped reading).
const CLOSING_GRACE: Duration = Duration::from_secs(30);

/// The chunk that ends a chunked body.
pub(super) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What goes before `len` bytes of data in a chunked body (and `\r\n`
/// after them). No data is no chunk: an empty one would end the body.
pub(super) fn chunk_head(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// A watch connection taken over from the runtime: its socket (non-blocking)
/// and its TLS session.
pub(super) struct Conn {
    pub sock: TcpStream,
    pub tls: rustls::ServerConnection,
}

enum Cmd {
    Add(Box<Entry>),
    /// The cache with this key has new events.
    Ready(usize),
}

/// The handle to the hub thread.
pub(super) struct Hub {
    tx: mpsc::Sender<Cmd>,
    /// The caches whose news the hub already hears of.
    notified: Mutex<Vec<usize>>,
}

impl Hub {
    /// Start the hub thread.
    pub fn start() -> io::Result<Arc<Hub>> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("watch-hub".into())
            .spawn(move || run(rx))?;
        Ok(Arc::new(Hub {
            tx,
            notified: Mutex::new(Vec::new()),
        }))
    }

    /// Hand over a watch whose response head and backlog are written. Called
    /// on the runtime (it may start the cache's notifier task).
    pub fn add(&self, feed: Box<Feed>, cache: &Arc<WatchCache>, conn: Conn) {
        let key = Arc::as_ptr(cache) as usize;
        self.notify_from(key, cache);
        let deadline = feed.deadline_at.into_std();
        let next_bookmark = feed
            .bookmarks_allowed
            .then(|| Instant::now() + BOOKMARK_EVERY);
        let mut tls = conn.tls;
        tls.set_buffer_limit(Some(64 * 1024));
        let entry = Entry {
            feed,
            key,
            sock: conn.sock,
            tls,
            owed: BytesMut::new(),
            deadline,
            next_bookmark,
            closing: None,
        };
        let _ = self.tx.send(Cmd::Add(Box::new(entry)));
    }

    /// Make sure a task tells the hub of every event of `cache`.
    fn notify_from(&self, key: usize, cache: &Arc<WatchCache>) {
        let mut notified = self.notified.lock();
        if notified.contains(&key) {
            return;
        }
        let Some(sub) = cache.subscribe(cache.last_revision()) else {
            return;
        };
        notified.push(key);
        let tx = self.tx.clone();
        let mut live = sub.live;
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        if tx.send(Cmd::Ready(key)).is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}

/// One watch served by the hub.
struct Entry {
    feed: Box<Feed>,
    key: usize,
    sock: TcpStream,
    tls: rustls::ServerConnection,
    /// Plaintext rustls could not take yet (its buffer is full).
    owed: BytesMut,
    deadline: Instant,
    next_bookmark: Option<Instant>,
    /// The body has ended (since then); the connection closes once
    /// everything is written.
    closing: Option<Instant>,
}

/// What to do with an entry after serving it.
#[derive(PartialEq)]
enum Keep {
    Yes,
    No,
}

impl Entry {
    /// Write every live event waiting for this watcher.
    fn pump(&mut self) -> Keep {
        if self.closing.is_none() {
            if let Some(b) = self.feed.ready_chunk() {
                self.queue_chunk(&b);
            }
            if self.feed.done {
                self.finish();
            }
        }
        self.flush()
    }

    /// Deadlines, bookmarks, a blocked socket, and (when `check`) whether the
    /// client is still there.
    fn sweep(&mut self, now: Instant, check: bool) -> Keep {
        if check && !self.alive() {
            return Keep::No;
        }
        if self
            .closing
            .is_some_and(|since| now.duration_since(since) > CLOSING_GRACE)
        {
            return Keep::No;
        }
        if self.closing.is_none() {
            if now >= self.deadline {
                self.finish();
            } else if self.next_bookmark.is_some_and(|t| now >= t) {
                self.next_bookmark = Some(now + BOOKMARK_EVERY);
                let b = self.feed.w.bookmark(self.feed.w.last_revision, false);
                self.queue_chunk(&b);
            }
        }
        if self.closing.is_some() || self.tls.wants_write() || !self.owed.is_empty() {
            return self.flush();
        }
        Keep::Yes
    }

    /// `data` as one chunk of the body: one TLS record run, when rustls has room.
    fn queue_chunk(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let head = chunk_head(data.len());
        self.queue(&[head.as_bytes(), data, b"\r\n"]);
    }

    fn queue(&mut self, parts: &[&[u8]]) {
        let mut taken = 0;
        if self.owed.is_empty() {
            let slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
            taken = self.tls.writer().write_vectored(&slices).unwrap_or(0);
        }
        for p in parts {
            let skip = taken.min(p.len());
            taken -= skip;
            self.owed.extend_from_slice(&p[skip..]);
        }
    }

    /// End the body and the TLS session.
    fn finish(&mut self) {
        self.queue(&[LAST_CHUNK]);
        self.closing = Some(Instant::now());
    }

    /// Write what rustls holds and what is owed, as far as the socket takes it.
    fn flush(&mut self) -> Keep {
        loop {
            while self.tls.wants_write() {
                match self.tls.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return self.blocked();
                    }
                    Err(_) => return Keep::No,
                }
            }
            if self.owed.is_empty() {
                break;
            }
            match self.tls.writer().write(&self.owed) {
                Ok(0) | Err(_) => return Keep::No,
                Ok(n) => self.owed.advance(n),
            }
        }
        if self.closing.is_some() {
            // Everything is out: say goodbye and close.
            self.tls.send_close_notify();
            while self.tls.wants_write() {
                if self.tls.write_tls(&mut self.sock).is_err() {
                    break;
                }
            }
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            return Keep::No;
        }
        Keep::Yes
    }

    fn blocked(&self) -> Keep {
        if self.owed.len() > MAX_OWED {
            tracing::debug!("watch client too far behind; closing its watch");
            return Keep::No;
        }
        Keep::Yes
    }

    /// Read whatever the client sent (nothing is expected but its goodbye).
    fn alive(&mut self) -> bool {
        loop {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => return false,
                Ok(_) => {
                    if self.tls.process_new_packets().is_err() {
                        return false;
                    }
                    let mut buf = [0u8; 1024];
                    loop {
                        match self.tls.reader().read(&mut buf) {
                            Ok(0) => return false,
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => return false,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// The hub thread: serve watches until every handle is gone.
fn run(rx: mpsc::Receiver<Cmd>) {
    let mut groups: HashMap<usize, Vec<Box<Entry>>> = HashMap::new();
    let mut ready: Vec<usize> = Vec::new();
    let mut next_sweep = Instant::now() + SWEEP;
    let mut next_check = Instant::now() + LIVENESS;
    loop {
        let wait = next_sweep.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(cmd) => Some(cmd),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for cmd in first.into_iter().chain(rx.try_iter()) {
            let key = match cmd {
                Cmd::Add(mut e) => {
                    let key = e.key;
                    if e.pump() == Keep::Yes {
                        groups.entry(key).or_default().push(e);
                    }
                    continue;
                }
                Cmd::Ready(key) => key,
            };
            if !ready.contains(&key) {
                ready.push(key);
            }
        }
        for key in ready.drain(..) {
            if let Some(group) = groups.get_mut(&key) {
                group.retain_mut(|e| e.pump() == Keep::Yes);
            }
        }
        let now = Instant::now();
        if now >= next_sweep {
            let check = now >= next_check;
            if check {
                next_check = now + LIVENESS;
            }
            for group in groups.values_mut() {
                group.retain_mut(|e| e.sweep(now, check) == Keep::Yes);
            }
            groups.retain(|_, g| !g.is_empty());
            next_sweep = now + SWEEP;
        }
    }
}
