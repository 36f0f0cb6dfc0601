//! The store: a data directory holding any number of collections.
//!
//! Layout: `<root>/LOCK` (held while open), `<root>/collections/<name>/` per
//! collection. A collection is created in a hidden temporary directory and renamed
//! into place once its manifest is durable; dropping renames it to a hidden name
//! before deleting it, so a crash never leaves a half-made or half-deleted
//! collection visible. Hidden leftovers are removed at open.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::collection::Collection;
use crate::config::{CollectionConfig, validate_name};
use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::sync_dir;
use crate::manifest::MANIFEST_FILE;
use crate::snapshot::{self, SnapshotInfo};

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
            if validate_name(&name).is_err() || !path.join(MANIFEST_FILE).exists() {
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

    fn collection_dir(&self, name: &str) -> PathBuf {
        self.root.join("collections").join(name)
    }

    /// Creates a collection.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        validate_name(name)?;
        config.validate()?;
        let mut map = self.collections.write();
        if map.contains_key(name) {
            return Err(StoreError::CollectionExists { name: name.into() });
        }
        let dir = self.collection_dir(name);
        let tmp = self
            .root
            .join("collections")
            .join(format!(".creating-{name}-{}", unique_suffix()));
        // Create and close once so the manifest is durable before the rename.
        Collection::create(name, &tmp, config)?.close()?;
        fs::rename(&tmp, &dir).at(&dir)?;
        sync_dir(&self.root.join("collections"))?;
        let c = Collection::open(name, &dir)?;
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
        let c = self
            .collections
            .write()
            .remove(name)
            .ok_or_else(|| StoreError::CollectionNotFound { name: name.into() })?;
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

    /// Restores the snapshot at `src` as a new collection `name` in this store.
    pub fn restore_snapshot(&self, src: &Path, name: &str) -> Result<Collection> {
        validate_name(name)?;
        let mut map = self.collections.write();
        if map.contains_key(name) {
            return Err(StoreError::CollectionExists { name: name.into() });
        }
        let tmp = self
            .root
            .join("collections")
            .join(format!(".restoring-{name}-{}", unique_suffix()));
        if let Err(e) =
            snapshot::unpack(src, &tmp).and_then(|()| Collection::open(name, &tmp)?.close())
        {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dir = self.collection_dir(name);
        fs::rename(&tmp, &dir).at(&dir)?;
        sync_dir(&self.root.join("collections"))?;
        let c = Collection::open(name, &dir)?;
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
