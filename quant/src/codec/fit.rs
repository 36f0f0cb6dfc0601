//! What every fitted element codec needs: checking the sample it is fitted on,
//! per-dimension statistics, and checking fitted parameters read back from a
//! manifest (serde), so a damaged or hand-edited manifest is an error, not a panic
//! or a NaN score later.

use crate::error::{QuantError, Result, check_batch};

/// Checks a row-major fitting sample and returns its number of rows (at least one).
pub(crate) fn sample_rows(what: &'static str, sample: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 {
        return Err(QuantError::InvalidConfig {
            field: "dim",
            reason: "must be >= 1".into(),
        });
    }
    let rows = check_batch("fitting sample", sample, dim)?;
    if rows == 0 {
        return Err(QuantError::NotEnoughSamples {
            what,
            needed: 1,
            got: 0,
        });
    }
    Ok(rows)
}

/// Per-dimension mean of a checked sample, accumulated in f64.
pub(crate) fn column_means(sample: &[f32], dim: usize) -> Vec<f32> {
    let mut sums = vec![0f64; dim];
    for row in sample.chunks_exact(dim) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    let rows = (sample.len() / dim).max(1) as f64;
    sums.into_iter().map(|s| (s / rows) as f32).collect()
}

/// Per-dimension minimum and maximum of a checked, non-empty sample.
pub(crate) fn column_min_max(sample: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut min = vec![f32::INFINITY; dim];
    let mut max = vec![f32::NEG_INFINITY; dim];
    for row in sample.chunks_exact(dim) {
        for ((lo, hi), &v) in min.iter_mut().zip(max.iter_mut()).zip(row) {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
    }
    (min, max)
}

/// Checks fitted per-dimension parameters: every vector has `dim` finite values, and
/// the ones named in `non_negative` have no negative value.
pub(crate) fn check_params(
    field: &'static str,
    params: &[(&str, &[f32])],
    non_negative: &[&str],
) -> Result<usize> {
    let dim = params.first().map_or(0, |(_, v)| v.len());
    if dim == 0 {
        return Err(QuantError::InvalidConfig {
            field,
            reason: "fitted parameters are empty (dimension 0)".into(),
        });
    }
    for (name, values) in params {
        if values.len() != dim {
            return Err(QuantError::InvalidConfig {
                field,
                reason: format!(
                    "`{name}` has {} values, expected {dim} (one per dimension)",
                    values.len()
                ),
            });
        }
        let negative_ok = !non_negative.contains(name);
        if let Some(i) = values
            .iter()
            .position(|v| !v.is_finite() || (!negative_ok && *v < 0.0))
        {
            return Err(QuantError::InvalidConfig {
                field,
                reason: format!("`{name}`[{i}] = {} is not a valid value", values[i]),
            });
        }
    }
    Ok(dim)
}
