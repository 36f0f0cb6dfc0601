//! Bodies of the cargo-fuzz targets for the on-disk formats a collection opens
//! (`store/fuzz/`), also run on random and mutated inputs by this crate's tests
//! on stable Rust. Each must never panic, whatever the bytes.
//!
//! - [`manifest_one`]: the manifest parser, as given and with its header
//!   re-sealed so mutations reach rkyv's validation behind the checksum.
//! - [`segment_one`]: a sealed segment's files (codes, rescore tier, graph, ids,
//!   payloads) carved out of the input, written with valid footers and opened,
//!   then every point read and the graph searched.
//! - [`component_one`]: the input as a whole component file (footer included),
//!   checked against a manifest entry.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::manifest::{FileRef, Manifest, SegmentRef};
use crate::segment::file::{Component, open_component, write_component};
use crate::segment::sealed::SealedSegment;

/// A scratch directory removed on drop (the fuzz targets cannot use dev-only
/// crates).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Option<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Memory-backed where there is one: every component write is fsynced.
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = root.join(format!(
            "octet-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).ok()?;
        Some(Scratch(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Parses `data` as a manifest, then again with its length and checksum fixed.
/// A manifest that parses must re-encode to one that parses equal.
pub fn manifest_one(data: &[u8]) {
    for bytes in [data.to_vec(), reseal_manifest(data)] {
        if let Ok(m) = Manifest::decode(&bytes) {
            let _ = m.file_names();
            let again = m.encode().expect("a decoded manifest encodes");
            assert_eq!(
                Manifest::decode(&again).as_ref(),
                Ok(&m),
                "re-encoded manifest differs"
            );
        }
    }
}

/// `data` with a manifest header whose length and CRC match its body.
fn reseal_manifest(data: &[u8]) -> Vec<u8> {
    let body = data.get(16..).unwrap_or_default();
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(crate::manifest::MAGIC);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits `data` into length-prefixed (u16 LE) parts; the last takes the rest.
fn parts(mut data: &[u8], count: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if i + 1 == count || data.len() < 2 {
            out.push(data);
            data = &[];
            continue;
        }
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    out
}

/// Opens a segment whose files hold pieces of `data`. Layout of the input:
/// points (1 byte, taken mod 32), code length (1 byte, mod 9), a rescore flag
/// and rescore length (1 byte), then length-prefixed bodies of the codes,
/// rescore, graph and ids files, and the payload file's body.
pub fn segment_one(data: &[u8]) {
    let [n, code_len, rescore, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*n % 32);
    let code_len = usize::from(*code_len % 9);
    let rescore_len = (rescore & 1 == 1).then_some(usize::from(rescore >> 1) % 9);
    let bodies = parts(rest, 5);
    let Some(dir) = Scratch::new() else { return };
    let write = |name: &str, kind: Component, body: &[u8]| {
        write_component(dir.path(), name.to_string(), kind, body).ok()
    };
    let (Some(codes), Some(graph), Some(ids), Some(payloads)) = (
        write("s.codes", Component::Codes, bodies[0]),
        write("s.graph", Component::Graph, bodies[2]),
        write("s.ids", Component::Ids, bodies[3]),
        write("s.payload", Component::Payloads, bodies[4]),
    ) else {
        return;
    };
    let rescore = match rescore_len {
        Some(_) => match write("s.rescore", Component::Rescore, bodies[1]) {
            Some(f) => Some(f),
            None => return,
        },
        None => None,
    };
    let meta = SegmentRef {
        id: 1,
        points: n as u64,
        codes,
        rescore,
        graph,
        ids,
        payloads,
        tombstones: None,
    };
    let Ok(seg) = SealedSegment::open(dir.path(), &meta, code_len, rescore_len, "fuzz") else {
        return;
    };
    exercise(&seg);
}

/// Reads everything an opened segment holds, as searches and scrolls do.
fn exercise(seg: &SealedSegment) {
    let n = seg.len();
    for off in 0..n as u32 {
        let id = seg.id(off);
        assert_eq!(seg.offset_of(id), Some(off), "by-id lookup of {id}");
        let _ = seg.code(off);
        let _ = seg.rescore_code(off);
        let _ = seg.payload(off);
    }
    assert_eq!(seg.by_id().len(), n);
    let all = seg.allowed(None, &crate::bitset::Bitset::new(n));
    assert_eq!(all.count_ones(), n);
    let score = |p: u32| seg.code(p).iter().map(|&b| f32::from(b)).sum::<f32>();
    let hits = seg.graph.search(5, 16, score, |_| {}, |p| p % 2 == 0);
    assert!(
        hits.iter()
            .all(|h| (h.point as usize) < n && h.point % 2 == 0)
    );
    // The unfiltered walk: one sorted list over layer 0's rows (or packed lists).
    let gather = |ids: &[u32], out: &mut [f32]| {
        for (&p, o) in ids.iter().zip(out.iter_mut()) {
            *o = score(p);
        }
    };
    let expanded = std::cell::RefCell::new(Vec::new());
    let all = seg
        .graph
        .search_gather_all(5, 16, gather, |_| {}, |p| expanded.borrow_mut().push(p));
    let expanded = expanded.into_inner();
    assert!(all.len() <= 5.min(n));
    assert!(
        all.iter()
            .all(|h| (h.point as usize) < n && expanded.contains(&h.point))
    );
}

/// Checks `data` as a whole component file (body and footer) against a manifest
/// entry that agrees with its length and with the checksum its footer claims.
pub fn component_one(data: &[u8]) {
    let Some(dir) = Scratch::new() else { return };
    let path = dir.path().join("c.graph");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let body_len = data.len().saturating_sub(crate::segment::file::FOOTER_LEN);
    let fref = FileRef {
        name: "c.graph".into(),
        len: data.len() as u64,
        crc32c: crc32c::crc32c(&data[..body_len]),
    };
    if let Ok(m) = open_component(dir.path(), &fref, Component::Graph, "fuzz") {
        assert_eq!(m.body(), &data[..body_len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::writer::{GraphParams, SegmentInput, write_segment};
    use proptest::prelude::*;

    /// A real 12-point segment in `segment_one`'s input layout.
    fn valid_segment_input() -> Vec<u8> {
        let dir = Scratch::new().expect("scratch");
        let n = 12usize;
        let (dim, code_len, rescore_len) = (4usize, 3usize, 2usize);
        let input = SegmentInput {
            ids: (0..n as u64).map(|i| i * 7 + 1).collect(),
            payloads: (0..n)
                .map(|i| format!(r#"{{"tenant":"t{}","n":{i}}}"#, i % 3).into_bytes())
                .collect(),
            codes: (0..n * code_len).map(|i| i as u8).collect(),
            rescore: Some((0..n * rescore_len).map(|i| (i * 3) as u8).collect()),
            graph_vectors: (0..n * dim).map(|i| ((i * 37) % 11) as f32 - 5.0).collect(),
        };
        let params = GraphParams {
            dim,
            metric: octet_quant::Metric::L2,
            m: 4,
            ef_construction: 16,
        };
        let (meta, _) = write_segment(dir.path(), 1, &input, params).expect("segment");
        let body = |f: &FileRef| {
            let bytes = std::fs::read(dir.path().join(&f.name)).expect("read");
            bytes[..bytes.len() - crate::segment::file::FOOTER_LEN].to_vec()
        };
        let rescore = meta.rescore.as_ref().map(body).unwrap_or_default();
        let mut out = vec![n as u8, code_len as u8, 1 | (rescore_len as u8) << 1];
        for part in [
            body(&meta.codes),
            rescore,
            body(&meta.graph),
            body(&meta.ids),
        ] {
            out.extend_from_slice(&(part.len() as u16).to_le_bytes());
            out.extend_from_slice(&part);
        }
        out.extend_from_slice(&body(&meta.payloads));
        out
    }

    #[test]
    fn the_valid_seed_opens() {
        let data = valid_segment_input();
        let [n, code_len, rescore, rest @ ..] = &data[..] else {
            panic!("short seed");
        };
        assert_eq!((*n, *code_len, *rescore), (12, 3, 5));
        let bodies = parts(rest, 5);
        assert_eq!(bodies[0].len(), 36);
        assert_eq!(bodies[3].len(), 96);
        segment_one(&data);
    }

    fn real_manifest() -> Vec<u8> {
        let dir = Scratch::new().expect("scratch");
        let store = crate::Store::open(dir.path()).expect("store");
        let c = store
            .create_collection(
                "docs",
                crate::CollectionConfig::new(4, octet_quant::Metric::Cosine),
            )
            .expect("create");
        std::fs::read(c.dir().join(crate::manifest::MANIFEST_FILE)).expect("read")
    }

    #[test]
    fn a_real_manifest_round_trips() {
        let bytes = real_manifest();
        manifest_one(&bytes);
        assert!(Manifest::decode(&bytes).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn segments_from_random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            segment_one(&data);
        }

        #[test]
        fn mutated_segments_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut data = valid_segment_input();
            for (at, byte) in flips {
                let i = at.index(data.len());
                data[i] ^= byte | 1;
            }
            if truncate {
                data.truncate(cut.index(data.len()));
            }
            segment_one(&data);
        }

        #[test]
        fn mutated_manifests_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut data = real_manifest();
            for (at, byte) in flips {
                let i = at.index(data.len());
                data[i] ^= byte | 1;
            }
            manifest_one(&data);
        }

        #[test]
        fn components_and_manifests_from_random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            component_one(&data);
            manifest_one(&data);
        }
    }
}
