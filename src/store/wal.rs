//! The retained values' write-ahead log, in front of sled (`<db>/wal/`).
//!
//! A batch of retained writes is durable once its record is on the disk: one write per
//! group commit, a few hundred instructions per write. The log's files are **written
//! before they are used** (zeros, then `fdatasync`, growing by doubling) and **recycled**
//! (a checkpointed file becomes the next generation's), so a commit overwrites blocks the
//! file system has already allocated and sized: no block allocation, no change of the
//! file's size, nothing but the data to write. On Linux the log is opened with
//! `O_DIRECT`, and a commit is one `pwrite` of the blocks it touches (the last, partial
//! block rewritten with what it held), which returns once the device has the data;
//! elsewhere, or where the file system refuses `O_DIRECT`, a buffered write and a
//! `sync_file_range` (an `fdatasync` off Linux). Either survives `kill -9`. With
//! [`LogSync::Every`] (`[store] sync = "periodic"`), a commit is a buffered write alone —
//! the records survive a crash of the process, not one of the operating system — and
//! [`Wal::sync`] brings them to the disk at most the interval later. Against a
//! power cut it holds on a file system that overwrites in place (ext4, xfs) and a device
//! that keeps what it acknowledged; no cache flush is issued per commit, so a device with
//! a volatile write cache may lose the last commits (an `fdatasync` per commit measured
//! 2.3× slower), a copy-on-write file system (btrfs, ZFS) allocates on every overwrite,
//! and a power cut that tears the rewrite of a partial block can take the acknowledged
//! records already in that block with it. sled gets the writes later, in a
//! **checkpoint**: the latest op of each topic since the last one (a thing written a
//! thousand times is inserted once), applied and flushed together with the number of the
//! log file it covers; then that file is kept as the spare for the next generation (or
//! deleted if one is kept already). Why: sled's `apply_batch` + `flush` cost ~10k
//! instructions per write and ~0.27 ms per commit, on the path of every acknowledgement
//! (BENCHMARKS.md, "Why durable PUTs stay below their targets").
//!
//! Files are `retained-<generation>.log`, one generation between two checkpoints, and
//! `spare.log`. At open, the generations above the last one checkpointed into sled are
//! read back in order (a torn record at the end of the newest — a write cut by a crash,
//! never acknowledged — ends it); older ones are retired (one kept as the spare, the
//! others removed). An earlier ponte reads neither `.log` files nor the spare: going back
//! to one loses what the log held beyond the last checkpoint.
//!
//! Records are written at the log's length: a write that fails leaves the length where it
//! was, so the next record overwrites whatever the failed one left, and no torn record is
//! ever followed by good ones (replay stops at the first bad record). A record whose write
//! failed — refused to its writers — is made unreadable. Each commit ends with [`END`]
//! zeros in the same write (a length of 0 ends the log), so what a file held past them —
//! a recycled file's older records, payloads that clients chose, what a failed write
//! left — is never read; and a record's checksum covers its generation, so a record of an
//! earlier use of the file never passes for one of this generation.
//!
//! Record: `length u32 | crc32 u32 (of the generation, u64, and the body) | body`, body =
//! ops, each `0x01 | topic u16+bytes | value u32+bytes` (a put, value as
//! [`encode_value`]) or `0x02 | topic u16+bytes` (a delete); integers big-endian. A batch
//! larger than [`RECORD_MAX`] is written as several records.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{decode_value, encode_value, RetainedOp, StoreError};
use crate::model::TopicName;

const PUT: u8 = 1;
const DELETE: u8 = 2;
/// The largest record body: a record's length is a u32, and a batch of 4,096 values of up
/// to 256 MiB each would not fit one.
const RECORD_MAX: usize = 1 << 30;
/// The unit of a direct write: its offset, length and memory are multiples of it (the
/// logical block size of any common device divides it).
const BLOCK: usize = 4096;
/// Zeros written after each commit's records, in the same write: whatever a file held past
/// them (a recycled file's older records and payloads, what a failed write left) is never
/// read as a record, since a length of 0 ends the log.
const END: usize = 8;
/// What a new log file is written to at first; it doubles as records need room.
const FIRST_SIZE: u64 = 1 << 20;
/// The most a log file grows by at once (a checkpoint comes at 16 MiB of log anyway).
const GROW_MAX: u64 = 16 << 20;
/// A checkpointed file larger than this (a huge batch grew it) is deleted, not kept.
const SPARE_MAX: u64 = 64 << 20;
/// The spare file: a checkpointed generation's, to become the next one's.
const SPARE: &str = "spare.log";

/// When a commit's records reach the disk (`[store] sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSync {
    /// Before the commit returns: what is acknowledged is on the device, and survives a
    /// crash of the operating system as well as of the process.
    Always,
    /// Later: a commit returns once the operating system has its records (they survive
    /// `kill -9` and any crash of ponte), and [`Wal::sync`] is due at most this long after
    /// the first record it has not synced. A crash of the operating system or a power cut
    /// can take what was acknowledged in that window. For disks where a write to the
    /// device per commit is slow or wears them (SD cards, network volumes).
    Every(Duration),
}

/// The log: the current generation's file, written record after record.
#[derive(Debug)]
pub(super) struct Wal {
    /// `<db>/wal`.
    dir: PathBuf,
    /// The generation being appended to.
    generation: u64,
    /// Its file, written at `len`.
    log: LogFile,
    /// Its length: where the next record starts (written there).
    len: u64,
    /// The records being encoded (reused: no allocation per commit once grown).
    buf: Vec<u8>,
    /// The bytes of the last, partial block (`len` rounded down to [`BLOCK`] up to `len`):
    /// a direct write rewrites them in front of the next record.
    tail: Vec<u8>,
    /// Memory for direct writes, over-allocated so that a [`BLOCK`]-aligned window fits.
    io: Vec<u8>,
    /// [`RECORD_MAX`] (smaller in tests).
    record_max: usize,
    /// When commits reach the disk.
    sync: LogSync,
    /// With [`LogSync::Every`]: the log is on the disk up to here (in this generation).
    synced: u64,
    /// With [`LogSync::Every`]: when the first record not yet synced was written.
    unsynced_since: Option<Instant>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Engine(format!("{what} {}: {e}", path.display()))
}

/// How a log file's records are checksummed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `retained-<g>.wal`, written by ponte before files were recycled: the checksum
    /// covers the body alone, and the file ends where the records end. Read, never
    /// written.
    Appended,
    /// `retained-<g>.log`: the checksum covers the generation too.
    Recycled,
}

fn file_name(generation: u64) -> String {
    format!("retained-{generation:020}.log")
}

fn parse_name(name: &str) -> Option<(u64, Format)> {
    let rest = name.strip_prefix("retained-")?;
    let (g, format) = if let Some(g) = rest.strip_suffix(".log") {
        (g, Format::Recycled)
    } else {
        (rest.strip_suffix(".wal")?, Format::Appended)
    };
    Some((g.parse().ok()?, format))
}

impl Wal {
    /// Open the log in `dir` (created if missing) after checkpoint `checkpointed`: the ops
    /// of every later generation, in order, to apply before anything else, and the
    /// generations they came from (to forget once checkpointed). Appending goes to a new
    /// generation after all of them.
    pub(super) fn open(
        dir: &Path,
        checkpointed: u64,
        sync: LogSync,
    ) -> Result<(Wal, Vec<RetainedOp>, Option<u64>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let mut generations = generations(dir)?;
        generations.sort_unstable_by_key(|&(g, format, _)| (g, format == Format::Recycled));
        let mut ops = Vec::new();
        let mut last = None;
        for (g, format, path) in generations {
            if g <= checkpointed {
                retire(dir, &path, format)?;
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io("cannot read", &path, e))?;
            let salt = (format == Format::Recycled).then_some(g);
            read_records(&bytes, salt, &mut ops)?;
            last = Some(g);
        }
        let generation = last.unwrap_or(checkpointed).max(checkpointed) + 1;
        let mut io_buf = Vec::new();
        // A write that returns once the device has it is what `Always` asks, and what
        // `Every` avoids.
        let direct = sync == LogSync::Always;
        let log = LogFile::start(dir, generation, direct, &mut io_buf)?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                generation,
                log,
                len: 0,
                buf: Vec::new(),
                tail: Vec::new(),
                io: io_buf,
                record_max: RECORD_MAX,
                sync,
                synced: 0,
                unsynced_since: None,
            },
            ops,
            last,
        ))
    }

    /// The generation being appended to.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of records in the current generation.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    fn path(&self) -> &Path {
        &self.log.path
    }

    /// Append `ops` (one record, or several if they are larger than [`RECORD_MAX`]) and
    /// write them out: when this returns `Ok`, they survive a crash of the process (and,
    /// with [`LogSync::Always`], of the operating system). When it fails, they are not in
    /// the log (not replayed at the next start).
    pub(super) fn append(&mut self, ops: &[RetainedOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        encode_records(&mut self.buf, ops, self.generation, self.record_max);
        let written = self.write_records();
        match &written {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                if self.sync != LogSync::Always {
                    self.unsynced_since.get_or_insert_with(Instant::now);
                }
            }
            // Refused to its writers: none of it may come back at the next start, should
            // some of it have reached the disk. A length no record can have ends the
            // replay here (best effort: the disk is failing), and the next record
            // overwrites it.
            Err(_) => self.spoil(),
        }
        if self.buf.capacity() > 1 << 20 {
            // One huge batch should not pin its buffers forever.
            self.buf = Vec::new();
            self.io = Vec::new();
        }
        written.map_err(|e| io("cannot write to", self.path(), e))
    }

    /// `buf` at `len` and [`END`] zeros after it, on the disk when this returns (with
    /// [`LogSync::Always`]; otherwise with the operating system).
    fn write_records(&mut self) -> std::io::Result<()> {
        let end = self.len + (self.buf.len() + END) as u64;
        if end > self.log.size {
            self.log.grow(end, &mut self.io)?;
        }
        if self.log.direct {
            match self.write_direct() {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.log.go_buffered(e)?,
                done => return done,
            }
        }
        let records = self.buf.len();
        self.buf.extend_from_slice(&[0; END]);
        let written = self
            .log
            .file
            .write_all_at(&self.buf, self.len)
            .and_then(|()| match self.sync {
                LogSync::Always => sync_range(&self.log.file, self.len, self.buf.len() as u64),
                LogSync::Every(_) => Ok(()),
            });
        self.buf.truncate(records);
        written
    }

    /// The records, written directly; the new tail taken.
    fn write_direct(&mut self) -> std::io::Result<()> {
        let start = self.len - self.tail.len() as u64;
        let total = self.tail.len() + self.buf.len();
        let window = write_over_tail(&self.log.file, &mut self.io, &self.tail, start, &self.buf)?;
        let keep = ((start + total as u64) % BLOCK as u64) as usize;
        self.tail.clear();
        self.tail.extend_from_slice(&window[total - keep..total]);
        Ok(())
    }

    /// When [`Wal::sync`] is due: the interval after the first record written since the
    /// last sync. `None` while the log is on the disk (always, with [`LogSync::Always`]).
    pub(super) fn sync_due(&self) -> Option<Instant> {
        match self.sync {
            LogSync::Always => None,
            LogSync::Every(interval) => self.unsynced_since.map(|t| t + interval),
        }
    }

    /// Bring every record written so far to the disk. A failure is retried when due again
    /// (an interval later), not at once.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        let end = self.len + END as u64;
        match sync_range(&self.log.file, self.synced, end - self.synced) {
            Ok(()) => {
                self.synced = self.len;
                self.unsynced_since = None;
                Ok(())
            }
            Err(e) => {
                self.unsynced_since = Some(Instant::now());
                Err(io("cannot sync", self.path(), e))
            }
        }
    }

    /// Make whatever a failed write left at `len` unreadable (best effort).
    fn spoil(&mut self) {
        const UNREADABLE: [u8; 8] = [0xFF; 8];
        if self.log.direct {
            let start = self.len - self.tail.len() as u64;
            let _ = write_over_tail(&self.log.file, &mut self.io, &self.tail, start, &UNREADABLE);
        } else {
            let _ = self.log.file.write_all_at(&UNREADABLE, self.len);
        }
    }

    /// Append to a new generation from now on (before a checkpoint marks the current one
    /// as in sled: a record must never land in a generation marked checkpointed). On
    /// failure nothing changed.
    pub(super) fn start_next(&mut self) -> Result<(), StoreError> {
        // What this generation holds unsynced goes to the disk first. Best effort: the
        // checkpoint that follows puts the same ops into the tree, and its failure keeps
        // this generation's file.
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "syncing the retained log before a checkpoint failed; the checkpoint writes its ops");
        }
        let next = self.generation + 1;
        // A file system that refused a direct write is not asked again.
        self.log = LogFile::start(&self.dir, next, self.log.direct, &mut self.io)?;
        self.generation = next;
        self.len = 0;
        self.tail.clear();
        self.synced = 0;
        self.unsynced_since = None;
        Ok(())
    }

    /// Retire every file up to generation `checkpointed`: one is kept as the spare, the
    /// others are removed.
    pub(super) fn forget(&self, checkpointed: u64) -> Result<(), StoreError> {
        for (g, format, path) in generations(&self.dir)? {
            if g <= checkpointed {
                retire(&self.dir, &path, format)?;
            }
        }
        Ok(())
    }
}

/// The log files in `dir`: generation, format, path (in no particular order).
fn generations(dir: &Path) -> Result<Vec<(u64, Format, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
        let entry = entry.map_err(|e| io("cannot list", dir, e))?;
        if let Some((g, format)) = entry.file_name().to_str().and_then(parse_name) {
            out.push((g, format, entry.path()));
        }
    }
    Ok(out)
}

/// A direct write at `start` (where the partial last block begins) of the blocks from
/// there to the one [`END`] zeros after `bytes` end in: the `tail` that block held,
/// `bytes`, zeros to the end of the last block. Returns what was written.
fn write_over_tail<'a>(
    file: &File,
    io_buf: &'a mut Vec<u8>,
    tail: &[u8],
    start: u64,
    bytes: &[u8],
) -> std::io::Result<&'a mut [u8]> {
    let total = tail.len() + bytes.len();
    let window = aligned(io_buf, (total + END).next_multiple_of(BLOCK))?;
    debug_assert!(start.is_multiple_of(BLOCK as u64) && window.len().is_multiple_of(BLOCK));
    debug_assert!(window.as_ptr().align_offset(BLOCK) == 0);
    window[..tail.len()].copy_from_slice(tail);
    window[tail.len()..total].copy_from_slice(bytes);
    window[total..].fill(0);
    file.write_all_at(window, start)?;
    Ok(window)
}

/// A generation no longer needed: the spare, if there is none and it is one of ours of a
/// reasonable size; removed otherwise.
fn retire(dir: &Path, path: &Path, format: Format) -> Result<(), StoreError> {
    let spare = dir.join(SPARE);
    let keep = format == Format::Recycled
        && !spare.exists()
        && std::fs::metadata(path).is_ok_and(|m| m.len() <= SPARE_MAX);
    if keep {
        std::fs::rename(path, &spare).map_err(|e| io("cannot keep", path, e))
    } else {
        std::fs::remove_file(path).map_err(|e| io("cannot remove", path, e))
    }
}

/// The file a generation is written to.
#[derive(Debug)]
struct LogFile {
    /// Its path (to reopen it without `O_DIRECT`).
    path: PathBuf,
    file: File,
    /// Whether `file` was opened with `O_DIRECT` (written in whole aligned blocks, with no
    /// sync: the write returns once the device has the data).
    direct: bool,
    /// Written (zeros or earlier records) and synced up to here, a multiple of [`BLOCK`]:
    /// a record below it changes no metadata.
    size: u64,
}

impl LogFile {
    /// The file of `generation`: the spare renamed, or a new one; at least
    /// [`FIRST_SIZE`] written, and its name on disk, before anything is written into it
    /// and acknowledged.
    fn start(
        dir: &Path,
        generation: u64,
        direct: bool,
        io_buf: &mut Vec<u8>,
    ) -> Result<LogFile, StoreError> {
        let path = dir.join(file_name(generation));
        let spare = dir.join(SPARE);
        match std::fs::rename(&spare, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Not truncated: a file left by an attempt that failed after renaming the
                // spare keeps what it had written.
                OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| io("cannot create", &path, e))?;
            }
            Err(e) => return Err(io("cannot reuse", &spare, e)),
        }
        let mut log = LogFile::open(&path, direct)?;
        if log.size < FIRST_SIZE {
            log.grow(FIRST_SIZE, io_buf)
                .map_err(|e| io("cannot write", &path, e))?;
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync", dir, e))?;
        Ok(log)
    }

    /// `path`, opened with `O_DIRECT` if `direct` and the file system takes it.
    #[cfg(target_os = "linux")]
    fn open(path: &Path, direct: bool) -> Result<LogFile, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = if direct { libc::O_DIRECT } else { 0 };
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(path);
        let (file, direct) = match opened {
            Ok(f) => (f, direct),
            // Some file systems refuse O_DIRECT at open (EINVAL; tmpfs before Linux 6.6);
            // one that takes it and refuses a write is caught there.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| io("cannot open", path, e))?;
                (f, false)
            }
            Err(e) => return Err(io("cannot open", path, e)),
        };
        LogFile::sized(file, direct, path)
    }

    #[cfg(not(target_os = "linux"))]
    fn open(path: &Path, _direct: bool) -> Result<LogFile, StoreError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io("cannot open", path, e))?;
        LogFile::sized(file, false, path)
    }

    fn sized(file: File, direct: bool, path: &Path) -> Result<LogFile, StoreError> {
        let len = file
            .metadata()
            .map_err(|e| io("cannot stat", path, e))?
            .len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            direct,
            size: len - len % BLOCK as u64,
        })
    }

    /// Write zeros from `size` to at least `to` (doubling the file, by at most
    /// [`GROW_MAX`] unless `to` is further) and sync them with the file's new size.
    fn grow(&mut self, to: u64, io_buf: &mut Vec<u8>) -> std::io::Result<()> {
        let step = self.size.clamp(FIRST_SIZE, GROW_MAX);
        let new_size = to.max(self.size + step).next_multiple_of(BLOCK as u64);
        const CHUNK: usize = 1 << 20;
        let mut at = self.size;
        while at < new_size {
            let n = (new_size - at).min(CHUNK as u64) as usize;
            let zeros = aligned(io_buf, n)?;
            zeros.fill(0);
            match self.file.write_all_at(zeros, at) {
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.go_buffered(e)?;
                    continue;
                }
                written => written?,
            }
            at += n as u64;
        }
        self.file.sync_data()?;
        self.size = new_size;
        Ok(())
    }

    /// The file system refused a direct write (EINVAL): buffered writes and
    /// `sync_file_range` from now on.
    fn go_buffered(&mut self, why: std::io::Error) -> std::io::Result<()> {
        tracing::warn!(path = %self.path.display(), error = %why, "direct writes refused; the retained log writes through the page cache");
        self.file = OpenOptions::new().write(true).open(&self.path)?;
        self.direct = false;
        Ok(())
    }
}

/// A [`BLOCK`]-aligned window of `n` bytes in `buf` (grown as needed).
fn aligned(buf: &mut Vec<u8>, n: usize) -> std::io::Result<&mut [u8]> {
    if buf.len() < n + BLOCK {
        buf.resize(n + BLOCK, 0);
    }
    let at = buf.as_ptr().align_offset(BLOCK);
    if at >= BLOCK {
        // Cannot happen for bytes; EINVAL makes the caller write through the page cache.
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(&mut buf[at..at + n])
}

/// `ops` as the records of `generation` in `buf` (cleared first): one, or several of at
/// most `record_max` bytes of body each.
fn encode_records(buf: &mut Vec<u8>, ops: &[RetainedOp], generation: u64, record_max: usize) {
    buf.clear();
    let mut record = 0;
    buf.extend_from_slice(&[0; 8]);
    for op in ops {
        let value = match op {
            RetainedOp::Put(_, v) => Some(encode_value(v)),
            RetainedOp::Delete(_) => None,
        };
        let size = 7 + op.topic().as_str().len() + value.as_ref().map_or(0, Vec::len);
        if buf.len() - record > 8 && buf.len() - record - 8 + size > record_max {
            seal(buf, record, generation);
            record = buf.len();
            buf.extend_from_slice(&[0; 8]);
        }
        // `value` is there exactly for a put.
        buf.push(if value.is_some() { PUT } else { DELETE });
        put_topic(buf, op.topic());
        if let Some(value) = value {
            buf.extend_from_slice(&(value.len() as u32).to_be_bytes());
            buf.extend_from_slice(&value);
        }
    }
    seal(buf, record, generation);
}

/// Fill in the header of the record that starts at `at` and runs to the end of `buf`.
fn seal(buf: &mut [u8], at: usize, generation: u64) {
    let body = &buf[at + 8..];
    let len = body.len() as u32; // at most RECORD_MAX + one op (< 4 GiB)
    let crc = checksum(Some(generation), body);
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
}

/// A record's checksum: of its generation (`None` for [`Format::Appended`]) and body.
fn checksum(salt: Option<u64>, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if let Some(g) = salt {
        h.update(&g.to_be_bytes());
    }
    h.update(body);
    h.finalize()
}

fn put_topic(buf: &mut Vec<u8>, t: &TopicName) {
    let t = t.as_str().as_bytes();
    buf.extend_from_slice(&(t.len() as u16).to_be_bytes());
    buf.extend_from_slice(t);
}

/// Write `len` bytes at `offset` of `file` out to the disk and wait for it.
#[cfg(target_os = "linux")]
fn sync_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `file`);
    // the call reads no memory of ours.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_range(file: &File, _offset: u64, _len: u64) -> std::io::Result<()> {
    file.sync_data()
}

/// The ops of every whole record of `bytes`, in order, checksummed with `salt` (the
/// generation, `None` for [`Format::Appended`]); a torn or corrupt record, or a length of
/// 0, ends it (a crash cut it, so it was never acknowledged; or it is what follows the
/// last record), except that one that is whole and checksummed but does not parse is an
/// error (the log is not ours or is damaged).
fn read_records(
    bytes: &[u8],
    salt: Option<u64>,
    out: &mut Vec<RetainedOp>,
) -> Result<(), StoreError> {
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        if len == 0 {
            break;
        }
        let Some(body) = (at + 8)
            .checked_add(len)
            .and_then(|end| bytes.get(at + 8..end))
        else {
            break;
        };
        if checksum(salt, body) != crc {
            break;
        }
        read_ops(body, out)?;
        at += 8 + len;
    }
    Ok(())
}

fn read_ops(mut body: &[u8], out: &mut Vec<RetainedOp>) -> Result<(), StoreError> {
    let corrupt = |why| StoreError::Corrupt {
        key: "write-ahead log".into(),
        why,
    };
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    while let Some(&kind) = body.first() {
        body = &body[1..];
        let n = take(&mut body, 2).ok_or_else(|| corrupt("truncated topic length"))?;
        let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
        let key = take(&mut body, n).ok_or_else(|| corrupt("truncated topic"))?;
        let topic = std::str::from_utf8(key)
            .ok()
            .and_then(|s| TopicName::parse(s).ok())
            .ok_or_else(|| corrupt("a topic that is not a valid topic name"))?;
        match kind {
            PUT => {
                let n = take(&mut body, 4).ok_or_else(|| corrupt("truncated value length"))?;
                let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize;
                let value = take(&mut body, n).ok_or_else(|| corrupt("truncated value"))?;
                let v = decode_value(key, value)?;
                out.push(RetainedOp::Put(topic, std::sync::Arc::new(v)));
            }
            DELETE => out.push(RetainedOp::Delete(topic)),
            _ => return Err(corrupt("an op that is neither put nor delete")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::model::{QoS, RetainedValue};

    fn put(t: &str, p: &'static [u8]) -> RetainedOp {
        RetainedOp::Put(
            TopicName::parse(t).unwrap(),
            Arc::new(RetainedValue {
                payload: bytes::Bytes::from_static(p),
                content_type: Some(Arc::from("text/plain")),
                qos: QoS::AtLeastOnce,
                version: 7,
                updated: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            }),
        )
    }

    fn del(t: &str) -> RetainedOp {
        RetainedOp::Delete(TopicName::parse(t).unwrap())
    }

    /// What a checkpoint does to the log: appends go to the next generation, then the
    /// current one is retired. Returns the retired generation.
    fn rotate(wal: &mut Wal) -> u64 {
        let done = wal.generation();
        wal.start_next().unwrap();
        wal.forget(done).unwrap();
        done
    }

    fn same(a: &[RetainedOp], b: &[RetainedOp]) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn appended_batches_come_back_in_order_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, replay, last) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        assert!(replay.is_empty() && last.is_none());
        let first = [put("a/b", b"1"), put("x", b"2")];
        let second = [del("a/b"), put("a/b", b"3"), put("ü/ /x y", b"")];
        wal.append(&first).unwrap();
        wal.append(&second).unwrap();
        let generation = wal.generation();
        drop(wal); // a crash: nothing checkpointed

        let (wal, replay, last) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        assert_eq!(last, Some(generation));
        assert!(
            same(&replay, &[&first[..], &second[..]].concat()),
            "{replay:?}"
        );
        assert!(wal.generation() > generation, "appends go to a new file");
    }

    #[test]
    fn a_periodic_log_writes_through_the_page_cache_and_is_due_a_sync_an_interval_after_its_first_unsynced_record(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        wal.append(&[put("always", b"0")]).unwrap();
        assert_eq!(wal.sync_due(), None, "each commit synced");
        drop(wal);

        let every = Duration::from_millis(200);
        let (mut wal, replay, _) = Wal::open(dir.path(), 0, LogSync::Every(every)).unwrap();
        assert!(same(&replay, &[put("always", b"0")]));
        assert!(!wal.log.direct, "written through the page cache");
        assert_eq!(wal.sync_due(), None, "nothing written yet");
        let before = Instant::now();
        wal.append(&[put("a", b"1")]).unwrap();
        let due = wal.sync_due().expect("a record to sync");
        assert!(due >= before + every && due <= Instant::now() + every);
        wal.append(&[put("b", b"2")]).unwrap();
        assert_eq!(wal.sync_due(), Some(due), "from the first unsynced record");
        wal.sync().unwrap();
        assert_eq!(wal.sync_due(), None);
        assert_eq!(wal.synced, wal.len());
        wal.append(&[put("c", b"3")]).unwrap();
        assert!(wal.sync_due().is_some());
        // A checkpoint leaves its generation synced.
        wal.start_next().unwrap();
        assert_eq!(wal.sync_due(), None);
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0, LogSync::Every(every)).unwrap();
        let written = [
            put("always", b"0"),
            put("a", b"1"),
            put("b", b"2"),
            put("c", b"3"),
        ];
        assert!(same(&replay, &written), "{replay:?}");
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_what_came_before_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        wal.append(&[put("kept", b"yes")]).unwrap();
        wal.append(&[put("torn", b"no")]).unwrap();
        let path = dir.path().join(file_name(wal.generation()));
        let len = wal.len() as usize;
        drop(wal);
        let original = std::fs::read(&path).unwrap();
        let replay_of = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            Wal::open(dir.path(), 0, LogSync::Always).unwrap().1
        };
        for cut in [1, 5, 9] {
            // Cut short: the file ends inside the record.
            let replay = replay_of(&original[..len - cut]);
            assert!(
                same(&replay, &[put("kept", b"yes")]),
                "cut {cut}: {replay:?}"
            );
            // Torn inside the written-ahead file: its last bytes never made it (zeros).
            let mut torn = original.clone();
            torn[len - cut..len].fill(0);
            let replay = replay_of(&torn);
            assert!(
                same(&replay, &[put("kept", b"yes")]),
                "torn {cut}: {replay:?}"
            );
        }
        // A flipped bit in the last record of the whole file: its checksum fails, it is
        // dropped too.
        let mut flipped = original.clone();
        flipped[len - 10] ^= 1;
        let replay = replay_of(&flipped);
        assert!(same(&replay, &[put("kept", b"yes")]), "{replay:?}");
        let replay = replay_of(&original);
        assert!(
            same(&replay, &[put("kept", b"yes"), put("torn", b"no")]),
            "{replay:?}"
        );
    }

    #[test]
    fn checkpointed_generations_are_removed_and_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        wal.append(&[put("old", b"1")]).unwrap();
        let old = rotate(&mut wal);
        wal.append(&[put("new", b"2")]).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [file_name(wal.generation()), SPARE.to_string()],
            "the checkpointed file is kept as the spare"
        );
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), old, LogSync::Always).unwrap();
        assert!(same(&replay, &[put("new", b"2")]), "{replay:?}");
        // A file a crash left behind below the checkpoint is removed at open.
        std::fs::write(dir.path().join(file_name(old)), b"stale").unwrap();
        let (_, replay, _) = Wal::open(dir.path(), old, LogSync::Always).unwrap();
        assert!(same(&replay, &[put("new", b"2")]));
        assert!(!dir.path().join(file_name(old)).exists());
    }

    #[test]
    fn what_a_failed_write_left_past_the_end_is_overwritten_by_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        wal.append(&[put("a", b"1")]).unwrap();
        // A write that failed half-way (ENOSPC): bytes past the log's length.
        let path = dir.path().join(file_name(wal.generation()));
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xAB; 300], wal.len()).unwrap();
        wal.append(&[put("b", b"2")]).unwrap();
        wal.append(&[put("c", b"3")]).unwrap();
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        assert!(
            same(&replay, &[put("a", b"1"), put("b", b"2"), put("c", b"3")]),
            "acknowledged records after a failed write are replayed: {replay:?}"
        );
    }

    #[test]
    fn a_batch_larger_than_a_record_is_written_as_several() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        wal.record_max = 64;
        let batch: Vec<_> = (0..10)
            .map(|i| put(&format!("t/{i}"), b"0123456789"))
            .collect();
        wal.append(&batch).unwrap();
        let path = dir.path().join(file_name(wal.generation()));
        drop(wal);
        let bytes = std::fs::read(&path).unwrap();
        let mut records = 0;
        let mut at = 0;
        loop {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            assert!(len <= 64 + 40, "record of {len} bytes");
            at += 8 + len;
            records += 1;
        }
        assert!(records > 1, "{records} record(s)");
        let (_, replay, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        assert!(same(&replay, &batch), "{replay:?}");
    }

    fn put_sized(t: &str, n: usize) -> RetainedOp {
        let RetainedOp::Put(topic, v) = put(t, b"") else {
            unreachable!()
        };
        let mut v = (*v).clone();
        v.payload = bytes::Bytes::from(vec![b'v'; n]);
        RetainedOp::Put(topic, Arc::new(v))
    }

    /// A put whose record is exactly `record` bytes long, header included.
    fn put_record_of(t: &str, record: usize) -> RetainedOp {
        let bare = 8
            + 7
            + t.len()
            + encode_value(&match put(t, b"") {
                RetainedOp::Put(_, v) => (*v).clone(),
                RetainedOp::Delete(_) => unreachable!(),
            })
            .len();
        put_sized(t, record - bare)
    }

    #[test]
    fn a_recycled_file_never_replays_what_it_held_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        // Generation 1: a record of exactly one block, then one that starts a block.
        wal.append(&[put_record_of("first", BLOCK)]).unwrap();
        assert_eq!(wal.len(), BLOCK as u64);
        wal.append(&[put("stale", b"must not come back")]).unwrap();
        rotate(&mut wal);
        assert!(dir.path().join(SPARE).exists());
        wal.append(&[put("two", b"2")]).unwrap();
        let two = wal.generation();
        // Generation 3 is generation 1's file: its first record ends where the old second
        // one starts, whole and checksummed for generation 1.
        wal.start_next().unwrap();
        assert!(!dir.path().join(SPARE).exists(), "the spare was reused");
        wal.forget(two).unwrap();
        let fresh = put_record_of("third", BLOCK);
        wal.append(std::slice::from_ref(&fresh)).unwrap();
        drop(wal); // a crash before the checkpoint of generation 3

        let (_, replay, _) = Wal::open(dir.path(), two, LogSync::Always).unwrap();
        assert!(same(&replay, &[fresh]), "{replay:?}");
    }

    #[test]
    fn a_log_written_before_recycling_is_replayed_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        // The earlier format: `retained-<g>.wal`, the checksum of the body alone.
        let ops = [put("a/b", b"1"), del("c")];
        let mut body = Vec::new();
        for op in &ops {
            match op {
                RetainedOp::Put(t, v) => {
                    body.push(PUT);
                    put_topic(&mut body, t);
                    let v = encode_value(v);
                    body.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    body.extend_from_slice(&v);
                }
                RetainedOp::Delete(t) => {
                    body.push(DELETE);
                    put_topic(&mut body, t);
                }
            }
        }
        let mut file = (body.len() as u32).to_be_bytes().to_vec();
        file.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        file.extend_from_slice(&body);
        let old = dir.path().join("retained-00000000000000000004.wal");
        std::fs::write(&old, &file).unwrap();

        let (wal, replay, last) = Wal::open(dir.path(), 3, LogSync::Always).unwrap();
        assert_eq!(last, Some(4));
        assert!(same(&replay, &ops), "{replay:?}");
        assert_eq!(wal.generation(), 5);
        wal.forget(4).unwrap();
        assert!(!old.exists(), "an old-format file is removed, not recycled");
        assert!(!dir.path().join(SPARE).exists());
    }

    #[test]
    fn a_log_grows_past_its_first_size_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        let batches: Vec<Vec<RetainedOp>> = (0..5)
            .map(|i| {
                vec![
                    put_sized(&format!("big/{i}"), 700 << 10),
                    put("small", b"s"),
                ]
            })
            .collect();
        for b in &batches {
            wal.append(b).unwrap();
        }
        let path = dir.path().join(file_name(wal.generation()));
        assert!(std::fs::metadata(&path).unwrap().len() >= wal.len());
        assert!(wal.len() > FIRST_SIZE);
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        assert!(same(&replay, &batches.concat()));
    }

    #[test]
    fn records_written_through_the_page_cache_follow_direct_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        wal.append(&[put("direct", b"1")]).unwrap();
        // What a file system refusing a direct write (EINVAL) leads to.
        wal.log
            .go_buffered(std::io::Error::from_raw_os_error(libc::EINVAL))
            .unwrap();
        wal.append(&[put("buffered", b"2")]).unwrap();
        wal.append(&[put_sized("buffered/big", 3 * BLOCK)]).unwrap();
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        assert!(
            same(
                &replay,
                &[
                    put("direct", b"1"),
                    put("buffered", b"2"),
                    put_sized("buffered/big", 3 * BLOCK)
                ]
            ),
            "{replay:?}"
        );
    }

    #[test]
    fn a_commit_overwrites_a_file_written_ahead_with_one_direct_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        let path = wal.path().to_path_buf();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size >= FIRST_SIZE, "written ahead: {size} bytes");
        let direct = wal.log.direct;
        let mut all = Vec::new();
        for (i, n) in [1, 4095, 4096, 4097, 5000, 0, 12_345]
            .into_iter()
            .enumerate()
        {
            let op = put_sized(&format!("odd/{i}"), n);
            wal.append(std::slice::from_ref(&op)).unwrap();
            all.push(op);
            // An aligned write never fell back to the page cache, and the file's size (on
            // disk since it was written ahead) never changed.
            assert_eq!(wal.log.direct, direct, "after {n} bytes");
            assert_eq!(
                wal.tail.len() as u64,
                if direct { wal.len() % BLOCK as u64 } else { 0 }
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        }
        #[cfg(target_os = "linux")]
        if !direct {
            eprintln!(
                "note: {} refuses O_DIRECT; checked the buffered log",
                dir.path().display()
            );
        }
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        assert!(same(&replay, &all));
    }

    /// A batch of two records, the first of exactly one block, refused after it reached the
    /// disk; then `next`. Replay must give `next` alone.
    fn refused_then(buffered: bool, next: Option<RetainedOp>) -> Vec<RetainedOp> {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        if buffered {
            wal.log
                .go_buffered(std::io::Error::from_raw_os_error(libc::EINVAL))
                .unwrap();
        }
        let first = put_record_of("refused/1", BLOCK);
        wal.record_max = BLOCK - 8;
        let refused = [first, put("refused/2", b"whole, checksummed, and refused")];
        // What `append` does when the write reached the disk but reported a failure (the
        // tail of a failed write is not taken).
        encode_records(&mut wal.buf, &refused, wal.generation, wal.record_max);
        let tail = wal.tail.clone();
        wal.write_records().unwrap();
        wal.tail = tail;
        wal.spoil();
        if let Some(next) = next {
            wal.append(&[next]).unwrap();
        }
        drop(wal);
        Wal::open(dir.path(), 0, LogSync::Always).unwrap().1
    }

    #[test]
    fn a_refused_batch_never_comes_back_even_under_a_shorter_record() {
        for buffered in [false, true] {
            let replay = refused_then(buffered, None);
            assert!(replay.is_empty(), "buffered {buffered}: {replay:?}");
            // The next record ends exactly where the refused batch's second record starts:
            // the zeros after it end the log.
            let next = put_record_of("next", BLOCK);
            let replay = refused_then(buffered, Some(next.clone()));
            assert!(same(&replay, &[next]), "buffered {buffered}: {replay:?}");
        }
    }

    #[test]
    fn a_record_forged_in_a_payload_is_never_read_from_a_recycled_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0, LogSync::Always).unwrap();
        wal.append(&[put("a", b"1")]).unwrap();
        let one = rotate(&mut wal);
        // A client's payload that held a well-formed record for the generation that will
        // reuse this file, lying where that generation's first record will end.
        let mut forged = Vec::new();
        encode_records(&mut forged, &[put("acl/bypass", b"x")], one + 2, RECORD_MAX);
        let spare = OpenOptions::new()
            .write(true)
            .open(dir.path().join(SPARE))
            .unwrap();
        spare.write_all_at(&forged, BLOCK as u64).unwrap();
        drop(spare);
        wal.start_next().unwrap();
        assert_eq!(wal.generation(), one + 2);
        let first = put_record_of("first", BLOCK);
        wal.append(std::slice::from_ref(&first)).unwrap();
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), one + 1, LogSync::Always).unwrap();
        assert!(same(&replay, &[first]), "{replay:?}");
    }
}
