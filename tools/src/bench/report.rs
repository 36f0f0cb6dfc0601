//! The results of `octet bench`: the JSON document and the table on stdout.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::measure::ConfigResult;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub base: PathBuf,
    pub queries: PathBuf,
    pub n_base: usize,
    pub n_queries: usize,
    pub dim: usize,
    pub metric: String,
    pub k: usize,
    /// Where the exact neighbours came from.
    pub ground_truth: String,
    pub m: usize,
    pub ef_construction: usize,
    pub oversampling: f32,
    /// Threads of the all-threads measurement.
    pub threads: usize,
    pub reps: usize,
    /// How a query is searched.
    pub search: String,
    pub results: Vec<ConfigResult>,
}

impl Report {
    pub fn print_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} base x {} queries, dim {}, metric {}, recall@{} against {}; HNSW m={} \
             ef_construction={}, rescore oversampling {}; QPS: median of {} reps, \
             1 thread and {} threads",
            self.n_base,
            self.n_queries,
            self.dim,
            self.metric,
            self.k,
            self.ground_truth,
            self.m,
            self.ef_construction,
            self.oversampling,
            self.reps,
            self.threads,
        )?;
        writeln!(
            out,
            "bytes/vector: RAM = compact codes + graph; the rescore tier is memory-mapped from disk\n"
        )?;
        writeln!(
            out,
            "{:<26} {:>6} {:>6} {:>7} {:>7} {:>8} {:>8} {:>5} {:>9} {:>9} {:>9}",
            "config",
            "codes",
            "graph",
            "rescore",
            "RAM",
            "ingest s",
            "seal s",
            "ef",
            format!("recall@{}", self.k),
            "QPS 1t",
            format!("QPS {}t", self.threads),
        )?;
        for r in &self.results {
            let b = &r.bytes_per_vector;
            for (i, e) in r.runs.iter().enumerate() {
                if i == 0 {
                    write!(
                        out,
                        "{:<26} {:>6.1} {:>6.1} {:>7.1} {:>7.1} {:>8.2} {:>8.2}",
                        r.config, b.codes, b.graph, b.rescore, b.ram, r.ingest_s, r.seal_s
                    )?;
                } else {
                    write!(
                        out,
                        "{:<26} {:>6} {:>6} {:>7} {:>7} {:>8} {:>8}",
                        "", "", "", "", "", "", ""
                    )?;
                }
                let ef = if e.ef_effective != e.ef {
                    format!("{}>{}", e.ef, e.ef_effective)
                } else {
                    e.ef.to_string()
                };
                writeln!(
                    out,
                    " {:>5} {:>9.4} {:>9.0} {:>9.0}",
                    ef, e.recall, e.qps_1t, e.qps_all
                )?;
            }
        }
        self.print_filtered(out)
    }

    /// Filtered recall next to the unfiltered recall at the same `ef`.
    fn print_filtered(&self, out: &mut impl Write) -> std::io::Result<()> {
        if self
            .results
            .iter()
            .all(|r| r.runs.iter().all(|e| e.filtered.is_empty()))
        {
            return Ok(());
        }
        writeln!(
            out,
            "\nkeyword filters (recall@{k} against the exact top-{k} among the matches):\n",
            k = self.k
        )?;
        writeln!(
            out,
            "{:<26} {:>5} {:<16} {:>8} {:>9} {:>9} {:>8} {:>9}",
            "config", "ef", "value", "matches", "recall", "unfilt.", "diff", "QPS 1t"
        )?;
        for r in &self.results {
            for e in &r.runs {
                for f in &e.filtered {
                    writeln!(
                        out,
                        "{:<26} {:>5} {:<16} {:>7.1}% {:>9.4} {:>9.4} {:>+8.4} {:>9.0}",
                        r.config,
                        e.ef,
                        f.value,
                        100.0 * f.fraction,
                        f.recall,
                        e.recall,
                        f.recall - e.recall,
                        f.qps_1t
                    )?;
                }
            }
        }
        Ok(())
    }
}
