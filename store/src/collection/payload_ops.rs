//! Writes that read first, composed from the WAL's upsert and delete records:
//! delete by filter, and payload updates that keep the stored vector (what Qdrant's
//! set / overwrite / delete payload calls need). Each holds the writer lock from
//! its read to its write, so no other write lands in between.
//!
//! A payload update re-writes the whole point. Its vector is the stored one: exact
//! while the point is in the growing segment or the rescore tier is f32; for a
//! sealed point with a lossy tier it is that tier's decoded approximation (or the
//! compact codes' without a tier), encoded again. A dedicated WAL record would keep
//! the original; this composition needs no change to the WAL or segment formats.

use super::Collection;
use crate::error::{Result, corrupt};
use crate::filter::Filter;
use crate::point::{Payload, Point, PointId, prepare_batch};
use crate::wal::WalOp;

impl Collection {
    /// The ids of the live points passing `filter`, in id order.
    pub fn ids_where(&self, filter: &Filter) -> Result<Vec<PointId>> {
        let (records, _) = self.scroll(None, usize::MAX - 1, Some(filter), false, false)?;
        Ok(records.into_iter().map(|r| r.id).collect())
    }

    /// Deletes every live point passing `filter`; returns how many. With `durable`,
    /// returns once fsynced.
    pub fn delete_where(&self, filter: &Filter, durable: bool) -> Result<usize> {
        filter.validate()?;
        let writer = self.inner.write_lock.lock();
        let ids = self.ids_where(filter)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let n = ids.len();
        self.write_locked(writer, WalOp::Delete(ids), durable)?;
        Ok(n)
    }

    /// Applies `update` to the payload of each existing point among `ids` and
    /// writes the points back with their stored vectors (see the module doc for
    /// what "stored" means for sealed points). Absent ids are skipped; returns how
    /// many points were rewritten.
    pub fn update_payloads(
        &self,
        ids: &[PointId],
        mut update: impl FnMut(&mut Payload),
        durable: bool,
    ) -> Result<usize> {
        let writer = self.inner.write_lock.lock();
        let records = self.get(ids, true, true)?;
        let mut points = Vec::with_capacity(records.len());
        for r in records {
            let vector = r
                .vector
                .ok_or_else(|| corrupt(self.dir(), format!("point {} has no vector", r.id)))?;
            let mut payload = match &r.payload {
                Some(p) => p
                    .parse()
                    .map_err(|e| corrupt(self.dir(), format!("payload of point {}: {e}", r.id)))?,
                None => Payload::new(),
            };
            update(&mut payload);
            points.push(Point::with_payload(r.id, vector, payload));
        }
        if points.is_empty() {
            return Ok(0);
        }
        let n = points.len();
        let prepared = prepare_batch(&points, self.inner.config.dim, self.inner.config.metric)?;
        self.write_locked(writer, WalOp::Upsert(prepared), durable)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use octet_quant::Metric;
    use serde_json::json;

    use crate::config::CollectionConfig;
    use crate::filter::{Condition, Filter};
    use crate::point::{Payload, Point};
    use crate::store::Store;

    fn payload(tenant: &str, n: u64) -> Payload {
        let mut p = Payload::new();
        p.insert("tenant".into(), json!(tenant));
        p.insert("n".into(), json!(n));
        p
    }

    #[test]
    fn delete_where_and_update_payloads_on_growing_and_sealed_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut config = CollectionConfig::new(7, Metric::Cosine);
        config.rescore.element = Some(octet_quant::ElementSpec::F32);
        let c = store.create_collection("c", config).expect("create");
        let vector =
            |i: u64| -> Vec<f32> { (0..7).map(|j| ((i * 7 + j) % 11) as f32 + 1.0).collect() };
        let points: Vec<Point> = (0..300)
            .map(|i| {
                Point::with_payload(i, vector(i), payload(if i % 3 == 0 { "a" } else { "b" }, i))
            })
            .collect();
        c.upsert(&points[..200], false).expect("upsert");
        c.seal().expect("seal");
        c.upsert(&points[200..], false).expect("upsert");

        // Sealed (5) and growing (250) points, one absent id.
        let n = c
            .update_payloads(
                &[5, 250, 9999],
                |p| {
                    p.insert("tag".into(), json!("x"));
                    p.remove("n");
                },
                true,
            )
            .expect("update");
        assert_eq!(n, 2);
        let got = c.get(&[5, 250], true, true).expect("get");
        for r in &got {
            let p = r.payload.as_ref().expect("payload").parse().expect("json");
            assert_eq!(p.get("tag"), Some(&json!("x")));
            assert!(p.get("n").is_none());
            let want = crate::point::normalize_for(Metric::Cosine, &vector(r.id));
            let v = r.vector.as_ref().expect("vector");
            assert!(
                v.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
                "{v:?} vs {want:?}"
            );
        }

        let tenant_a = Filter::must(vec![Condition::keyword("tenant", "a")]);
        assert_eq!(c.count(Some(&tenant_a)).expect("count"), 100);
        assert_eq!(c.delete_where(&tenant_a, true).expect("delete"), 100);
        assert_eq!(c.count(Some(&tenant_a)).expect("count"), 0);
        assert_eq!(c.count(None).expect("count"), 200);
        assert_eq!(c.delete_where(&tenant_a, true).expect("delete"), 0);
    }
}
