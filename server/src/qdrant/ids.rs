//! Qdrant point ids (unsigned integers or UUIDs) on Octet's `u64` ids.
//!
//! - An integer id is the Octet id itself.
//! - A UUID maps to `(hi ^ lo) | 1 << 63`, its two 64-bit halves folded together
//!   with the top bit set, so UUID points sort after integer ids below 2^63 (as in
//!   Qdrant, where integer ids order before UUIDs) and never meet them.
//! - Every point written through the Qdrant API keeps its Qdrant id as a string in
//!   the reserved payload field [`ID_KEY`]; reads turn an id with the top bit set
//!   back into the UUID found there. `has_id` is a condition on Octet ids (so it
//!   sees points whichever API wrote them); an id at or above 2^63 must also
//!   carry its Qdrant id in that field, or none. The field never appears in
//!   payloads returned by either API's Qdrant side, and users may not write it.
//!
//! Limits, by construction: two UUIDs folding to the same 63 bits (among n random
//! UUIDs the chance of any such pair is about n^2 / 2^64: one in 18 million for a
//! million points), or an integer id >= 2^63 equal to a UUID's fold, would name
//! the same point; the later write replaces the earlier.

use octet_store::{Payload, PointId};
use tonic::Status;

use crate::qdrant_pb as q;

/// The reserved payload field holding a point's Qdrant id as text.
pub(crate) const ID_KEY: &str = "__qdrant_id";

/// Parses a UUID in any of the forms Qdrant accepts (hyphenated, 32 hex digits,
/// braced, `urn:uuid:`), returning its 128 bits.
pub(crate) fn parse_uuid(s: &str) -> Option<u128> {
    let t = s.strip_prefix("urn:uuid:").unwrap_or(s);
    let t = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(t);
    let hex: String = match t.len() {
        32 => t.to_string(),
        36 => {
            let b = t.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                return None;
            }
            t.chars().filter(|&c| c != '-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

/// The canonical (lower-case, hyphenated) text of a UUID.
pub(crate) fn format_uuid(u: u128) -> String {
    let h = format!("{u:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The Octet id of a UUID.
pub(crate) fn fold_uuid(u: u128) -> PointId {
    ((u >> 64) as u64 ^ u as u64) | 1 << 63
}

/// A Qdrant id resolved: the Octet id and the text kept in [`ID_KEY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QId {
    pub id: PointId,
    pub text: String,
}

/// Resolves a Qdrant point id; `field` names it in errors.
pub(crate) fn from_pb(p: Option<q::PointId>, field: &str) -> Result<QId, Status> {
    use q::point_id::PointIdOptions as O;
    match p.and_then(|p| p.point_id_options) {
        Some(O::Num(n)) => Ok(QId {
            id: n,
            text: n.to_string(),
        }),
        Some(O::Uuid(s)) => {
            let u = parse_uuid(&s)
                .ok_or_else(|| Status::invalid_argument(format!("{field}: `{s}` is not a UUID")))?;
            Ok(QId {
                id: fold_uuid(u),
                text: format_uuid(u),
            })
        }
        None => Err(Status::invalid_argument(format!(
            "{field}: missing (an unsigned integer or a UUID)"
        ))),
    }
}

/// The Qdrant id of a stored point: the UUID kept in its payload when its id has
/// the top bit set and the payload holds one, otherwise the integer.
pub(crate) fn to_pb(id: PointId, payload: Option<&Payload>) -> q::PointId {
    use q::point_id::PointIdOptions as O;
    let uuid = payload
        .filter(|_| maybe_uuid(id))
        .and_then(|p| p.get(ID_KEY)?.as_str())
        .filter(|s| parse_uuid(s).is_some())
        .map(str::to_string);
    q::PointId {
        point_id_options: Some(match uuid {
            Some(u) => O::Uuid(u),
            None => O::Num(id),
        }),
    }
}

/// Whether the id may stand for a UUID (its payload must be read to tell).
pub(crate) fn maybe_uuid(id: PointId) -> bool {
    id >> 63 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_parse_in_every_form_and_round_trip() {
        let canonical = "936da01f-9abd-4d9d-80c7-02af85c822a8";
        let forms = [
            canonical.to_string(),
            canonical.to_uppercase(),
            canonical.replace('-', ""),
            format!("{{{canonical}}}"),
            format!("urn:uuid:{canonical}"),
        ];
        let u = parse_uuid(canonical).expect("uuid");
        for f in &forms {
            assert_eq!(parse_uuid(f), Some(u), "{f}");
        }
        assert_eq!(format_uuid(u), canonical);
        for bad in [
            "",
            "936da01f",
            "936da01f-9abd-4d9d-80c7-02af85c822ag",
            "x".repeat(36).as_str(),
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
        let id = from_pb(
            Some(q::PointId {
                point_id_options: Some(q::point_id::PointIdOptions::Uuid(forms[2].clone())),
            }),
            "id",
        )
        .expect("id");
        assert!(maybe_uuid(id.id));
        assert_eq!(id.text, canonical);
        let mut p = Payload::new();
        p.insert(ID_KEY.into(), id.text.clone().into());
        assert_eq!(
            to_pb(id.id, Some(&p)).point_id_options,
            Some(q::point_id::PointIdOptions::Uuid(canonical.into()))
        );
        assert_eq!(
            to_pb(7, Some(&p)).point_id_options,
            Some(q::point_id::PointIdOptions::Num(7))
        );
        assert!(from_pb(None, "id").is_err());
    }
}
