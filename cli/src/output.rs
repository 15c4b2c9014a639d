//! Output for people (aligned tables, by comfy-table) and for scripts (`--json`).

use comfy_table::{ColumnConstraint, presets};

/// A plain text table: left-aligned columns, no borders.
#[derive(Debug)]
pub struct Table {
    inner: comfy_table::Table,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        let mut inner = comfy_table::Table::new();
        inner.load_preset(presets::NOTHING).remove_style(comfy_table::TableComponent::VerticalLines);
        inner.set_header(headers.to_vec());
        for column in inner.column_iter_mut() {
            column.set_padding((0, 2));
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
        Table { inner }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.inner.add_row(cells);
    }

    pub fn render(&self) -> String {
        self.inner.lines().map(|l| format!("{}\n", l.trim())).collect()
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
