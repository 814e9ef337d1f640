//! The module graph of a library has no circles: part of `cargo xtask test`.
//!
//! A small reader of the crate's own sources (no compiler, so it costs
//! milliseconds): it follows the `mod` declarations from `lib.rs`, reads
//! every `crate::`, `super::` and `self::` path (in `use` trees and in
//! code) and each path that starts at a child module, and resolves it to
//! the deepest module it names. A module that uses something of a module
//! containing it (`use super::Shared`) is how Rust's modules share their
//! parent's types, not a circle, so those edges are left out; test modules
//! are left out too. Every other edge counts, and a set of modules that
//! reach each other is reported with the paths that make each edge.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, Result, bail};

/// The libraries whose module graphs must stay acyclic.
pub(crate) const CRATES: &[&str] = &[
    "scanner-agent/src/lib.rs",
    "scanner-common/src/lib.rs",
    "xtask/src/main.rs",
];

/// Fails, naming every circle, when a crate's modules import each other in a circle.
pub(crate) fn check(root: &Path) -> Result<()> {
    let mut report = String::new();
    for lib in CRATES {
        let graph = Graph::read(&root.join(lib))?;
        for cycle in graph.cycles() {
            report.push_str(&format!("{lib}: modules in a circle:\n"));
            for (from, to, why) in &cycle {
                report.push_str(&format!("  {from} -> {to} ({why})\n"));
            }
        }
    }
    if !report.is_empty() {
        bail!("{report}");
    }
    Ok(())
}

/// Modules by path (`crate`, `crate::config`, ...) and what each one uses.
#[derive(Default)]
pub(crate) struct Graph {
    /// Module path -> its children's names.
    children: BTreeMap<String, BTreeSet<String>>,
    /// (from, to) -> one path that makes the edge.
    edges: BTreeMap<(String, String), String>,
}

/// One module's own text (without its inline child modules) and where it is.
struct Module {
    path: String,
    text: String,
}

impl Graph {
    pub(crate) fn read(lib: &Path) -> Result<Self> {
        let mut graph = Self::default();
        let mut modules = Vec::new();
        graph.read_file(lib, "crate", true, &mut modules)?;
        for m in &modules {
            graph.add_uses(m);
        }
        Ok(graph)
    }

    /// From source text given per file, for tests: `files` maps a path
    /// relative to `src/` to its text.
    #[cfg(test)]
    fn from_texts(files: &[(&str, &str)]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xtask-cycles-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (name, text) in files {
            let p = dir.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        let g = Self::read(&dir.join("lib.rs")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        g
    }

    fn read_file(
        &mut self,
        file: &Path,
        module: &str,
        owns_dir: bool,
        out: &mut Vec<Module>,
    ) -> Result<()> {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        // `foo/mod.rs` and `lib.rs` keep their children beside them, `foo.rs` in `foo/`.
        let dir = if owns_dir {
            file.parent().expect("a file has a directory").to_path_buf()
        } else {
            file.with_extension("")
        };
        self.read_text(&strip(&text), module, &dir, out)
    }

    fn read_text(
        &mut self,
        text: &str,
        module: &str,
        dir: &Path,
        out: &mut Vec<Module>,
    ) -> Result<()> {
        self.children.entry(module.to_owned()).or_default();
        let mut own = String::new();
        let mut rest = text;
        while let Some((before, decl, after)) = next_mod(rest) {
            own.push_str(before);
            let child = format!("{module}::{}", decl.name);
            let test = decl.test;
            rest = match decl.body {
                Some(body_len) => {
                    if !test {
                        self.add_child(module, &decl.name);
                        self.read_text(&after[..body_len], &child, &dir.join(&decl.name), out)?;
                    }
                    &after[body_len + 1..]
                }
                None => {
                    if !test {
                        self.add_child(module, &decl.name);
                        let flat = dir.join(format!("{}.rs", decl.name));
                        let (file, owns) = if flat.exists() {
                            (flat, false)
                        } else {
                            (dir.join(&decl.name).join("mod.rs"), true)
                        };
                        self.read_file(&file, &child, owns, out)?;
                    }
                    after
                }
            };
        }
        own.push_str(rest);
        out.push(Module {
            path: module.to_owned(),
            text: own,
        });
        Ok(())
    }

    fn add_child(&mut self, parent: &str, name: &str) {
        self.children
            .entry(parent.to_owned())
            .or_default()
            .insert(name.to_owned());
    }

    fn add_uses(&mut self, m: &Module) {
        for path in paths(&m.text) {
            let Some(to) = self.resolve(&m.path, &path) else {
                continue;
            };
            let inside = m.path == to || m.path.starts_with(&format!("{to}::"));
            if !inside {
                self.edges.entry((m.path.clone(), to)).or_insert(path);
            }
        }
    }

    /// The deepest module `path` names, seen from `from`; `None` for paths
    /// that start elsewhere (another crate, a local name).
    fn resolve(&self, from: &str, path: &str) -> Option<String> {
        let mut segments = path.split("::");
        let first = segments.next()?;
        let mut at = match first {
            "crate" => "crate".to_owned(),
            "self" => from.to_owned(),
            "super" => parent(from)?.to_owned(),
            name if self.children.get(from)?.contains(name) => format!("{from}::{name}"),
            _ => return None,
        };
        for s in segments {
            if s == "super" {
                at = parent(&at)?.to_owned();
            } else if self.children.get(&at).is_some_and(|c| c.contains(s)) {
                at = format!("{at}::{s}");
            } else {
                break;
            }
        }
        Some(at)
    }

    /// Each set of modules that reach each other (Tarjan's strongly
    /// connected components), as the edges between its members.
    pub(crate) fn cycles(&self) -> Vec<Vec<(String, String, String)>> {
        let nodes: Vec<&String> = self.children.keys().collect();
        let index_of: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (from, to) in self.edges.keys() {
            if let (Some(&f), Some(&t)) = (index_of.get(from.as_str()), index_of.get(to.as_str())) {
                next[f].push(t);
            }
        }
        let components = tarjan(&next);
        components
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let members: BTreeSet<&str> = c.iter().map(|&i| nodes[i].as_str()).collect();
                self.edges
                    .iter()
                    .filter(|((f, t), _)| {
                        members.contains(f.as_str()) && members.contains(t.as_str())
                    })
                    .map(|((f, t), why)| (f.clone(), t.clone(), why.clone()))
                    .collect()
            })
            .collect()
    }
}

fn parent(module: &str) -> Option<&str> {
    module.rsplit_once("::").map(|(p, _)| p)
}

/// Strongly connected components of a graph given as adjacency lists.
fn tarjan(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.next[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let n = next.len();
    let mut s = State {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A `mod` declaration: its name, whether it is a test module, and for an
/// inline one the length of its body (up to its closing brace).
struct ModDecl {
    name: String,
    test: bool,
    body: Option<usize>,
}

/// The next `mod name;` or `mod name { .. }` item in `text`: the text
/// before it, the declaration, and the text after its `;` or `{`.
fn next_mod(text: &str) -> Option<(&str, ModDecl, &str)> {
    let mut search = 0;
    while let Some(found) = text[search..].find("mod ") {
        let at = search + found;
        search = at + 4;
        // A `mod` keyword starts a line's item, after an optional visibility.
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let lead = text[line_start..at].trim();
        let is_item = lead.is_empty() || lead == "pub" || lead.starts_with("pub(");
        if !is_item {
            continue;
        }
        let after_kw = &text[at + 4..];
        let name_len = after_kw
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after_kw.len());
        let name = &after_kw[..name_len];
        let tail = after_kw[name_len..].trim_start();
        let attrs_before = attributes_before(&text[..line_start]);
        let test = attrs_before.contains("cfg(test)");
        if let Some(after) = tail.strip_prefix(';') {
            let decl = ModDecl {
                name: name.to_owned(),
                test,
                body: None,
            };
            return Some((&text[..line_start], decl, after));
        }
        if let Some(after) = tail.strip_prefix('{') {
            let body = matching_brace(after)?;
            let decl = ModDecl {
                name: name.to_owned(),
                test,
                body: Some(body),
            };
            return Some((&text[..line_start], decl, after));
        }
    }
    None
}

/// The attribute lines directly above a line (`#[cfg(test)]`, ...).
fn attributes_before(text: &str) -> String {
    text.lines()
        .rev()
        .take_while(|l| l.trim_start().starts_with("#["))
        .collect()
}

/// Where the brace that closes an already opened `{` is.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text without comments, string and character literals (their
/// braces and paths are not code).
fn strip(text: &str) -> String {
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
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    if c == '\n' {
                        out.push('\n');
                    }
                    last = c;
                }
            }
            'r' if matches!(chars.peek(), Some('#' | '"')) && !ends_ident(&out) => {
                // A raw string: r"..." or r#"..."#.
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    out.extend(std::iter::repeat_n('#', hashes));
                    continue;
                }
                chars.next();
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut seen = String::new();
                for c in chars.by_ref() {
                    seen.push(c);
                    if seen.ends_with(&closing) {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            '\'' => {
                // A character literal ('{', '\'', '\u{7f}') or a lifetime ('a).
                let mut look = chars.clone();
                match (look.next(), look.next()) {
                    (Some('\\'), Some(_)) => {
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                        out.push_str("' '");
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                        out.push_str("' '");
                    }
                    _ => out.push('\''),
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn ends_ident(text: &str) -> bool {
    text.chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Every module path in code: the leaves of `use` trees (with their
/// prefixes joined), and paths in expressions and types.
fn paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    // `use` trees first, cut out of the text so their pieces are not read twice.
    let mut code = String::new();
    while let Some(at) = find_keyword(rest, "use") {
        code.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let Some(end) = after.find(';') else {
            rest = after;
            break;
        };
        use_tree(after[..end].trim(), "", &mut out);
        rest = &after[end + 1..];
    }
    code.push_str(rest);
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || code[i..].starts_with("::"))
            {
                i += if code[i..].starts_with("::") { 2 } else { 1 };
            }
            let path = code[start..i].trim_end_matches(':');
            let preceded_by_colons = code[..start].ends_with("::");
            if path.contains("::") && !preceded_by_colons {
                out.push(path.to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Where the keyword `word` next starts an item (not inside an identifier).
fn find_keyword(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(word) {
        let at = from + found;
        let before_ok = !ends_ident(&text[..at]);
        let after = text[at + word.len()..].chars().next();
        let after_ok = after.is_some_and(char::is_whitespace);
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The paths a `use` tree names: `a::{b, c::{self, d}}` gives `a::b`, `a::c`, `a::c::d`.
fn use_tree(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    let join = |p: &str| {
        if prefix.is_empty() {
            p.to_owned()
        } else if p.is_empty() || p == "self" {
            prefix.to_owned()
        } else {
            format!("{prefix}::{p}")
        }
    };
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_tree(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        use_tree(&inner[start..], &base, out);
    } else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        let path = path.trim_end_matches("::*");
        let path = path.strip_prefix("pub(crate) ").unwrap_or(path);
        out.push(join(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(g: &Graph) -> Vec<(String, String)> {
        g.edges.keys().cloned().collect()
    }

    #[test]
    fn use_trees_are_expanded() {
        let mut out = Vec::new();
        use_tree("crate::{a::{self, b as c}, d::*, e}", "", &mut out);
        assert_eq!(out, ["crate::a", "crate::a::b", "crate::d", "crate::e"]);
    }

    #[test]
    fn a_circle_between_siblings_is_found_and_parents_are_not_circles() {
        let g = Graph::from_texts(&[
            ("lib.rs", "pub mod a;\npub mod b;\nmod c;\n"),
            ("a/mod.rs", "mod x;\npub use self::x::X;\npub struct A;\n"),
            ("a/x.rs", "use super::A;\nuse crate::b::B;\npub struct X;\n"),
            (
                "b.rs",
                "// crate::c is only a comment\npub struct B(crate::a::X);\n#[cfg(test)]\nmod tests {\n    use crate::c::C;\n}\n",
            ),
            (
                "c.rs",
                "pub struct C; fn f() -> &'static str { \"crate::a\" }\n",
            ),
        ]);
        assert_eq!(
            edges(&g),
            [
                ("crate::a".into(), "crate::a::x".into()),
                ("crate::a::x".into(), "crate::b".into()),
                ("crate::b".into(), "crate::a".into()),
            ]
        );
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), 3);
    }

    #[test]
    fn inline_modules_and_super_paths_resolve() {
        let g = Graph::from_texts(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "mod inner {\n    use super::super::b::f;\n    const C: char = '{';\n}\n",
            ),
            ("b.rs", "pub fn f() { let _ = '}'; }\n"),
        ]);
        assert_eq!(edges(&g), [("crate::a::inner".into(), "crate::b".into())]);
        assert!(g.cycles().is_empty());
    }

    /// The workspace itself (also checked first thing by `cargo xtask test`).
    #[test]
    fn the_workspace_has_no_circles() {
        check(&crate::exec::workspace_root()).unwrap();
    }
}
