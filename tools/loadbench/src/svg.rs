//! Line charts as hand-written SVG for the benchmark write-ups (`docs/img/`): axes with ticks
//! and grid, one line with point markers per series, a title, a note and a legend. No
//! dependencies; the same data always gives the same text, so plots diff cleanly in git.

use std::fmt::Write as _;
use std::path::Path;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 420.0;
/// Plot area inside the canvas: room on the left for y tick labels, on the right for the legend.
const LEFT: f64 = 78.0;
const RIGHT: f64 = WIDTH - 250.0;
const TOP: f64 = 58.0;
const BOTTOM: f64 = HEIGHT - 52.0;
/// One colour per series, in order; colour-blind friendly (Okabe-Ito).
const PALETTE: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

/// How the x axis maps values: connection counts span decades, waiter counts do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log10,
}

/// One named line: (x, y) points, drawn in x order. A series may lack points others have.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    /// A smaller line under the title: what was measured, how, when.
    pub note: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub series: Vec<Series>,
}

impl LineChart {
    /// Writes the chart to `path`, creating its directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.to_svg())
    }

    pub fn to_svg(&self) -> String {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let xs: Vec<f64> = points().map(|p| p.0).collect();
        let y_max = points().map(|p| p.1).fold(0.0, f64::max);
        let x_axis = Axis::for_x(self.x_scale, &xs);
        let y_axis = Axis::linear(0.0, y_max);

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{LEFT}" y="40" fill="#555555">{}</text>"##,
            escape(&self.note)
        );

        // Grid and ticks first, so the lines draw over them.
        for &tick in &y_axis.ticks {
            let y = y_axis.to_px(tick, BOTTOM, TOP);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                number(tick)
            );
        }
        for &tick in &x_axis.ticks {
            let x = x_axis.to_px(tick, LEFT, RIGHT);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}" stroke="#e5e5e5"/><line x1="{x:.1}" y1="{BOTTOM}" x2="{x:.1}" y2="{:.1}" stroke="#333333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                BOTTOM + 5.0,
                BOTTOM + 19.0,
                number(tick)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path d="M{LEFT},{TOP} V{BOTTOM} H{RIGHT}" fill="none" stroke="#333333"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (LEFT + RIGHT) / 2.0,
            HEIGHT - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + BOTTOM) / 2.0,
            escape(&self.y_label)
        );

        for (i, series) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let mut points = series.points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let px: Vec<(f64, f64)> = points
                .iter()
                .map(|&(x, y)| (x_axis.to_px(x, LEFT, RIGHT), y_axis.to_px(y, BOTTOM, TOP)))
                .collect();
            let _ = write!(svg, "<g><title>{}</title>", escape(&series.name));
            if px.len() > 1 {
                let path: Vec<String> = px.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = write!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                    path.join(" ")
                );
            }
            for ((x, y), (vx, vy)) in px.iter().zip(&points) {
                let _ = write!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{colour}"><title>{}: {} at {}</title></circle>"#,
                    escape(&series.name),
                    number(*vy),
                    number(*vx)
                );
            }
            let _ = writeln!(svg, "</g>");
            let legend_y = TOP + 8.0 + 20.0 * i as f64;
            let _ = writeln!(
                svg,
                r#"<line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="2"/><circle cx="{:.1}" cy="{legend_y:.1}" r="3.5" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                RIGHT + 14.0,
                RIGHT + 38.0,
                RIGHT + 26.0,
                RIGHT + 44.0,
                legend_y + 4.0,
                escape(&series.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Where values land on one axis, and the ticks to label.
struct Axis {
    scale: Scale,
    /// Domain ends, in the scale's own units (log10 of the value for `Log10`).
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// From 0 (or the data's minimum, if negative) up to a round number above the maximum.
    fn linear(min: f64, max: f64) -> Axis {
        let max = if max > min { max } else { min + 1.0 };
        let step = nice_step((max - min) / 5.0);
        let lo = (min / step).floor() * step;
        let hi = (max * 1.04 / step).ceil() * step;
        let count = ((hi - lo) / step).round() as usize;
        let ticks = (0..=count).map(|i| lo + step * i as f64).collect();
        Axis {
            scale: Scale::Linear,
            lo,
            hi,
            ticks,
        }
    }

    fn for_x(scale: Scale, xs: &[f64]) -> Axis {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(0.0, f64::max);
        match scale {
            Scale::Linear => Axis::linear(0.0_f64.min(min), max),
            Scale::Log10 => {
                let min = if min.is_finite() && min > 0.0 {
                    min
                } else {
                    1.0
                };
                let max = max.max(min * 10.0);
                // Decades that hold the data, with a little room so end points are not on
                // the frame.
                let (lo, hi) = (min.log10() - 0.15, max.log10() + 0.15);
                let mut ticks = Vec::new();
                for decade in lo.floor() as i32..=hi.ceil() as i32 {
                    for mantissa in [1.0, 2.0, 5.0] {
                        let tick = mantissa * 10f64.powi(decade);
                        if (lo..=hi).contains(&tick.log10()) {
                            ticks.push(tick);
                        }
                    }
                }
                Axis {
                    scale,
                    lo,
                    hi,
                    ticks,
                }
            }
        }
    }

    /// Pixel coordinate of `value` between the pixel ends `from` (domain low) and `to`.
    fn to_px(&self, value: f64, from: f64, to: f64) -> f64 {
        let v = match self.scale {
            Scale::Linear => value,
            Scale::Log10 => value.max(f64::MIN_POSITIVE).log10(),
        };
        from + (v - self.lo) / (self.hi - self.lo) * (to - from)
    }
}

/// The round step (1, 2, 2.5 or 5 times a power of ten) nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw > 0.0 && raw.is_finite() {
        raw
    } else {
        1.0
    };
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|m| m * magnitude >= raw * 0.999)
        .unwrap_or(10.0);
    step * magnitude
}

/// A tick or value label: 1,000 and up with a k or M suffix, small values with few digits.
fn number(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 10.0 || a == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Checks a chart's structure (drivers call this in their `cargo test` smoke runs): one legend
/// entry and one marker per point, and no text that would break the XML.
pub fn check_chart(chart: &LineChart) -> Result<(), String> {
    let svg = chart.to_svg();
    let points: usize = chart.series.iter().map(|s| s.points.len()).sum();
    let markers = svg.matches("<circle").count();
    if markers != points + chart.series.len() {
        return Err(format!(
            "{markers} circles, want {points} markers + {} legend dots",
            chart.series.len()
        ));
    }
    if !svg.starts_with("<svg") || !svg.trim_end().ends_with("</svg>") {
        return Err("not one <svg> element".into());
    }
    let text_only = ["&amp;", "&lt;", "&gt;", "&quot;"]
        .iter()
        .fold(svg.clone(), |text, entity| text.replace(entity, ""));
    if text_only.contains('&') {
        return Err("unescaped & in the chart".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(scale: Scale, names: [&str; 2]) -> LineChart {
        LineChart {
            title: "req/s & more".into(),
            note: "a <note>".into(),
            x_label: "connections".into(),
            y_label: "requests/s".into(),
            x_scale: scale,
            series: names
                .iter()
                .map(|name| Series {
                    name: name.to_string(),
                    points: vec![(10.0, 1.0), (100.0, 2.5), (1000.0, 3.0)],
                })
                .collect(),
        }
    }

    #[test]
    fn charts_pass_their_own_check_and_escape_text() {
        for scale in [Scale::Linear, Scale::Log10] {
            let c = chart(scale, ["miohttpd", "nginx <1> & go"]);
            assert_eq!(check_chart(&c), Ok(()));
            let svg = c.to_svg();
            assert!(svg.contains("nginx &lt;1&gt; &amp; go"));
            assert!(svg.contains("req/s &amp; more"));
        }
    }

    #[test]
    fn the_same_data_gives_the_same_text() {
        let c = chart(Scale::Log10, ["a", "b"]);
        assert_eq!(c.to_svg(), c.to_svg());
    }

    #[test]
    fn steps_and_labels_are_round() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(2.2), 2.5);
        assert_eq!(nice_step(40.0), 50.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(number(0.0), "0");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(1500.0), "1.5k");
        assert_eq!(number(2_000_000.0), "2M");
    }

    #[test]
    fn log_ticks_cover_the_decades_of_the_data() {
        let axis = Axis::for_x(Scale::Log10, &[10.0, 100.0, 1000.0]);
        for tick in [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0] {
            assert!(axis.ticks.contains(&tick), "{tick} in {:?}", axis.ticks);
        }
        assert!(axis.to_px(10.0, 0.0, 100.0) < axis.to_px(1000.0, 0.0, 100.0));
    }
}
