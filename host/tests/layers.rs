//! The host's modules form layers (written once, in the crate root's "Layout" table in
//! `host/src/lib.rs`): a module may use modules of its own layer and of the layers
//! before it, never one after. This test reads every file under `host/src` and fails on
//! an import that points upward, naming the file, the line and both layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module -> layer, from the Layout table (`//! | 3 | [`cluster`] | ... |`).
fn layout() -> BTreeMap<String, u32> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("host/src/lib.rs");
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(layer), Some(module)) = (cells.first(), cells.get(1)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue;
        };
        let module = module.trim_start_matches("[`").trim_end_matches("`]");
        assert!(
            layers.insert(module.to_owned(), layer).is_none(),
            "`{module}` is listed twice in the Layout"
        );
    }
    assert!(!layers.is_empty(), "no Layout table in host/src/lib.rs");
    layers
}

/// The modules lib.rs declares.
fn declared() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's module path under the crate root (`cluster/etcd.rs` -> [cluster, etcd]).
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn ident_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules a line of code names: `crate::x`, `crate::{x, y::z}` (over
/// several lines: `group` carries an open brace's depth), and `super::` chains that
/// climb to the crate root.
fn targets(line: &str, depth: usize, group: &mut Option<u32>) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    if let Some(level) = group {
        // Inside `use crate::{ ... }`: names at brace level 1 are top modules.
        let mut at_item_start = true;
        for (i, c) in line.char_indices() {
            match c {
                '{' => *level += 1,
                '}' => {
                    *level -= 1;
                    if *level == 0 {
                        *group = None;
                        rest = &line[i + 1..];
                        break;
                    }
                }
                ',' => at_item_start = true,
                c if c.is_whitespace() => {}
                _ => {
                    if at_item_start && *level == 1 {
                        let name = ident_at(&line[i..]);
                        if !name.is_empty() && name != "self" {
                            found.push(name);
                        }
                    }
                    at_item_start = false;
                }
            }
        }
        if group.is_some() {
            return found;
        }
    }
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if after.starts_with('{') {
            *group = Some(0);
            found.extend(targets(after, depth, group));
            return found;
        }
        found.push(ident_at(after));
        rest = after;
    }
    // `super::super::x` from a file `depth` modules deep reaches the root when the
    // chain is at least that long.
    let mut rest = line;
    while let Some(at) = rest.find("super::") {
        let mut after = &rest[at..];
        let mut climbs = 0;
        while let Some(next) = after.strip_prefix("super::") {
            climbs += 1;
            after = next;
        }
        if climbs >= depth && depth > 0 {
            if after.starts_with('{') {
                *group = Some(0);
                found.extend(targets(after, depth, group));
                return found;
            }
            found.push(ident_at(after));
        }
        rest = after;
    }
    found
}

#[test]
fn the_layout_lists_every_module_once() {
    let layers = layout();
    let declared = declared();
    for module in &declared {
        assert!(
            layers.contains_key(module),
            "module `{module}` is not in the Layout table of host/src/lib.rs: give it a layer"
        );
    }
    for module in layers.keys() {
        assert!(
            declared.contains(module),
            "the Layout lists `{module}`, which lib.rs does not declare"
        );
    }
}

#[test]
fn no_module_imports_from_a_layer_after_its_own() {
    let layers = layout();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        let path = module_path(file);
        let Some(top) = path.first() else { continue };
        if top == "main" || top == "lib" {
            continue; // the binary and the crate root sit above every layer
        }
        let own = *layers
            .get(top)
            .unwrap_or_else(|| panic!("{}: module `{top}` has no layer", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        let mut group = None;
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for target in targets(code, path.len(), &mut group) {
                let Some(&theirs) = layers.get(&target) else {
                    continue; // a macro or item of the crate root, not a module
                };
                if theirs > own {
                    upward.push(format!(
                        "{}:{}: `{top}` (layer {own}) uses `{target}` (layer {theirs})",
                        file.strip_prefix(src()).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point upward ({}):\n{}",
        upward.len(),
        upward.join("\n")
    );
}

#[test]
fn the_reader_sees_every_form_of_import() {
    let mut group = None;
    assert_eq!(
        targets("use crate::rooms::Rooms;", 2, &mut group),
        ["rooms"]
    );
    assert_eq!(
        targets(
            "let x = crate::rpc::fetch(a).await; crate::lock::x()",
            1,
            &mut group
        ),
        ["rpc", "lock"]
    );
    assert_eq!(targets("use crate::{", 1, &mut group), Vec::<String>::new());
    assert_eq!(
        targets(
            "    cluster::Cluster, rooms::{Rooms, RoomHandle},",
            1,
            &mut group
        ),
        ["cluster", "rooms"]
    );
    assert_eq!(targets("    gateway,", 1, &mut group), ["gateway"]);
    assert_eq!(targets("};", 1, &mut group), Vec::<String>::new());
    assert!(group.is_none());
    assert_eq!(
        targets("use super::Cluster;", 2, &mut group),
        Vec::<String>::new()
    );
    assert_eq!(targets("use super::rpc::x;", 1, &mut group), ["rpc"]);
    assert_eq!(
        targets("use super::super::server::Server;", 2, &mut group),
        ["server"]
    );
}
