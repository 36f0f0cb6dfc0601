//! WAL records: the byte format and its parser.
//!
//! | field | bytes | meaning |
//! |---|---|---|
//! | `len` | 4, u32 LE | length of `body` |
//! | `crc` | 4, u32 LE | CRC32C of `body` |
//! | `body` | `len` | `seq` u64 LE, `op` u8, then the op's fields |
//!
//! Op 1, upsert: `count` u32, then per point `id` u64, `dim` f32 LE values,
//! `payload_len` u32 and that many bytes of a JSON object.
//! Op 2, delete: `count` u32, then `count` ids u64.
//!
//! One record holds one whole user batch, so a batch is applied entirely or not at
//! all: a record cut short by a crash fails its length or checksum check and is
//! dropped with everything after it.

use crate::point::{Payload, Point, PointId};

/// Bytes before a record's body.
pub const HEADER_LEN: usize = 8;

/// The largest body a record may have; longer lengths are corruption, not data.
pub const MAX_RECORD_LEN: usize = 256 << 20;

const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;

/// What a record does.
#[derive(Debug, Clone, PartialEq)]
pub enum WalOp {
    /// Insert or replace these points (vectors already normalised for the metric).
    Upsert(Vec<Point>),
    /// Delete these ids.
    Delete(Vec<PointId>),
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub struct WalRecord {
    /// Its sequence number, increasing by one per record.
    pub seq: u64,
    /// The operation.
    pub op: WalOp,
}

/// Why decoding stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailError {
    /// Fewer bytes than the header or the announced body length.
    Truncated {
        /// Offset of the record.
        offset: usize,
    },
    /// The announced length is over [`MAX_RECORD_LEN`] or too short for a body.
    BadLength {
        /// Offset of the record.
        offset: usize,
        /// The announced length.
        len: usize,
    },
    /// The body's CRC32C does not match the header.
    BadChecksum {
        /// Offset of the record.
        offset: usize,
    },
    /// The checksum matched but the body does not parse.
    Malformed {
        /// Offset of the record.
        offset: usize,
        /// What did not parse.
        reason: String,
    },
}

impl std::fmt::Display for TailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailError::Truncated { offset } => write!(f, "record at byte {offset} is truncated"),
            TailError::BadLength { offset, len } => {
                write!(
                    f,
                    "record at byte {offset} announces an impossible length {len}"
                )
            }
            TailError::BadChecksum { offset } => {
                write!(f, "record at byte {offset} fails its CRC32C check")
            }
            TailError::Malformed { offset, reason } => {
                write!(f, "record at byte {offset} is malformed: {reason}")
            }
        }
    }
}

/// The encoded size of a record holding `op`.
pub fn encoded_len(op: &WalOp, dim: usize) -> usize {
    HEADER_LEN
        + 9
        + 4
        + match op {
            WalOp::Upsert(points) => points
                .iter()
                .map(|p| 8 + dim * 4 + 4 + payload_json_len(&p.payload))
                .sum::<usize>(),
            WalOp::Delete(ids) => ids.len() * 8,
        }
}

fn payload_json_len(payload: &Payload) -> usize {
    serde_json::to_vec(payload).map_or(2, |v| v.len())
}

/// Appends the record (header and body) to `out`.
pub fn encode(seq: u64, op: &WalOp, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(&seq.to_le_bytes());
    match op {
        WalOp::Upsert(points) => {
            out.push(OP_UPSERT);
            out.extend_from_slice(&(points.len() as u32).to_le_bytes());
            for p in points {
                out.extend_from_slice(&p.id.to_le_bytes());
                for v in &p.vector {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                // A serde_json Map always serializes; the fallback keeps this total.
                let json = serde_json::to_vec(&p.payload).unwrap_or_else(|_| b"{}".to_vec());
                out.extend_from_slice(&(json.len() as u32).to_le_bytes());
                out.extend_from_slice(&json);
            }
        }
        WalOp::Delete(ids) => {
            out.push(OP_DELETE);
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    let body_len = (out.len() - start - HEADER_LEN) as u32;
    let crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A bounds-checked reader over a record body.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("{what} runs past the end of the record"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Parses one record body for vectors of `dim` values.
pub fn decode_body(body: &[u8], dim: usize) -> Result<WalRecord, String> {
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let seq = r.u64("seq")?;
    let op = r.u8("op")?;
    let count = r.u32("count")? as usize;
    let op = match op {
        OP_UPSERT => {
            // Each point needs at least 12 bytes plus its vector: caps `count` before allocating.
            let min_point = 12 + dim.saturating_mul(4);
            if count.saturating_mul(min_point) > body.len() {
                return Err(format!("{count} points cannot fit in {} bytes", body.len()));
            }
            let mut points = Vec::with_capacity(count);
            for i in 0..count {
                let id = r.u64("point id")?;
                let raw = r.take(dim * 4, "vector")?;
                let vector: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if let Some(c) = vector.iter().position(|v| !v.is_finite()) {
                    return Err(format!("point {i} has a non-finite value at component {c}"));
                }
                let len = r.u32("payload length")? as usize;
                let json = r.take(len, "payload")?;
                let payload: Payload = serde_json::from_slice(json)
                    .map_err(|e| format!("payload of point {i} is not a JSON object: {e}"))?;
                points.push(Point {
                    id,
                    vector,
                    payload,
                });
            }
            WalOp::Upsert(points)
        }
        OP_DELETE => {
            if count.saturating_mul(8) > body.len() {
                return Err(format!("{count} ids cannot fit in {} bytes", body.len()));
            }
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                ids.push(r.u64("id")?);
            }
            WalOp::Delete(ids)
        }
        other => return Err(format!("unknown op {other}")),
    };
    if r.pos != body.len() {
        return Err(format!("{} trailing bytes", body.len() - r.pos));
    }
    Ok(WalRecord { seq, op })
}

/// Decodes consecutive records from `bytes`. Returns the records, the length of the
/// valid prefix, and why decoding stopped early, if it did.
pub fn decode_all(bytes: &[u8], dim: usize) -> (Vec<WalRecord>, usize, Option<TailError>) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < HEADER_LEN {
            return (records, offset, Some(TailError::Truncated { offset }));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if !(13..=MAX_RECORD_LEN).contains(&len) {
            return (records, offset, Some(TailError::BadLength { offset, len }));
        }
        let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            return (records, offset, Some(TailError::Truncated { offset }));
        };
        if crc32c::crc32c(body) != crc {
            return (records, offset, Some(TailError::BadChecksum { offset }));
        }
        match decode_body(body, dim) {
            Ok(record) => records.push(record),
            Err(reason) => {
                return (
                    records,
                    offset,
                    Some(TailError::Malformed { offset, reason }),
                );
            }
        }
        offset += HEADER_LEN + len;
    }
    (records, offset, None)
}

/// The fuzz body: decodes `data` (its first byte picks the dimension, 0..=8) and
/// checks the parser's promises. Panics only when a promise is broken.
pub fn fuzz_one(data: &[u8]) {
    let Some((&d, bytes)) = data.split_first() else {
        return;
    };
    let dim = usize::from(d % 9);
    let (records, valid, tail) = decode_all(bytes, dim);
    assert!(valid <= bytes.len(), "valid prefix longer than the input");
    assert_eq!(
        tail.is_none(),
        valid == bytes.len(),
        "a tail error exactly when bytes are left"
    );
    let mut again = Vec::with_capacity(valid);
    for r in &records {
        encode(r.seq, &r.op, &mut again);
    }
    // Payload JSON may be re-serialized differently (key order, spacing), so the
    // round trip is checked on the decoded records rather than the bytes.
    let (back, back_valid, back_tail) = decode_all(&again, dim);
    assert!(
        back_tail.is_none() && back_valid == again.len(),
        "re-encoded records do not parse"
    );
    assert_eq!(back, records, "re-encoded records decode differently");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample_ops() -> Vec<WalOp> {
        let mut payload = Payload::new();
        payload.insert("tenant".into(), json!("a"));
        vec![
            WalOp::Upsert(vec![
                Point::with_payload(7, vec![1.0, -2.0, 0.5], payload),
                Point::new(u64::MAX, vec![0.0; 3]),
            ]),
            WalOp::Delete(vec![7, 9]),
            WalOp::Upsert(vec![]),
        ]
    }

    #[test]
    fn records_round_trip_and_sizes_are_exact() {
        let mut bytes = Vec::new();
        for (i, op) in sample_ops().iter().enumerate() {
            let before = bytes.len();
            encode(i as u64 + 1, op, &mut bytes);
            assert_eq!(bytes.len() - before, encoded_len(op, 3));
        }
        let (records, valid, tail) = decode_all(&bytes, 3);
        assert_eq!(tail, None);
        assert_eq!(valid, bytes.len());
        let ops: Vec<WalOp> = records.into_iter().map(|r| r.op).collect();
        assert_eq!(ops, sample_ops());
    }

    #[test]
    fn every_truncation_keeps_a_whole_prefix() {
        let mut bytes = Vec::new();
        let mut ends = vec![0];
        for (i, op) in sample_ops().iter().enumerate() {
            encode(i as u64 + 1, op, &mut bytes);
            ends.push(bytes.len());
        }
        for cut in 0..bytes.len() {
            let (records, valid, tail) = decode_all(&bytes[..cut], 3);
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(records.len(), whole, "cut at {cut}");
            assert_eq!(valid, ends[whole]);
            assert_eq!(tail.is_some(), cut != ends[whole]);
        }
    }

    #[test]
    fn a_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        encode(1, &sample_ops()[0], &mut bytes);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let (records, _, tail) = decode_all(&b, 3);
            assert!(
                records.is_empty() && tail.is_some(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), dim in 0usize..9) {
            let (records, valid, _) = decode_all(&bytes, dim);
            prop_assert!(valid <= bytes.len());
            prop_assert!(records.len() <= bytes.len() / (HEADER_LEN + 13));
        }

        #[test]
        fn fuzz_body_holds_on_random_and_mutated_input(bytes in proptest::collection::vec(any::<u8>(), 0..400), flip in any::<usize>()) {
            fuzz_one(&bytes);
            // Valid records with one byte changed, the inputs a fuzzer finds slowly.
            let mut good = vec![3u8];
            for (i, op) in sample_ops().iter().enumerate() {
                encode(i as u64 + 1, op, &mut good);
            }
            fuzz_one(&good);
            let i = flip % good.len();
            good[i] = good[i].wrapping_add(1 + (flip >> 32) as u8 % 255);
            fuzz_one(&good);
        }

        #[test]
        fn random_bodies_with_valid_checksums_never_panic(body in proptest::collection::vec(any::<u8>(), 13..300), dim in 0usize..5) {
            let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = decode_all(&bytes, dim);
        }
    }
}
