//! The README's tour of the DSL names every layer kind of the calculus's registry, so a kind added
//! to the registry without documentation fails here.

use scalenet::calculus::registry::REGISTRY;

#[test]
fn readme_documents_every_layer_kind() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    for def in REGISTRY {
        let documented = if def.is_kept() {
            // A row of the layers table (or the residual-block section for blocks).
            readme.contains(&format!("| `{}", def.keyword)) || readme.contains(&format!("{}(", def.keyword))
        } else {
            readme.contains(&format!("`{}`", def.keyword))
        };
        assert!(documented, "README.md does not document `{}`", def.keyword);
    }
}
