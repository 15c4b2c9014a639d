//! Output for people (aligned tables) and for scripts (`--json`).

use std::fmt::Write as _;

/// A plain text table with left-aligned columns.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let parts: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            let _ = writeln!(out, "{}", parts.join("  ").trim_end());
        };
        line(&mut out, &mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(String::as_str));
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// "in 42s" / "3s ago" relative to now, for lease and last-seen times.
pub fn relative(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now = p2p_proto::unix_ms_now();
    let (secs, future) = if unix_ms >= now { ((unix_ms - now) / 1000, true) } else { ((now - unix_ms) / 1000, false) };
    let amount = match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    };
    if future { format!("in {amount}") } else { format!("{amount} ago") }
}

pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide-cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide-cell  x\n");
    }
}
