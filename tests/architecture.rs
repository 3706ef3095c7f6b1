//! The house's rules, read from the source itself: every import points
//! down (no circle between modules), only `src/libvirt/` names the `virt`
//! crate, `hypervisor/` knows nothing of `libvirt/`, no action imports
//! another, only `actions/mod.rs` builds backends, and only the loader
//! opens a libvirt connection.
//!
//! A module is a file (`src/a/b.rs` is `a::b`, `src/a/mod.rs` is `a`). An
//! import is a `crate::`, `super::` or `self::` path, or, in a folder's
//! `mod.rs`, a path into one of its own submodules. A `mod.rs` that only
//! hands a submodule's names on (`pub use child::Name;`) shows the folder's
//! face and is not an import: the folder stands above what it declares.
//! Unit tests (`#[cfg(test)] mod tests`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/` with its module path.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let name = if parts.is_empty() {
                "crate".to_owned()
            } else {
                parts.join("::")
            };
            (name, f)
        })
        .filter(|(name, _)| name != "crate")
        .collect()
}

/// The source without comments and without the contents of string and
/// char literals (which may hold `::` or braces that are not code).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push('"');
            }
            // A char literal ('a', '\n', '{'), not a lifetime ('a).
            '\'' => {
                let rest: String = chars.clone().take(4).collect();
                let len = if rest.starts_with('\\') {
                    rest.find('\'').map(|i| i + 1)
                } else if rest.chars().nth(1) == Some('\'') {
                    Some(rest.chars().next().unwrap().len_utf8() + 1)
                } else {
                    None
                };
                match len {
                    Some(n) => {
                        let mut taken = 0;
                        while taken < n {
                            taken += chars.next().unwrap().len_utf8();
                        }
                        out.push_str("' '");
                    }
                    None => out.push('\''),
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A file without its unit tests (`#[cfg(test)] mod tests`, last in every
/// file): what they import is not part of the structure.
fn production(text: &str) -> String {
    text.split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn ident_end(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// The module paths a piece of code reaches into, as written: each path
/// after `crate::`, `super::` or `self::`, braces in `use` expanded one
/// level (`use crate::a::{b::C, d}` reaches `a::b::C` and `a::d`).
fn paths(code: &str, roots: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for root in roots {
        let pat = format!("{root}::");
        let mut at = 0;
        while let Some(i) = code[at..].find(&pat) {
            let start = at + i;
            at = start + pat.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut segs = Vec::new();
            let mut rest = &code[at..];
            loop {
                let n = ident_end(rest);
                if n == 0 {
                    break;
                }
                segs.push(rest[..n].to_owned());
                rest = &rest[n..];
                if let Some(r) = rest.strip_prefix("::") {
                    rest = r;
                } else {
                    break;
                }
            }
            if rest.starts_with('{') {
                let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for entry in inner.split(',') {
                    let entry = entry.trim();
                    let mut more = segs.clone();
                    more.extend(
                        entry
                            .split("::")
                            .map(|s| s[..ident_end(s)].to_owned())
                            .filter(|s| !s.is_empty() && s != "self"),
                    );
                    found.push((root.to_string(), more));
                }
            }
            found.push((root.to_string(), segs));
        }
    }
    found
}

/// `module`'s parent module ("crate" for a top-level one).
fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or("crate".to_owned(), |(p, _)| p.to_owned())
}

/// Which module each file imports, resolved to the longest known module.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let resolve = |base: &str, segs: &[String]| -> Option<String> {
        (1..=segs.len()).rev().find_map(|n| {
            let m = if base == "crate" {
                segs[..n].join("::")
            } else {
                format!("{base}::{}", segs[..n].join("::"))
            };
            mods.contains_key(&m).then_some(m)
        })
    };
    let mut g = BTreeMap::new();
    for (m, file) in &mods {
        let text = production(&std::fs::read_to_string(file).unwrap());
        let is_folder = file.file_name().is_some_and(|f| f == "mod.rs");
        let own = if is_folder { m.clone() } else { parent(m) };
        let mut code = code(&text);
        // A folder's face: `pub use child::Name;` hands names on.
        if is_folder {
            code = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("pub use "))
                .collect::<Vec<_>>()
                .join("\n");
        }
        let mut to = BTreeSet::new();
        for (root, segs) in paths(&code, &["crate", "super", "self"]) {
            let base = match root.as_str() {
                "crate" => "crate".to_owned(),
                "super" => parent(&own),
                _ => own.clone(),
            };
            // `super::` in a file names its folder's mod.rs or a sibling.
            let base = if root == "super" && !is_folder {
                own.clone()
            } else {
                base
            };
            if let Some(t) = resolve(&base, &segs) {
                to.insert(t);
            } else if root == "super" {
                to.insert(base);
            }
        }
        // A folder's mod.rs may name its own submodules without a prefix.
        if is_folder {
            for line in code.lines() {
                let l = line.trim_start();
                if let Some(rest) = l.strip_prefix("use ") {
                    let seg = rest[..ident_end(rest)].to_owned();
                    if let Some(t) = resolve(m, &[seg]) {
                        to.insert(t);
                    }
                }
            }
        }
        to.remove(m);
        to.remove("crate");
        g.insert(m.clone(), to);
    }
    g
}

/// The modules that import each other in a loop, as `a -> b -> a` lines.
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in g.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in g.get(&at).into_iter().flatten() {
                if next == start {
                    let mut ring = path.clone();
                    // One spelling per circle: from its smallest module.
                    let min = ring.iter().enumerate().min_by_key(|(_, m)| *m).unwrap().0;
                    ring.rotate_left(min);
                    let first = ring[0].clone();
                    ring.push(first);
                    found.insert(ring.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn every_import_points_down() {
    let g = graph();
    assert!(g.len() > 20, "the source was read: {g:?}");
    assert!(
        g["actions::start"].contains("hypervisor::wait"),
        "imports are seen: {:?}",
        g["actions::start"]
    );
    let c = circles(&g);
    assert!(c.is_empty(), "import circles:\n{}", c.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circles(&g), ["a -> b -> c -> a"]);
    let p = paths(
        &code("use crate::x::{y::Z, w}; // crate::no\nlet s = \"crate::no\";"),
        &["crate"],
    );
    let flat: Vec<String> = p.into_iter().map(|(_, s)| s.join("::")).collect();
    assert_eq!(flat, ["x::y::Z", "x::w", "x"]);
}

#[test]
fn the_layers_keep_to_themselves() {
    let g = graph();
    let mods = modules();
    for (m, to) in &g {
        if m.starts_with("hypervisor") {
            assert!(
                to.iter().all(|t| !t.starts_with("libvirt")),
                "{m} imports the libvirt backend: {to:?}"
            );
        }
        if m.starts_with("actions::") {
            let others: Vec<_> = to.iter().filter(|t| t.starts_with("actions")).collect();
            assert!(others.is_empty(), "action {m} imports {others:?}");
        }
    }
    for (m, file) in &mods {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let names_virt = text.match_indices("virt::").any(|(i, _)| {
            !text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        });
        assert!(
            !names_virt || m.starts_with("libvirt"),
            "{m} names the virt crate"
        );
        // libvirt.so.0 is bound at first use: a connection, the only way
        // into `virt`, is opened through the loader's proof alone.
        assert!(
            !text.contains("Connect::open(") || m == "libvirt::load",
            "{m} opens a libvirt connection without the loader"
        );
        let builds = ["Libvirt::new(", "Rpc::for_uri(", "SystemNet"]
            .into_iter()
            .filter(|b| text.contains(b))
            .collect::<Vec<_>>();
        // Outside unit tests, only run() builds backends.
        let test_free = production(&text);
        let built = builds
            .iter()
            .filter(|b| test_free.contains(**b))
            .collect::<Vec<_>>();
        assert!(
            built.is_empty()
                || m == "actions"
                || m.starts_with("libvirt")
                || m == "migration::network",
            "{m} builds a backend: {built:?}"
        );
    }
}
