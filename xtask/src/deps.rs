//! `cargo xtask deps`: the runtime's module graph (which module of `runtime/src` imports which,
//! through `crate::` paths) and its import cycles, for the layering issue: layers must point
//! one way. Nodes are the top-level modules, and the modules of the `vm` layer each on their
//! own. Fails on any import cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// Module -> the modules it names through `crate::`.
type Graph = BTreeMap<String, BTreeSet<String>>;

pub fn run(_args: Vec<String>) -> Result<()> {
    let src = workspace_root().join("runtime/src");
    let graph = module_graph(&src)?;
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("{module:<14} -> {}", deps.join(" "));
    }
    let cycles = cycles(&graph);
    for cycle in &cycles {
        println!("cycle: {}", cycle.join(" "));
    }
    let layers = cycles_between_layers(&graph);
    if layers.is_empty() {
        for (depth, modules) in levels(&collapse(&graph)).iter().enumerate() {
            println!("level {depth}: {}", modules.join(" "));
        }
    }
    println!(
        "deps: {} modules, {} in import cycles; {} top-level modules in cycles",
        graph.len(),
        cycles.iter().map(Vec::len).sum::<usize>(),
        layers.iter().map(Vec::len).sum::<usize>()
    );
    if let Some(cycle) = layers.first() {
        bail!("top-level modules of runtime/src import each other in a cycle: {}", cycle.join(" "));
    }
    if let Some(cycle) = cycles.first() {
        bail!("modules of runtime/src import each other in a cycle: {}", cycle.join(" "));
    }
    Ok(())
}

/// The cycles of `graph` with every `vm::*` module taken as `vm`: the layers and the API's
/// modules must point one way.
fn cycles_between_layers(graph: &Graph) -> Vec<Vec<String>> {
    cycles(&collapse(graph))
}

/// `graph` with every `vm::*` module taken as `vm`.
fn collapse(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut collapsed = Graph::new();
    for (module, deps) in graph {
        let module = top(module);
        let entry = collapsed.entry(module.clone()).or_default();
        entry.extend(deps.iter().map(|d| top(d)).filter(|d| *d != module));
    }
    collapsed
}

/// The modules of an acyclic `graph` by level: level 0 imports nothing, level n imports
/// modules of lower levels only, at least one of level n - 1.
fn levels(graph: &Graph) -> Vec<Vec<String>> {
    fn level<'g>(graph: &'g Graph, module: &'g str, memo: &mut BTreeMap<&'g str, usize>) -> usize {
        if let Some(&l) = memo.get(module) {
            return l;
        }
        let l = graph[module].iter().map(|d| level(graph, d, memo) + 1).max().unwrap_or(0);
        memo.insert(module, l);
        l
    }
    let mut memo = BTreeMap::new();
    let mut by_level: Vec<Vec<String>> = Vec::new();
    for module in graph.keys() {
        let l = level(graph, module, &mut memo);
        by_level.resize(by_level.len().max(l + 1), Vec::new());
        by_level[l].push(module.clone());
    }
    by_level
}

fn module_graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.with_context(|| format!("cannot read {}", src.display()))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src)?;
        let segments: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let module = match segments.as_slice() {
            [lib] if lib == "lib" => continue,
            // `vm/mod.rs` only declares the layer's modules.
            [vm, file] if vm == EXPANDED && file == "mod" => continue,
            [vm, inner, ..] if vm == EXPANDED => format!("{EXPANDED}::{inner}"),
            [first, ..] => first.clone(),
            [] => continue,
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(crate_references(&text).into_iter().filter(|d| *d != module));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    Ok(graph)
}

/// The layer whose modules are nodes of their own (`vm::store`, ...) rather than one node.
const EXPANDED: &str = "vm";

/// The module after every `crate::` in `text` (comments left out), including each item of a
/// `crate::{a::X, b}` group: its first path segment, or its first two below [`EXPANDED`].
fn crate_references(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        for path in use_paths(rest) {
            let mut segments = path.split("::").map(str::trim);
            let Some(first) = segments.next().filter(|s| is_module_name(s)) else { continue };
            match segments.next() {
                Some(second) if first == EXPANDED && is_module_name(second) => {
                    found.insert(format!("{first}::{second}"));
                }
                _ => {
                    found.insert(first.to_string());
                }
            }
        }
    }
    found
}

/// The paths a `use` tree starting at `text` names, each cut at its first character that is
/// not part of a path (groups expanded: `a::{b, c::D}` gives `a::b` and `a::c::D`).
fn use_paths(text: &str) -> Vec<String> {
    let mut prefix = String::new();
    for (i, c) in text.char_indices() {
        match c {
            '{' => {
                let group = &text[i + 1..];
                let mut items = Vec::new();
                let (mut depth, mut start) = (0, 0);
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            items.push(&group[start..j]);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(&group[start..j]);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                return items
                    .into_iter()
                    .flat_map(|item| use_paths(item.trim_start()))
                    .map(|path| format!("{prefix}{path}"))
                    .collect();
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => prefix.push(c),
            _ => break,
        }
    }
    vec![prefix]
}

fn is_module_name(segment: &str) -> bool {
    segment.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Search<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        components: Vec<Vec<String>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.components.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !search.index.contains_key(v.as_str()) {
            search.visit(v);
        }
    }
    search.components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_cycles_are_found() {
        let refs = crate_references(
            "use crate::{a::X, b, c::{d, E}};\n// crate::ignored\nlet x = crate::f::g();\nuse crate::vm::{store::S, gc};",
        );
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a", "b", "c", "f", "vm::gc", "vm::store"]);
        let graph: Graph = [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]
            .into_iter()
            .map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect();
        assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
        let layered: Graph = [("vm::a", &["vm::b"][..]), ("vm::b", &["vm::a", "c"]), ("c", &[])]
            .into_iter()
            .map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect();
        assert_eq!(cycles(&layered).len(), 1);
        assert!(cycles_between_layers(&layered).is_empty());
        assert_eq!(levels(&collapse(&layered)), vec![vec!["c".to_string()], vec!["vm".to_string()]]);
    }
}
