//! `octet bench --passes-on-stdin`: timed search passes on request, so a harness can
//! alternate them with a peer library's passes on the same queries and machine load.
//!
//! Protocol: after the table, `ready` on stdout; then per stdin line `CONFIG EF`
//! one JSON line `{"config", "ef", "recall", "qps"}` (or `{"error"}` for a bad
//! line); end of input ends it.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use octet_quant::vecio::Vectors;
use octet_store::SearchRequest;
use serde_json::json;

use super::measure::{Built, batch_recall, one_thread_qps};

/// Parses `CONFIG EF`.
fn parse(line: &str) -> Result<(&str, usize), String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(config), Some(ef), None) => ef
            .parse::<usize>()
            .ok()
            .filter(|e| (1..=10_000).contains(e))
            .map(|e| (config, e))
            .ok_or_else(|| format!("ef must be an integer in 1..=10000, got `{ef}`")),
        _ => Err(format!("expected `CONFIG EF`, got `{line}`")),
    }
}

/// Serves passes until stdin ends.
pub fn serve(built: &[Built], queries: &Vectors, truth: &[Vec<u32>], k: usize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match parse(&line) {
            Err(e) => json!({ "error": e }),
            Ok((config, ef)) => match built.iter().find(|b| b.config == config) {
                None => json!({ "error": format!("no config `{config}` in this run") }),
                Some(b) => {
                    let requests: Vec<SearchRequest> = queries
                        .rows()
                        .map(|q| SearchRequest::new(q.to_vec(), k).ef(ef))
                        .collect();
                    // Untimed first: recall, and the pages of the maps in.
                    let recall = batch_recall(&b.collection, &requests, truth, k)?;
                    let qps = one_thread_qps(&b.collection, &requests)?;
                    json!({ "config": config, "ef": ef, "recall": recall, "qps": qps })
                }
            },
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn pass_lines_parse_or_say_why_not() {
        assert_eq!(parse("transform96/i8 64"), Ok(("transform96/i8", 64)));
        assert!(parse("i8").is_err());
        assert!(parse("i8 0").is_err());
        assert!(parse("i8 64 x").is_err());
        assert!(parse("i8 many").is_err());
    }
}
