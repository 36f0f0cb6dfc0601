//! The SVG of `octet advise --svg`: recall against bytes per vector.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::sweep::Sweep;

pub fn write_svg(path: &Path, sweep: &Sweep, k: usize) -> Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let max_bytes = sweep
        .results
        .iter()
        .map(|r| r.bytes_per_vector)
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let min_bytes = sweep
        .results
        .iter()
        .map(|r| r.bytes_per_vector)
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let min_recall = sweep
        .results
        .iter()
        .flat_map(|r| std::iter::once(r.recall).chain(r.candidate_recall.iter().map(|c| c.1)))
        .fold(1.0f64, f64::min)
        .clamp(0.0, 0.95);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "recall@{k} vs bytes per vector ({} x {}-d, {})",
                sweep.n_base, sweep.dim, sweep.metric
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (min_bytes * 0.8..max_bytes * 1.25).log_scale(),
            (min_recall - 0.02)..1.005f64,
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("bytes per vector (log scale)")
        .y_desc(format!("recall@{k}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;

    let flat: Vec<(f64, f64, &str)> = sweep
        .results
        .iter()
        .map(|r| (r.bytes_per_vector as f64, r.recall, r.codec.as_str()))
        .collect();
    chart
        .draw_series(
            flat.iter()
                .map(|&(x, y, _)| Circle::new((x, y), 5, BLUE.filled())),
        )
        .map_err(|e| anyhow!("{e}"))?
        .label(format!("flat recall@{k}"))
        .legend(|(x, y)| Circle::new((x, y), 5, BLUE.filled()));
    chart
        .draw_series(flat.iter().map(|&(x, y, name)| {
            Text::new(
                name.to_string(),
                (x, y),
                ("sans-serif", 12).into_font().color(&BLACK),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    let colors = [RED, GREEN, MAGENTA];
    for (d, color) in colors.into_iter().enumerate() {
        let Some(depth) = sweep
            .results
            .first()
            .and_then(|r| r.candidate_recall.get(d))
            .map(|c| c.0)
        else {
            continue;
        };
        let points: Vec<(f64, f64)> = sweep
            .results
            .iter()
            .filter_map(|r| {
                r.candidate_recall
                    .get(d)
                    .map(|c| (r.bytes_per_vector as f64, c.1))
            })
            .collect();
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 5, color.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("true top-{k} in top-{depth} candidates"))
            .legend(move |(x, y)| TriangleMarker::new((x, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
