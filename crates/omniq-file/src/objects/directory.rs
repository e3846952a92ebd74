//! [`Objects`] in a local directory, shared by every process on the machine.
//!
//! - A create writes a temporary file, syncs it, and hard-links it to the key's name: the
//!   link is refused if the name exists, so two creators never both win.
//! - A replace takes an advisory lock (`flock`), checks that the key's file is still the
//!   one read (its inode, modification time, size and bytes), and renames a synced temporary
//!   file over it. Readers take no lock: a rename swaps the whole file at once.
//! - A delete takes the same lock, so a replace never brings back a file deleted between
//!   its check and its rename.
//! - Locks are striped over a fixed set of lock files in `.locks/`, by a hash of the key.
//!
//! The directory is synced after every change to its entries (and every directory that
//! gained a new one), so a change that returned survives a crash of the machine; writers
//! in one directory share those syncs (group commit).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use omniq_models::TaskId;
use omniq_storage::{BoxFuture, StoreError, StoreResult};
use rustix::fs::{FlockOperation, flock};

use super::{Objects, Stored, Version, invalid_key, valid_key};
use crate::error::{BACKEND, io_error};

/// Lock files the keys are spread over: replaces of different keys rarely wait on each
/// other, and the directory holds a fixed number of them whatever the number of keys.
const LOCK_STRIPES: u64 = 64;
/// Where the lock files and temporary files live (never a key: keys never start with `.`).
const LOCKS: &str = ".locks";
const TEMPORARY: &str = ".tmp";

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

/// FNV-1a, 64 bits: stable across processes and releases, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn read(file: &Path) -> StoreResult<Option<Stored>> {
    let mut opened = match File::open(file) {
        Ok(opened) => opened,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error(err)),
    };
    // The version of the file opened, whatever replaces its name meanwhile.
    let metadata = opened.metadata().map_err(io_error)?;
    if metadata.is_dir() {
        // A directory of longer keys (`a` beside `a/b`): no object by that name.
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    std::io::Read::read_to_end(&mut opened, &mut bytes).map_err(io_error)?;
    let version = version_of(&metadata, &bytes);
    Ok(Some(Stored {
        bytes: Bytes::from(bytes),
        version,
    }))
}

/// Writes `bytes` to a new synced temporary file; returns its path and the version it
/// will have under any name it is linked or renamed to (the same inode, time and size).
fn temporary(root: &Path, bytes: &[u8]) -> StoreResult<(PathBuf, Version)> {
    // A fresh UUID: process ids repeat across containers sharing a volume, and machines.
    let path = root.join(TEMPORARY).join(TaskId::new().to_string());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    // Its bytes and size; its name is made durable by the sync of the directory it is
    // linked or renamed into.
    file.sync_data().map_err(io_error)?;
    let version = version_of(&file.metadata().map_err(io_error)?, bytes);
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

fn create(root: &Path, file: &Path, bytes: &[u8]) -> StoreResult<Option<Version>> {
    ensure_parent(root, file)?;
    let (staged, version) = temporary(root, bytes)?;
    let linked = fs::hard_link(&staged, file);
    let _ = fs::remove_file(&staged);
    match linked {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::AlreadyExists => return Ok(None),
        Err(err) => return Err(io_error(err)),
    }
    sync_after_change(file);
    Ok(Some(version))
}

fn update(
    root: &Path,
    key: &str,
    file: &Path,
    bytes: &[u8],
    expected: &Version,
) -> StoreResult<Option<Version>> {
    let (staged, version) = temporary(root, bytes)?;
    let replaced = (|| {
        let _held = lock(root, key)?;
        match read(file)? {
            Some(current) if current.version == *expected => {}
            _ => return Ok(None),
        }
        fs::rename(&staged, file).map_err(io_error)?;
        Ok(Some(version.clone()))
    })();
    match replaced {
        // Synced outside the lock: the replace is decided and visible, and replaces of
        // other keys of the stripe need not wait for the disk.
        Ok(Some(_)) => sync_after_change(file),
        // Not renamed into place: still ours to remove (its name is unique).
        _ => {
            let _ = fs::remove_file(&staged);
        }
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

/// Every key under `dir` (a directory of keys), recursively.
fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) -> StoreResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(err) => return Err(io_error(err)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error)?;
        if kind.is_dir() {
            walk(root, &path, keys)?;
        } else if let Some(key) = path
            .strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .filter(|key| valid_key(key))
        {
            keys.push(key.to_owned());
        }
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
        let file = self.file(key);
        Box::pin(async move {
            let file = file?;
            self.blocking(move |root| create(root, &file, &bytes)).await
        })
    }

    fn update(
        &self,
        key: &str,
        bytes: Bytes,
        expected: &Version,
    ) -> BoxFuture<'_, StoreResult<Option<Version>>> {
        let key = key.to_owned();
        let file = self.file(&key);
        let expected = expected.clone();
        Box::pin(async move {
            let file = file?;
            self.blocking(move |root| update(root, &key, &file, &bytes, &expected))
                .await
        })
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

    fn delete_unsynced(&self, key: &str) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        let file = self.file(&key);
        Box::pin(async move {
            let file = file?;
            // No directory sync: a crash may bring the entry back, which the callers
            // tolerate; the sync is a journal commit each writer would otherwise wait on.
            self.blocking(move |root| delete(root, &key, &file, None, false).map(drop))
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

    fn list(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let prefix = prefix.trim_matches('/').to_owned();
        Box::pin(async move {
            if !prefix.is_empty() && !valid_key(&prefix) {
                return Err(invalid_key(&prefix));
            }
            self.blocking(move |root| {
                let mut keys = Vec::new();
                walk(root, &root.join(&prefix), &mut keys)?;
                keys.sort();
                Ok(keys)
            })
            .await
        })
    }
}
