//! The retained values' write-ahead log, in front of sled (`<db>/wal/`).
//!
//! A batch of retained writes is durable once its record is written here and the range is
//! written out (`sync_file_range` on Linux, the sync sled's own `flush` issues; a
//! `fdatasync` elsewhere): one `write` and one sync per group commit, a few hundred
//! instructions per write. That survives `kill -9` of the process; it is weaker than an
//! `fdatasync` against a power cut, as `sync_file_range` does not write out the file's
//! size: records written since the file system last wrote its metadata may be lost then
//! (an `fdatasync` per commit measured 2.3× slower on the benchmark machine). sled gets the writes later, in a **checkpoint**: the latest op
//! of each topic since the last one (a thing written a thousand times is inserted once),
//! applied and flushed together with the number of the log file it covers; then that
//! file is deleted. Why: sled's `apply_batch` + `flush` cost ~10k instructions per write
//! and ~0.27 ms per commit, on the path of every acknowledgement (BENCHMARKS.md, "Why
//! durable PUTs stay below their targets").
//!
//! Files are `retained-<generation>.wal`, one generation between two checkpoints. At open,
//! the generations above the last one checkpointed into sled are read back in order (a
//! torn record at the end of the newest — a write cut by a crash, never acknowledged — ends
//! it) and older files are removed.
//!
//! Records are written at the log's length, never in append mode: a write or sync that
//! fails leaves the length where it was, so the next record overwrites whatever the failed
//! one left, and no torn record is ever followed by good ones (replay stops at the first
//! bad record). A record whose sync failed — refused to its writers — is made unreadable.
//!
//! Record: `length u32 | crc32 u32 (of the body) | body`, body = ops, each
//! `0x01 | topic u16+bytes | value u32+bytes` (a put, value as [`encode_value`]) or
//! `0x02 | topic u16+bytes` (a delete); integers big-endian. A batch larger than
//! [`RECORD_MAX`] is written as several records.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{decode_value, encode_value, RetainedOp, StoreError};
use crate::model::TopicName;

const PUT: u8 = 1;
const DELETE: u8 = 2;
/// The largest record body: a record's length is a u32, and a batch of 4,096 values of up
/// to 256 MiB each would not fit one.
const RECORD_MAX: usize = 1 << 30;

/// The log: the current generation's file, appended to.
#[derive(Debug)]
pub(super) struct Wal {
    /// `<db>/wal`.
    dir: PathBuf,
    /// The generation being appended to.
    generation: u64,
    /// Its file, written at `len`.
    file: File,
    /// Its length: where the next record starts (written there, and synced from there).
    len: u64,
    /// The record being encoded (reused: no allocation per commit once grown).
    buf: Vec<u8>,
    /// [`RECORD_MAX`] (smaller in tests).
    record_max: usize,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Engine(format!("{what} {}: {e}", path.display()))
}

fn file_name(generation: u64) -> String {
    format!("retained-{generation:020}.wal")
}

fn generation_of(name: &str) -> Option<u64> {
    name.strip_prefix("retained-")?
        .strip_suffix(".wal")?
        .parse()
        .ok()
}

impl Wal {
    /// Open the log in `dir` (created if missing) after checkpoint `checkpointed`: the ops
    /// of every later generation, in order, to apply before anything else, and the
    /// generations they came from (to forget once checkpointed). Appending goes to a new
    /// generation after all of them.
    pub(super) fn open(
        dir: &Path,
        checkpointed: u64,
    ) -> Result<(Wal, Vec<RetainedOp>, Option<u64>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let mut generations = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
            let entry = entry.map_err(|e| io("cannot list", dir, e))?;
            if let Some(g) = entry.file_name().to_str().and_then(generation_of) {
                generations.push(g);
            }
        }
        generations.sort_unstable();
        let mut ops = Vec::new();
        let mut last = None;
        for &g in &generations {
            let path = dir.join(file_name(g));
            if g <= checkpointed {
                std::fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io("cannot read", &path, e))?;
            read_records(&bytes, &mut ops)?;
            last = Some(g);
        }
        let generation = last.unwrap_or(checkpointed).max(checkpointed) + 1;
        let (file, len) = create(dir, generation)?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                generation,
                file,
                len,
                buf: Vec::new(),
                record_max: RECORD_MAX,
            },
            ops,
            last,
        ))
    }

    /// The generation being appended to.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes in the current generation.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Append `ops` (one record, or several if they are larger than [`RECORD_MAX`]) and
    /// write them out: when this returns `Ok`, they survive a crash of the process. When it
    /// fails, they are not in the log (not replayed at the next start).
    pub(super) fn append(&mut self, ops: &[RetainedOp]) -> Result<(), StoreError> {
        self.buf.clear();
        let mut record = self.buf.len();
        self.buf.extend_from_slice(&[0; 8]);
        for op in ops {
            let value = match op {
                RetainedOp::Put(_, v) => Some(encode_value(v)),
                RetainedOp::Delete(_) => None,
            };
            let size = 7 + op.topic().as_str().len() + value.as_ref().map_or(0, Vec::len);
            if self.buf.len() - record > 8 && self.buf.len() - record - 8 + size > self.record_max {
                seal(&mut self.buf, record);
                record = self.buf.len();
                self.buf.extend_from_slice(&[0; 8]);
            }
            // `value` is there exactly for a put.
            self.buf.push(if value.is_some() { PUT } else { DELETE });
            put_topic(&mut self.buf, op.topic());
            if let Some(value) = value {
                self.buf
                    .extend_from_slice(&(value.len() as u32).to_be_bytes());
                self.buf.extend_from_slice(&value);
            }
        }
        seal(&mut self.buf, record);
        let path = || self.dir.join(file_name(self.generation));
        let written = self
            .file
            .write_all_at(&self.buf, self.len)
            .map_err(|e| io("cannot append to", &path(), e))
            .and_then(|()| {
                sync_range(&self.file, self.len, self.buf.len() as u64)
                    .map_err(|e| io("cannot sync", &path(), e))
            });
        if let Err(e) = written {
            // Refused to its writers: none of it may come back at the next start, should
            // the kernel still write some of it out. A length no record can have ends the
            // replay here (best effort: the disk is failing), and the next record
            // overwrites it.
            let _ = self.file.write_all_at(&[0xFF; 8], self.len);
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        if self.buf.capacity() > 1 << 20 {
            // One huge batch should not pin its buffer forever.
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Append to a new generation from now on (before a checkpoint marks the current one
    /// as in sled: a record must never land in a generation marked checkpointed). On
    /// failure nothing changed.
    pub(super) fn start_next(&mut self) -> Result<(), StoreError> {
        let next = self.generation + 1;
        let (file, len) = create(&self.dir, next)?;
        self.file = file;
        self.len = len;
        self.generation = next;
        Ok(())
    }

    /// Remove every file up to generation `checkpointed`.
    pub(super) fn forget(&self, checkpointed: u64) -> Result<(), StoreError> {
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io("cannot list", &self.dir, e))? {
            let entry = entry.map_err(|e| io("cannot list", &self.dir, e))?;
            if let Some(g) = entry.file_name().to_str().and_then(generation_of) {
                if g <= checkpointed {
                    let path = entry.path();
                    std::fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
                }
            }
        }
        Ok(())
    }
}

fn create(dir: &Path, generation: u64) -> Result<(File, u64), StoreError> {
    let path = dir.join(file_name(generation));
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io("cannot create", &path, e))?;
    let len = file
        .metadata()
        .map_err(|e| io("cannot stat", &path, e))?
        .len();
    // The new name, on disk before anything is written into it and acknowledged.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))?;
    Ok((file, len))
}

/// Fill in the header of the record that starts at `at` and runs to the end of `buf`.
fn seal(buf: &mut [u8], at: usize) {
    let body = &buf[at + 8..];
    let len = body.len() as u32; // at most RECORD_MAX + one op (< 4 GiB)
    let crc = crc32fast::hash(body);
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
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

/// The ops of every whole record of `bytes`, in order; a torn or corrupt record ends it
/// (a crash cut it, so it was never acknowledged), except that one that is whole and
/// checksummed but does not parse is an error (the log is not ours or is damaged).
fn read_records(bytes: &[u8], out: &mut Vec<RetainedOp>) -> Result<(), StoreError> {
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
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

    fn same(a: &[RetainedOp], b: &[RetainedOp]) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn appended_batches_come_back_in_order_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, replay, last) = Wal::open(dir.path(), 0).unwrap();
        assert!(replay.is_empty() && last.is_none());
        let first = [put("a/b", b"1"), put("x", b"2")];
        let second = [del("a/b"), put("a/b", b"3"), put("ü/ /x y", b"")];
        wal.append(&first).unwrap();
        wal.append(&second).unwrap();
        let generation = wal.generation();
        drop(wal); // a crash: nothing checkpointed

        let (wal, replay, last) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(last, Some(generation));
        assert!(
            same(&replay, &[&first[..], &second[..]].concat()),
            "{replay:?}"
        );
        assert!(wal.generation() > generation, "appends go to a new file");
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_what_came_before_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(&[put("kept", b"yes")]).unwrap();
        wal.append(&[put("torn", b"no")]).unwrap();
        let path = dir.path().join(file_name(wal.generation()));
        drop(wal);
        let len = std::fs::metadata(&path).unwrap().len();
        for cut in [1, 5, 9] {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(len - cut).unwrap();
            let (_, replay, _) = Wal::open(dir.path(), 0).unwrap();
            assert!(
                same(&replay, &[put("kept", b"yes")]),
                "cut {cut}: {replay:?}"
            );
        }
        // A flipped bit in the last record: its checksum fails, it is dropped too.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, replay, _) = Wal::open(dir.path(), 0).unwrap();
        assert!(same(&replay, &[put("kept", b"yes")]), "{replay:?}");
    }

    #[test]
    fn checkpointed_generations_are_removed_and_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(&[put("old", b"1")]).unwrap();
        let old = wal.generation();
        wal.start_next().unwrap();
        wal.forget(old).unwrap();
        wal.append(&[put("new", b"2")]).unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "the checkpointed file is gone");
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), old).unwrap();
        assert!(same(&replay, &[put("new", b"2")]), "{replay:?}");
        // A file a crash left behind below the checkpoint is removed at open.
        std::fs::write(dir.path().join(file_name(old)), b"stale").unwrap();
        let (_, replay, _) = Wal::open(dir.path(), old).unwrap();
        assert!(same(&replay, &[put("new", b"2")]));
        assert!(!dir.path().join(file_name(old)).exists());
    }

    #[test]
    fn what_a_failed_write_left_past_the_end_is_overwritten_by_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(&[put("a", b"1")]).unwrap();
        // A write that failed half-way (ENOSPC): bytes past the log's length.
        let path = dir.path().join(file_name(wal.generation()));
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xAB; 300], wal.len()).unwrap();
        wal.append(&[put("b", b"2")]).unwrap();
        wal.append(&[put("c", b"3")]).unwrap();
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0).unwrap();
        assert!(
            same(&replay, &[put("a", b"1"), put("b", b"2"), put("c", b"3")]),
            "acknowledged records after a failed write are replayed: {replay:?}"
        );
    }

    #[test]
    fn a_batch_larger_than_a_record_is_written_as_several() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0).unwrap();
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
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert!(len <= 64 + 40, "record of {len} bytes");
            at += 8 + len;
            records += 1;
        }
        assert!(records > 1, "{records} record(s)");
        let (_, replay, _) = Wal::open(dir.path(), 0).unwrap();
        assert!(same(&replay, &batch), "{replay:?}");
    }
}
