//! The layering rules of the source tree, checked from the code itself (architecture.md,
//! "Layers"): no top-level module of `src/` imports one that imports it back, and the
//! sans-IO protocol crates depend on neither `ponte` nor tokio.
//!
//! A module is a folder under `src/` (`src/broker/`) or a top-level file (`src/tls.rs`);
//! it uses another when one of its files names `crate::other` outside a comment. The crate
//! root (`lib.rs`, `main.rs`) wires everything and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Module → the modules it uses, each with one `file:line` that shows it.
fn module_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != from && modules.contains(&name) {
                    let at = format!("{}:{}", file.display(), n + 1);
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(name)
                        .or_insert(at);
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one (depth-first).
fn cycle_from(
    graph: &BTreeMap<String, BTreeMap<String, String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let here = path.last().cloned().unwrap_or_else(|| start.to_string());
    for next in graph.get(&here).into_iter().flat_map(|m| m.keys()) {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_string());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_from(graph, start, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_of_src_imports_one_that_imports_it_back() {
    let graph = module_graph();
    for start in graph.keys() {
        let mut path = vec![start.clone()];
        if let Some(cycle) = cycle_from(&graph, start, &mut path) {
            let shown: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!(
                "import loop between modules of src/:\n  {}",
                shown.join("\n  ")
            );
        }
    }
    // The layers the core depends on: the model and the store use nothing above them.
    for (low, above) in [
        (
            "model",
            &[
                "store", "durable", "broker", "backbone", "mqtt", "http", "coap",
            ][..],
        ),
        ("store", &["durable", "broker", "mqtt", "http", "coap"][..]),
        ("durable", &["broker", "mqtt", "http", "coap"][..]),
        // The counters sit below the core that counts into them; reading them all
        // (`stats`) sits above everything it reads.
        (
            "metrics",
            &[
                "broker", "mqtt", "http", "coap", "bridge", "webhook", "stats",
            ][..],
        ),
        // The core owns its seams (the backbone trait, the durable keeper) and knows no
        // front-end, configuration file or cluster implementation.
        (
            "broker",
            &[
                "backbone", "config", "limits", "tls", "mqtt", "http", "coap", "bridge", "webhook",
                "stats",
            ][..],
        ),
    ] {
        for up in above {
            assert!(
                !graph.get(low).is_some_and(|m| m.contains_key(*up)),
                "{low} must not use {up}: {}",
                graph[low][*up]
            );
        }
    }
}

#[test]
fn the_sans_io_protocol_crates_depend_on_neither_ponte_nor_tokio() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for krate in ["protocols/mqtt", "protocols/coap"] {
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml"))
            .expect("protocol crate manifest");
        let deps: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.split('=').next())
            .map(str::trim)
            .collect();
        for forbidden in ["ponte", "tokio"] {
            assert!(
                !deps.contains(&forbidden),
                "{krate} depends on {forbidden}: the sans-IO crates take bytes and time in, \
                 nothing else"
            );
        }
    }
}
