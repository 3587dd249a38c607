//! The latency picture: for each load run, the fraction of requests slower than x, on a log
//! scale, so that the tail (the 1% and the 0.1%) is as visible as the median.

use plotters::prelude::*;

/// Writes the picture of `series` (a label, and latencies in ms, sorted) as SVG to `path`;
/// on an error, removes what was written of it.
pub fn write(path: &str, title: &str, series: &[(&str, &[f64])]) -> Result<(), String> {
    draw(path, title, series).map_err(|err| {
        let _ = std::fs::remove_file(path);
        format!("cannot draw {path}: {err}")
    })
}

fn draw(
    path: &str,
    title: &str,
    series: &[(&str, &[f64])],
) -> Result<(), Box<dyn std::error::Error>> {
    let most = series
        .iter()
        .map(|(_, s)| s.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let floor = 1.0 / most as f64;
    let slowest = series
        .iter()
        .filter_map(|(_, s)| s.last().copied())
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (820, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..slowest * 1.05, (floor / 2.0..1f64).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("dashboard latency (ms)")
        .y_desc("fraction of requests slower")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()?;
    let colors = [RED, BLUE, GREEN, MAGENTA];
    for (i, (label, sorted)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let n = sorted.len() as f64;
        // Slower than x: a step down at every sample, ending at 1/n (a log scale has no 0).
        let points = sorted.iter().enumerate().flat_map(|(k, &x)| {
            let k = k as f64;
            [(x, (n - k) / n), (x, ((n - k - 1.0) / n).max(floor))]
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
