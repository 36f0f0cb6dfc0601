//! The SVG of `octet weights sweep --svg`: perplexity (log scale) against bits per
//! weight over the linears, one curve per method, the reference as a dashed line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use plotters::prelude::*;

use super::sweep::{SweepReport, print_table};

/// Arguments of `octet weights sweep-plot`.
#[derive(Debug, Args)]
pub struct SweepPlotArgs {
    /// A report written by `octet weights sweep --json`.
    #[arg(long, value_name = "FILE")]
    json: PathBuf,
    /// The SVG to write.
    #[arg(long, value_name = "OUT")]
    svg: PathBuf,
}

/// Runs `octet weights sweep-plot`: the table on stdout, the plot to --svg.
pub fn run(args: SweepPlotArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.json)
        .with_context(|| format!("reading {}", args.json.display()))?;
    let report: SweepReport = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a report of `octet weights sweep --json`",
            args.json.display()
        )
    })?;
    print_table(&report);
    write_svg(&args.svg, &report)
}

/// Writes the plot of `report` to `path`.
pub fn write_svg(path: &Path, report: &SweepReport) -> Result<()> {
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let reference = report
        .rows
        .iter()
        .find(|r| r.method == "reference")
        .map(|r| r.perplexity);
    let points: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.method != "reference" && r.perplexity.is_finite())
        .collect();
    let xmax = points
        .iter()
        .map(|r| r.bits_per_weight)
        .fold(2.0f64, f64::max)
        .ceil();
    let xmin = points
        .iter()
        .map(|r| r.bits_per_weight)
        .fold(xmax, f64::min)
        .floor()
        .max(0.0);
    let ymin = points
        .iter()
        .map(|r| r.perplexity)
        .chain(reference)
        .fold(f64::INFINITY, f64::min);
    // Points far off the chart (2-bit RTN reaches the thousands) are clipped at 20x
    // the reference so the useful region stays readable.
    let cap = reference.map_or(f64::INFINITY, |r| 20.0 * r);
    let ymax = points
        .iter()
        .map(|r| r.perplexity.min(cap))
        .fold(ymin * 1.1, f64::max);
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "perplexity vs bits per weight ({} tokens, context {})",
                report.tokens, report.ctx
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(xmin..xmax, (ymin * 0.95..ymax * 1.05).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("bits per weight over the linear layers")
        .y_desc("perplexity (log scale)")
        .draw()
        .map_err(|x| e(&x))?;
    if let Some(r) = reference {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(xmin, r), (xmax, r)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label(format!("reference {r:.2}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    let mut methods: Vec<&str> = Vec::new();
    for r in &points {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    for (i, m) in methods.iter().enumerate() {
        let color = palette[i % palette.len()];
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|r| r.method == *m)
            .map(|r| (r.bits_per_weight, r.perplexity.min(cap)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(*m)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
