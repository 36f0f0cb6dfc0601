//! Second-order palette fitting: GPTQ's column-by-column error feedback with a
//! learned table (GPTQ: Frantar et al., arXiv 2210.17323; the table refit follows
//! GPTVQ, van Baalen et al., arXiv 2402.15319, restricted to scalar tables).
//!
//! Plain [`palettize`](super::palettize) minimises the (importance-weighted) error
//! of each weight on its own. What the model sees is a layer's *output*: with `H =
//! sum over calibration tokens of x x^T` (the input Gram matrix, `cols x cols`), the
//! output error of row `w` quantised to `q` is `(w - q)^T H (w - q)`. Correlated
//! inputs let the error of one weight be cancelled by moving the weights after it,
//! which a per-weight rounding cannot do.
//!
//! Each round:
//! 1. **GPTQ pass.** Columns are visited in order (by decreasing `H_jj` when
//!    `act_order`); each weight of each row takes its nearest table entry and the
//!    rounding error, divided by the pivot of the upper Cholesky factor `U` of
//!    `H^-1`, is subtracted from the row's later weights along `U`'s row. Rows are
//!    independent, so they run in parallel.
//! 2. **Table refit.** With the indices fixed, each group's table is the exact
//!    minimiser of `sum over its rows of (w - A^T c)^T H (w - A^T c)` (`A` the
//!    one-hot index matrix): the `2^bits x 2^bits` normal equations `(A H A^T) c =
//!    A H w`, with a small ridge towards the previous table for unused entries,
//!    then rounded to f16 and sorted.
//!
//! The result keeps the lowest output error seen, starting from the plain palette's,
//! so it is never worse than [`palettize`](super::palettize) with `diag(H)` as the
//! importance on the calibration statistics. The format is unchanged: any reader
//! of palettes decodes it.

use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, Side};
use half::f16;
use rayon::prelude::*;

use super::{
    PaletteConfig, PaletteTensor, ScaledPalette, index_row_bytes, nearest_sorted, pack_row,
    palettize, unpack_indices,
};
use crate::error::{QuantError, Result};

/// Parameters of [`palettize_gptq`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqConfig {
    /// Added to the Hessian's diagonal, as a fraction of its mean (GPTQ's `percdamp`).
    pub damp: f64,
    /// Visit columns by decreasing `H_jj` (GPTQ's `act_order`).
    pub act_order: bool,
    /// Rounds of (GPTQ pass, table refit).
    pub rounds: usize,
}

impl Default for GptqConfig {
    fn default() -> Self {
        Self {
            damp: 0.01,
            act_order: true,
            rounds: 3,
        }
    }
}

/// What [`palettize_gptq`] achieved, as output error relative to the layer's output
/// energy: `sum_rows (w - q)^T H (w - q) / sum_rows w^T H w` (damped `H`). All zero
/// (the default) when the Hessian carried no signal and nothing was fed back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GptqReport {
    /// The plain palette's relative output error.
    pub initial: f64,
    /// After each round.
    pub rounds: Vec<f64>,
    /// The returned tensor's (the lowest of all).
    pub best: f64,
}

/// Palettizes `w` (`rows x cols` row-major) to minimise the output error under the
/// input Gram matrix `hessian` (`cols x cols` row-major, symmetric positive
/// semi-definite, e.g. `sum x x^T` over calibration tokens).
pub fn palettize_gptq(
    w: &[f32],
    rows: usize,
    cols: usize,
    hessian: &[f64],
    cfg: &PaletteConfig,
    gcfg: &GptqConfig,
) -> Result<(PaletteTensor, GptqReport)> {
    let diag = check_hessian(hessian, cols, gcfg)?;
    let importance: Vec<f32> = diag.iter().map(|&d| d as f32).collect();
    // Validates w, rows, cols and the config.
    let plain = palettize(w, rows, cols, Some(&importance), cfg)?;
    let Some(HessianFactors { perm, hp32, upper }) = HessianFactors::new(hessian, &diag, gcfg)?
    else {
        // No calibration signal at all: nothing to feed back.
        return Ok((plain, GptqReport::default()));
    };
    let wp: Vec<f32> = w
        .chunks_exact(cols)
        .flat_map(|row| perm.iter().map(move |&j| row[j]))
        .collect();
    let k = 1usize << cfg.bits;
    let group_rows = plain.layout.group_rows;
    // sum of w^T H w over each group's rows: the constant part of its output error.
    let group_energy: Vec<f64> = wp
        .par_chunks(group_rows * cols)
        .map(|g| {
            g.chunks_exact(cols)
                .map(|row| quad_form(&hp32, row, cols))
                .sum()
        })
        .collect();
    let energy = group_energy.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut luts: Vec<f32> = plain.luts.iter().map(|v| v.to_f32()).collect();
    // The plain palette's indices, in permuted column order.
    let rb = index_row_bytes(cols, cfg.bits);
    let mut codes = vec![0u8; rows * cols];
    codes
        .par_chunks_exact_mut(cols)
        .zip(plain.indices.par_chunks_exact(rb))
        .for_each(|(out, packed)| {
            let mut idx = vec![0u8; cols];
            unpack_indices(packed, cfg.bits, &mut idx);
            for (o, &j) in out.iter_mut().zip(&perm) {
                *o = idx[j];
            }
        });

    let problem = Problem {
        wp: &wp,
        hp: &hp32,
        cols,
        k,
        group_rows,
        group_energy: &group_energy,
    };
    let total = |r: &[Refitted], f: fn(&Refitted) -> f64| r.iter().map(f).sum::<f64>() / energy;
    let initial = total(&problem.tables_for(&codes, &luts, false)?, |r| r.before);
    let mut best = (initial, luts.clone(), codes.clone());
    let mut report = GptqReport {
        initial,
        rounds: Vec::with_capacity(gcfg.rounds),
        best: initial,
    };
    for _ in 0..gcfg.rounds {
        gptq_pass(&wp, &upper, &luts, cols, k, group_rows, &mut codes);
        let refitted = problem.tables_for(&codes, &luts, true)?;
        let loss = total(&refitted, |r| r.after);
        luts = refitted.into_iter().flat_map(|r| r.table).collect();
        // Sorting a table moves its entries: remap the indices of its rows.
        sort_tables(&mut luts, &mut codes, k, group_rows * cols);
        report.rounds.push(loss);
        if loss < best.0 {
            best = (loss, luts.clone(), codes.clone());
        }
    }
    report.best = best.0;
    let (_, luts, codes) = best;

    let mut inv = vec![0usize; cols];
    for (i, &j) in perm.iter().enumerate() {
        inv[j] = i;
    }
    let mut indices = vec![0u8; rows * rb];
    indices
        .par_chunks_exact_mut(rb)
        .zip(codes.par_chunks_exact(cols))
        .for_each(|(out, c)| {
            let row: Vec<u8> = inv.iter().map(|&i| c[i]).collect();
            pack_row(&row, cfg.bits, out);
        });
    Ok((
        PaletteTensor {
            layout: plain.layout,
            luts: luts.iter().map(|&v| f16::from_f32(v)).collect(),
            indices,
        },
        report,
    ))
}

/// Checks a Gram matrix and the config; returns its diagonal.
fn check_hessian(hessian: &[f64], cols: usize, gcfg: &GptqConfig) -> Result<Vec<f64>> {
    if hessian.len() != cols * cols {
        return Err(QuantError::DimMismatch {
            what: "palette Hessian (cols x cols)",
            expected: cols * cols,
            actual: hessian.len(),
        });
    }
    if let Some(i) = hessian.iter().position(|x| !x.is_finite()) {
        return Err(QuantError::InvalidConfig {
            field: "hessian",
            reason: format!("entry ({}, {}) is {}", i / cols, i % cols, hessian[i]),
        });
    }
    if let Some(j) = (0..cols).find(|&j| hessian[j * cols + j] < 0.0) {
        return Err(QuantError::InvalidConfig {
            field: "hessian",
            reason: format!(
                "diagonal entry {j} is {}, expected >= 0 (a Gram matrix)",
                hessian[j * cols + j]
            ),
        });
    }
    if !(gcfg.damp.is_finite() && gcfg.damp > 0.0) {
        return Err(QuantError::InvalidConfig {
            field: "damp",
            reason: format!("expected a finite value > 0, got {}", gcfg.damp),
        });
    }
    Ok((0..cols).map(|j| hessian[j * cols + j]).collect())
}

/// The column order, the damped permuted Hessian and the upper Cholesky factor of
/// its inverse, both row-major f32.
struct HessianFactors {
    perm: Vec<usize>,
    hp32: Vec<f32>,
    upper: Vec<f32>,
}

impl HessianFactors {
    /// `None` when the Hessian is all zero (no calibration signal).
    fn new(hessian: &[f64], diag: &[f64], gcfg: &GptqConfig) -> Result<Option<Self>> {
        let cols = diag.len();
        let mean_diag = diag.iter().sum::<f64>() / cols.max(1) as f64;
        if mean_diag <= 0.0 {
            return Ok(None);
        }
        let mut perm: Vec<usize> = (0..cols).collect();
        if gcfg.act_order {
            perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
        }
        let lambda = gcfg.damp * mean_diag;
        // Damped, permuted, symmetrised; a dead input (H_jj = 0) gets 1 so the
        // factorisation exists (its weights never reach the output).
        let hp = Mat::<f64>::from_fn(cols, cols, |i, j| {
            let (a, b) = (perm[i], perm[j]);
            let v = 0.5 * (hessian[a * cols + b] + hessian[b * cols + a]);
            if i == j {
                if diag[a] == 0.0 { 1.0 } else { v + lambda }
            } else {
                v
            }
        });
        let hinv = hp
            .llt(Side::Lower)
            .map_err(|e| QuantError::Numerical {
                what: "palette GPTQ: Cholesky of the damped Hessian",
                reason: format!("{e:?} (raise the damping)"),
            })?
            .inverse();
        let l = hinv.llt(Side::Lower).map_err(|e| QuantError::Numerical {
            what: "palette GPTQ: Cholesky of the inverse Hessian",
            reason: format!("{e:?} (raise the damping)"),
        })?;
        let l = l.L();
        // Upper factor U = L^T, row-major: U[j][k] = L[k][j] for k >= j.
        let mut upper = vec![0f32; cols * cols];
        for j in 0..cols {
            for k in j..cols {
                upper[j * cols + k] = l[(k, j)] as f32;
            }
        }
        let hp32 = (0..cols * cols)
            .map(|i| hp[(i / cols, i % cols)] as f32)
            .collect();
        Ok(Some(Self { perm, hp32, upper }))
    }
}

/// Refines a scaled palette of `w` by one GPTQ pass under `hessian`: the table,
/// row parameters and block codes stay, each weight's index is chosen with the
/// earlier columns' rounding errors fed forward. Returns the refined palette when
/// its output error is lower, else `p` unchanged, and both errors.
pub fn scaled_gptq(
    w: &[f32],
    hessian: &[f64],
    p: &ScaledPalette,
    gcfg: &GptqConfig,
) -> Result<(ScaledPalette, GptqReport)> {
    let l = p.layout;
    let (rows, cols) = (l.rows, l.cols);
    if w.len() != rows * cols {
        return Err(QuantError::DimMismatch {
            what: "scaled palette weight matrix (rows x cols)",
            expected: rows * cols,
            actual: w.len(),
        });
    }
    let diag = check_hessian(hessian, cols, gcfg)?;
    let Some(HessianFactors { perm, hp32, upper }) = HessianFactors::new(hessian, &diag, gcfg)?
    else {
        return Ok((p.clone(), GptqReport::default()));
    };
    let table: Vec<f32> = p.table.iter().map(|v| v.to_f32()).collect();
    let grids = p.block_grids();
    let rb = index_row_bytes(cols, l.bits);
    let decoded = p.decode();
    // Per row: new packed indices, output error before and after, w^T H w.
    let per_row: Vec<(Vec<u8>, f64, f64, f64)> = w
        .par_chunks_exact(cols)
        .zip(decoded.par_chunks_exact(cols))
        .zip(grids.par_chunks_exact(2 * l.blocks()))
        .map(|((row, dec), grid)| {
            let wp: Vec<f32> = perm.iter().map(|&j| row[j]).collect();
            let before: Vec<f32> = perm.iter().map(|&j| row[j] - dec[j]).collect();
            let mut buf = wp.clone();
            let mut idx = vec![0u8; cols];
            let mut after = vec![0f32; cols];
            for i in 0..cols {
                let j = perm[i];
                let b = j / l.group_cols;
                let (s, o) = (grid[2 * b], grid[2 * b + 1]);
                let q = if s != 0.0 {
                    nearest_sorted(&table, (buf[i] - o) / s)
                } else {
                    0
                };
                idx[j] = q as u8;
                let v = s * table[q] + o;
                after[i] = wp[i] - v;
                let u = &upper[i * cols..(i + 1) * cols];
                let e = (buf[i] - v) / u[i];
                for (bk, &uk) in buf[i + 1..].iter_mut().zip(&u[i + 1..]) {
                    *bk -= e * uk;
                }
            }
            let mut packed = vec![0u8; rb];
            pack_row(&idx, l.bits, &mut packed);
            (
                packed,
                quad_form(&hp32, &before, cols),
                quad_form(&hp32, &after, cols),
                quad_form(&hp32, &wp, cols),
            )
        })
        .collect();
    let energy = per_row
        .iter()
        .map(|r| r.3)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let initial = per_row.iter().map(|r| r.1).sum::<f64>() / energy;
    let refined = per_row.iter().map(|r| r.2).sum::<f64>() / energy;
    let report = GptqReport {
        initial,
        rounds: vec![refined],
        best: initial.min(refined),
    };
    if refined >= initial {
        return Ok((p.clone(), report));
    }
    let mut out = p.clone();
    out.indices = per_row.into_iter().flat_map(|r| r.0).collect();
    Ok((out, report))
}

/// `x^T H x` for a row-major `n x n` `h`.
fn quad_form(h: &[f32], x: &[f32], n: usize) -> f64 {
    h.chunks_exact(n)
        .zip(x)
        .map(|(hr, &xi)| f64::from(xi) * dot(hr, x))
        .sum()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    // Eight f32 partial sums vectorise; the total is taken in f64.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail)
}

/// One GPTQ pass over every row: `codes` (permuted order) gets each weight's table
/// entry after the earlier columns' errors were fed forward.
fn gptq_pass(
    wp: &[f32],
    upper: &[f32],
    luts: &[f32],
    cols: usize,
    k: usize,
    group_rows: usize,
    codes: &mut [u8],
) {
    codes
        .par_chunks_exact_mut(cols)
        .zip(wp.par_chunks_exact(cols))
        .enumerate()
        .for_each(|(r, (out, row))| {
            let g = r / group_rows;
            let lut = &luts[g * k..(g + 1) * k];
            let mut buf = row.to_vec();
            for j in 0..cols {
                let q = nearest_sorted(lut, buf[j]);
                out[j] = q as u8;
                let u = &upper[j * cols..(j + 1) * cols];
                let e = (buf[j] - lut[q]) / u[j];
                for (b, &uk) in buf[j + 1..].iter_mut().zip(&u[j + 1..]) {
                    *b -= e * uk;
                }
            }
        });
}

/// Per group: `M = sum_rows A H A^T` (`k x k`), `b = sum_rows A H w` (`k`) and
/// `e = sum_rows w^T H w`.
struct GroupStats {
    m: Vec<f64>,
    b: Vec<f64>,
    e: f64,
}

/// Rows whose `T = A H` are accumulated together, so each Hessian row is read once
/// per block rather than once per row.
const ROW_BLOCK: usize = 8;

/// What is fixed while indices and tables change: the permuted weights, the damped
/// Hessian and each group's `sum w^T H w`.
struct Problem<'a> {
    wp: &'a [f32],
    hp: &'a [f32],
    cols: usize,
    k: usize,
    group_rows: usize,
    group_energy: &'a [f64],
}

/// One group's tables and output errors after [`Problem::tables_for`].
struct Refitted {
    table: Vec<f32>,
    before: f64,
    after: f64,
}

impl Problem<'_> {
    /// For indices `codes`: each group's output error with `luts`, and (when
    /// `refit`) the least-squares table and its error; without `refit` the table
    /// is kept. Groups are taken a block of rows at a time, never straddling one.
    fn tables_for(&self, codes: &[u8], luts: &[f32], refit: bool) -> Result<Vec<Refitted>> {
        let (cols, k, gr) = (self.cols, self.k, self.group_rows);
        let chunk_rows = if gr <= ROW_BLOCK {
            gr * (ROW_BLOCK / gr)
        } else {
            gr
        };
        let per_chunk = self
            .wp
            .par_chunks(chunk_rows * cols)
            .zip(codes.par_chunks(chunk_rows * cols))
            .enumerate()
            .map(|(ci, (w, c))| {
                let first_group = ci * chunk_rows / gr;
                let stats: Vec<(Vec<f64>, Vec<f64>)> = if gr <= ROW_BLOCK {
                    // Whole groups in one block: sum the rows of each.
                    let rows = block_stats(w, c, self.hp, cols, k);
                    rows.chunks(gr)
                        .map(|g| {
                            g.iter()
                                .fold((vec![0.0; k * k], vec![0.0; k]), |mut acc, (m, b)| {
                                    add(&mut acc.0, m);
                                    add(&mut acc.1, b);
                                    acc
                                })
                        })
                        .collect()
                } else {
                    // One group of many rows: blocks in parallel, summed.
                    vec![
                        w.par_chunks(ROW_BLOCK * cols)
                            .zip(c.par_chunks(ROW_BLOCK * cols))
                            .map(|(w, c)| {
                                block_stats(w, c, self.hp, cols, k).into_iter().fold(
                                    (vec![0.0; k * k], vec![0.0; k]),
                                    |mut acc, (m, b)| {
                                        add(&mut acc.0, &m);
                                        add(&mut acc.1, &b);
                                        acc
                                    },
                                )
                            })
                            .reduce(
                                || (vec![0.0; k * k], vec![0.0; k]),
                                |mut a, b| {
                                    add(&mut a.0, &b.0);
                                    add(&mut a.1, &b.1);
                                    a
                                },
                            ),
                    ]
                };
                stats
                    .into_iter()
                    .enumerate()
                    .map(|(j, (m, b))| {
                        let g = first_group + j;
                        let s = GroupStats {
                            m,
                            b,
                            e: self.group_energy[g],
                        };
                        let old = &luts[g * k..(g + 1) * k];
                        let before = group_loss(&s, old);
                        if !refit {
                            return Ok(Refitted {
                                table: old.to_vec(),
                                before,
                                after: before,
                            });
                        }
                        let table = refit_table(&s, old, g)?;
                        Ok(Refitted {
                            after: group_loss(&s, &table),
                            table,
                            before,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(per_chunk.into_iter().flatten().collect())
    }
}

fn add(acc: &mut [f64], x: &[f64]) {
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

/// Each row's `(M, b)` for a block of rows: per row `T = A H` (`k x cols`, the
/// Hessian row `i` added to row `c_i` of `T`), then `M = T A^T`, `b = T w`.
fn block_stats(
    w: &[f32],
    c: &[u8],
    hp: &[f32],
    cols: usize,
    k: usize,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let n = c.len() / cols;
    let mut t = vec![0f32; n * k * cols];
    for i in 0..cols {
        let hi = &hp[i * cols..(i + 1) * cols];
        for (r, tr) in t.chunks_exact_mut(k * cols).enumerate() {
            let ci = usize::from(c[r * cols + i]);
            for (d, &h) in tr[ci * cols..(ci + 1) * cols].iter_mut().zip(hi) {
                *d += h;
            }
        }
    }
    t.chunks_exact(k * cols)
        .enumerate()
        .map(|(r, tr)| {
            let (wr, cr) = (&w[r * cols..(r + 1) * cols], &c[r * cols..(r + 1) * cols]);
            let mut m = vec![0f64; k * k];
            let mut b = vec![0f64; k];
            for a in 0..k {
                let ta = &tr[a * cols..(a + 1) * cols];
                b[a] = dot(ta, wr);
                for (&tj, &cj) in ta.iter().zip(cr) {
                    m[a * k + usize::from(cj)] += f64::from(tj);
                }
            }
            (m, b)
        })
        .collect()
}

/// `e - 2 c^T b + c^T M c`: the group's output error with table `c` and the
/// indices its stats were taken for.
fn group_loss(s: &GroupStats, c: &[f32]) -> f64 {
    let k = c.len();
    let mut quad = 0f64;
    for a in 0..k {
        for bb in 0..k {
            quad += f64::from(c[a]) * s.m[a * k + bb] * f64::from(c[bb]);
        }
    }
    let lin: f64 = c.iter().zip(&s.b).map(|(&x, &y)| f64::from(x) * y).sum();
    (s.e - 2.0 * lin + quad).max(0.0)
}

/// The least-squares table of group `g` for fixed indices, rounded to f16.
fn refit_table(s: &GroupStats, old: &[f32], g: usize) -> Result<Vec<f32>> {
    let k = old.len();
    let trace: f64 = (0..k).map(|a| s.m[a * k + a]).sum();
    // Unused entries have a zero row and column: the ridge keeps them where they
    // were; used ones it barely moves.
    let ridge = (1e-9 * trace / k as f64).max(f64::MIN_POSITIVE.sqrt());
    let a = Mat::<f64>::from_fn(k, k, |i, j| {
        s.m[i * k + j] + if i == j { ridge } else { 0.0 }
    });
    let rhs = Mat::<f64>::from_fn(k, 1, |i, _| s.b[i] + ridge * f64::from(old[i]));
    let sol = match a.llt(Side::Lower) {
        Ok(llt) => llt.solve(&rhs),
        // Not positive definite in floating point: keep the old table.
        Err(_) => Mat::from_fn(k, 1, |i, _| f64::from(old[i])),
    };
    let table: Vec<f32> = (0..k)
        .map(|i| {
            let v = sol[(i, 0)];
            let v = if v.is_finite() { v as f32 } else { old[i] };
            f16::from_f32(v).to_f32()
        })
        .collect();
    if table.iter().any(|v| !v.is_finite()) {
        return Err(QuantError::Numerical {
            what: "palette GPTQ: table refit",
            reason: format!("group {g} has an entry outside f16's range"),
        });
    }
    Ok(table)
}

/// Sorts each group's table ascending and remaps the indices of its rows.
fn sort_tables(luts: &mut [f32], codes: &mut [u8], k: usize, group_len: usize) {
    luts.chunks_exact_mut(k)
        .zip(codes.chunks_mut(group_len))
        .for_each(|(lut, cg)| {
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| lut[a].total_cmp(&lut[b]));
            let mut new_of = vec![0u8; k];
            for (new, &old) in order.iter().enumerate() {
                new_of[old] = new as u8;
            }
            let sorted: Vec<f32> = order.iter().map(|&i| lut[i]).collect();
            lut.copy_from_slice(&sorted);
            for c in cg.iter_mut() {
                *c = new_of[usize::from(*c)];
            }
        });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// `rows x cols` weights and the Gram matrix of `tokens` correlated inputs
    /// (each input a mix of `cols / 4` latent factors plus a little noise).
    fn correlated(rows: usize, cols: usize, tokens: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let f = (cols / 4).max(1);
        let mix: Vec<f64> = (0..f * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut h = vec![0f64; cols * cols];
        for _ in 0..tokens {
            let z: Vec<f64> = (0..f).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x: Vec<f64> = (0..cols)
                .map(|j| {
                    (0..f).map(|a| z[a] * mix[a * cols + j]).sum::<f64>()
                        + 0.05 * rng.random_range(-1.0..1.0)
                })
                .collect();
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += x[i] * x[j];
                }
            }
        }
        (w, h)
    }

    /// The scalar twin of the reported error: `sum_rows (w - q)^T H_damped (w - q) /
    /// sum_rows w^T H_damped w` in f64, original column order.
    fn output_error(w: &[f32], q: &[f32], h: &[f64], cols: usize, damp: f64) -> f64 {
        let lambda = damp * (0..cols).map(|j| h[j * cols + j]).sum::<f64>() / cols as f64;
        let form = |d: &[f64]| -> f64 {
            let mut s = 0.0;
            for i in 0..cols {
                for j in 0..cols {
                    let hij = h[i * cols + j] + if i == j { lambda } else { 0.0 };
                    s += d[i] * hij * d[j];
                }
            }
            s
        };
        let (mut num, mut den) = (0.0, 0.0);
        for (wr, qr) in w.chunks_exact(cols).zip(q.chunks_exact(cols)) {
            let d: Vec<f64> = wr.iter().zip(qr).map(|(a, b)| f64::from(a - b)).collect();
            let x: Vec<f64> = wr.iter().map(|&a| f64::from(a)).collect();
            num += form(&d);
            den += form(&x);
        }
        num / den
    }

    #[test]
    fn feeds_errors_forward_and_beats_the_plain_palette_on_correlated_inputs() {
        let (rows, cols) = (24, 64);
        let (w, h) = correlated(rows, cols, 512, 7);
        for (bits, group_rows) in [(3u8, Some(1)), (2, Some(4)), (4, None)] {
            let cfg = PaletteConfig { bits, group_rows };
            let g = GptqConfig::default();
            let (p, rep) = palettize_gptq(&w, rows, cols, &h, &cfg, &g).expect("ok");
            let diag: Vec<f32> = (0..cols).map(|j| h[j * cols + j] as f32).collect();
            let plain = palettize(&w, rows, cols, Some(&diag), &cfg).expect("ok");
            let e_plain = output_error(&w, &plain.decode(), &h, cols, g.damp);
            let e_gptq = output_error(&w, &p.decode(), &h, cols, g.damp);
            // The report is the decoded tensor's error (f16 tables, unpermuted, packed).
            assert!(
                (rep.initial - e_plain).abs() <= 1e-3 * e_plain,
                "{rep:?} vs {e_plain}"
            );
            assert!(
                (rep.best - e_gptq).abs() <= 1e-3 * e_gptq,
                "{rep:?} vs {e_gptq}"
            );
            assert!(
                e_gptq < 0.7 * e_plain,
                "{bits} bits, {group_rows:?}: gptq {e_gptq} vs plain {e_plain}"
            );
            // Same layout and a valid palette: ascending tables.
            assert_eq!(p.layout, plain.layout);
            for t in p.luts.chunks_exact(1 << bits) {
                assert!(t.windows(2).all(|x| x[0] <= x[1]), "{t:?}");
            }
        }
    }

    #[test]
    fn scaled_palettes_feed_errors_forward_too() {
        let (rows, cols) = (24, 96);
        let (w, h) = correlated(rows, cols, 512, 11);
        let g = GptqConfig::default();
        let diag: Vec<f32> = (0..cols).map(|j| h[j * cols + j] as f32).collect();
        for bits in [2u8, 3] {
            let p = crate::palette::palettize_scaled(&w, rows, cols, Some(&diag), bits, 32)
                .expect("ok");
            let (q, rep) = scaled_gptq(&w, &h, &p, &g).expect("ok");
            let (e0, e1) = (
                output_error(&w, &p.decode(), &h, cols, g.damp),
                output_error(&w, &q.decode(), &h, cols, g.damp),
            );
            assert!((rep.initial - e0).abs() <= 1e-3 * e0, "{rep:?} vs {e0}");
            assert!((rep.best - e1).abs() <= 1e-3 * e1, "{rep:?} vs {e1}");
            assert!(e1 < 0.8 * e0, "{bits} bits: gptq {e1} vs fitted {e0}");
            // Only the indices change.
            assert_eq!(
                (&q.table, &q.params, &q.codes),
                (&p.table, &p.params, &p.codes)
            );
        }
        let err = scaled_gptq(
            &w[1..],
            &h,
            &crate::palette::palettize_scaled(&w, rows, cols, None, 2, 32).expect("ok"),
            &g,
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("rows x cols"), "{err}");
    }

    #[test]
    fn never_worse_than_the_plain_palette_without_correlation() {
        // H diagonal: feedback has nothing to exploit; the result may equal the plain one.
        let (rows, cols) = (8, 32);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut h = vec![0f64; cols * cols];
        for j in 0..cols {
            h[j * cols + j] = rng.random_range(0.1..2.0);
        }
        let cfg = PaletteConfig {
            bits: 2,
            group_rows: Some(1),
        };
        let (_, rep) =
            palettize_gptq(&w, rows, cols, &h, &cfg, &GptqConfig::default()).expect("ok");
        assert!(rep.best <= rep.initial, "{rep:?}");
    }

    #[test]
    fn zero_hessian_gives_the_plain_palette_and_dead_inputs_are_fine() {
        let (rows, cols) = (4, 16);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = PaletteConfig {
            bits: 2,
            group_rows: Some(2),
        };
        let (p, _) = palettize_gptq(
            &w,
            rows,
            cols,
            &vec![0.0; cols * cols],
            &cfg,
            &GptqConfig::default(),
        )
        .expect("ok");
        assert_eq!(p, palettize(&w, rows, cols, None, &cfg).expect("ok"));
        // One live input, the rest dead.
        let mut h = vec![0f64; cols * cols];
        h[0] = 4.0;
        let (p, rep) =
            palettize_gptq(&w, rows, cols, &h, &cfg, &GptqConfig::default()).expect("ok");
        assert!(p.decode().iter().all(|v| v.is_finite()));
        assert!(rep.best <= rep.initial);
    }

    #[test]
    fn rejects_bad_hessians() {
        let (rows, cols) = (2, 4);
        let w = vec![0.5f32; rows * cols];
        let cfg = PaletteConfig {
            bits: 2,
            group_rows: Some(1),
        };
        let g = GptqConfig::default();
        let err = palettize_gptq(&w, rows, cols, &[1.0; 15], &cfg, &g).expect_err("must fail");
        assert!(err.to_string().contains("Hessian"), "{err}");
        let mut h = vec![0f64; 16];
        h[5] = f64::NAN;
        let err = palettize_gptq(&w, rows, cols, &h, &cfg, &g).expect_err("must fail");
        assert!(err.to_string().contains("(1, 1)"), "{err}");
        h[5] = -1.0;
        let err = palettize_gptq(&w, rows, cols, &h, &cfg, &g).expect_err("must fail");
        assert!(err.to_string().contains("diagonal entry 1"), "{err}");
        let bad = GptqConfig { damp: 0.0, ..g };
        let err = palettize_gptq(&w, rows, cols, &[1.0; 16], &cfg, &bad).expect_err("must fail");
        assert!(err.to_string().contains("damp"), "{err}");
    }

    proptest! {
        #[test]
        fn nearest_sorted_matches_a_linear_scan(
            mut lut in prop::collection::vec(-4.0f32..4.0, 1..20),
            x in -5.0f32..5.0,
        ) {
            lut.sort_by(f32::total_cmp);
            let fast = nearest_sorted(&lut, x);
            let best = lut.iter().map(|v| (v - x).abs()).fold(f32::INFINITY, f32::min);
            prop_assert_eq!((lut[fast] - x).abs(), best);
        }

        #[test]
        fn stats_loss_matches_the_direct_output_error(
            seed in 0u64..1000,
            k_bits in 1u8..4,
            group_rows in prop::sample::select(vec![1usize, 3, 8, 11]),
        ) {
            let (rows, cols) = (11, 12);
            let k = 1usize << k_bits;
            let (w, h) = correlated(rows, cols, 40, seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabc);
            let codes: Vec<u8> = (0..rows * cols).map(|_| rng.random_range(0..k) as u8).collect();
            let luts: Vec<f32> = (0..rows.div_ceil(group_rows) * k)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
            let energy: Vec<f64> = w
                .chunks(group_rows * cols)
                .map(|g| g.chunks_exact(cols).map(|r| quad_form(&h32, r, cols)).sum())
                .collect();
            let problem = Problem { wp: &w, hp: &h32, cols, k, group_rows, group_energy: &energy };
            let refitted = problem.tables_for(&codes, &luts, true).expect("ok");
            let fast: f64 = refitted.iter().map(|r| r.before).sum();
            let after: f64 = refitted.iter().map(|r| r.after).sum();
            let q: Vec<f32> = codes
                .iter()
                .enumerate()
                .map(|(i, &c)| luts[(i / cols / group_rows) * k + usize::from(c)])
                .collect();
            let mut direct = 0f64;
            for (wr, qr) in w.chunks_exact(cols).zip(q.chunks_exact(cols)) {
                for i in 0..cols {
                    for j in 0..cols {
                        direct += f64::from(wr[i] - qr[i]) * f64::from(h32[i * cols + j]) * f64::from(wr[j] - qr[j]);
                    }
                }
            }
            prop_assert!((fast - direct).abs() <= 1e-3 * (1.0 + direct.abs()), "{} vs {}", fast, direct);
            // The refit tables never raise the loss for these indices.
            prop_assert!(after <= fast * (1.0 + 1e-3) + 1e-6, "{} > {}", after, fast);
        }
    }
}
