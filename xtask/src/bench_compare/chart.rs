//! The SVG chart of a machine's results (plotters, SVG backend only):
//! one panel per test (pp…, tg…), a pair of bars per model — zeta and
//! llama.cpp tokens/s (medians over the rounds).

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::report::Summary;

const ZETA: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const LLAMA: RGBColor = RGBColor(0xd9, 0x7a, 0x2b);

/// Renders the chart as an SVG document.
pub fn svg(title: &str, rows: &[Summary]) -> Result<String> {
    let mut tests: Vec<String> = Vec::new();
    for r in rows {
        if !tests.contains(&r.test) {
            tests.push(r.test.clone());
        }
    }
    let panels = tests.len().max(1) as u32;
    let n_models = rows.len().div_ceil(panels as usize).max(1) as u32;
    let width = panels * (100 + 170 * n_models).max(420);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
        let root = root
            .titled(title, ("sans-serif", 18))
            .map_err(|e| anyhow!("chart: {e}"))?;
        let areas = root.split_evenly((1, panels as usize));
        for (area, test) in areas.iter().zip(&tests) {
            let data: Vec<&Summary> = rows.iter().filter(|r| &r.test == test).collect();
            panel(area, test, &data)?;
        }
        root.present().map_err(|e| anyhow!("chart: {e}"))?;
    }
    Ok(out)
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    test: &str,
    data: &[&Summary],
) -> Result<()> {
    let n = data.len().max(1);
    let y_max = data
        .iter()
        .flat_map(|r| [r.zeta_ts, r.llama_ts])
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.3;
    let names: Vec<String> = data.iter().map(|r| short(&r.model)).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{test} (tokens/s, higher is better)"),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y_max)
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 11))
        .y_desc("tokens/s")
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    // Bars are drawn in pixels of the plotting area: two per model segment.
    let pixels = chart.plotting_area().strip_coord_spec();
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let (w, h) = (f64::from(xr.end - xr.start), f64::from(yr.end - yr.start));
    let seg = w / n as f64;
    let y_px = |v: f64| (h - (v / y_max).clamp(0.0, 1.0) * h).round() as i32;
    for (i, r) in data.iter().enumerate() {
        let left = i as f64 * seg;
        let spans = [
            (left + 0.12 * seg, left + 0.49 * seg, r.zeta_ts, ZETA),
            (left + 0.51 * seg, left + 0.88 * seg, r.llama_ts, LLAMA),
        ];
        for (x0, x1, v, color) in spans {
            let rect = Rectangle::new(
                [(x0.round() as i32, y_px(v)), (x1.round() as i32, h as i32)],
                color.filled(),
            );
            pixels.draw(&rect).map_err(|e| anyhow!("chart: {e}"))?;
        }
        let label = format!("{:.1} | {:.1}", r.zeta_ts, r.llama_ts);
        let top = r.zeta_ts.max(r.llama_ts) + y_max * 0.03;
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (SegmentValue::Exact(i), top),
                ("sans-serif", 10),
            )))
            .map_err(|e| anyhow!("chart: {e}"))?;
    }
    // Legend entries (empty series that only carry a legend glyph).
    for (label, color) in [("zeta", ZETA), ("llama.cpp", LLAMA)] {
        chart
            .draw_series(std::iter::empty::<Rectangle<(SegmentValue<usize>, f64)>>())
            .map_err(|e| anyhow!("chart: {e}"))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}

/// A model label short enough for an axis.
fn short(model: &str) -> String {
    let base = model.rsplit('/').next().unwrap_or(model);
    let base = base.strip_suffix(".gguf").unwrap_or(base);
    if base.chars().count() > 26 {
        base.chars().take(25).chain(std::iter::once('…')).collect()
    } else {
        base.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn svg_has_bars_and_labels() {
        let rows = vec![
            Summary {
                model: "smollm2-135m-instruct-q4_1".into(),
                test: "pp128".into(),
                threads: 2,
                rounds: 2,
                zeta_ts: 100.0,
                llama_ts: 200.0,
                ratio: 0.5,
            },
            Summary {
                model: "synth:llama-1b:q4_0".into(),
                test: "tg32".into(),
                threads: 2,
                rounds: 2,
                zeta_ts: 7.25,
                llama_ts: 8.0,
                ratio: 0.9,
            },
        ];
        let s = svg("test machine", &rows).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..s.len().min(200)]);
        assert!(s.contains("test machine"));
        assert!(s.contains("pp128 (tokens/s"));
        assert!(s.contains("smollm2-135m-instruct-q4_1"));
        assert!(s.contains("100.0 | 200.0") && s.contains("7.2"));
        assert!(s.contains("llama.cpp") && s.contains("zeta"));
        assert!(!s.contains("width=\"-"), "no negative bar widths");
        assert_eq!(
            s.matches("fill=\"#2B6CB0\"").count(),
            2 + 2,
            "a zeta bar and a legend glyph per panel"
        );
        assert_eq!(short("/a/b/model.gguf"), "model");
    }
}
