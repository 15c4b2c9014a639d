//! `p2pctl network graph`: the live topology as Graphviz DOT (nodes from
//! the bootstrap, edges from each node's active peers, colour by tip), and
//! as SVG drawn in-process by `layout-rs` (pure Rust), or PNG through
//! Graphviz's `dot` when it is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// What one node said (None: unreachable).
#[derive(Debug, Clone)]
pub struct Seen {
    pub address: String,
    pub status: Option<NodeView>,
}

#[derive(Debug, Clone)]
pub struct NodeView {
    pub node_id: String,
    pub height: u64,
    pub tip: Vec<u8>,
    pub work: p2p_proto::work::Work,
    /// Addresses of its active peers.
    pub active_peers: Vec<String>,
}

const BEST: &str = "#7fc97f";
const OTHER_TIP: &str = "#fdc086";
const DOWN: &str = "#cccccc";

/// The topology as DOT: one vertex per registered node, labelled with its
/// address, height and tip; green on the tip with the most work, orange on
/// another tip, grey when unreachable; one undirected edge per pair of
/// nodes that either side lists as an active peer.
pub fn to_dot(nodes: &[Seen]) -> String {
    let best = nodes.iter().filter_map(|n| n.status.as_ref()).max_by(|a, b| a.work.cmp(&b.work)).map(|s| s.tip.clone());
    let mut out = String::from(
        "graph network {\n  graph [overlap=false, splines=true];\n  node [shape=box, style=filled, fontname=\"sans-serif\"];\n",
    );
    let known: BTreeSet<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
    for n in nodes {
        let (label, colour) = match &n.status {
            Some(s) => {
                let tip = hex::encode(&s.tip[..s.tip.len().min(4)]);
                let colour = if Some(&s.tip) == best.as_ref() { BEST } else { OTHER_TIP };
                let id: String = s.node_id.chars().take(8).collect();
                (format!("{}\\n{id} h={} {tip}", n.address, s.height), colour)
            }
            None => (format!("{}\\nunreachable", n.address), DOWN),
        };
        let _ = writeln!(out, "  \"{}\" [label=\"{}\", fillcolor=\"{}\"];", esc(&n.address), esc_label(&label), colour);
    }
    let mut edges: BTreeMap<(String, String), ()> = BTreeMap::new();
    for n in nodes {
        let Some(s) = &n.status else { continue };
        for p in &s.active_peers {
            if p == &n.address || !known.contains(p.as_str()) {
                continue;
            }
            let key = if n.address < *p { (n.address.clone(), p.clone()) } else { (p.clone(), n.address.clone()) };
            edges.insert(key, ());
        }
    }
    for (a, b) in edges.keys() {
        let _ = writeln!(out, "  \"{}\" -- \"{}\";", esc(a), esc(b));
    }
    out.push_str("}\n");
    out
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Escapes quotes but keeps the `\n` line breaks DOT labels use.
fn esc_label(s: &str) -> String {
    s.replace('"', "\\\"")
}

/// DOT drawn as SVG by layout-rs.
pub fn dot_to_svg(dot: &str) -> anyhow::Result<String> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};
    let mut parser = DotParser::new(dot);
    let graph = parser.process().map_err(|e| anyhow::anyhow!("cannot parse the DOT graph: {e}"))?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut svg = SVGWriter::new();
    visual.do_it(false, false, false, &mut svg);
    Ok(svg.finalize())
}

/// DOT drawn as PNG by Graphviz's `dot`, if installed.
pub fn dot_to_png(dot: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = std::process::Command::new("dot")
        .arg("-Tpng")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "PNG needs Graphviz's `dot` ({e}); install graphviz, or use --format svg (drawn in-process)"
            )
        })?;
    child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin for dot"))?.write_all(dot.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "dot failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(tip: u8, work: u64, peers: &[&str]) -> Option<NodeView> {
        Some(NodeView {
            node_id: format!("n{tip}"),
            height: work,
            tip: vec![tip; 32],
            work: p2p_proto::work::Work::from(work),
            active_peers: peers.iter().map(|p| p.to_string()).collect(),
        })
    }

    #[test]
    fn one_edge_per_linked_pair_coloured_by_tip() {
        let nodes = vec![
            Seen { address: "a:1".into(), status: view(1, 5, &["b:1", "c:1", "x:9"]) },
            Seen { address: "b:1".into(), status: view(1, 5, &["a:1"]) },
            Seen { address: "c:1".into(), status: view(2, 4, &["a:1"]) },
            Seen { address: "d:1".into(), status: None },
        ];
        let dot = to_dot(&nodes);
        assert_eq!(dot.matches(" -- ").count(), 2, "a-b listed twice is one edge; x:9 is not registered:\n{dot}");
        assert!(dot.contains("\"a:1\" -- \"b:1\"") && dot.contains("\"a:1\" -- \"c:1\""));
        assert_eq!(dot.matches(BEST).count(), 2);
        assert_eq!(dot.matches(OTHER_TIP).count(), 1);
        assert!(dot.contains("d:1\\nunreachable"));
        let svg = dot_to_svg(&dot).expect("layout-rs draws it");
        assert!(svg.contains("<svg") && svg.contains("a:1"), "{svg}");
    }
}
