//! Arrival curves as SVG (fraction of nodes holding a block vs time since
//! it was first relayable), drawn by hand: a few polylines need no crate.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const M: f64 = 56.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One curve: a label and arrival times in milliseconds, one per
/// (node, block) that arrived, out of `total` that should have.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub arrivals_ms: Vec<f64>,
    pub total: usize,
}

/// An SVG drawing of `curves` under `title`.
pub fn arrival_svg(title: &str, curves: &[Curve]) -> String {
    let max_t = curves.iter().flat_map(|c| c.arrivals_ms.iter().copied()).fold(1.0f64, f64::max) * 1.05;
    let x = |t: f64| M + (t / max_t) * (W - 2.0 * M);
    let y = |f: f64| H - M - f * (H - 2.0 * M);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(s, r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#, W / 2.0, escape(title));
    // Axes, ticks and grid.
    let _ = write!(s, r#"<line x1="{M}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, H - M, W - M, H - M);
    let _ = write!(s, r#"<line x1="{M}" y1="{M}" x2="{M}" y2="{}" stroke="black"/>"#, H - M);
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let _ = write!(s, r##"<line x1="{M}" y1="{0}" x2="{1}" y2="{0}" stroke="#ddd"/>"##, y(f), W - M);
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="end">{:.0}%</text>"#, M - 6.0, y(f) + 4.0, f * 100.0);
        let t = max_t * f;
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, x(t), H - M + 16.0, fmt_ms(t));
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time since the block was relayable</text>"#,
        W / 2.0,
        H - 14.0
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">nodes holding it</text>"#,
        H / 2.0,
        H / 2.0
    );
    for (i, c) in curves.iter().enumerate() {
        let mut t = c.arrivals_ms.clone();
        t.sort_by(f64::total_cmp);
        let total = c.total.max(1) as f64;
        let mut points = format!("{:.1},{:.1}", x(0.0), y(0.0));
        for (k, v) in t.iter().enumerate() {
            let _ = write!(
                points,
                " {:.1},{:.1} {:.1},{:.1}",
                x(*v),
                y(k as f64 / total),
                x(*v),
                y((k + 1) as f64 / total)
            );
        }
        let colour = COLOURS[i % COLOURS.len()];
        let _ = write!(s, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>"#);
        // Legend bottom right: an arrival curve is at 100% there long before.
        let ly = H - M - 16.0 * (curves.len() - i) as f64;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/>"#,
            W - M - 250.0,
            W - M - 230.0
        );
        let _ = write!(s, r#"<text x="{}" y="{}">{}</text>"#, W - M - 224.0, ly + 4.0, escape(&c.label));
    }
    s.push_str("</svg>\n");
    s
}

/// Writes one arrival curve to `path` as SVG.
pub fn write_curve(path: &std::path::Path, title: &str, curve: Curve) -> anyhow::Result<()> {
    std::fs::write(path, arrival_svg(title, &[curve]))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn fmt_ms(t: f64) -> String {
    if t >= 1000.0 { format!("{:.2}s", t / 1000.0) } else { format!("{t:.0}ms") }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_step_per_arrival_and_a_legend_per_curve() {
        let c = Curve { label: "a<b".into(), arrivals_ms: vec![3.0, 1.0, 2.0], total: 4 };
        let svg = arrival_svg("t", &[c.clone(), Curve { label: "other".into(), ..c }]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b"), "labels are escaped");
        // 1 start point + 2 per arrival.
        let first = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(first.split(' ').count(), 7);
    }
}
