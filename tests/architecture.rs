//! The dependency direction of the library's modules, checked on the source itself.
//!
//! Every file of `src/` is parsed (with `syn`) and every path that starts with `crate::` — in
//! `use` items and in expressions, types and patterns alike — is an arrow from the file's
//! top-level module to the module it names. [`ALLOWED`] is the one place the allowed arrows are
//! written: anything else fails the test with the file and the path. Doc-comment links are not
//! code and do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The leaves: small utilities every layer may use. They may use each other.
const LEAVES: &[&str] = &["diagnostic", "error", "mapped", "pages", "suggest", "paint", "time", "timing", "process"];

/// Each top-level module and the modules it may use besides itself and the leaves, top to
/// bottom: the command line drives the operations, the operations use the planner and the
/// providers, which read the configuration and the recorded state, which are made of specs.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cli", &["env", "apply", "plan", "provider", "repo", "graph", "state", "spec"]),
    ("env", &["repo", "graph", "state", "spec"]),
    ("apply", &["plan", "provider", "repo", "graph", "state", "spec"]),
    ("plan", &["repo", "graph", "state", "spec"]),
    ("provider", &["repo", "state", "spec"]),
    ("repo", &["state", "graph", "spec"]),
    ("graph", &["spec"]),
    ("state", &["spec"]),
    ("spec", &[]),
];

/// The top-level module a file of `src/` belongs to (`src/apply/executor/mod.rs` → `apply`,
/// `src/time.rs` → `time`, `src/main.rs` → `cli`: the binary only runs the command line).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" => None,
        "main.rs" => Some("cli".to_string()),
        file => Some(file.trim_end_matches(".rs").to_string()),
    }
}

fn may_use(from: &str, to: &str) -> bool {
    if from == to || LEAVES.contains(&to) {
        return true;
    }
    if LEAVES.contains(&from) {
        return false;
    }
    ALLOWED.iter().any(|(module, uses)| *module == from && uses.contains(&to))
}

/// Collects the first segment after `crate::` of every path in a file.
#[derive(Default)]
struct Arrows {
    /// Target module → the first path that named it (for the message).
    targets: BTreeMap<String, String>,
}

/// Items the crate root re-exports (`pub use` in `src/lib.rs`) and the module they come from.
const ROOT_ITEMS: &[(&str, &str)] = &[("Error", "error"), ("Result", "error")];

impl Arrows {
    fn note(&mut self, target: String, shown: String) {
        let target =
            ROOT_ITEMS.iter().find(|(item, _)| *item == target).map_or(target, |(_, module)| module.to_string());
        self.targets.entry(target).or_insert(shown);
    }
}

impl<'ast> Visit<'ast> for Arrows {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next())
            && first.ident == "crate"
        {
            let shown = path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::");
            self.note(second.ident.to_string(), shown);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if let syn::UseTree::Path(path) = &item.tree
            && path.ident == "crate"
        {
            for (target, shown) in use_targets(&path.tree) {
                self.note(target, format!("crate::{shown}"));
            }
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Macro bodies are tokens, not paths: look for `crate :: name` in them.
        let tokens: Vec<proc_macro2::TokenTree> = mac.tokens.clone().into_iter().collect();
        scan_tokens(&tokens, self);
        syn::visit::visit_macro(self, mac);
    }
}

fn scan_tokens(tokens: &[proc_macro2::TokenTree], arrows: &mut Arrows) {
    use proc_macro2::TokenTree;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Ident(ident) if ident == "crate" => {
                if let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)), Some(TokenTree::Ident(name))) =
                    (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3))
                    && a.as_char() == ':'
                    && b.as_char() == ':'
                {
                    arrows.note(name.to_string(), format!("crate::{name} (in a macro)"));
                }
            }
            TokenTree::Group(group) => {
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                scan_tokens(&inner, arrows);
            }
            _ => {}
        }
    }
}

/// The first segments a `use crate::…` tree reaches, each with the tree below it written out:
/// `{a::X, b::{Y, Z}}` → (a, `a::X`), (b, `b::{Y, Z}`).
fn use_targets(tree: &syn::UseTree) -> Vec<(String, String)> {
    match tree {
        syn::UseTree::Group(group) => group.items.iter().flat_map(use_targets).collect(),
        syn::UseTree::Path(path) => vec![(path.ident.to_string(), written(tree))],
        syn::UseTree::Name(name) => vec![(name.ident.to_string(), written(tree))],
        syn::UseTree::Rename(rename) => vec![(rename.ident.to_string(), written(tree))],
        syn::UseTree::Glob(_) => vec![("*".to_string(), written(tree))],
    }
}

/// A use tree as it is written in the source.
fn written(tree: &syn::UseTree) -> String {
    match tree {
        syn::UseTree::Path(path) => format!("{}::{}", path.ident, written(&path.tree)),
        syn::UseTree::Name(name) => name.ident.to_string(),
        syn::UseTree::Rename(rename) => format!("{} as {}", rename.ident, rename.rename),
        syn::UseTree::Glob(_) => "*".to_string(),
        syn::UseTree::Group(group) => {
            format!("{{{}}}", group.items.iter().map(written).collect::<Vec<_>>().join(", "))
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every arrow of `src/`: (file, from, to, the path that makes it).
fn arrows() -> Vec<(String, String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src").to_path_buf();
        let Some(from) = module_of(&relative) else { continue };
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
        let mut visitor = Arrows::default();
        visitor.visit_file(&parsed);
        for (to, shown) in visitor.targets {
            found.push((format!("src/{}", relative.display()), from.clone(), to, shown));
        }
    }
    found
}

#[test]
fn no_module_uses_a_module_above_it() {
    let wrong: Vec<String> = arrows()
        .into_iter()
        .filter(|(_, from, to, _)| !may_use(from, to))
        .map(|(file, from, to, shown)| format!("{file}: {from} -> {to} ({shown})"))
        .collect();
    assert!(
        wrong.is_empty(),
        "arrows that point up or sideways (the allowed ones are in tests/architecture.rs):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_is_placed_in_a_layer() {
    let placed: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).chain(LEAVES.iter().copied()).collect();
    let unplaced: BTreeSet<String> =
        arrows().into_iter().map(|(_, from, _, _)| from).filter(|m| !placed.contains(m.as_str())).collect();
    assert!(unplaced.is_empty(), "modules with no place in tests/architecture.rs: {unplaced:?}");
}

#[test]
fn the_check_sees_arrows_in_use_trees_paths_and_macros() {
    let file: syn::File = syn::parse_str(
        "use crate::{state::{State, lock}, spec::Memory};
         fn f() { let _ = crate::plan::plan(); println!(\"{}\", crate::paint::x()); }",
    )
    .expect("parses");
    let mut visitor = Arrows::default();
    visitor.visit_file(&file);
    let targets: Vec<&str> = visitor.targets.keys().map(String::as_str).collect();
    assert_eq!(targets, ["paint", "plan", "spec", "state"]);
    assert!(!may_use("state", "provider"));
    assert!(!may_use("spec", "repo"));
    assert!(may_use("apply", "provider"));
    assert!(may_use("spec", "diagnostic"));
    assert!(!may_use("diagnostic", "spec"));
}
