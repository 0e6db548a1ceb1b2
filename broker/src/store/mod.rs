//! The journal: persistent messages and their acknowledgements, appended
//! to segment files by one writer that group-commits (one fsync for every
//! batch of waiting appends), replayed on start.

mod book;
mod record;

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use book::Book;
pub use record::Corruption;
use record::Record;
pub use record::StoredMessage;

/// A segment is closed and a new one begun past this size.
const SEGMENT_SIZE: u64 = 32 * 1024 * 1024;
/// Appends waiting at most, before senders wait (backpressure).
const QUEUE: usize = 4096;

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal segment {path} is corrupt at byte {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: Corruption,
    },
    #[error("cannot write the journal in {path}: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error("the journal writer has stopped")]
    Stopped,
}

/// A failed write, as every append of its batch learns of it.
#[derive(Debug, Clone)]
struct WriteFailure {
    path: PathBuf,
    detail: String,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Messages added and not acknowledged, in journal order.
    pub messages: Vec<StoredMessage>,
    /// One above the highest message id ever written.
    pub next_id: u64,
    /// A torn record at the tail was cut off.
    pub torn_tail: bool,
}

struct Append {
    records: Vec<Record>,
    /// Whether `done` waits for the fsync (else only for the write: the
    /// next fsync makes it durable).
    sync: bool,
    done: oneshot::Sender<Result<(), WriteFailure>>,
}

/// A handle to the journal writer; clones share it.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Append>,
    dir: PathBuf,
    /// Seconds each group commit took to write and fsync.
    fsync: Histogram,
}

/// Buckets of the fsync histogram, in seconds (100 µs to 1 s).
const FSYNC_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Journal {
    /// Replays the journal in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), JournalError> {
        Self::open_with(dir, SEGMENT_SIZE)
    }

    /// `open`, with segments of `segment_size` bytes.
    fn open_with(dir: &Path, segment_size: u64) -> Result<(Self, Recovered), JournalError> {
        let io = |source| JournalError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut state = Writer::replay(dir, segment_size)?;
        let recovered = state.recovered.take().unwrap_or_default();
        let (tx, rx) = mpsc::channel(QUEUE);
        let fsync = Histogram::new(FSYNC_BUCKETS);
        let timings = fsync.clone();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || state.run(rx, &timings))
            .map_err(io)?;
        let journal = Self {
            tx,
            dir: dir.to_owned(),
            fsync,
        };
        Ok((journal, recovered))
    }

    /// Bytes of the journal's segments on disk now.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// How long group commits took to write and fsync, in seconds.
    pub fn fsync_histogram(&self) -> Histogram {
        self.fsync.clone()
    }

    /// Queues a message for the writer (waiting only for room in its
    /// queue); the returned handle resolves once it is on disk. Appends
    /// complete in the order they were submitted.
    pub async fn add(&self, message: StoredMessage) -> Result<Durable, JournalError> {
        self.submit(vec![Record::Add(message)]).await
    }

    /// Queues the acknowledgement of messages `ids` (the journal's ids of
    /// messages it stored): once on disk, they are not replayed again.
    pub async fn acknowledge(&self, ids: Vec<u64>) -> Result<Durable, JournalError> {
        self.submit(ids.into_iter().map(|id| Record::Ack { id }).collect())
            .await
    }

    /// Like [`Journal::acknowledge`], for an acknowledgement nobody waits
    /// to hear is stored (an auto-acknowledged delivery, an ACK without a
    /// receipt): it resolves once written, and the next fsync makes it
    /// durable. A crash before that redelivers the messages; it loses
    /// nothing, and a lone consumer no longer costs an fsync per message.
    pub async fn acknowledge_lazily(&self, ids: Vec<u64>) -> Result<Durable, JournalError> {
        let records = ids.into_iter().map(|id| Record::Ack { id }).collect();
        self.append(records, false).await
    }

    /// A marker with no records: resolves once everything queued before it
    /// is written (and, for what asked for an fsync, synced: a batch is
    /// synced if anything in it asked).
    pub async fn marker(&self) -> Result<Durable, JournalError> {
        self.append(Vec::new(), false).await
    }

    /// Queues the replacement of stored message `from` by `to` (a message
    /// moved to a dead-letter queue), as one record.
    pub async fn replace(&self, from: u64, to: StoredMessage) -> Result<Durable, JournalError> {
        self.submit(vec![Record::Move { from, to }]).await
    }

    async fn submit(&self, records: Vec<Record>) -> Result<Durable, JournalError> {
        self.append(records, true).await
    }

    async fn append(&self, records: Vec<Record>, sync: bool) -> Result<Durable, JournalError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Append {
                records,
                sync,
                done,
            })
            .await
            .map_err(|_| JournalError::Stopped)?;
        Ok(Durable(wait))
    }
}

/// Records submitted to the journal, not yet known to be on disk.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Result<(), WriteFailure>>);

impl Durable {
    pub async fn wait(self) -> Result<(), JournalError> {
        self.await
    }
}

/// Waiting on it by reference (`&mut durable`) lets a task watch for new
/// work at the same time.
impl std::future::Future for Durable {
    type Output = Result<(), JournalError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(WriteFailure { path, detail })) => Err(JournalError::Write { path, detail }),
            Err(_) => Err(JournalError::Stopped),
        })
    }
}

/// The writer thread's state: the open segment and which segments still
/// hold unacknowledged messages.
struct Writer {
    dir: PathBuf,
    file: File,
    current: u64,
    current_size: u64,
    segment_size: u64,
    book: Book,
    /// Segments whose live messages could not be moved forward (logged
    /// once; they stay until their messages are acknowledged).
    stuck: BTreeSet<u64>,
    recovered: Option<Recovered>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.log"))
}

impl Writer {
    fn replay(dir: &Path, segment_size: u64) -> Result<Self, JournalError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| JournalError::Io { path, source }
        };
        let mut segments: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        segments.sort_unstable();
        let mut pending: Vec<StoredMessage> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut acked = 0usize;
        let mut book = Book::default();
        let mut next_id = 1;
        let mut torn_tail = false;
        let mut last_size = 0;
        for (i, &seg) in segments.iter().enumerate() {
            let path = segment_path(dir, seg);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(&path))?;
            let is_last = i + 1 == segments.len();
            let mut offset = 0;
            book.open(seg);
            while offset < bytes.len() {
                match Record::decode(&bytes[offset..]) {
                    Ok(Some((record, used))) => {
                        let (acknowledged, added) = record.into_parts();
                        if let Some(id) = acknowledged {
                            // An ack outlives its message's segment: new ids
                            // start past it too, so none is named twice.
                            next_id = next_id.max(id + 1);
                            book.acknowledge(id, seg);
                            if let Some(at) = index.remove(&id) {
                                pending[at].id = 0;
                                acked += 1;
                            }
                        }
                        if let Some(m) = added {
                            next_id = next_id.max(m.id + 1);
                            book.add(m.id, used as u64, seg);
                            match index.get(&m.id) {
                                // Moved forward by compaction: one message.
                                Some(&at) => pending[at] = m,
                                None => {
                                    index.insert(m.id, pending.len());
                                    pending.push(m);
                                }
                            }
                        }
                        offset += used;
                    }
                    Ok(None) | Err(_) if is_last => {
                        // A crash mid-write: cut the torn record off.
                        warn!(segment = %path.display(), offset, "journal tail is torn; cutting it off");
                        OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(offset as u64).and_then(|_| f.sync_all()))
                            .map_err(io(&path))?;
                        torn_tail = true;
                        break;
                    }
                    Ok(None) => {
                        return Err(JournalError::Corrupt {
                            path,
                            offset: offset as u64,
                            detail: Corruption::Truncated,
                        })
                    }
                    Err(detail) => {
                        return Err(JournalError::Corrupt {
                            path,
                            offset: offset as u64,
                            detail,
                        })
                    }
                }
            }
            if is_last {
                last_size = offset as u64;
            }
        }
        pending.retain(|m| m.id != 0);
        if !pending.is_empty() || acked > 0 {
            info!(
                messages = pending.len(),
                acknowledged = acked,
                "journal replayed"
            );
        }
        let current = segments.last().copied().unwrap_or(1);
        let path = segment_path(dir, current);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        book.open(current);
        let mut writer = Self {
            dir: dir.to_owned(),
            file,
            current,
            current_size: last_size,
            segment_size,
            book,
            stuck: BTreeSet::new(),
            recovered: Some(Recovered {
                messages: pending,
                next_id,
                torn_tail,
            }),
        };
        writer.reclaim();
        Ok(writer)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Append>, fsync: &Histogram) {
        let mut buf = Vec::with_capacity(1024 * 1024);
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            // Group commit: everything already waiting goes in this fsync.
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            buf.clear();
            let mut lengths = Vec::new();
            for append in &batch {
                for record in &append.records {
                    let before = buf.len();
                    record.encode(&mut buf);
                    lengths.push((buf.len() - before) as u64);
                }
            }
            let sync = batch.iter().any(|a| a.sync);
            let started = std::time::Instant::now();
            let result = self.write(&buf, sync);
            if sync {
                fsync.observe(started.elapsed().as_secs_f64());
            }
            let result = result.map_err(|e| WriteFailure {
                path: segment_path(&self.dir, self.current),
                detail: e.to_string(),
            });
            if result.is_ok() {
                let records = batch.iter().flat_map(|a| &a.records);
                for (record, len) in records.zip(lengths) {
                    self.account(record, len);
                }
                self.reclaim();
                self.compact();
            }
            for append in batch {
                let _ = append.done.send(result.clone());
            }
        }
    }

    /// Appends `bytes`, fsynced when `sync` (a segment that fills up is
    /// fsynced whatever it holds).
    fn write(&mut self, bytes: &[u8], sync: bool) -> std::io::Result<()> {
        if self.current_size > 0 && self.current_size + bytes.len() as u64 > self.segment_size {
            self.file.sync_data()?;
            self.current += 1;
            self.current_size = 0;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, self.current))?;
            self.book.open(self.current);
            // The new segment's directory entry must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
        }
        self.file.write_all(bytes)?;
        if sync {
            self.file.sync_data()?;
        }
        self.current_size += bytes.len() as u64;
        Ok(())
    }

    fn account(&mut self, record: &Record, len: u64) {
        let (acknowledged, added) = match record {
            Record::Add(m) => (None, Some(m.id)),
            Record::Ack { id } => (Some(*id), None),
            Record::Move { from, to } => (Some(*from), Some(to.id)),
        };
        if let Some(id) = acknowledged {
            self.book.acknowledge(id, self.current);
        }
        if let Some(id) = added {
            self.book.add(id, len, self.current);
        }
    }

    /// Deletes every segment (but the current one) whose messages are all
    /// acknowledged and whose acks refer only to segments already gone.
    fn reclaim(&mut self) {
        while let Some(seg) = self.book.free(self.current) {
            let path = segment_path(&self.dir, seg);
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(segment = %path.display(), error = %e, "cannot delete a consumed journal segment");
                return;
            }
            self.book.forget(seg);
        }
    }

    /// Moves the live messages of old, mostly consumed segments forward
    /// into the current one, so a few long-lived messages (a dead-letter
    /// queue, a slow consumer) do not pin whole segments: the journal stays
    /// near its live data plus a segment or two. A segment is compacted
    /// once it is two behind and its live records are under a quarter of
    /// a segment, so what is moved is bounded by the traffic that passed.
    fn compact(&mut self) {
        loop {
            let limit = self.segment_size / 4;
            let Some(seg) = self
                .book
                .live
                .iter()
                .find(|(&seg, &(n, bytes))| {
                    n > 0 && seg + 1 < self.current && bytes < limit && !self.stuck.contains(&seg)
                })
                .map(|(&seg, _)| seg)
            else {
                return;
            };
            if let Err(e) = self.move_forward(seg) {
                warn!(segment = %segment_path(&self.dir, seg).display(), error = %e, "cannot compact a journal segment; it stays");
                self.stuck.insert(seg);
                return;
            }
            self.reclaim();
        }
    }

    /// Writes the live messages of segment `seg` again at the end of the
    /// journal; `seg` then holds none.
    fn move_forward(&mut self, seg: u64) -> std::io::Result<()> {
        let bytes = std::fs::read(segment_path(&self.dir, seg))?;
        let mut offset = 0;
        let mut out = Vec::new();
        let mut moved = Vec::new();
        while let Ok(Some((record, used))) = Record::decode(&bytes[offset..]) {
            offset += used;
            if let (_, Some(m)) = record.into_parts() {
                if self.book.lives_in(m.id, seg) {
                    let before = out.len();
                    let id = m.id;
                    Record::Add(m).encode(&mut out);
                    moved.push((id, (out.len() - before) as u64));
                }
            }
        }
        if moved.is_empty() {
            return Err(std::io::Error::other(
                "its live messages were not found in it",
            ));
        }
        self.write(&out, true)?;
        for (id, len) in moved {
            self.book.add(id, len, self.current);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, body: &str) -> StoredMessage {
        StoredMessage {
            id,
            destination: "/queue/q".into(),
            headers: vec![("persistent".into(), "true".into())],
            body: body.as_bytes().to_vec(),
            sender: None,
        }
    }

    #[tokio::test]
    async fn replays_what_was_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (journal, recovered) = Journal::open(dir.path()).unwrap();
            assert!(recovered.messages.is_empty());
            for i in 1..=5 {
                journal
                    .add(message(i, "m"))
                    .await
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
            }
            journal
                .acknowledge(vec![2, 4])
                .await
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        let (_journal, recovered) = Journal::open(dir.path()).unwrap();
        let ids: Vec<u64> = recovered.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 3, 5]);
        assert_eq!(recovered.next_id, 6);
    }

    #[test]
    fn a_torn_last_record_is_cut_at_every_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        Record::Add(message(1, "first")).encode(&mut bytes);
        Record::Add(message(2, "second")).encode(&mut bytes);
        let intact = bytes.len();
        Record::Add(message(3, "third, torn")).encode(&mut bytes);
        for cut in intact..bytes.len() {
            let path = segment_path(dir.path(), 1);
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut writer = Writer::replay(dir.path(), SEGMENT_SIZE).unwrap();
            let recovered = writer.recovered.take().unwrap();
            let ids: Vec<u64> = recovered.messages.iter().map(|m| m.id).collect();
            assert_eq!(ids, vec![1, 2], "cut at {cut}");
            assert_eq!(recovered.torn_tail, cut > intact);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), intact as u64);
        }
    }

    /// A message moved (to a dead-letter queue) is one record: a crash at
    /// any byte of it leaves the original, and after it only the moved one.
    #[test]
    fn a_move_is_all_or_nothing_at_every_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        Record::Add(message(1, "first")).encode(&mut bytes);
        Record::Add(message(2, "to be moved")).encode(&mut bytes);
        let intact = bytes.len();
        let mut moved = message(3, "to be moved");
        moved.destination = "/queue/ActiveMQ.DLQ".into();
        Record::Move { from: 2, to: moved }.encode(&mut bytes);
        for cut in intact..=bytes.len() {
            let path = segment_path(dir.path(), 1);
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut writer = Writer::replay(dir.path(), SEGMENT_SIZE).unwrap();
            let recovered = writer.recovered.take().unwrap();
            let found: Vec<(u64, &str)> = recovered
                .messages
                .iter()
                .map(|m| (m.id, m.destination.as_str()))
                .collect();
            if cut == bytes.len() {
                assert_eq!(found, [(1, "/queue/q"), (3, "/queue/ActiveMQ.DLQ")]);
                assert_eq!(recovered.next_id, 4);
            } else {
                assert_eq!(found, [(1, "/queue/q"), (2, "/queue/q")], "cut at {cut}");
            }
        }
    }

    #[test]
    fn corruption_before_the_tail_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        Record::Add(message(1, "first")).encode(&mut bytes);
        bytes[12] ^= 0xff;
        std::fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let mut later = Vec::new();
        Record::Add(message(2, "second")).encode(&mut later);
        std::fs::write(segment_path(dir.path(), 2), &later).unwrap();
        let err = Writer::replay(dir.path(), SEGMENT_SIZE).err().unwrap();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn a_segment_outlives_the_messages_its_acks_acknowledge() {
        let dir = tempfile::tempdir().unwrap();
        // 1: an old message never consumed; 2: a message; 3: the ack of
        // 2's message, a message and its ack; 4: the current segment.
        let mut one = Vec::new();
        Record::Add(message(1, "pinned")).encode(&mut one);
        std::fs::write(segment_path(dir.path(), 1), &one).unwrap();
        let mut two = Vec::new();
        Record::Add(message(2, "b")).encode(&mut two);
        std::fs::write(segment_path(dir.path(), 2), &two).unwrap();
        let mut three = Vec::new();
        Record::Ack { id: 2 }.encode(&mut three);
        Record::Add(message(3, "c")).encode(&mut three);
        Record::Ack { id: 3 }.encode(&mut three);
        std::fs::write(segment_path(dir.path(), 3), &three).unwrap();
        std::fs::write(segment_path(dir.path(), 4), b"").unwrap();
        let mut writer = Writer::replay(dir.path(), SEGMENT_SIZE).unwrap();
        // 1 is pinned by its live message; 2 is consumed and acked in 3, so
        // it goes, and then 3 (whose acks pointed only into 2) goes too,
        // although 1 is still there.
        assert!(segment_path(dir.path(), 1).exists());
        assert!(!segment_path(dir.path(), 2).exists());
        assert!(!segment_path(dir.path(), 3).exists());
        let ids: Vec<u64> = writer
            .recovered
            .take()
            .unwrap()
            .messages
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![1]);
        // Replaying again gives the same answer: nothing acknowledged came back.
        let mut again = Writer::replay(dir.path(), SEGMENT_SIZE).unwrap();
        let ids: Vec<u64> = again
            .recovered
            .take()
            .unwrap()
            .messages
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![1]);
    }

    /// Ten long-lived messages, each followed by many segments of consumed
    /// traffic: compaction moves them forward, so the journal stays at a
    /// few segments instead of one pinned segment each, and a restart
    /// finds each of them once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_lived_messages_do_not_pin_segments() {
        const SEGMENT: u64 = 16 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let size_of = |dir: &Path| -> (usize, u64) {
            let files: Vec<u64> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .collect();
            (files.len(), files.iter().sum())
        };
        let body = "x".repeat(1024);
        let mut id = 0;
        let mut peak = (0, 0);
        {
            let (journal, _) = Journal::open_with(dir.path(), SEGMENT).unwrap();
            for _ in 0..10 {
                id += 1;
                let pinned = message(id, "pinned");
                journal.add(pinned).await.unwrap().wait().await.unwrap();
                // 100 KiB of traffic, consumed: six segments' worth.
                let mut consumed = Vec::new();
                let mut waits = Vec::new();
                for _ in 0..100 {
                    id += 1;
                    consumed.push(id);
                    waits.push(journal.add(message(id, &body)).await.unwrap());
                }
                for w in waits {
                    w.wait().await.unwrap();
                }
                journal
                    .acknowledge(consumed)
                    .await
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
                let now = size_of(dir.path());
                peak = (peak.0.max(now.0), peak.1.max(now.1));
            }
        }
        // Without compaction: ten pinned segments (160 KiB and more).
        assert!(peak.0 <= 5, "{} segments at the most", peak.0);
        assert!(peak.1 <= 5 * SEGMENT + 4096, "{} bytes at the most", peak.1);
        let (_journal, recovered) = Journal::open_with(dir.path(), SEGMENT).unwrap();
        let pinned: Vec<&str> = recovered
            .messages
            .iter()
            .map(|m| std::str::from_utf8(&m.body).unwrap())
            .collect();
        assert_eq!(pinned, ["pinned"; 10]);
        let ids: Vec<u64> = recovered.messages.iter().map(|m| m.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn consumed_segments_are_deleted_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Vec::new();
        Record::Add(message(1, "a")).encode(&mut a);
        std::fs::write(segment_path(dir.path(), 1), &a).unwrap();
        let mut b = Vec::new();
        Record::Add(message(2, "b")).encode(&mut b);
        Record::Ack { id: 1 }.encode(&mut b);
        std::fs::write(segment_path(dir.path(), 2), &b).unwrap();
        let mut c = Vec::new();
        Record::Ack { id: 2 }.encode(&mut c);
        std::fs::write(segment_path(dir.path(), 3), &c).unwrap();
        let _writer = Writer::replay(dir.path(), SEGMENT_SIZE).unwrap();
        assert!(!segment_path(dir.path(), 1).exists());
        assert!(!segment_path(dir.path(), 2).exists());
        assert!(
            segment_path(dir.path(), 3).exists(),
            "the current segment stays"
        );
        // Only an ack is left of message 2: a restart still numbers past it.
        let mut again = Writer::replay(dir.path(), SEGMENT_SIZE).unwrap();
        assert_eq!(again.recovered.take().unwrap().next_id, 3);
    }
}
