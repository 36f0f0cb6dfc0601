//! Bit allocation across components: reverse water-filling by greedy marginal gains.
//!
//! Each component `j` comes with a distortion curve `D_j(b)`, the mean squared error
//! of its quantizer at `b = 0..=8` bits. Starting from zero bits everywhere, each of
//! the budget's bits goes to the component where one more bit removes the most
//! distortion. For the textbook model `D_j(b) = var_j * 4^-b` this is exactly reverse
//! water-filling (every component ends within one bit of `log4(var_j / theta)`), and
//! since PCA sorts components by variance the widths come out non-increasing. With
//! curves measured from the fitted quantizers the same greedy spends bits where the
//! real quantizers gain most; widths may then be out of component order, which the
//! layout handles by permuting components (see `layout.rs`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::error::{QuantError, Result};

/// The most bits any one component gets: codes are at most one byte.
pub const MAX_BITS: u8 = 8;

/// Distortion of one component at `0..=MAX_BITS` bits (index = bits).
pub type DistortionCurve = [f64; MAX_BITS as usize + 1];

/// The model curve `variance * 4^-b` of an ideal high-resolution quantizer.
pub fn model_curve(variance: f64) -> DistortionCurve {
    std::array::from_fn(|b| variance * 0.25f64.powi(b as i32))
}

/// A candidate next bit: the distortion it removes from `component`.
#[derive(Debug, PartialEq)]
struct Candidate {
    gain: f64,
    component: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Larger gain first; on equal gains the lower component index (the one with
        // more variance) first, so the result is deterministic.
        self.gain
            .total_cmp(&other.gain)
            .then_with(|| other.component.cmp(&self.component))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Spreads `budget_bits` over components by greedy marginal gain on `curves`:
/// returns each component's width in `0..=MAX_BITS`, summing exactly to the budget.
///
/// Errors when the budget exceeds `MAX_BITS` per component, or a curve holds a
/// non-finite value.
pub fn allocate_bits(curves: &[DistortionCurve], budget_bits: usize) -> Result<Vec<u8>> {
    if let Some(j) = curves.iter().position(|c| c.iter().any(|d| !d.is_finite())) {
        return Err(not_finite(j, &format!("{:?}", curves[j])));
    }
    allocate_bits_with(curves.len(), budget_bits, |j, b| curves[j][usize::from(b)])
}

/// [`allocate_bits`] over `components` curves read through `distortion(j, b)`
/// (component `j` at `b` bits), which the greedy asks for only as it goes: the
/// point at `b + 1` bits once a component has `b`. A caller that fits its
/// quantizers on demand fits only the widths that can matter (the transform
/// codec's uniform quantizers, [`super::quantizer::UniformLadder`]); the result
/// is the same as with every curve measured up front.
pub fn allocate_bits_with(
    components: usize,
    budget_bits: usize,
    mut distortion: impl FnMut(usize, u8) -> f64,
) -> Result<Vec<u8>> {
    let capacity = components * usize::from(MAX_BITS);
    if budget_bits > capacity {
        return Err(QuantError::InvalidConfig {
            field: "transform bytes",
            reason: format!(
                "{budget_bits} bits exceed {MAX_BITS} bits for each of {components} components"
            ),
        });
    }
    let mut gain = |j: usize, b: u8| -> Result<f64> {
        let (now, next) = (distortion(j, b), distortion(j, b + 1));
        if !now.is_finite() || !next.is_finite() {
            return Err(not_finite(
                j,
                &format!("{now} at {b} bits, {next} at {} bits", b + 1),
            ));
        }
        Ok(now - next)
    };
    let mut widths = vec![0u8; components];
    let mut heap = BinaryHeap::with_capacity(components);
    for j in 0..components {
        heap.push(Candidate {
            gain: gain(j, 0)?,
            component: j,
        });
    }
    for _ in 0..budget_bits {
        // The budget fits the capacity, so a candidate is always left.
        let Some(Candidate { component: j, .. }) = heap.pop() else {
            break;
        };
        widths[j] += 1;
        if widths[j] < MAX_BITS {
            heap.push(Candidate {
                gain: gain(j, widths[j])?,
                component: j,
            });
        }
    }
    Ok(widths)
}

fn not_finite(component: usize, values: &str) -> QuantError {
    QuantError::Numerical {
        what: "bit allocation",
        reason: format!("distortion curve of component {component} is not finite: {values}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn model_allocation_is_reverse_water_filling() {
        // Variances 4^3, 4^2, 4, 1: each factor of 4 is worth one bit.
        let curves: Vec<_> = [64.0, 16.0, 4.0, 1.0].map(model_curve).to_vec();
        assert_eq!(allocate_bits(&curves, 3).expect("alloc"), vec![2, 1, 0, 0]);
        assert_eq!(allocate_bits(&curves, 10).expect("alloc"), vec![4, 3, 2, 1]);
        assert_eq!(allocate_bits(&curves, 32).expect("alloc"), vec![8; 4]);
        assert!(allocate_bits(&curves, 33).is_err());
    }

    #[test]
    fn non_finite_curve_is_an_error() {
        let mut c = model_curve(1.0);
        c[3] = f64::NAN;
        assert!(matches!(
            allocate_bits(&[model_curve(2.0), c], 4),
            Err(QuantError::Numerical { .. })
        ));
    }

    proptest! {
        #[test]
        fn sums_to_budget_and_is_non_increasing(
            mut vars in prop::collection::vec(0.0f64..10.0, 1..130),
            frac in 0.0f64..=1.0,
        ) {
            vars.sort_by(|a, b| b.total_cmp(a));
            let curves: Vec<_> = vars.iter().map(|&v| model_curve(v)).collect();
            let budget = (frac * (8 * vars.len()) as f64) as usize;
            let w = allocate_bits(&curves, budget).expect("alloc");
            prop_assert_eq!(w.iter().map(|&b| usize::from(b)).sum::<usize>(), budget);
            prop_assert!(w.iter().all(|&b| b <= MAX_BITS));
            prop_assert!(w.windows(2).all(|p| p[0] >= p[1]), "{:?}", w);
        }
    }
}
