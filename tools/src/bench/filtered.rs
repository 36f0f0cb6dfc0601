//! Filtered search in `octet bench`: one keyword filter per distinct value of
//! `--filter-key` in the `--payloads` file, with exact neighbours among the
//! matching rows only, so filtered recall reads on the same scale as unfiltered.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result, bail};
use octet_quant::Metric;
use octet_quant::eval::exact_top_k;
use octet_quant::vecio::Vectors;
use octet_store::{Condition, Filter};
use serde::Serialize;

/// Longest payload line read (a guard against a wrong file, not a format limit).
const MAX_LINE: usize = 1 << 24;

/// What the filtered runs need: the payload key, each base row's value, the cases.
#[derive(Debug, Clone)]
pub struct Filters {
    /// The payload key filtered on.
    pub key: String,
    /// The value of `key` for each base row.
    pub keywords: Vec<Option<String>>,
    /// One keyword filter per distinct value.
    pub cases: Vec<FilterCase>,
}

/// One keyword filter and the exact neighbours of every query among its matches.
#[derive(Debug, Clone)]
pub struct FilterCase {
    /// The keyword value.
    pub value: String,
    /// Fraction of the base rows that match.
    pub fraction: f64,
    /// The filter itself.
    pub filter: Filter,
    /// Per query, the exact top-k base rows among the matches.
    pub truth: Vec<Vec<u32>>,
}

/// Recall and speed of one filter at one `ef`.
#[derive(Debug, Clone, Serialize)]
pub struct FilteredRun {
    /// The keyword value.
    pub value: String,
    /// Fraction of the points that match.
    pub fraction: f64,
    /// recall@k against the exact neighbours among the matches.
    pub recall: f64,
    /// Queries per second, one at a time on one thread (median of the reps).
    pub qps_1t: f64,
}

/// The string value at `key` (top level) of every line of `path`, line r for base
/// row r; rows without one (or past the end of the file) get `None`.
pub fn read_keywords(path: &Path, key: &str, rows: usize) -> Result<Vec<Option<String>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::with_capacity(rows);
    let mut line = String::new();
    while out.len() < rows {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        if read > MAX_LINE {
            bail!(
                "{} line {}: longer than {MAX_LINE} bytes",
                path.display(),
                out.len() + 1
            );
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), out.len() + 1))?;
        out.push(value.get(key).and_then(|v| v.as_str()).map(str::to_owned));
    }
    if out.len() < rows {
        bail!(
            "{}: {} payload lines, the base has {rows} rows",
            path.display(),
            out.len()
        );
    }
    Ok(out)
}

/// One case per distinct value, most frequent first, each with its exact neighbours.
pub fn cases(
    keywords: &[Option<String>],
    key: &str,
    base: &Vectors,
    queries: &Vectors,
    metric: Metric,
    k: usize,
) -> Vec<FilterCase> {
    let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (r, v) in keywords.iter().enumerate() {
        if let Some(v) = v {
            rows.entry(v.as_str()).or_default().push(r as u32);
        }
    }
    let mut out: Vec<FilterCase> = rows
        .into_iter()
        .map(|(value, rows)| {
            let subset: Vec<f32> = rows
                .iter()
                .flat_map(|&r| base.row(r as usize).iter().copied())
                .collect();
            let truth = exact_top_k(&subset, &queries.data, base.dim, metric, k)
                .into_iter()
                .map(|hits| hits.into_iter().map(|i| rows[i as usize]).collect())
                .collect();
            FilterCase {
                value: value.to_owned(),
                fraction: rows.len() as f64 / base.len() as f64,
                filter: Filter::must(vec![Condition::keyword(key, value)]),
                truth,
            }
        })
        .collect();
    out.sort_by(|a, b| b.fraction.total_cmp(&a.fraction));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keywords_and_builds_exact_truth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.jsonl");
        std::fs::write(
            &path,
            "{\"s\":\"a\"}\n{\"s\":\"b\"}\n{\"t\":1}\n{\"s\":\"a\"}\n",
        )
        .expect("write");
        let kw = read_keywords(&path, "s", 4).expect("read");
        assert_eq!(
            kw,
            vec![Some("a".into()), Some("b".into()), None, Some("a".into())]
        );
        assert!(read_keywords(&path, "s", 5).is_err());
        let base = Vectors {
            dim: 2,
            data: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.9, 0.1],
        };
        let queries = Vectors {
            dim: 2,
            data: vec![0.0, 1.0],
        };
        let cs = cases(&kw, "s", &base, &queries, Metric::Dot, 1);
        assert_eq!(cs.len(), 2);
        assert_eq!((cs[0].value.as_str(), cs[0].fraction), ("a", 0.5));
        // Among rows 0 and 3, row 3 scores higher against (0, 1).
        assert_eq!(cs[0].truth, vec![vec![3]]);
        assert_eq!(cs[1].truth, vec![vec![1]]);
    }
}
