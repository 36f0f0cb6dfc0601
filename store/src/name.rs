//! The names a client sends that become parts of a path: collection names and
//! snapshot file names.
//!
//! A request string reaches the file system only through one of these types, and
//! each can be made only by its `parse`, so no `..`, `/`, absolute path or hidden
//! name ever gets joined onto a directory of the store.

use std::fmt;

use crate::error::{Result, StoreError};

/// A checked collection name: 1 to 64 characters from `[A-Za-z0-9_-]`, not
/// starting with `-`. It is a directory name under `collections/` and
/// `snapshots/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CollectionName(String);

impl CollectionName {
    /// Checks `name`, or says which rule it breaks.
    pub fn parse(name: &str) -> Result<CollectionName> {
        let bad = |reason| {
            Err(StoreError::InvalidName {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() || name.len() > 64 {
            return bad("must be 1 to 64 characters long");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad("may only hold ASCII letters, digits, `_` and `-`");
        }
        if name.starts_with('-') {
            return bad("must not start with `-`");
        }
        Ok(CollectionName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Snapshot files end with this.
pub const SNAPSHOT_EXT: &str = "snapshot";

/// A checked snapshot file name, as the store hands them out
/// (`<collection>-<millis>.snapshot`): at most 128 characters from
/// `[A-Za-z0-9_.-]`, not starting with `.`, ending in `.snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName(String);

impl SnapshotName {
    /// Checks `name`, or says which rule it breaks.
    pub fn parse(name: &str) -> Result<SnapshotName> {
        let bad = |reason| {
            Err(StoreError::InvalidSnapshotName {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() || name.len() > 128 {
            return bad("must be 1 to 128 characters long");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return bad("may only hold ASCII letters, digits, `_`, `-` and `.`");
        }
        if name.starts_with('.') {
            return bad("must not start with `.`");
        }
        if name
            .strip_suffix(SNAPSHOT_EXT)
            .is_none_or(|stem| !stem.ends_with('.') || stem.len() < 2)
        {
            return bad("must end with `.snapshot`");
        }
        Ok(SnapshotName(name.to_string()))
    }

    /// A new name for a snapshot of `collection` taken at `millis` since the epoch.
    pub fn new(collection: &CollectionName, millis: u128) -> SnapshotName {
        SnapshotName(format!("{collection}-{millis}.{SNAPSHOT_EXT}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an outside client sent to ListSnapshots, and the like.
    const TRAVERSALS: &[&str] = &[
        "bad/../bad",
        "../snapshots/bad",
        "/etc/passwd",
        "/tmp",
        "..",
        ".",
        "a\\b",
        "a\0b",
        "",
    ];

    #[test]
    fn collection_names_are_restricted() {
        for ok in ["docs", "a", "tenant_1-v2", &"x".repeat(64)] {
            assert_eq!(CollectionName::parse(ok).expect(ok).as_str(), ok);
        }
        for bad in ["-x", "sp ace", "é", ".hidden", &"x".repeat(65)]
            .iter()
            .chain(TRAVERSALS)
        {
            let err = CollectionName::parse(bad).expect_err(bad);
            assert!(
                matches!(err, StoreError::InvalidName { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn snapshot_names_are_plain_file_names() {
        let c = CollectionName::parse("docs").expect("name");
        let made = SnapshotName::new(&c, 1_764_000_000_000);
        assert_eq!(made.as_str(), "docs-1764000000000.snapshot");
        assert_eq!(
            SnapshotName::parse(made.as_str()).expect("round trip"),
            made
        );
        for bad in [
            ".snapshot",
            "..snapshot",
            "a.snapshots",
            "snapshot",
            "../a.snapshot",
            "/tmp/a.snapshot",
            "a/b.snapshot",
            &format!("{}.snapshot", "x".repeat(120)),
        ]
        .iter()
        .chain(TRAVERSALS)
        {
            let err = SnapshotName::parse(bad).expect_err(bad);
            assert!(
                matches!(err, StoreError::InvalidSnapshotName { .. }),
                "{bad:?}: {err}"
            );
        }
    }
}
