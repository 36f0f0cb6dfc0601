//! Reading and writing vector files: TEXMEX `.fvecs` / `.ivecs` and raw little-endian f32.
//!
//! `.fvecs` rows are an i32 dimension followed by that many little-endian f32 values;
//! `.ivecs` the same with i32 values. There is no header. Every error names the file
//! and the row, and no row count or dimension is trusted before it is checked
//! against the file's length.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{QuantError, Result};

/// The largest dimension accepted from a file (far above any embedding model).
pub const MAX_DIM: usize = 1 << 16;

/// A row-major matrix of f32 vectors read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    /// Dimension of each row.
    pub dim: usize,
    /// `rows * dim` values, row-major.
    pub data: Vec<f32>,
}

impl Vectors {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Iterates over the rows.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.dim.max(1))
    }
}

fn format_err(path: &Path, reason: String) -> QuantError {
    QuantError::Format {
        path: path.to_path_buf(),
        reason,
    }
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| QuantError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Splits TEXMEX rows of 4-byte elements, checking each row's dimension.
fn texmex_rows(path: &Path, bytes: &[u8], expect_dim: Option<usize>) -> Result<(usize, Vec<u32>)> {
    if bytes.len() < 4 {
        return Err(format_err(
            path,
            format!("file is {} bytes, too short for one row", bytes.len()),
        ));
    }
    let first = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let dim = usize::try_from(first)
        .ok()
        .filter(|&d| (1..=MAX_DIM).contains(&d))
        .ok_or_else(|| {
            format_err(
                path,
                format!("row 0: dimension field is {first}, expected 1..={MAX_DIM}"),
            )
        })?;
    if let Some(expected) = expect_dim.filter(|&e| e != dim) {
        return Err(format_err(
            path,
            format!("dimension is {dim}, expected {expected}"),
        ));
    }
    let row_bytes = 4 * (dim + 1);
    if !bytes.len().is_multiple_of(row_bytes) {
        return Err(format_err(
            path,
            format!(
                "length {} is not a whole number of {dim}-d rows ({row_bytes} bytes each): \
                 truncated, or rows of different dimensions",
                bytes.len()
            ),
        ));
    }
    let mut values = Vec::with_capacity(bytes.len() / row_bytes * dim);
    for (r, row) in bytes.chunks_exact(row_bytes).enumerate() {
        let d = i32::from_le_bytes([row[0], row[1], row[2], row[3]]);
        if usize::try_from(d).ok() != Some(dim) {
            return Err(format_err(
                path,
                format!("row {r}: dimension field is {d}, expected {dim}"),
            ));
        }
        values.extend(
            row[4..]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    Ok((dim, values))
}

fn finite_vectors(path: &Path, dim: usize, data: Vec<f32>) -> Result<Vectors> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(format_err(
            path,
            format!(
                "row {}, column {}: value {} is not finite",
                i / dim,
                i % dim,
                data[i]
            ),
        ));
    }
    Ok(Vectors { dim, data })
}

/// Reads an `.fvecs` file; every row must have the same dimension (and `expect_dim`
/// when given) and every value must be finite.
pub fn read_fvecs(path: &Path, expect_dim: Option<usize>) -> Result<Vectors> {
    let bytes = read_all(path)?;
    let (dim, bits) = texmex_rows(path, &bytes, expect_dim)?;
    finite_vectors(path, dim, bits.into_iter().map(f32::from_bits).collect())
}

/// Reads an `.ivecs` file as rows of i32.
pub fn read_ivecs(path: &Path) -> Result<(usize, Vec<i32>)> {
    let bytes = read_all(path)?;
    let (dim, bits) = texmex_rows(path, &bytes, None)?;
    Ok((dim, bits.into_iter().map(|b| b as i32).collect()))
}

/// Reads raw little-endian f32 values in rows of `dim`.
pub fn read_raw_f32(path: &Path, dim: usize) -> Result<Vectors> {
    if !(1..=MAX_DIM).contains(&dim) {
        return Err(QuantError::InvalidConfig {
            field: "dim",
            reason: format!("must be in 1..={MAX_DIM}, got {dim}"),
        });
    }
    let bytes = read_all(path)?;
    let row_bytes = 4 * dim;
    if bytes.is_empty() || !bytes.len().is_multiple_of(row_bytes) {
        return Err(format_err(
            path,
            format!(
                "length {} is not a whole number of {dim}-d f32 rows ({row_bytes} bytes each)",
                bytes.len()
            ),
        ));
    }
    let data = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    finite_vectors(path, dim, data)
}

/// Reads `.fvecs` when the file name ends in `.fvecs`, raw f32 otherwise (then `dim` is required).
pub fn read_vectors(path: &Path, dim: Option<usize>) -> Result<Vectors> {
    let is_fvecs = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("fvecs"));
    match (is_fvecs, dim) {
        (true, d) => read_fvecs(path, d),
        (false, Some(d)) => read_raw_f32(path, d),
        (false, None) => Err(format_err(
            path,
            "not an .fvecs file: raw little-endian f32 input needs its dimension (--dim)".into(),
        )),
    }
}

/// Writes rows of `dim` values as `.fvecs`.
pub fn write_fvecs(path: &Path, dim: usize, data: &[f32]) -> Result<()> {
    write_texmex(path, dim, data.iter().map(|v| v.to_le_bytes()))
}

/// Writes rows of `dim` values as `.ivecs`.
pub fn write_ivecs(path: &Path, dim: usize, data: &[i32]) -> Result<()> {
    write_texmex(path, dim, data.iter().map(|v| v.to_le_bytes()))
}

fn write_texmex(path: &Path, dim: usize, values: impl Iterator<Item = [u8; 4]>) -> Result<()> {
    let io = |source| QuantError::Io {
        path: path.to_path_buf(),
        source,
    };
    let d = i32::try_from(dim).map_err(|_| QuantError::InvalidConfig {
        field: "dim",
        reason: format!("{dim} too large"),
    })?;
    let mut out = std::io::BufWriter::new(fs::File::create(path).map_err(io)?);
    for (i, v) in values.enumerate() {
        if i % dim == 0 {
            out.write_all(&d.to_le_bytes()).map_err(io)?;
        }
        out.write_all(&v).map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("octet-vecio-{}-{name}", std::process::id()))
    }

    #[test]
    fn fvecs_round_trip_and_errors() {
        let path = temp_path("a.fvecs");
        let data: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        write_fvecs(&path, 7, &data).expect("write");
        let v = read_fvecs(&path, Some(7)).expect("read");
        assert_eq!((v.dim, v.len(), v.data.clone()), (7, 3, data.clone()));
        assert!(read_fvecs(&path, Some(8)).is_err_and(|e| e.to_string().contains("expected 8")));

        // Truncated file: the message names the file.
        let bytes = fs::read(&path).expect("read bytes");
        fs::write(&path, &bytes[..bytes.len() - 3]).expect("truncate");
        let err = read_fvecs(&path, None).expect_err("truncated");
        assert!(
            err.to_string().contains("a.fvecs") && err.to_string().contains("truncated"),
            "{err}"
        );

        // NaN is rejected with its position.
        let mut bad = data.clone();
        bad[9] = f32::NAN;
        write_fvecs(&path, 7, &bad).expect("write");
        let err = read_fvecs(&path, None).expect_err("nan");
        assert!(err.to_string().contains("row 1, column 2"), "{err}");
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn raw_needs_dim_and_whole_rows() {
        let path = temp_path("b.bin");
        let data: Vec<u8> = (0..10u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        fs::write(&path, &data).expect("write");
        assert_eq!(read_raw_f32(&path, 5).expect("read").len(), 2);
        assert!(read_raw_f32(&path, 3).is_err());
        assert!(read_vectors(&path, None).is_err_and(|e| e.to_string().contains("--dim")));
        let _ = fs::remove_file(&path);
    }
}
