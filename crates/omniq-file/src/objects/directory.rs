//! [`Objects`] in a local directory, shared by every process on the machine.
//!
//! - A file is a short header and a log of *records*, each a write of the object: its
//!   length, its sequence number, a checksum, and the bytes. The object is the last
//!   record whose checksum holds.
//! - A create writes a log of one record to a temporary file, syncs it, and hard-links it
//!   to the key's name under the key's lock: the link is refused if the name exists, so
//!   two creators never both win, and a name only ever names a whole, synced log.
//! - A replace takes the key's advisory lock (`flock`), checks that the key's file is
//!   still the write read (its inode, the record's sequence and its bytes), appends the
//!   new record in place at the next block boundary ([`BLOCK`]) and syncs the file's
//!   data. Readers take no lock: a reader that meets a record still being written finds
//!   its checksum wrong and reads the one before, the object as it was before the
//!   replace; a crash in the middle of an append leaves the same torn record, which the
//!   next append writes over. A log grown past [`COMPACT_AT`] is replaced whole instead:
//!   a synced temporary file holding only the new record renamed over it.
//! - Appending in place is the point: a replace makes no file and removes none, and
//!   syncs no directory. Making and removing files is what a local file system does
//!   slowly (ext4 without a journal searches for a free inode not deleted in the last
//!   seconds, under the directory's lock), and a task is replaced twice per run. Since an
//!   append syncs no directory, a create or a whole replace syncs its directory before it
//!   lets the key's lock go: the append after it never outlives its file's name.
//! - A delete takes the same lock, so a replace never brings back a file deleted between
//!   its check and its write.
//! - A shared create ([`Objects::create_shared`]) links one synced file to many keys' names
//!   (a claim's lease markers): one file made, not one a key. A file of more than one
//!   name is replaced whole, never appended to, so each key's writes stay its own.
//! - Locks are striped over a fixed set of lock files in `.locks/`, by a hash of the key.
//! - A file without the header (written by a release before the log) is read whole as
//!   one object; its first replace turns it into a log.
//!
//! The directory is synced after every change to its entries (and every directory that
//! gained a new one), so a change that returned survives a crash of the machine; writers
//! in one directory share those syncs (group commit). Two deletions are the exception
//! ([`Objects::delete_unsynced`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use omniq_models::TaskId;
use omniq_storage::{BoxFuture, StoreError, StoreResult};
use rustix::fs::{FlockOperation, flock};

use super::{MAX_KEY, Objects, Stored, Version, invalid_key, valid_key, valid_segment};
use crate::error::{BACKEND, io_error};

/// Lock files the keys are spread over: replaces of different keys rarely wait on each
/// other, and the directory holds a fixed number of them whatever the number of keys.
const LOCK_STRIPES: u64 = 64;
/// Where the lock files and temporary files live (never a key: keys never start with `.`).
const LOCKS: &str = ".locks";
const TEMPORARY: &str = ".tmp";

/// The first bytes of a file holding a log of records. Starts with a zero byte, which no
/// file of a release before the log starts with in practice (tasks and markers are JSON,
/// results and events their own encodings with a leading tag).
const MAGIC: &[u8; 8] = b"\0omniq1\n";
/// A log's header: [`MAGIC`], then the file's nonce (u64), a random number every record's
/// checksum covers. Without a journal, a crash can leave a file's new length on the disk
/// but not its new bytes, exposing whatever an earlier file left in the block; the nonce
/// makes an old record of another file fail the checksum here.
const LOG_HEADER: usize = MAGIC.len() + 8;
/// A record's header: the length of its bytes (u32), its sequence number (u64) and the
/// checksum of the file's nonce and the three (u64), little-endian.
const RECORD_HEADER: usize = 4 + 8 + 8;
/// Every record after a log's first starts at a multiple of this: an append never
/// rewrites a disk block that holds a record already acknowledged, so a power loss in
/// the middle of one cannot damage the write before it (a device writes a block whole or
/// not at all; it need not keep the rest of a block it rewrites).
const BLOCK: usize = 4096;
/// A log longer than this (or than four of the record about to be appended) is replaced
/// by a file of its new record instead of growing: a task renewed every few seconds for
/// hours appends a record a renewal.
const COMPACT_AT: u64 = 64 * 1024;

/// [`Objects`] in a local directory. Cloning is cheap; clones share the directory.
#[derive(Debug, Clone)]
pub struct DirectoryObjects {
    root: Arc<PathBuf>,
}

/// One mutex per lock stripe, taken before the stripe's `flock`: where a file system
/// emulates `flock` with locks owned by the whole process (Linux's NFS client), two threads
/// of one process would otherwise both hold the stripe.
static STRIPES: [Mutex<()>; LOCK_STRIPES as usize] =
    [const { Mutex::new(()) }; LOCK_STRIPES as usize];

impl DirectoryObjects {
    /// Objects in the directory `root`, created if missing.
    ///
    /// # Errors
    /// `Unavailable` when the directory cannot be created or written.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        fs::create_dir_all(root.join(LOCKS)).map_err(io_error)?;
        fs::create_dir_all(root.join(TEMPORARY)).map_err(io_error)?;
        remove_stale_temporaries(&root.join(TEMPORARY));
        Ok(Self {
            root: Arc::new(root),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, key: &str) -> StoreResult<PathBuf> {
        if valid_key(key) {
            Ok(self.root.join(key))
        } else {
            Err(invalid_key(key))
        }
    }

    /// [`Objects::update`], its append synced when `durable`.
    fn replace(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
        durable: bool,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        let key = key.to_owned();
        let file = self.file(&key);
        let expected = expected.clone();
        Box::pin(async move {
            let file = file?;
            self.blocking(move |root| update(root, &key, &file, &bytes, &expected, durable))
                .await
        })
    }

    /// Runs blocking file work off the runtime's threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Path) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || work(&root))
            .await
            .map_err(|err| StoreError::backend(BACKEND, err))?
    }
}

/// Temporary files older than this were left by a process that died between writing one
/// and linking or renaming it (a write takes milliseconds).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Best effort: a file that cannot be removed now is removed by a later open.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMPORARY);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The version of a file read whole (one without the log's header).
fn version_of(metadata: &fs::Metadata, bytes: &[u8]) -> Version {
    // A replace renames a new file over the old one: a new inode, modification time and
    // maybe size. But a freed inode number may be reused at once, and file times tick in
    // milliseconds, so the bytes' hash is part of the version too: a stale version can
    // then only match a write of the very same bytes, as an e-tag on S3 would.
    Version {
        e_tag: Some(format!(
            "{:x}-{:x}.{:x}-{:x}-{:016x}",
            metadata.ino(),
            metadata.mtime(),
            metadata.mtime_nsec(),
            metadata.size(),
            fnv1a(bytes)
        )),
        version: None,
    }
}

/// The version of a log's record `sequence` holding `bytes`, in the file `inode`. A record
/// is appended with the next sequence under the key's lock, and a log replaced whole is a
/// new inode; an inode number freed and used again may meet an old sequence, so the bytes'
/// hash is part of it too, as in [`version_of`].
fn record_version(inode: u64, sequence: u64, bytes: &[u8]) -> Version {
    Version {
        e_tag: Some(format!("{inode:x}-r{sequence:x}-{:016x}", fnv1a(bytes))),
        version: None,
    }
}

/// FNV-1a, 64 bits: stable across processes and releases, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv1a_from(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn record_checksum(nonce: u64, length: u32, sequence: u64, bytes: &[u8]) -> u64 {
    let hash = fnv1a(&nonce.to_le_bytes());
    let hash = fnv1a_from(hash, &length.to_le_bytes());
    let hash = fnv1a_from(hash, &sequence.to_le_bytes());
    fnv1a_from(hash, bytes)
}

/// A record of the log `nonce` as it is written: header, then bytes.
fn encode_record(nonce: u64, sequence: u64, bytes: &[u8]) -> StoreResult<Vec<u8>> {
    let length = u32::try_from(bytes.len()).map_err(|_| {
        StoreError::Invalid(format!(
            "an object of {} bytes is over the 4 GiB a directory holds",
            bytes.len()
        ))
    })?;
    let mut record = Vec::with_capacity(RECORD_HEADER + bytes.len());
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&sequence.to_le_bytes());
    record.extend_from_slice(&record_checksum(nonce, length, sequence, bytes).to_le_bytes());
    record.extend_from_slice(bytes);
    Ok(record)
}

/// A new log of one record, under a fresh nonce.
fn encode_log(sequence: u64, bytes: &[u8]) -> StoreResult<Vec<u8>> {
    let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut log = MAGIC.to_vec();
    log.extend_from_slice(&nonce.to_le_bytes());
    log.extend(encode_record(nonce, sequence, bytes)?);
    Ok(log)
}

/// What a file holds, as read.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    /// A log: its last whole record (where its bytes lie in the file), and where the
    /// next record goes (the first block after that one: anything from there on is a
    /// torn record).
    Log {
        nonce: u64,
        sequence: u64,
        bytes: std::ops::Range<usize>,
        end: usize,
    },
    /// A file read whole: written by a release before the log.
    Whole,
    /// A log without a whole record: no object. A create links only whole, synced logs,
    /// so this is damage; a create of the key replaces it.
    Unfinished,
}

/// Reads `contents` as a log: the last record whose checksum holds, stopping at the first
/// that does not (or that the file ends in the middle of, or that does not follow the one
/// before).
fn parse(contents: &[u8]) -> Layout {
    if contents.len() < LOG_HEADER {
        // An empty file is an empty object of an earlier release (an empty marker): a
        // create links only whole logs.
        let begun = if contents.is_empty() {
            false
        } else if contents.len() <= MAGIC.len() {
            MAGIC.starts_with(contents)
        } else {
            contents.starts_with(MAGIC)
        };
        return if begun {
            Layout::Unfinished
        } else {
            Layout::Whole
        };
    }
    let Some(after_magic) = contents.strip_prefix(MAGIC.as_slice()) else {
        return Layout::Whole;
    };
    let nonce = u64::from_le_bytes(after_magic[..8].try_into().unwrap_or_default());
    let mut offset = LOG_HEADER;
    let mut last = Layout::Unfinished;
    while let Some(rest) = contents.get(offset..)
        && rest.len() >= RECORD_HEADER
    {
        let (header, after) = rest.split_at(RECORD_HEADER);
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut word = [0; 8];
        word.copy_from_slice(&header[4..12]);
        let sequence = u64::from_le_bytes(word);
        word.copy_from_slice(&header[12..20]);
        let checksum = u64::from_le_bytes(word);
        let Ok(size) = usize::try_from(length) else {
            break;
        };
        let Some(bytes) = after.get(..size) else {
            break;
        };
        if record_checksum(nonce, length, sequence, bytes) != checksum {
            break;
        }
        if let Layout::Log {
            sequence: previous, ..
        } = last
            && sequence != previous.wrapping_add(1)
        {
            break;
        }
        let start = offset + RECORD_HEADER;
        let next = (start + size).next_multiple_of(BLOCK);
        last = Layout::Log {
            nonce,
            sequence,
            bytes: start..start + size,
            end: next,
        };
        offset = next;
    }
    last
}

/// A file as read: the object (`None` while unfinished), and where its log stands.
struct Opened {
    stored: Option<Stored>,
    layout: Layout,
    file: File,
    inode: u64,
    /// The file's length, as read.
    length: u64,
    /// The names the file has: more than one for a file created shared
    /// ([`create_shared`]).
    links: u64,
}

fn read(file: &Path) -> StoreResult<Option<Stored>> {
    Ok(open_and_read(file, false)?.and_then(|opened| opened.stored))
}

/// Opens `file` (for writing too when `write`) and reads the object in it.
fn open_and_read(file: &Path, write: bool) -> StoreResult<Option<Opened>> {
    let mut opened = match OpenOptions::new().read(true).write(write).open(file) {
        Ok(opened) => opened,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        // A directory of longer keys (`a` beside `a/b`) opened for writing.
        Err(err) if write && err.kind() == ErrorKind::IsADirectory => return Ok(None),
        Err(err) => return Err(io_error(err)),
    };
    // The version of the file opened, whatever replaces its name meanwhile.
    let metadata = opened.metadata().map_err(io_error)?;
    if metadata.is_dir() {
        // A directory of longer keys (`a` beside `a/b`): no object by that name.
        return Ok(None);
    }
    let mut contents = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    opened.read_to_end(&mut contents).map_err(io_error)?;
    let length = u64::try_from(contents.len()).unwrap_or(u64::MAX);
    let layout = parse(&contents);
    let stored = match &layout {
        Layout::Log {
            sequence, bytes, ..
        } => {
            let bytes = Bytes::from(contents).slice(bytes.clone());
            Some(Stored {
                version: record_version(metadata.ino(), *sequence, &bytes),
                bytes,
            })
        }
        Layout::Whole => Some(Stored {
            version: version_of(&metadata, &contents),
            bytes: Bytes::from(contents),
        }),
        Layout::Unfinished => None,
    };
    Ok(Some(Opened {
        stored,
        layout,
        file: opened,
        inode: metadata.ino(),
        length,
        links: metadata.nlink(),
    }))
}

/// Writes a log of `bytes` (as record `sequence`) to a new synced temporary file; returns
/// its path and the version it will have under the name it is linked or renamed to (the
/// same inode).
fn temporary(root: &Path, sequence: u64, bytes: &[u8]) -> StoreResult<(PathBuf, Version)> {
    let log = encode_log(sequence, bytes)?;
    // A fresh UUID: process ids repeat across containers sharing a volume, and machines.
    let path = root.join(TEMPORARY).join(TaskId::new().to_string());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_error)?;
    file.write_all(&log).map_err(io_error)?;
    // Its bytes and size; its name is made durable by the sync of the directory it is
    // linked or renamed into.
    file.sync_data().map_err(io_error)?;
    let version = record_version(file.metadata().map_err(io_error)?.ino(), sequence, bytes);
    Ok((path, version))
}

/// Syncs the directory holding `file`, so that a new or removed entry survives a crash.
fn sync_parent(file: &Path) -> StoreResult<()> {
    if let Some(parent) = file.parent() {
        sync_directory(parent).map_err(io_error)?;
    }
    Ok(())
}

/// The changes made to one directory's entries and how many of them a sync has covered:
/// a change made before a sync began is durable once it ends.
#[derive(Debug, Default)]
struct DirectorySync {
    changed: AtomicU64,
    synced: Mutex<u64>,
}

/// Syncs `dir` after a change to its entries, sharing syncs between threads (group
/// commit): a thread whose change an ended sync already covered does not sync again, and
/// one that waited for a sync in progress usually finds its change covered by it. Many
/// writers in one directory (tasks, markers, events) then cost one sync per round, not
/// one each.
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    static SYNCS: LazyLock<Mutex<HashMap<PathBuf, Arc<DirectorySync>>>> =
        LazyLock::new(Mutex::default);
    let state = Arc::clone(
        SYNCS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dir.to_path_buf())
            .or_default(),
    );
    // Counted after the change was made: any sync that reads a count at least this high
    // began after it.
    let mine = state.changed.fetch_add(1, Ordering::SeqCst) + 1;
    let mut synced = state.synced.lock().unwrap_or_else(PoisonError::into_inner);
    if *synced >= mine {
        return Ok(());
    }
    let covering = state.changed.load(Ordering::SeqCst);
    File::open(dir)?.sync_all()?;
    *synced = covering;
    Ok(())
}

/// Creates the directories above `file` that are missing, and syncs each directory that
/// gained one, so that a file created in a new directory survives a crash with it.
fn ensure_parent(root: &Path, file: &Path) -> StoreResult<()> {
    let Some(parent) = file.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    let mut missing: Vec<&Path> = parent
        .ancestors()
        .take_while(|dir| *dir != root && !dir.is_dir())
        .collect();
    fs::create_dir_all(parent).map_err(io_error)?;
    // The highest new directory first: its parent gained it, then each gained the next.
    missing.reverse();
    for dir in missing {
        sync_parent(dir)?;
    }
    Ok(())
}

/// The stripe lock of a key, held until dropped: the file's `flock` (released when the
/// file closes), inside this process's mutex of the stripe.
struct Held {
    _file: File,
    _within: MutexGuard<'static, ()>,
}

/// Takes the stripe lock of `key`.
fn lock(root: &Path, key: &str) -> StoreResult<Held> {
    let stripe = fnv1a(key.as_bytes()) % LOCK_STRIPES;
    let within = STRIPES[usize::try_from(stripe).unwrap_or(0)]
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let path = root.join(LOCKS).join(format!("{stripe:02}"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error)?;
    flock(&file, FlockOperation::LockExclusive).map_err(|err| io_error(err.into()))?;
    Ok(Held {
        _file: file,
        _within: within,
    })
}

/// Syncs the directory of an entry that is in place already: a failure is logged, not
/// returned, since the change is made and visible (only its survival of a power loss is
/// in doubt), and an error would have the caller retry a write that landed.
fn sync_after_change(file: &Path) {
    if let Err(err) = sync_parent(file) {
        tracing::warn!(%err, file = %file.display(), "cannot sync a directory after a change");
    }
}

/// Creates `file`: a synced temporary file linked to the key's name, so that the name
/// only ever names a whole, synced log (a file made in place could come back from a power
/// loss with its length but not its bytes, and nothing could tell it from an object of
/// an earlier release).
fn create(root: &Path, key: &str, file: &Path, bytes: &[u8]) -> StoreResult<Option<Version>> {
    ensure_parent(root, file)?;
    let (staged, version) = temporary(root, 1, bytes)?;
    let linked = (|| {
        let _held = lock(root, key)?;
        let mut linked = fs::hard_link(&staged, file);
        if linked
            .as_ref()
            .is_err_and(|err| err.kind() == ErrorKind::AlreadyExists)
            && open_and_read(file, false)?.is_some_and(|left| left.layout == Layout::Unfinished)
        {
            // A damaged log that no reader takes for an object: a create must not find
            // its key taken by it for ever.
            linked = fs::rename(&staged, file);
        }
        if linked.is_ok() {
            // Before the lock is let go: a replace that takes it next appends to this
            // file in place, syncing no directory, and acknowledges a write that a power
            // loss must not take back with the name.
            sync_after_change(file);
            // And its temporary name, so that the replace finds a file of one name,
            // which it appends to (see `update`).
            let _ = fs::remove_file(&staged);
        }
        Ok(linked)
    })();
    if !matches!(linked, Ok(Ok(()))) {
        // Not linked (or the lock not taken): still ours to remove, its name being unique.
        let _ = fs::remove_file(&staged);
    }
    match linked? {
        Ok(()) => Ok(Some(version)),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(None),
        Err(err) => Err(io_error(err)),
    }
}

/// Creates each of `files` (key and path) holding `bytes`: one synced temporary file,
/// hard-linked to every key's name, where [`create`] makes and syncs a file a key.
///
/// A replace appends in place only to a file of one name, so a key's later writes never
/// reach the others. The temporary file keeps its own name until every new name and the
/// link count are synced: until then each key's file has another name too, and a
/// replace that finds it writes a new file and syncs the key's directory itself, instead
/// of appending to a name not yet durable (as `create` syncs before it lets the key's
/// lock go). The link count is synced (an `fsync` of the file) so that a power loss
/// cannot leave one name counted where there are many: deleting that one would free the
/// file the others still name. A key taken already, by an object or by a damaged log, is
/// left to [`create`].
fn create_shared(
    root: &Path,
    files: &[(String, PathBuf)],
    bytes: &[u8],
) -> StoreResult<Vec<Option<Version>>> {
    if let [(key, file)] = files {
        return Ok(vec![create(root, key, file, bytes)?]);
    }
    let mut dirs: Vec<&Path> = files.iter().filter_map(|(_, file)| file.parent()).collect();
    dirs.sort_unstable();
    dirs.dedup();
    for (_, file) in files {
        ensure_parent(root, file)?;
    }
    let (staged, version) = temporary(root, 1, bytes)?;
    let mut created = Vec::with_capacity(files.len());
    let mut failure = None;
    for (key, file) in files {
        let linked = lock(root, key).and_then(|_held| match fs::hard_link(&staged, file) {
            Ok(()) => Ok(Some(version.clone())),
            Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(io_error(err)),
        });
        match linked {
            Ok(linked) => created.push(linked),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    // Whatever was linked, even on the way to an error: the names made must be counted.
    let synced = File::open(&staged).and_then(|file| file.sync_all());
    for dir in dirs {
        if let Err(err) = sync_directory(dir) {
            tracing::warn!(%err, dir = %dir.display(), "cannot sync a directory after a change");
        }
    }
    let _ = fs::remove_file(&staged);
    if let Some(err) = failure {
        return Err(err);
    }
    synced.map_err(io_error)?;
    for ((key, file), created) in files.iter().zip(created.iter_mut()) {
        if created.is_none() {
            *created = create(root, key, file, bytes)?;
        }
    }
    Ok(created)
}

/// Replaces `file` if it is still `expected`; an append in place is synced unless
/// `durable` is false (a log replaced whole always is: its name must never come back
/// naming a file without its bytes).
fn update(
    root: &Path,
    key: &str,
    file: &Path,
    bytes: &[u8],
    expected: &Version,
    durable: bool,
) -> StoreResult<Option<Version>> {
    let held = lock(root, key)?;
    let Some(current) = open_and_read(file, true)? else {
        return Ok(None);
    };
    if current.stored.as_ref().map(|stored| &stored.version) != Some(expected) {
        return Ok(None);
    }
    let (sequence, log) = match current.layout {
        Layout::Log {
            nonce,
            sequence,
            end,
            ..
        } => (sequence.wrapping_add(1), Some((nonce, end))),
        Layout::Whole | Layout::Unfinished => (1, None),
    };
    let appended = match log {
        Some((nonce, end)) => Some((encode_record(nonce, sequence, bytes)?, end)),
        None => None,
    };
    // A file of more than one name is replaced whole: an append would change the object
    // of every key that names it.
    if let Some((record, end)) = appended.filter(|_| current.links == 1)
        && let Ok(end) = u64::try_from(end)
        && let record_length = u64::try_from(record.len()).unwrap_or(u64::MAX)
        && end.saturating_add(record_length) <= COMPACT_AT.max(record_length.saturating_mul(4))
    {
        // Over a torn record a crash left, if any; what is left of it after the new one
        // is cut off, so that no reader ever reads on into it.
        current.file.write_all_at(&record, end).map_err(io_error)?;
        let new_end = end + record_length;
        if current.length > new_end {
            current.file.set_len(new_end).map_err(io_error)?;
        }
        if durable {
            current.file.sync_data().map_err(io_error)?;
        }
        return Ok(Some(record_version(current.inode, sequence, bytes)));
    }
    // A log to start or one grown long: replaced whole, by a file made outside the lock.
    drop(current);
    drop(held);
    let (staged, version) = temporary(root, sequence, bytes)?;
    let replaced = (|| {
        let _held = lock(root, key)?;
        match read(file)? {
            Some(current) if current.version == *expected => {}
            _ => return Ok(None),
        }
        fs::rename(&staged, file).map_err(io_error)?;
        // Before the lock is let go, as in `create`: the next replace appends in place.
        sync_after_change(file);
        Ok(Some(version.clone()))
    })();
    if !matches!(replaced, Ok(Some(_))) {
        // Not renamed into place: still ours to remove (its name is unique).
        let _ = fs::remove_file(&staged);
    }
    replaced
}

/// Deletes `file` (if still `expected`); syncs its directory after unless `durable` is
/// false.
fn delete(
    root: &Path,
    key: &str,
    file: &Path,
    expected: Option<&Version>,
    durable: bool,
) -> StoreResult<bool> {
    let removed = {
        let _held = lock(root, key)?;
        if let Some(expected) = expected {
            match read(file)? {
                Some(current) if current.version == *expected => {}
                _ => return Ok(false),
            }
        }
        fs::remove_file(file)
    };
    match removed {
        Ok(()) => {
            if durable {
                sync_after_change(file);
            }
            Ok(true)
        }
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_error(err)),
    }
}

/// At most `limit` keys under `dir` (whose key is `prefix`, empty for the root) that sort
/// after `after`, in byte order, appended to `keys`: [`Objects::list_page`] without
/// sorting or even keeping the whole listing. A claim reads a page of a queue's ready
/// markers each time, and a queue with a long backlog keeps many thousands of names in
/// one directory, which a local file system hands out in hash order: every page reads
/// them all, so what each name costs is what matters.
fn walk_page(
    dir: &Path,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    keys: &mut Vec<String>,
) -> StoreResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(err) => return Err(io_error(err)),
    };
    // Each entry under the key its subtree sorts by: a file's key, or a directory's key
    // and a `/`, which every key under it starts with; ordering entries by these and
    // expanding directories in place gives the keys in byte order.
    let mut candidates: Vec<(String, bool)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        let Some(name) = name
            .to_str()
            .filter(|name| valid_segment(name) && prefix.len() + 1 + name.len() <= MAX_KEY)
        else {
            // Not a key, nor a directory of keys: what `list` leaves out too.
            continue;
        };
        let is_dir = entry.file_type().map_err(io_error)?.is_dir();
        let mut key = String::with_capacity(prefix.len() + name.len() + 2);
        if !prefix.is_empty() {
            key.push_str(prefix);
            key.push('/');
        }
        key.push_str(name);
        if is_dir {
            key.push('/');
        }
        let passed = after.is_some_and(|after| {
            // A directory is passed when every key under it sorts before `after`.
            *after >= *key && !(is_dir && after.starts_with(key.as_str()))
        });
        if !passed {
            candidates.push((key, is_dir));
        }
    }
    let mut rest = candidates.as_mut_slice();
    while !rest.is_empty() && keys.len() < limit {
        // The fewest entries that can fill the page, in order: a page of a long
        // directory sorts a page's worth of names, not the directory.
        let wanted = (limit - keys.len()).min(rest.len());
        if wanted < rest.len() {
            rest.select_nth_unstable_by(wanted, |a, b| a.0.cmp(&b.0));
        }
        let (first, later) = std::mem::take(&mut rest).split_at_mut(wanted);
        first.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, is_dir) in first.iter_mut() {
            if keys.len() >= limit {
                break;
            }
            if *is_dir {
                key.pop();
                let name = key.rsplit('/').next().unwrap_or_default();
                walk_page(&dir.join(name), key, after, limit, keys)?;
            } else {
                keys.push(std::mem::take(key));
            }
        }
        rest = later;
    }
    Ok(())
}

impl Objects for DirectoryObjects {
    fn get(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<Stored>>> {
        let file = self.file(key);
        Box::pin(async move {
            let file = file?;
            self.blocking(move |_| read(&file)).await
        })
    }

    fn create(&self, key: &str, bytes: Bytes) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        let key = key.to_owned();
        let file = self.file(&key);
        Box::pin(async move {
            let file = file?;
            self.blocking(move |root| create(root, &key, &file, &bytes))
                .await
        })
    }

    fn create_shared(
        &self,
        keys: Vec<String>,
        bytes: Bytes,
    ) -> BoxFuture<'_, StoreResult<Vec<Option<Version>>>> {
        let files: StoreResult<Vec<_>> = keys
            .into_iter()
            .map(|key| self.file(&key).map(|file| (key, file)))
            .collect();
        Box::pin(async move {
            let files = files?;
            if files.is_empty() {
                return Ok(Vec::new());
            }
            self.blocking(move |root| create_shared(root, &files, &bytes))
                .await
        })
    }

    fn shares_creates(&self) -> bool {
        true
    }

    fn update(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        self.replace(key, bytes, expected, true)
    }

    fn update_unsynced(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        // An append not synced: a crash of the machine may take the record back, and the
        // file then reads as the write before it (the append never touched that write's
        // blocks), which is what the caller tolerates.
        self.replace(key, bytes, expected, false)
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        let file = self.file(&key);
        Box::pin(async move {
            let file = file?;
            self.blocking(move |root| delete(root, &key, &file, None, true).map(drop))
                .await
        })
    }

    fn delete_unsynced(&self, keys: Vec<String>) -> BoxFuture<'_, StoreResult<()>> {
        let files: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let file = self.file(&key);
                (key, file)
            })
            .collect();
        Box::pin(async move {
            if files.is_empty() {
                return Ok(());
            }
            // No directory sync: a crash may bring the entries back, which the callers
            // tolerate; the sync is a journal commit each writer would otherwise wait on.
            // All in one blocking call: a claim or a batch of completions drops a marker
            // a task, and a hand-off to a blocking thread costs more than an unlink.
            self.blocking(move |root| {
                let mut first_error = None;
                for (key, file) in files {
                    let deleted =
                        file.and_then(|file| delete(root, &key, &file, None, false).map(drop));
                    if let Err(err) = deleted {
                        first_error.get_or_insert(err);
                    }
                }
                first_error.map_or(Ok(()), Err)
            })
            .await
        })
    }

    fn delete_if(&self, key: &str, expected: &Version) -> BoxFuture<'_, StoreResult<bool>> {
        let key = key.to_owned();
        let file = self.file(&key);
        let expected = expected.clone();
        Box::pin(async move {
            let file = file?;
            self.blocking(move |root| delete(root, &key, &file, Some(&expected), true))
                .await
        })
    }

    fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let prefix = prefix.trim_matches('/').to_owned();
        let after = after.map(str::to_owned);
        Box::pin(async move {
            if !prefix.is_empty() && !valid_key(&prefix) {
                return Err(invalid_key(&prefix));
            }
            self.blocking(move |root| {
                let mut keys = Vec::new();
                walk_page(
                    &root.join(&prefix),
                    &prefix,
                    after.as_deref(),
                    limit,
                    &mut keys,
                )?;
                Ok(keys)
            })
            .await
        })
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let prefix = prefix.trim_matches('/').to_owned();
        Box::pin(async move {
            if !prefix.is_empty() && !valid_key(&prefix) {
                return Err(invalid_key(&prefix));
            }
            self.blocking(move |root| {
                let mut keys = Vec::new();
                walk_page(&root.join(&prefix), &prefix, None, usize::MAX, &mut keys)?;
                Ok(keys)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: u64 = 0x0123_4567_89ab_cdef;

    /// A log of `writes`, each record after the first at a block boundary.
    fn log_of(nonce: u64, writes: &[&[u8]]) -> Vec<u8> {
        let mut log = MAGIC.to_vec();
        log.extend_from_slice(&nonce.to_le_bytes());
        for (sequence, bytes) in (1..).zip(writes) {
            if sequence > 1 {
                log.resize(log.len().next_multiple_of(BLOCK), 0);
            }
            log.extend(encode_record(nonce, sequence, bytes).expect("record"));
        }
        log
    }

    fn object<'a>(contents: &'a [u8], layout: &Layout) -> Option<&'a [u8]> {
        match layout {
            Layout::Log { bytes, .. } => Some(&contents[bytes.clone()]),
            Layout::Whole => Some(contents),
            Layout::Unfinished => None,
        }
    }

    #[test]
    fn a_log_cut_anywhere_reads_as_its_last_whole_record() {
        let writes: [&[u8]; 3] = [b"first", b"", b"the third write"];
        let log = log_of(NONCE, &writes);
        let mut ends = vec![];
        let mut end = LOG_HEADER;
        for bytes in writes {
            end = end.next_multiple_of(if ends.is_empty() { 1 } else { BLOCK });
            end += RECORD_HEADER + bytes.len();
            ends.push(end);
        }
        for cut in 0..=log.len() {
            let contents = &log[..cut];
            let layout = parse(contents);
            match ends.iter().rposition(|end| *end <= cut) {
                Some(last) => {
                    assert_eq!(
                        object(contents, &layout),
                        Some(writes[last]),
                        "cut at {cut}"
                    );
                    assert!(
                        matches!(layout, Layout::Log { sequence, end, .. }
                            if sequence == last as u64 + 1
                                && end == ends[last].next_multiple_of(BLOCK)),
                        "cut at {cut}: {layout:?}"
                    );
                }
                // An empty file is an earlier release's empty object.
                None if cut == 0 => assert_eq!(layout, Layout::Whole),
                // No whole record: no object.
                None => assert_eq!(layout, Layout::Unfinished, "cut at {cut}"),
            }
        }
    }

    #[test]
    fn a_damaged_record_ends_the_log_before_it() {
        let mut log = log_of(NONCE, &[b"kept", b"damaged", b"after"]);
        let damaged = BLOCK + RECORD_HEADER + 2;
        log[damaged] ^= 0x40;
        let layout = parse(&log);
        assert_eq!(object(&log, &layout), Some(&b"kept"[..]));
    }

    /// What a crash can expose after a log's last record, without a journal: a block's
    /// old bytes, whole records of another file, or of this one out of order.
    #[test]
    fn a_record_of_another_log_or_out_of_order_ends_the_log() {
        let after_kept = |nonce: u64, sequence: u64, bytes: &[u8]| {
            let mut log = log_of(NONCE, &[b"kept"]);
            log.resize(BLOCK, 0);
            log.extend(encode_record(nonce, sequence, bytes).expect("record"));
            log
        };
        let log = after_kept(NONCE ^ 1, 2, b"another file's");
        assert_eq!(object(&log, &parse(&log)), Some(&b"kept"[..]));
        let log = after_kept(NONCE, 3, b"not the next");
        assert_eq!(object(&log, &parse(&log)), Some(&b"kept"[..]));
        let log = after_kept(NONCE, 2, b"the next");
        assert_eq!(object(&log, &parse(&log)), Some(&b"the next"[..]));
        // Not at the block boundary: not where a record is ever written.
        let mut log = log_of(NONCE, &[b"kept"]);
        log.extend(encode_record(NONCE, 2, b"unaligned").expect("record"));
        assert_eq!(object(&log, &parse(&log)), Some(&b"kept"[..]));
    }

    #[test]
    fn a_file_without_the_header_is_one_object() {
        for contents in [
            &b"{\"json\":1}"[..],
            b"",
            b"\0other",
            b"\0omniq2\n-and-more",
        ] {
            assert_eq!(parse(contents), Layout::Whole, "{contents:?}");
        }
    }

    #[test]
    fn a_log_without_a_whole_record_is_unfinished() {
        let whole = log_of(NONCE, &[b"one"]);
        for cut in [1, MAGIC.len(), LOG_HEADER - 1, LOG_HEADER, whole.len() - 1] {
            assert_eq!(parse(&whole[..cut]), Layout::Unfinished, "cut at {cut}");
        }
    }

    fn links(path: &Path) -> u64 {
        fs::metadata(path).expect("metadata").nlink()
    }

    /// Keys created together name one file, counted by its links; a damaged log in the
    /// way is replaced by a file of its own; a replace of one key writes it a new file
    /// while the file has other names, and appends in place once it has one.
    #[tokio::test]
    async fn keys_created_together_name_one_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        fs::create_dir_all(dir.path().join("leases")).expect("mkdir");
        let log = log_of(NONCE, &[b"never finished"]);
        fs::write(dir.path().join("leases/damaged"), &log[..LOG_HEADER + 5]).expect("write");
        let keys = ["leases/a", "leases/damaged", "leases/b", "new/c"];
        let created = objects
            .create_shared(
                keys.iter().map(|key| (*key).to_owned()).collect(),
                Bytes::from_static(b"shared"),
            )
            .await
            .expect("create together");
        assert!(created.iter().all(Option::is_some), "{created:?}");
        let path = |key: &str| dir.path().join(key);
        assert_eq!(inode(&path("leases/a")), inode(&path("leases/b")));
        assert_eq!(inode(&path("leases/a")), inode(&path("new/c")));
        assert_eq!(links(&path("leases/a")), 3, "the temporary name is gone");
        assert_ne!(inode(&path("leases/damaged")), inode(&path("leases/a")));
        assert_eq!(
            objects
                .get("leases/damaged")
                .await
                .expect("get")
                .map(|s| s.bytes),
            Some(Bytes::from_static(b"shared"))
        );
        assert_eq!(
            fs::read_dir(dir.path().join(TEMPORARY))
                .expect("read")
                .count(),
            0,
            "no temporary file left"
        );
        let shared = inode(&path("leases/a"));
        let version = created[0].clone().expect("created");
        objects
            .update("leases/a", Bytes::from_static(b"a's own"), &version)
            .await
            .expect("update")
            .expect("replaced");
        assert_ne!(
            inode(&path("leases/a")),
            shared,
            "a file of three names is not appended to"
        );
        assert_eq!(links(&path("leases/b")), 2);
        objects.delete("leases/b").await.expect("delete");
        assert_eq!(links(&path("new/c")), 1);
        let stored = objects.get("new/c").await.expect("get").expect("kept");
        assert_eq!(stored.bytes, Bytes::from_static(b"shared"));
        objects
            .update("new/c", Bytes::from_static(b"c's own"), &stored.version)
            .await
            .expect("update")
            .expect("replaced");
        assert_eq!(
            inode(&path("new/c")),
            shared,
            "a file of one name is appended to"
        );
    }

    #[tokio::test]
    async fn a_create_cut_short_is_no_object_and_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        // A writer killed after making the file, in the middle of its record.
        let log = log_of(NONCE, &[b"never finished"]);
        fs::write(dir.path().join("k"), &log[..LOG_HEADER + 5]).expect("write");
        assert_eq!(objects.get("k").await.expect("get"), None);
        let version = objects
            .create("k", Bytes::from_static(b"mine"))
            .await
            .expect("create")
            .expect("created over the unfinished file");
        assert_eq!(
            links(&dir.path().join("k")),
            1,
            "the temporary name is gone"
        );
        let read = objects.get("k").await.expect("get").expect("stored");
        assert_eq!(
            (read.bytes, read.version),
            (Bytes::from_static(b"mine"), version)
        );
        assert_eq!(
            objects
                .create("k", Bytes::from_static(b"again"))
                .await
                .expect("create"),
            None,
            "a whole object is not taken over"
        );
    }

    /// The header and first record of a log, as they stand in `contents`.
    fn log_prefix_of(contents: &[u8]) -> Vec<u8> {
        let nonce = u64::from_le_bytes(contents[MAGIC.len()..LOG_HEADER].try_into().expect("8"));
        let mut log = MAGIC.to_vec();
        log.extend_from_slice(&nonce.to_le_bytes());
        log.extend(encode_record(nonce, 1, b"before").expect("record"));
        log
    }

    fn inode(path: &Path) -> u64 {
        fs::metadata(path).expect("metadata").ino()
    }

    #[tokio::test]
    async fn a_replace_appends_in_place_and_refuses_a_stale_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        let first = objects
            .create("a/b", Bytes::from_static(b"one"))
            .await
            .expect("create")
            .expect("created");
        let path = dir.path().join("a/b");
        let made = inode(&path);
        let second = objects
            .update("a/b", Bytes::from_static(b"two"), &first)
            .await
            .expect("update")
            .expect("replaced");
        assert_eq!(inode(&path), made, "no new file");
        assert_eq!(
            objects.get("a/b").await.expect("get"),
            Some(Stored {
                bytes: Bytes::from_static(b"two"),
                version: second.clone()
            })
        );
        assert_eq!(
            objects
                .update("a/b", Bytes::from_static(b"stale"), &first)
                .await
                .expect("update"),
            None
        );
        assert!(
            !objects.delete_if("a/b", &first).await.expect("delete_if"),
            "a stale version deletes nothing"
        );
        assert!(objects.delete_if("a/b", &second).await.expect("delete_if"));
        assert_eq!(objects.get("a/b").await.expect("get"), None);
    }

    #[tokio::test]
    async fn a_torn_record_is_read_past_and_written_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        let first = objects
            .create("k", Bytes::from_static(b"before"))
            .await
            .expect("create")
            .expect("created");
        // A crash in the middle of an append: half a record where the next one goes.
        let path = dir.path().join("k");
        let contents = fs::read(&path).expect("read");
        let nonce = u64::from_le_bytes(contents[MAGIC.len()..LOG_HEADER].try_into().expect("8"));
        let torn = encode_record(nonce, 2, &[7; 100]).expect("record");
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all_at(&torn[..60], BLOCK as u64).expect("write");
        drop(file);
        let read = objects.get("k").await.expect("get").expect("stored");
        assert_eq!(read.bytes, Bytes::from_static(b"before"));
        assert_eq!(read.version, first, "the torn record changes nothing");
        let after = objects
            .update("k", Bytes::from_static(b"after"), &first)
            .await
            .expect("update")
            .expect("replaced");
        let contents = fs::read(&path).expect("read");
        assert_eq!(
            contents.len(),
            BLOCK + RECORD_HEADER + b"after".len(),
            "the rest of the torn record is cut off"
        );
        let mut first_block = log_prefix_of(&contents);
        first_block.resize(BLOCK, 0);
        assert_eq!(
            &contents[..BLOCK],
            &first_block[..],
            "the acknowledged record's block is left as it was"
        );
        let read = objects.get("k").await.expect("get").expect("stored");
        assert_eq!(
            (read.bytes, read.version),
            (Bytes::from_static(b"after"), after.clone())
        );
        // And the log goes on past it.
        let later = objects
            .update("k", Bytes::from_static(b"later"), &after)
            .await
            .expect("update")
            .expect("replaced");
        let read = objects.get("k").await.expect("get").expect("stored");
        assert_eq!(
            (read.bytes, read.version),
            (Bytes::from_static(b"later"), later)
        );
    }

    #[tokio::test]
    async fn a_file_of_an_earlier_release_is_read_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        let path = dir.path().join("tasks/old");
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, b"{\"written\":\"before the log\"}").expect("write");
        let old = objects
            .get("tasks/old")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(
            old.bytes,
            Bytes::from_static(b"{\"written\":\"before the log\"}")
        );
        let new = objects
            .update("tasks/old", Bytes::from_static(b"new"), &old.version)
            .await
            .expect("update")
            .expect("replaced");
        assert!(fs::read(&path).expect("read").starts_with(MAGIC));
        let newer = objects
            .update("tasks/old", Bytes::from_static(b"newer"), &new)
            .await
            .expect("update")
            .expect("replaced");
        let read = objects
            .get("tasks/old")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(
            (read.bytes, read.version),
            (Bytes::from_static(b"newer"), newer)
        );
    }

    #[tokio::test]
    async fn a_long_log_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        let path = dir.path().join("big");
        let mut version = objects
            .create("big", Bytes::from(vec![0; 1000]))
            .await
            .expect("create")
            .expect("created");
        let mut file = inode(&path);
        let mut files = 1;
        for round in 1..=200_u32 {
            let bytes = Bytes::from(vec![u8::try_from(round % 251).expect("byte"); 1000]);
            version = objects
                .update("big", bytes.clone(), &version)
                .await
                .expect("update")
                .expect("replaced");
            let length = fs::metadata(&path).expect("metadata").len();
            assert!(length <= COMPACT_AT, "round {round}: {length} bytes");
            // A freed inode's number may come back at once: a new file is told by the
            // change, not by the number.
            if inode(&path) != file {
                file = inode(&path);
                files += 1;
            }
            let read = objects.get("big").await.expect("get").expect("stored");
            assert_eq!(
                (read.bytes, &read.version),
                (bytes, &version),
                "round {round}"
            );
        }
        // A block a record, about 16 records a log: a dozen new files, not one a write.
        assert!((10..=20).contains(&files), "{files} files");
    }

    struct SetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Readers take no lock while a writer appends: every read is a whole write.
    #[test]
    fn readers_never_see_half_a_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join(LOCKS)).expect("mkdir");
        fs::create_dir_all(root.join(TEMPORARY)).expect("mkdir");
        let file = root.join("k");
        let value = |n: u32| n.to_le_bytes().repeat(50 + (n % 7) as usize * 40);
        create(&root, "k", &file, &value(0)).expect("create");
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut reads = 0_u32;
                let mut last = 0;
                while !done.load(Ordering::SeqCst) || reads == 0 {
                    let stored = read(&file).expect("read").expect("stored");
                    let n = u32::from_le_bytes(stored.bytes[..4].try_into().expect("4 bytes"));
                    assert_eq!(stored.bytes, value(n), "a whole write");
                    assert!(n >= last, "never an older write after a newer one");
                    last = n;
                    reads += 1;
                }
                reads
            });
            // Set however the writer ends, so that a failing writer never leaves the
            // reader spinning (the scope waits for it).
            let _done_on_exit = SetOnDrop(&done);
            let mut version = read(&file).expect("read").expect("stored").version;
            for n in 1..=2_000 {
                version = update(&root, "k", &file, &value(n), &version, n % 2 == 0)
                    .expect("update")
                    .expect("replaced");
            }
            done.store(true, Ordering::SeqCst);
            assert!(reader.join().expect("reader") > 0);
        });
    }

    /// Readers take no lock while creates and deletes come and go: a reader finds no
    /// object, or the whole one (a create links a whole, synced file).
    #[test]
    fn readers_never_see_half_a_create() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join(LOCKS)).expect("mkdir");
        fs::create_dir_all(root.join(TEMPORARY)).expect("mkdir");
        let file = root.join("k");
        let value = |n: u32| n.to_le_bytes().repeat(2_000 + (n % 5) as usize * 500);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let (mut absent, mut whole) = (0_u32, 0_u32);
                while !done.load(Ordering::SeqCst) {
                    match read(&file).expect("read") {
                        None => absent += 1,
                        Some(stored) => {
                            let n =
                                u32::from_le_bytes(stored.bytes[..4].try_into().expect("4 bytes"));
                            assert_eq!(stored.bytes, value(n), "a whole create");
                            whole += 1;
                        }
                    }
                }
                (absent, whole)
            });
            // Set however the writer ends, so that a failing writer never leaves the
            // reader spinning (the scope waits for it).
            let _done_on_exit = SetOnDrop(&done);
            for n in 1..=1_000 {
                create(&root, "k", &file, &value(n))
                    .expect("create")
                    .expect("created");
                delete(&root, "k", &file, None, false).expect("delete");
            }
            done.store(true, Ordering::SeqCst);
            let (absent, whole) = reader.join().expect("reader");
            assert!(absent + whole > 0);
        });
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    /// Keys whose byte order differs from the order of their path segments (`-` and `.`
    /// sort before `/`), under directories of every depth, and names the store ignores.
    fn tricky_tree(root: &Path) -> Vec<String> {
        let keys = [
            "a-b", "a.b", "a/b-c", "a/b.c", "a/b/c", "a/b/c-d", "a/b/d", "a/bb", "a0", "ab/c",
            "b/0", "b/1/2", "b/1-2", "b/10", "c.d/e", "c/d", "c0",
        ];
        for key in keys {
            let path = root.join(key);
            fs::create_dir_all(path.parent().expect("a parent")).expect("dirs");
            fs::write(&path, b"x").expect("write");
        }
        // Not keys: the store's own files and an empty directory.
        fs::create_dir_all(root.join(".tmp")).expect("dirs");
        fs::write(root.join(".tmp/x"), b"x").expect("write");
        fs::write(root.join("b/.hidden"), b"x").expect("write");
        fs::create_dir_all(root.join("b/empty")).expect("dirs");
        let mut sorted: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        sorted.sort();
        sorted
    }

    #[tokio::test]
    async fn a_page_is_the_listing_after_a_key_in_byte_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sorted = tricky_tree(dir.path());
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        assert_eq!(objects.list("").await.expect("list"), sorted);
        let mut afters: Vec<Option<String>> = vec![None];
        afters.extend(sorted.iter().cloned().map(Some));
        afters.extend(
            ["", "a/", "a/b/", "a/b0", "b/1", "b/1/", "zz", "0"]
                .iter()
                .map(|after| Some((*after).to_owned())),
        );
        for prefix in ["", "a", "a/b", "b", "c.d", "missing"] {
            let under: Vec<&String> = sorted
                .iter()
                .filter(|key| prefix.is_empty() || key.starts_with(&format!("{prefix}/")))
                .collect();
            for after in &afters {
                for limit in [0, 1, 2, 3, 5, 100] {
                    let expected: Vec<String> = under
                        .iter()
                        .filter(|key| after.as_ref().is_none_or(|after| **key > after))
                        .take(limit)
                        .map(|key| (*key).clone())
                        .collect();
                    let page = objects
                        .list_page(prefix, after.as_deref(), limit)
                        .await
                        .expect("a page");
                    assert_eq!(
                        page, expected,
                        "prefix {prefix:?} after {after:?} limit {limit}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod unsynced_tests {
    use super::*;

    #[tokio::test]
    async fn deleting_many_tries_every_key_and_reports_the_first_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        for key in ["m/a", "m/b", "n/c"] {
            objects
                .create(key, Bytes::from_static(b"x"))
                .await
                .expect("create")
                .expect("created");
        }
        objects
            .delete_unsynced(vec!["m/a".to_owned(), "gone".to_owned(), "n/c".to_owned()])
            .await
            .expect("a missing key is no failure");
        assert_eq!(
            objects.list("").await.expect("list"),
            vec!["m/b".to_owned()]
        );
        let failed = objects
            .delete_unsynced(vec!["bad key".to_owned(), "m/b".to_owned()])
            .await;
        assert!(
            matches!(failed, Err(StoreError::Invalid(_))),
            "the invalid key reported: {failed:?}"
        );
        assert_eq!(
            objects.list("").await.expect("list"),
            Vec::<String>::new(),
            "the key after the failure deleted all the same"
        );
        objects
            .delete_unsynced(Vec::new())
            .await
            .expect("nothing to delete");
    }
}

#[cfg(test)]
mod unsynced_replace_tests {
    use super::*;

    #[tokio::test]
    async fn an_unsynced_replace_appends_in_place_and_is_fenced_like_any() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = DirectoryObjects::open(dir.path()).expect("open");
        let first = objects
            .create("u/k", Bytes::from_static(b"one"))
            .await
            .expect("create")
            .expect("created");
        let made = fs::metadata(dir.path().join("u/k")).expect("meta").ino();
        let second = objects
            .update_unsynced("u/k", Bytes::from_static(b"two"), &first)
            .await
            .expect("update")
            .expect("replaced");
        assert_eq!(
            fs::metadata(dir.path().join("u/k")).expect("meta").ino(),
            made
        );
        assert_eq!(
            objects
                .update_unsynced("u/k", Bytes::from_static(b"stale"), &first)
                .await
                .expect("update"),
            None
        );
        let third = objects
            .update("u/k", Bytes::from_static(b"three"), &second)
            .await
            .expect("update")
            .expect("replaced from the unsynced write's version");
        assert_eq!(
            objects.get("u/k").await.expect("get"),
            Some(Stored {
                bytes: Bytes::from_static(b"three"),
                version: third
            })
        );
    }
}
