use super::testutil::{
    Encoded, Kind, SynthTensor, fixture_model, fixture_model_v2, fixture_model_v3,
    fixture_model_v4, fixture_model_v5, fixture_model_v6, llama_like, write,
};
use super::*;
use crate::bitstack::{BitStackMatrix, OrderPolicy};
use crate::error::QuantError;
use half::{bf16, f16};

fn reason(e: QuantError) -> String {
    match e {
        QuantError::Format { reason, .. } => reason,
        other => panic!("expected a format error, got {other}"),
    }
}

/// `sum_ij ((W - R) s_j)^2`: the activation-weighted error BitStack minimizes.
fn scaled_err(t: &SynthTensor, r: &[f32]) -> f64 {
    let cols = t.shape[1];
    let s = match &t.kind {
        Kind::BitStack { scales } => scales.as_deref(),
        _ => None,
    };
    t.w.iter()
        .zip(r)
        .enumerate()
        .map(|(i, (a, b))| (f64::from(a - b) * s.map_or(1.0, |s| f64::from(s[i % cols]))).powi(2))
        .sum()
}

fn bitstack(e: &Encoded) -> Option<&BitStackMatrix> {
    match e {
        Encoded::BitStack(m) => Some(m),
        _ => None,
    }
}

#[test]
fn full_budget_round_trip_matches_in_memory_encoding() {
    let model = llama_like(1);
    let (file, manifest, enc) = write(&model, 6, &BlockOrdering::default());
    let reader = Reader::new(&file).expect("open");
    assert_eq!(reader.manifest(), &manifest);
    assert_eq!(manifest.metadata[0].value, "llama");
    let full = Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full");
    assert_eq!(full.prefix_len, file.len() as u64);
    reader.verify(&full).expect("verify");
    for (t, e) in model.iter().zip(&enc) {
        let got = reader.rebuild_tensor(&t.name, &full).expect("rebuild");
        let want = match e {
            Encoded::Dense(v) => v.clone(),
            Encoded::BitStack(m) => m.rebuild(m.blocks.len()).expect("rebuild"),
            Encoded::Palette(p) => p.decode(),
            Encoded::ScaledPalette(p) => p.decode(),
            Encoded::NestedPalette(p) => p.decode(p.steps.len()),
        };
        assert_eq!(got, want, "{}", t.name);
    }
}

#[test]
fn full_budget_error_is_what_the_blocks_did_not_remove() {
    let model = llama_like(2);
    let (file, _, enc) = write(&model, 8, &BlockOrdering::default());
    let reader = Reader::new(&file).expect("open");
    for (t, e) in model.iter().zip(&enc) {
        let Some(m) = bitstack(e) else { continue };
        let err = scaled_err(
            t,
            &reader
                .rebuild_tensor(
                    &t.name,
                    &Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full"),
                )
                .expect("rebuild"),
        );
        let left = m.scaled_norm_sq - m.blocks.iter().map(|b| b.importance).sum::<f64>();
        // The residual was tracked with f32 factors, the file holds f16 ones.
        assert!(
            (err - left).abs() <= 2e-3 * m.scaled_norm_sq,
            "{}: {err} vs {left}",
            t.name
        );
        assert!(
            err < 0.1 * m.scaled_norm_sq,
            "{}: {err} of {}",
            t.name,
            m.scaled_norm_sq
        );
    }
}

#[test]
fn every_budget_is_a_prefix_and_error_never_grows() {
    let model = llama_like(3);
    for ordering in [
        BlockOrdering::default(),
        BlockOrdering::Policy(OrderPolicy::Balanced),
    ] {
        let (file, manifest, enc) = write(&model, 5, &ordering);
        let full = Reader::new(&file).expect("open");
        let mut prev = f64::INFINITY;
        let mut prev_len = 0;
        for n in manifest.min_blocks as usize..=manifest.block_order.len() {
            let budget = Budget::fit(full.manifest(), BudgetLimit::Blocks(n)).expect("budget");
            assert!(budget.prefix_len >= prev_len);
            prev_len = budget.prefix_len;
            let cut = &file[..budget.prefix_len as usize];
            // Bytes past the prefix are garbage here: a reader that looked at them
            // would fail its checksums or decode different values.
            let mut poisoned = file.clone();
            poisoned[cut.len()..].fill(0xA5);
            let prefix = Reader::new(cut).expect("open prefix");
            let poisoned = Reader::new(&poisoned).expect("open poisoned");
            let mut total = 0.0;
            for (i, (t, e)) in model.iter().zip(&enc).enumerate() {
                let got = prefix
                    .rebuild_tensor(&t.name, &budget)
                    .expect("rebuild from prefix");
                assert_eq!(
                    got,
                    poisoned.rebuild_tensor(&t.name, &budget).expect("poisoned")
                );
                if let Some(m) = bitstack(e) {
                    let k = budget.blocks_per_matrix[i] as usize;
                    assert!(k >= 1, "{}: no block at {n}", t.name);
                    assert_eq!(got, m.rebuild(k).expect("rebuild"), "{} at {n}", t.name);
                    total += scaled_err(t, &got);
                }
            }
            assert!(
                total <= prev * (1.0 + 1e-9),
                "{ordering:?}: {n} blocks {total} > {prev}"
            );
            prev = total;
            if n < manifest.block_order.len() {
                let next = Budget::fit(full.manifest(), BudgetLimit::Blocks(n + 1)).expect("next");
                let e = prefix.verify(&next).expect_err("beyond the prefix");
                assert!(reason(e).contains("truncated"));
            }
        }
    }
}

#[test]
fn planning_by_bytes_and_bits() {
    let (file, manifest, _) = write(&llama_like(4), 4, &BlockOrdering::default());
    let reader = Reader::new(&file).expect("open");
    let min = manifest.budget_table[manifest.min_blocks as usize];
    assert!(Budget::fit(reader.manifest(), BudgetLimit::Bytes(min - 1)).is_err());
    assert_eq!(
        Budget::fit(reader.manifest(), BudgetLimit::Bytes(min))
            .expect("min")
            .n_blocks,
        manifest.min_blocks as usize
    );
    let mut last = 0.0;
    for limit in (min..=file.len() as u64 + 100).step_by(997) {
        let b = Budget::fit(reader.manifest(), BudgetLimit::Bytes(limit)).expect("plan");
        assert!(b.prefix_len <= limit);
        if let Some(&next) = manifest.budget_table.get(b.n_blocks + 1) {
            assert!(next > limit, "block {} would still fit", b.n_blocks);
        }
        let by_bits = Budget::fit(
            reader.manifest(),
            BudgetLimit::BitsPerWeight(b.bits_per_weight),
        )
        .expect("plan bits");
        assert_eq!(by_bits.prefix_len, b.prefix_len);
        assert!(b.bits_per_weight >= last);
        last = b.bits_per_weight;
    }
    assert_eq!(
        Budget::fit(reader.manifest(), BudgetLimit::Bytes(u64::MAX)).expect("all"),
        Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full")
    );
    assert!(Budget::fit(reader.manifest(), BudgetLimit::BitsPerWeight(0.5)).is_err());
    assert!(Budget::fit(reader.manifest(), BudgetLimit::BitsPerWeight(f64::NAN)).is_err());
}

/// Every section of a manifest with the name the reader gives it.
fn sections(m: &Manifest) -> Vec<(String, Section)> {
    let mut out = Vec::new();
    for t in &m.tensors {
        let n = &t.name;
        match &t.encoding {
            Encoding::F16 { data } | Encoding::F32 { data } => {
                out.push((format!("tensor `{n}` data"), *data))
            }
            Encoding::Palette { data, .. } => out.push((format!("tensor `{n}` palette"), *data)),
            Encoding::ScaledPalette { data, .. } => {
                out.push((format!("tensor `{n}` scaled palette"), *data))
            }
            Encoding::RescaledNestedPalette {
                resident, steps, ..
            }
            | Encoding::LeanNestedPalette {
                resident, steps, ..
            }
            | Encoding::MixedNestedPalette {
                resident, steps, ..
            } => {
                out.push((format!("tensor `{n}` nested palette base"), resident[0]));
                if let Some(s) = resident.get(1) {
                    out.push((format!("tensor `{n}` nested palette base correction"), *s));
                }
                for (l, b) in steps.iter().enumerate() {
                    out.push((format!("tensor `{n}` refinement step {l}"), b.section));
                }
            }
            Encoding::NestedPalette { base, steps, .. } => {
                out.push((format!("tensor `{n}` nested palette base"), *base));
                for (l, b) in steps.iter().enumerate() {
                    out.push((format!("tensor `{n}` refinement step {l}"), b.section));
                }
            }
            Encoding::BitStack { scales, blocks, .. } => {
                if let Some(s) = scales {
                    out.push((format!("tensor `{n}` scales"), *s));
                }
                for (l, b) in blocks.iter().enumerate() {
                    out.push((format!("tensor `{n}` block {l}"), b.section));
                }
            }
        }
    }
    out
}

#[test]
fn a_flipped_byte_in_any_section_names_that_section() {
    let (file, manifest, _) = write(&llama_like(5), 3, &BlockOrdering::default());
    let secs = sections(&manifest);
    assert_eq!(secs.len(), 2 + 1 + 1 + 8 * 3 + 6);
    for (what, s) in secs {
        let mut bad = file.clone();
        bad[(s.offset + s.len / 2) as usize] ^= 0x10;
        let reader = Reader::new(&bad).expect("header and manifest are intact");
        let r = reason(
            reader
                .verify(&Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full"))
                .expect_err("corrupt"),
        );
        assert!(r.contains(&what) && r.contains("checksum"), "{what}: {r}");
        let name = what.split('`').nth(1).expect("name");
        let r = reason(
            reader
                .rebuild_tensor(
                    name,
                    &Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full"),
                )
                .expect_err("corrupt"),
        );
        assert!(r.contains(&what), "{what}: {r}");
    }
    let mut bad = file.clone();
    bad[20] ^= 1;
    assert!(reason(Reader::new(&bad).expect_err("header")).contains("header checksum"));
    let mut bad = file.clone();
    bad[HEADER_LEN + 40] ^= 1;
    assert!(reason(Reader::new(&bad).expect_err("manifest")).contains("manifest checksum"));
    let mut bad = file;
    bad[0] = b'X';
    assert!(reason(Reader::new(&bad).expect_err("magic")).contains("magic"));
}

#[test]
fn truncation_is_detected() {
    let (file, manifest, _) = write(&llama_like(6), 3, &BlockOrdering::default());
    assert!(reason(Reader::new(&file[..10]).expect_err("short")).contains("truncated header"));
    assert!(
        reason(Reader::new(&file[..HEADER_LEN + 8]).expect_err("short")).contains("manifest ends")
    );
    let cut = &file[..file.len() - 1];
    let reader = Reader::new(cut).expect("manifest is intact");
    assert!(
        reason(
            reader
                .verify(&Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full"))
                .expect_err("short")
        )
        .contains("truncated")
    );
    let mut longer = file.clone();
    longer.push(0);
    assert!(Reader::new(&longer).is_err());
    assert!(manifest.file_len == file.len() as u64);
}

/// A file holding `m` (with correct header and manifest checksums) and zero sections.
fn raw_file(m: &Manifest) -> Vec<u8> {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(m).expect("archive");
    let data_start = align_u64((HEADER_LEN + bytes.len()) as u64);
    let h = header::Header {
        version: 1,
        manifest_len: bytes.len() as u64,
        manifest_crc: crc32c::crc32c(&bytes),
        data_start,
        file_len: data_start.max(m.file_len),
    };
    let mut f = h.encode().to_vec();
    f.extend_from_slice(&bytes);
    f.resize(h.file_len as usize, 0);
    f
}

#[test]
fn caps_are_enforced_before_allocation() {
    let (_, manifest, _) = write(&fixture_model(), 2, &BlockOrdering::default());
    let check = |m: Manifest, want: &str| {
        let r = reason(Reader::new(&raw_file(&m)).expect_err(want));
        assert!(r.contains(want), "{want}: {r}");
    };
    let mut m = manifest.clone();
    m.tensors[0].name = "x".repeat(MAX_NAME_LEN + 1);
    check(m, "name length");
    let mut m = manifest.clone();
    m.tensors[0].shape = vec![1; MAX_DIMS + 1];
    check(m, "dimension count");
    let mut m = manifest.clone();
    if let Encoding::BitStack { blocks, .. } = &mut m.tensors[2].encoding {
        let b = blocks[0];
        blocks.resize(crate::bitstack::MAX_LEVELS + 1, b);
    }
    check(m, "block count");
    let mut m = manifest.clone();
    let t = m.tensors[1].clone();
    m.tensors = vec![t; MAX_TENSORS + 1];
    check(m, "tensor count");
    let mut m = manifest.clone();
    m.metadata = vec![
        MetaEntry {
            key: "k".into(),
            value: String::new()
        };
        MAX_METADATA + 1
    ];
    check(m, "metadata count");
    // Semantic checks after the caps.
    let mut m = manifest.clone();
    m.tensors[0].shape = vec![u64::MAX, 2];
    check(m, "shape");
    let mut m = manifest.clone();
    if let Encoding::F16 { data } = &mut m.tensors[0].encoding {
        data.offset += 1;
    }
    check(m, "multiple of 64");
    let mut m = manifest.clone();
    m.block_order.swap(0, 1);
    check(m, "block order entry");
    let mut m = manifest.clone();
    m.min_blocks += 1;
    check(m, "min_blocks");
    let mut m = manifest;
    m.tensors[1].name = m.tensors[0].name.clone();
    check(m, "repeated");
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = CheckpointWriter::in_memory();
    w.add_f32("a", &[2, 2], &[0.0; 4]).expect("add");
    assert!(w.add_f32("a", &[4], &[0.0; 4]).is_err());
    assert!(w.add_f32("b", &[3, 2], &[0.0; 4]).is_err());
    assert!(w.add_f32("", &[4], &[0.0; 4]).is_err());
    assert!(w.add_f16("c", &[1], &[1e6]).is_err());
    assert!(w.add_metadata("", "v").is_err());
    let model = &llama_like(7)[2..4];
    let mut w = CheckpointWriter::in_memory();
    let cfg = crate::bitstack::BitStackConfig {
        n_iter: 2,
        ..Default::default()
    };
    for t in model {
        let m = crate::bitstack::decompose(&t.w, t.shape[0], t.shape[1], None, &cfg)
            .expect("decompose");
        w.add_bitstack(&t.name, &m).expect("add");
    }
    let id = |matrix, level| crate::bitstack::BlockId { matrix, level };
    let skip = BlockOrdering::Explicit(vec![id(0, 1), id(0, 0), id(1, 0), id(1, 1)]);
    assert!(w.finish(&skip, &mut Vec::new()).is_err());
}

#[test]
fn explicit_order_is_written_as_given() {
    let model: Vec<SynthTensor> = llama_like(8)
        .into_iter()
        .filter(|t| t.shape == [64, 64])
        .collect();
    let id = |matrix, level| crate::bitstack::BlockId { matrix, level };
    let order = vec![
        id(1, 0),
        id(0, 0),
        id(2, 0),
        id(3, 0),
        id(3, 1),
        id(0, 1),
        id(1, 1),
        id(2, 1),
    ];
    let (file, m, _) = write(&model, 2, &BlockOrdering::Explicit(order.clone()));
    let got: Vec<(u32, u32)> = m.block_order.iter().map(|b| (b.tensor, b.level)).collect();
    let want: Vec<(u32, u32)> = order.iter().map(|b| (b.matrix, b.level)).collect();
    assert_eq!(got, want);
    assert_eq!(m.min_blocks, 4);
    Reader::new(&file)
        .expect("open")
        .verify(&Budget::fit(&m, BudgetLimit::Full).expect("full"))
        .expect("verify");
}

/// Copying every tensor into a new writer, in the source's block order, writes the
/// same file byte for byte: what `octet weights repack` relies on for the tensors it
/// keeps.
#[test]
fn copying_every_tensor_reproduces_the_file() {
    let (file, m, _) = write(&llama_like(11), 2, &BlockOrdering::default());
    let reader = Reader::new(&file).expect("open");
    let mut w = CheckpointWriter::in_memory();
    let mut matrix_of = vec![u32::MAX; m.tensors.len()];
    let mut n = 0;
    for (t, e) in m.tensors.iter().enumerate() {
        w.add_copy(&reader, t).expect("copy");
        if e.encoding.has_blocks() {
            matrix_of[t] = n;
            n += 1;
        }
    }
    for e in &m.metadata {
        w.add_metadata(&e.key, &e.value).expect("metadata");
    }
    let order = m
        .block_order
        .iter()
        .map(|b| crate::bitstack::BlockId {
            matrix: matrix_of[b.tensor as usize],
            level: b.level,
        })
        .collect();
    let mut again = Vec::new();
    w.finish(&BlockOrdering::Explicit(order), &mut again)
        .expect("writes");
    assert!(again == file, "the copy differs from the source");
    // A damaged section is not copied silently.
    let mut bad = file.clone();
    let s = m.tensors[0].encoding.resident()[0].0;
    bad[s.offset as usize] ^= 1;
    let reader = Reader::new(&bad).expect("open");
    let err = CheckpointWriter::in_memory()
        .add_copy(&reader, 0)
        .expect_err("checksum");
    assert!(reason(err).contains("checksum mismatch"));
}

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/checkpoint/fixtures/v1.octet"
);

const FIXTURE_V2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/checkpoint/fixtures/v2.octet"
);

const FIXTURE_V3: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/checkpoint/fixtures/v3.octet"
);

const FIXTURE_V4: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/checkpoint/fixtures/v4.octet"
);

const FIXTURE_V5: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/checkpoint/fixtures/v5.octet"
);

const FIXTURE_V6: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/checkpoint/fixtures/v6.octet"
);

/// Writes the committed v6 fixture: `cargo test -p octet-quant -- --ignored regenerate_v6_fixture`.
#[test]
#[ignore]
fn regenerate_v6_fixture() {
    let (file, _, _) = write(&fixture_model_v6(), 3, &BlockOrdering::default());
    std::fs::write(FIXTURE_V6, file).expect("write fixture");
}

#[test]
fn v6_fixture_opens_and_decodes() {
    // 3 + 3 refinement steps, corrections of two widths in each palette.
    assert_eq!(
        fixture_opens_and_decodes(FIXTURE_V6, &fixture_model_v6(), 6),
        6
    );
}

/// Writes the committed v5 fixture: `cargo test -p octet-quant -- --ignored regenerate_v5_fixture`.
#[test]
#[ignore]
fn regenerate_v5_fixture() {
    let (file, _, _) = write(&fixture_model_v5(), 3, &BlockOrdering::default());
    std::fs::write(FIXTURE_V5, file).expect("write fixture");
}

#[test]
fn v5_fixture_opens_and_decodes() {
    // 3 + 3 refinement steps, two of them without a correction.
    assert_eq!(
        fixture_opens_and_decodes(FIXTURE_V5, &fixture_model_v5(), 6),
        5
    );
}

/// Writes the committed v4 fixture: `cargo test -p octet-quant -- --ignored regenerate_v4_fixture`.
#[test]
#[ignore]
fn regenerate_v4_fixture() {
    let (file, _, _) = write(&fixture_model_v4(), 3, &BlockOrdering::default());
    std::fs::write(FIXTURE_V4, file).expect("write fixture");
}

#[test]
fn v4_fixture_opens_and_decodes() {
    // 2 + 2 refinement steps, one palette with a base correction.
    assert_eq!(
        fixture_opens_and_decodes(FIXTURE_V4, &fixture_model_v4(), 4),
        4
    );
}

/// Writes the committed v3 fixture: `cargo test -p octet-quant -- --ignored regenerate_v3_fixture`.
#[test]
#[ignore]
fn regenerate_v3_fixture() {
    let (file, _, _) = write(&fixture_model_v3(), 3, &BlockOrdering::default());
    std::fs::write(FIXTURE_V3, file).expect("write fixture");
}

#[test]
fn v3_fixture_opens_and_decodes() {
    // 3 BitStack levels and 2 + 2 refinement steps.
    assert_eq!(
        fixture_opens_and_decodes(FIXTURE_V3, &fixture_model_v3(), 7),
        3
    );
}

/// Writes the committed fixture: `cargo test -p octet-quant -- --ignored regenerate_v1_fixture`.
/// Only for a deliberate format change, which must also bump [`VERSION`].
#[test]
#[ignore]
fn regenerate_v1_fixture() {
    let (file, _, _) = write(&fixture_model(), 3, &BlockOrdering::default());
    std::fs::write(FIXTURE, file).expect("write fixture");
}

/// Writes the committed v2 fixture: `cargo test -p octet-quant -- --ignored regenerate_v2_fixture`.
#[test]
#[ignore]
fn regenerate_v2_fixture() {
    let (file, _, _) = write(&fixture_model_v2(), 3, &BlockOrdering::default());
    std::fs::write(FIXTURE_V2, file).expect("write fixture");
}

/// Opens a committed fixture written from `model` and checks every tensor against a
/// fresh encoding of it; returns the reader's format version.
fn fixture_opens_and_decodes(path: &str, model: &[SynthTensor], n_blocks: usize) -> u32 {
    let file = std::fs::read(path).expect("the committed fixture");
    assert!(file.len() < 8192, "fixture grew to {} bytes", file.len());
    let reader = Reader::with_source(&file, path).expect("open fixture");
    let m = reader.manifest();
    let names: Vec<&str> = m.tensors.iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = model.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, want);
    assert_eq!(m.block_order.len(), n_blocks);
    let full = Budget::fit(reader.manifest(), BudgetLimit::Full).expect("full");
    reader.verify(&full).expect("checksums");
    // Decompositions may differ in the last bits across CPUs (SVD kernels), so the
    // lossy tensors are compared by error, the exact ones bit for bit.
    let (_, _, fresh) = write(model, 3, &BlockOrdering::default());
    for (t, e) in model.iter().zip(&fresh) {
        let got = reader.rebuild_tensor(&t.name, &full).expect("rebuild");
        match e {
            Encoded::Dense(v) => assert_eq!(&got, v, "{}", t.name),
            Encoded::Palette(p) => assert_eq!(got, p.decode(), "{}", t.name),
            Encoded::ScaledPalette(p) => assert_eq!(got, p.decode(), "{}", t.name),
            Encoded::NestedPalette(p) => {
                assert_eq!(got, p.decode(p.steps.len()), "{}", t.name)
            }
            Encoded::BitStack(b) => {
                let want = scaled_err(t, &b.rebuild(3).expect("rebuild"));
                let err = scaled_err(t, &got);
                assert!(
                    (err - want).abs() <= 1e-3 * b.scaled_norm_sq,
                    "{}: {err} vs {want}",
                    t.name
                );
            }
        }
    }
    let min = Budget::fit(
        reader.manifest(),
        BudgetLimit::Blocks(m.min_blocks as usize),
    )
    .expect("min budget");
    let prefix = Reader::new(&file[..min.prefix_len as usize]).expect("prefix");
    for t in model {
        prefix
            .rebuild_tensor(&t.name, &min)
            .expect("rebuild at the minimum budget");
    }
    reader.version()
}

#[test]
fn v1_fixture_still_opens_and_decodes() {
    assert_eq!(fixture_opens_and_decodes(FIXTURE, &fixture_model(), 6), 1);
}

#[test]
fn v2_fixture_opens_and_decodes() {
    assert_eq!(
        fixture_opens_and_decodes(FIXTURE_V2, &fixture_model_v2(), 3),
        2
    );
}

/// Sets the header's version of `file` and reseals its checksum.
fn with_version(file: &[u8], version: u32) -> Vec<u8> {
    let mut f = file.to_vec();
    f[8..12].copy_from_slice(&version.to_le_bytes());
    assert!(reseal(&mut f));
    f
}

#[test]
fn a_scaled_palette_makes_the_file_version_2_and_v1_files_with_one_still_read() {
    let version = |f: &[u8]| u32::from_le_bytes([f[8], f[9], f[10], f[11]]);
    let (plain, _, _) = write(&fixture_model(), 2, &BlockOrdering::default());
    assert_eq!(version(&plain), 1, "no scaled palette: still version 1");
    let (scaled, m, _) = write(&llama_like(5), 2, &BlockOrdering::default());
    assert_eq!(version(&scaled), 2);
    assert_eq!(Reader::new(&scaled).expect("v2").version(), 2);
    // The release that introduced scaled palettes wrote them as version 1.
    let old = with_version(&scaled, 1);
    let reader = Reader::new(&old).expect("a v1 file with a scaled palette reads");
    assert_eq!(reader.version(), 1);
    let name = "model.layers.1.mlp.gate_proj.weight";
    let full = Budget::fit(&m, BudgetLimit::Full).expect("full");
    assert_eq!(
        reader.rebuild_tensor(name, &full).expect("rebuilds"),
        Reader::new(&scaled)
            .expect("v2")
            .rebuild_tensor(name, &full)
            .expect("rebuilds")
    );
    for v in [0, VERSION + 1] {
        let err = Reader::new(&with_version(&scaled, v)).expect_err("unknown version");
        assert!(
            reason(err).contains(&format!("unsupported format version {v}")),
            "version {v}"
        );
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// What the fuzz target does with its input: open, plan, rebuild everything.
    fn exercise(bytes: &[u8]) {
        crate::checkpoint::fuzz_one(bytes);
    }

    fn valid() -> Vec<u8> {
        write(&fixture_model(), 3, &BlockOrdering::default()).0
    }

    /// Resealed mutations must get past the checksums into rkyv's validation and the
    /// semantic checks, or the fuzz tests would only ever exercise the CRC.
    #[test]
    fn resealed_mutations_reach_the_deep_checks() {
        use rand::{Rng, SeedableRng};
        let base = valid();
        let m_len = u64::from_le_bytes(base[24..32].try_into().expect("8 bytes")) as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (mut rkyv_rejects, mut semantic_rejects, mut opened) = (0, 0, 0);
        for _ in 0..2000 {
            let mut f = base.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = HEADER_LEN + rng.random_range(0..m_len);
                f[i] = rng.random();
            }
            assert!(header::reseal(&mut f));
            exercise(&f);
            match Reader::new(&f).map_err(reason) {
                Ok(_) => opened += 1,
                Err(r) if r.contains("rkyv") => rkyv_rejects += 1,
                Err(_) => semantic_rejects += 1,
            }
        }
        assert!(
            rkyv_rejects > 0 && semantic_rejects > 0 && opened > 0,
            "{rkyv_rejects} {semantic_rejects} {opened}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            exercise(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            exercise(&with_magic);
        }

        #[test]
        fn mutated_files_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            reseal in any::<bool>(),
            truncate in any::<bool>(),
        ) {
            let mut f = valid();
            // Bias edits toward the header and manifest, where the parser lives.
            let manifest_end = HEADER_LEN + 2048;
            for (at, v) in edits {
                let i = at.index(manifest_end.min(f.len()));
                f[i] = v;
            }
            if reseal {
                header::reseal(&mut f);
            }
            if truncate {
                f.truncate(cut.index(f.len() + 1));
            }
            exercise(&f);
        }
    }
}

/// Rebuilding in place (the CPU loader's one buffer) gives the same bits as
/// rebuilding into a new vector, for every encoding at every budget; rebuilding
/// straight into f16 or bf16 gives that vector rounded value by value (`half`'s
/// scalar conversion, what candle's `to_dtype` does).
#[test]
fn rebuild_into_equals_rebuild_for_every_encoding_and_budget() {
    for (bytes, m, budgets) in super::testutil::every_fixture_budget() {
        let reader = Reader::new(&bytes).expect("valid");
        for budget in budgets {
            let n = budget.n_blocks;
            for (t, e) in m.tensors.iter().enumerate() {
                let want = reader.rebuild_index(t, &budget).expect("rebuilds");
                let mut got = vec![f32::NAN; want.len()];
                reader
                    .rebuild_index_into(t, &budget, &mut got)
                    .expect("rebuilds in place");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{} at {n}", e.name);
                let mut short = vec![0f32; want.len().saturating_sub(1)];
                if !want.is_empty() {
                    assert!(reader.rebuild_index_into(t, &budget, &mut short).is_err());
                }
                // Straight into 2-byte elements: `want` rounded value by value.
                let mut halves = vec![f16::NAN; want.len()];
                reader
                    .rebuild_index_into(t, &budget, halves.as_mut_slice())
                    .expect("rebuilds as f16");
                let mut brain = vec![bf16::NAN; want.len()];
                reader
                    .rebuild_index_into(t, &budget, brain.as_mut_slice())
                    .expect("rebuilds as bf16");
                let got: [Vec<u16>; 2] = [
                    halves.iter().map(|x| x.to_bits()).collect(),
                    brain.iter().map(|x| x.to_bits()).collect(),
                ];
                let rounded: [Vec<u16>; 2] = [
                    want.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
                    want.iter().map(|&x| bf16::from_f32(x).to_bits()).collect(),
                ];
                assert_eq!(got, rounded, "{} at {n} as [f16, bf16]", e.name);
            }
        }
    }
}
