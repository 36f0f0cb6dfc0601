//! Search: the query goes to codec space once; each sealed segment is searched
//! through its graph (or exactly over the filter's matches when the filter is
//! selective), the growing segment exactly; candidates are merged, the sealed ones
//! rescored from the rescore tier, and the best `k` returned with true scores.

use octet_quant::{Metric, VectorCodec};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Collection, Loc};
use crate::collection::state::State;
use crate::error::{Result, StoreError};
use crate::filter::Filter;
use crate::graph::Scored;
use crate::point::{PayloadJson, PointId};

/// One search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The query vector.
    pub vector: Vec<f32>,
    /// Results wanted.
    pub k: usize,
    /// Graph candidate list size (default: the collection's `ef_search`).
    #[serde(default)]
    pub ef: Option<usize>,
    /// Only points passing this filter.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Rescore candidates from the rescore tier (when the collection has one).
    #[serde(default = "yes")]
    pub rescore: bool,
    /// Candidates per result before rescoring (default: the collection's).
    #[serde(default)]
    pub oversampling: Option<f32>,
    /// Return payloads.
    #[serde(default)]
    pub with_payload: bool,
    /// Return vectors.
    #[serde(default)]
    pub with_vector: bool,
}

fn yes() -> bool {
    true
}

impl SearchRequest {
    /// The `k` nearest to `vector`, default parameters, no payload or vector.
    pub fn new(vector: Vec<f32>, k: usize) -> Self {
        SearchRequest {
            vector,
            k,
            ef: None,
            filter: None,
            rescore: true,
            oversampling: None,
            with_payload: false,
            with_vector: false,
        }
    }

    /// With a filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// With a graph candidate list size.
    pub fn ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// With or without rescoring.
    pub fn rescore(mut self, rescore: bool) -> Self {
        self.rescore = rescore;
        self
    }

    /// With payloads returned.
    pub fn with_payload(mut self) -> Self {
        self.with_payload = true;
        self
    }

    /// With vectors returned.
    pub fn with_vector(mut self) -> Self {
        self.with_vector = true;
        self
    }

    /// Checks the request's own limits, the one definition of them every front end
    /// calls: `k` in `1..=`[`MAX_K`], `ef` at most [`MAX_K`], `oversampling` in
    /// `1..=100`, a non-empty vector of finite values, and a well-formed filter.
    /// The error names the field, the allowed range and the value given
    /// (`k: must be in 1..=10000, got 0`). The vector's dimension depends on the
    /// collection: [`Collection::validate_search`] checks it too.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason| Err(StoreError::InvalidQuery { field, reason });
        if !(1..=MAX_K).contains(&self.k) {
            return bad("k", format!("must be in 1..={MAX_K}, got {}", self.k));
        }
        if self.vector.is_empty() {
            return bad("vector", "empty".into());
        }
        // One vectorised pass (every search pays it); the position only when
        // there is one.
        if !octet_quant::kernels::all_finite(&self.vector)
            && let Some(i) = self.vector.iter().position(|v| !v.is_finite())
        {
            return bad(
                "vector",
                format!("non-finite value {} at component {i}", self.vector[i]),
            );
        }
        if let Some(ef) = self.ef.filter(|&ef| ef > MAX_K) {
            return bad("ef", format!("must be at most {MAX_K}, got {ef}"));
        }
        if let Some(o) = self.oversampling
            && !(o.is_finite() && (1.0..=100.0).contains(&o))
        {
            return bad("oversampling", format!("must be in 1..=100, got {o}"));
        }
        if let Some(f) = &self.filter {
            f.validate()?;
        }
        Ok(())
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredPoint {
    /// The point id.
    pub id: PointId,
    /// Higher is better: inner product for dot and cosine, negated squared
    /// distance for l2. Exact for growing-segment points, from the rescore tier
    /// when rescored, otherwise from the compact codes.
    pub score: f32,
    /// The payload as JSON text, when asked for.
    pub payload: Option<PayloadJson>,
    /// The stored vector, when asked for.
    pub vector: Option<Vec<f32>>,
}

/// The largest `k`, `ef` and scroll `limit` a request may ask for (the one
/// limit: [`SearchRequest::validate`] and the server's scroll check use it).
pub const MAX_K: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    loc: Loc,
    exact: bool,
}

impl Collection {
    /// The `k` best points for one request.
    pub fn search(&self, request: &SearchRequest) -> Result<Vec<ScoredPoint>> {
        let st = self.inner.state.read();
        self.search_in(&st, request)
    }

    /// Several requests against one consistent view of the collection, in parallel.
    pub fn search_batch(&self, requests: &[SearchRequest]) -> Result<Vec<Vec<ScoredPoint>>> {
        let st = self.inner.state.read();
        let st: &State = &st;
        requests.par_iter().map(|r| self.search_in(st, r)).collect()
    }

    /// Checks `request` against this collection: its own limits
    /// ([`SearchRequest::validate`]) and the vector's dimension.
    pub fn validate_search(&self, request: &SearchRequest) -> Result<()> {
        request.validate()?;
        let dim = self.inner.config.dim;
        if request.vector.len() != dim {
            return Err(StoreError::InvalidQuery {
                field: "vector",
                reason: format!("expected dimension {dim}, got {}", request.vector.len()),
            });
        }
        Ok(())
    }

    fn search_in(&self, st: &State, req: &SearchRequest) -> Result<Vec<ScoredPoint>> {
        self.validate_search(req)?;
        let config = &self.inner.config;
        let metric = config.metric;
        let query = metric.prepare_query(&req.vector);
        // The prepared query of a cosine collection is unit length and so are its
        // stored vectors: the codecs' scorers score it as the inner product it is,
        // without normalising it again each.
        let scoring = match metric {
            Metric::Cosine => Metric::Dot,
            other => other,
        };
        // A validated collection config holds its default in range too.
        let oversampling = req.oversampling.unwrap_or(config.rescore.oversampling);
        let filter = req.filter.as_ref().filter(|f| !f.is_empty());
        let rescorer = st
            .codecs
            .as_ref()
            .and_then(|c| c.rescore.as_ref())
            .filter(|_| req.rescore)
            .map(|(codec, _)| codec.scorer(&query, scoring));
        let fetch = if rescorer.is_some() {
            ((req.k as f32) * oversampling).ceil() as usize
        } else {
            req.k
        };
        let ef = req.ef.unwrap_or(config.hnsw.ef_search).max(fetch);

        let mut cands: Vec<Candidate> = Vec::new();
        for s in st.growing.search(&query, metric, fetch, filter, None) {
            cands.push(Candidate {
                score: s.score,
                loc: Loc::Growing(s.point),
                exact: true,
            });
        }
        for (fi, fr) in st.frozen.iter().enumerate() {
            for s in fr
                .seg
                .search(&query, metric, fetch, filter, Some(&fr.deleted))
            {
                cands.push(Candidate {
                    score: s.score,
                    loc: Loc::Frozen(fi, s.point),
                    exact: true,
                });
            }
        }
        if let Some(codecs) = &st.codecs {
            let scorer = codecs.codec.scorer(&query, scoring);
            for (si, e) in st.sealed.iter().enumerate() {
                let seg = &e.seg;
                let score = |p: u32| scorer.score(seg.code(p));
                // The walk steers by the cheaper estimate; what it returns is scored
                // again below (or by the rescore tier).
                let codes = seg.codes();
                let walk = |ids: &[u32], out: &mut [f32]| scorer.coarse_gather(codes, ids, out);
                let prefetch = |p: u32| octet_quant::kernels::prefetch(seg.code(p));
                // Every point the walk ends with was expanded on the way: its rescore
                // row starts loading then, well before the rescore reads it. Walks
                // that skip points (filters, deletions) hint only the points they
                // may return.
                let rescoring = rescorer.is_some();
                let expanded = |p: u32| {
                    if rescoring && let Some(row) = seg.rescore_code(p) {
                        octet_quant::kernels::prefetch_l2(row);
                    }
                };
                let mut hits: Vec<Scored> = if let Some(f) = filter {
                    let allowed = seg.allowed(Some(f), &e.deleted);
                    let matching = allowed.count_ones();
                    if (matching as f32) < config.hnsw.exact_filter_fraction * seg.len() as f32
                        || matching <= ef
                    {
                        exact_over(allowed.iter_ones().map(|p| p as u32), fetch, &score)
                    } else {
                        let accept = |p: u32| allowed.get(p as usize);
                        let expanded = hint_accepted(&accept, &expanded);
                        seg.graph
                            .search_gather(fetch, ef, walk, prefetch, expanded, accept)
                    }
                } else if e.deleted.count_ones() == 0 {
                    seg.graph
                        .search_gather_all(fetch, ef, walk, prefetch, expanded)
                } else {
                    let accept = |p: u32| !e.deleted.get(p as usize);
                    let expanded = hint_accepted(&accept, &expanded);
                    seg.graph
                        .search_gather(fetch, ef, walk, prefetch, expanded, accept)
                };
                if rescorer.is_none() {
                    for h in &mut hits {
                        h.score = score(h.point);
                    }
                }
                cands.extend(hits.into_iter().map(|s| Candidate {
                    score: s.score,
                    loc: Loc::Sealed(si, s.point),
                    exact: false,
                }));
            }
        }
        cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        cands.truncate(fetch);
        if let Some(r) = &rescorer {
            // Start loading every candidate's rescore code before scoring the first
            // (they are scattered over the memory map).
            for c in &cands {
                if let (false, Loc::Sealed(si, off)) = (c.exact, c.loc)
                    && let Some(code) = st.sealed[si].seg.rescore_code(off)
                {
                    octet_quant::kernels::prefetch(code);
                }
            }
            for c in &mut cands {
                if let (false, Loc::Sealed(si, off)) = (c.exact, c.loc)
                    && let Some(code) = st.sealed[si].seg.rescore_code(off)
                {
                    c.score = r.score(code);
                }
            }
            cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        cands.truncate(req.k);
        cands
            .into_iter()
            .map(|c| {
                let rec = self.record(st, c.loc, req.with_payload, req.with_vector)?;
                Ok(ScoredPoint {
                    id: rec.id,
                    score: c.score,
                    payload: rec.payload,
                    vector: rec.vector,
                })
            })
            .collect()
    }
}

/// `hint`, called only for points `accept` takes: a walk returns no others.
fn hint_accepted(accept: impl Fn(u32) -> bool, hint: impl Fn(u32)) -> impl Fn(u32) {
    move |p| {
        if accept(p) {
            hint(p);
        }
    }
}

/// The best `k` of `points` by `score`, exhaustively.
fn exact_over(
    points: impl Iterator<Item = u32>,
    k: usize,
    score: &dyn Fn(u32) -> f32,
) -> Vec<Scored> {
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<Scored>> = Default::default();
    for p in points {
        let s = Scored {
            score: score(p),
            point: p,
        };
        if heap.len() < k {
            heap.push(std::cmp::Reverse(s));
        } else if heap.peek().is_some_and(|w| s > w.0) {
            heap.pop();
            heap.push(std::cmp::Reverse(s));
        }
    }
    let mut out: Vec<Scored> = heap.into_iter().map(|r| r.0).collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every limit is refused with the field, the range and the value in the message.
    #[test]
    fn validate_names_the_field_and_the_range() {
        let ok = SearchRequest::new(vec![1.0; 3], 5);
        ok.validate().expect("valid");
        let cases = [
            (
                SearchRequest::new(vec![1.0; 3], 0),
                "k: must be in 1..=10000, got 0",
            ),
            (
                SearchRequest::new(vec![1.0; 3], MAX_K + 1),
                "k: must be in 1..=10000, got 10001",
            ),
            (SearchRequest::new(vec![], 5), "vector: empty"),
            (
                SearchRequest::new(vec![1.0, f32::NAN, 1.0], 5),
                "vector: non-finite value NaN at component 1",
            ),
            (
                ok.clone().ef(MAX_K + 1),
                "ef: must be at most 10000, got 10001",
            ),
            (
                SearchRequest {
                    oversampling: Some(0.5),
                    ..ok.clone()
                },
                "oversampling: must be in 1..=100, got 0.5",
            ),
        ];
        for (req, want) in cases {
            let e = req.validate().expect_err(want);
            assert!(matches!(e, StoreError::InvalidQuery { .. }), "{e:?}");
            assert_eq!(e.to_string(), want);
        }
        use crate::filter::{Condition, Range};
        let no_bound = Filter::must(vec![Condition::range("k", Range::default())]);
        assert!(matches!(
            ok.filter(no_bound).validate(),
            Err(StoreError::InvalidFilter { .. })
        ));
    }
}
