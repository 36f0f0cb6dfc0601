//! The store: a data directory holding any number of collections.
//!
//! Layout: `<root>/LOCK` (held while open), `<root>/collections/<name>/` per
//! collection, `<root>/snapshots/<name>/<name>-<millis>.snapshot` per snapshot
//! (kept after the collection is dropped, so it can be restored). Every path
//! built from a request goes through [`CollectionName`] and [`SnapshotName`]. A collection is created in a hidden temporary directory and renamed
//! into place once its manifest is durable; dropping renames it to a hidden name
//! before deleting it, so a crash never leaves a half-made or half-deleted
//! collection visible. Hidden leftovers are removed at open.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::collection::Collection;
use crate::config::CollectionConfig;
use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::sync_dir;
use crate::manifest::MANIFEST_FILE;
use crate::name::{CollectionName, SnapshotName};
use crate::snapshot::{self, SnapshotInfo};

/// A snapshot file kept in the store's `snapshots/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The collection it was taken of.
    pub collection: CollectionName,
    /// Its file name.
    pub name: SnapshotName,
    /// Its size in bytes.
    pub bytes: u64,
}

/// An open data directory. `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    collections: RwLock<BTreeMap<String, Collection>>,
    _lock: File,
}

fn unique_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Store {
    /// Opens (or creates) the data directory `root` and every collection in it.
    /// Fails with [`StoreError::Locked`] when another store has it open.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let cdir = root.join("collections");
        fs::create_dir_all(&cdir).at(&cdir)?;
        let lock_path = root.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: lock_path });
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).at(&lock_path),
        }
        let mut collections = BTreeMap::new();
        for entry in fs::read_dir(&cdir).at(&cdir)? {
            let entry = entry.at(&cdir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !entry.file_type().at(&path)?.is_dir() {
                continue;
            }
            if name.starts_with('.') {
                tracing::info!(dir = %path.display(), "removing an unfinished create, drop or restore");
                fs::remove_dir_all(&path).at(&path)?;
                continue;
            }
            if CollectionName::parse(&name).is_err() || !path.join(MANIFEST_FILE).exists() {
                tracing::warn!(dir = %path.display(), "skipping a directory that is not a collection");
                continue;
            }
            collections.insert(name.clone(), Collection::open(&name, &path)?);
        }
        Ok(Store {
            root,
            collections: RwLock::new(collections),
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn collection_dir(&self, name: &CollectionName) -> PathBuf {
        self.root.join("collections").join(name.as_str())
    }

    fn snapshot_dir(&self, name: &CollectionName) -> PathBuf {
        self.root.join("snapshots").join(name.as_str())
    }

    /// Creates a collection.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        let name = &CollectionName::parse(name)?;
        config.validate()?;
        let mut map = self.collections.write();
        if map.contains_key(name.as_str()) {
            return Err(StoreError::CollectionExists {
                name: name.to_string(),
            });
        }
        let dir = self.collection_dir(name);
        let tmp = self
            .root
            .join("collections")
            .join(format!(".creating-{name}-{}", unique_suffix()));
        // Create and close once so the manifest is durable before the rename.
        Collection::create(name.as_str(), &tmp, config)?.close()?;
        fs::rename(&tmp, &dir).at(&dir)?;
        sync_dir(&self.root.join("collections"))?;
        let c = Collection::open(name.as_str(), &dir)?;
        map.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// A handle to the named collection.
    pub fn collection(&self, name: &str) -> Result<Collection> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::CollectionNotFound { name: name.into() })
    }

    /// Collection names, sorted.
    pub fn list(&self) -> Vec<String> {
        self.collections.read().keys().cloned().collect()
    }

    /// Deletes a collection and its files. Handles still held fail on write.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let name = &CollectionName::parse(name)?;
        let c = self
            .collections
            .write()
            .remove(name.as_str())
            .ok_or_else(|| StoreError::CollectionNotFound {
                name: name.to_string(),
            })?;
        c.close()?;
        let dir = self.collection_dir(name);
        let doomed = self
            .root
            .join("collections")
            .join(format!(".dropped-{name}-{}", unique_suffix()));
        fs::rename(&dir, &doomed).at(&dir)?;
        sync_dir(&self.root.join("collections"))?;
        fs::remove_dir_all(&doomed).at(&doomed)
    }

    /// Writes a consistent, checksummed snapshot of collection `name` to `dest`.
    pub fn snapshot(&self, name: &str, dest: &Path) -> Result<SnapshotInfo> {
        self.collection(name)?.snapshot(dest)
    }

    /// Takes a snapshot of collection `name` into the store's `snapshots/<name>/`
    /// directory, under a new name.
    pub fn create_snapshot(&self, name: &CollectionName) -> Result<(SnapshotName, SnapshotInfo)> {
        let c = self.collection(name.as_str())?;
        let dir = self.snapshot_dir(name);
        fs::create_dir_all(&dir).at(&dir)?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let file = SnapshotName::new(name, millis);
        let info = c.snapshot(&dir.join(file.as_str()))?;
        Ok((file, info))
    }

    /// The snapshots kept for collection `name` (also after it was dropped), or
    /// for every collection; sorted by collection, then name. A name with neither
    /// a collection nor a snapshot is [`StoreError::CollectionNotFound`].
    pub fn list_snapshots(&self, name: Option<&CollectionName>) -> Result<Vec<SnapshotFile>> {
        let root = self.root.join("snapshots");
        let names = match name {
            Some(n) => {
                let dir = self.snapshot_dir(n);
                if !dir.is_dir() && !self.collections.read().contains_key(n.as_str()) {
                    return Err(StoreError::CollectionNotFound {
                        name: n.to_string(),
                    });
                }
                vec![n.clone()]
            }
            None => {
                let mut names = Vec::new();
                let entries = match fs::read_dir(&root) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e).at(&root),
                };
                for entry in entries {
                    let entry = entry.at(&root)?;
                    let is_dir = entry.file_type().at(entry.path())?.is_dir();
                    let parsed = CollectionName::parse(&entry.file_name().to_string_lossy());
                    if let (true, Ok(n)) = (is_dir, parsed) {
                        names.push(n);
                    }
                }
                names.sort();
                names
            }
        };
        let mut out = Vec::new();
        for collection in names {
            let dir = self.snapshot_dir(&collection);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&dir),
            };
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry.at(&dir)?;
                let Ok(name) = SnapshotName::parse(&entry.file_name().to_string_lossy()) else {
                    continue;
                };
                let meta = entry.metadata().at(entry.path())?;
                if meta.is_file() {
                    files.push(SnapshotFile {
                        collection: collection.clone(),
                        name,
                        bytes: meta.len(),
                    });
                }
            }
            files.sort_by(|a, b| a.name.cmp(&b.name));
            out.extend(files);
        }
        Ok(out)
    }

    /// Restores snapshot `snapshot` of collection `collection`, kept in the
    /// store's `snapshots/` directory, as a new collection `target`.
    pub fn restore_kept_snapshot(
        &self,
        collection: &CollectionName,
        snapshot: &SnapshotName,
        target: &CollectionName,
    ) -> Result<Collection> {
        let path = self.snapshot_dir(collection).join(snapshot.as_str());
        if !path.is_file() {
            return Err(StoreError::SnapshotNotFound {
                collection: collection.to_string(),
                name: snapshot.to_string(),
            });
        }
        self.restore_snapshot(&path, target.as_str())
    }

    /// Restores the snapshot at `src` as a new collection `name` in this store.
    pub fn restore_snapshot(&self, src: &Path, name: &str) -> Result<Collection> {
        let name = &CollectionName::parse(name)?;
        let mut map = self.collections.write();
        if map.contains_key(name.as_str()) {
            return Err(StoreError::CollectionExists {
                name: name.to_string(),
            });
        }
        let tmp = self
            .root
            .join("collections")
            .join(format!(".restoring-{name}-{}", unique_suffix()));
        if let Err(e) = snapshot::unpack(src, &tmp)
            .and_then(|()| Collection::open(name.as_str(), &tmp)?.close())
        {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dir = self.collection_dir(name);
        fs::rename(&tmp, &dir).at(&dir)?;
        sync_dir(&self.root.join("collections"))?;
        let c = Collection::open(name.as_str(), &dir)?;
        map.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Makes every write to every collection durable and stops background work.
    /// Dropping the store does the same but cannot report errors.
    pub fn close(self) -> Result<()> {
        self.close_all()
    }

    fn close_all(&self) -> Result<()> {
        let mut first_err = None;
        for c in self.collections.read().values() {
            if let Err(e) = c.close() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close_all() {
            tracing::error!("closing the store: {e}");
        }
    }
}
