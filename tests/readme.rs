//! The README's tour of the DSL and the DSL reference on `network!` (what an editor shows on
//! hover) name every layer kind of the calculus's registry, so a kind added to the registry
//! without documentation fails here.

use scalenet::calculus::registry::REGISTRY;

#[test]
fn readme_documents_every_layer_kind() {
    documents_every_layer_kind("README.md");
}

#[test]
fn the_dsl_reference_documents_every_layer_kind() {
    documents_every_layer_kind("scalenet-macros/src/dsl.md");
}

fn documents_every_layer_kind(file: &str) {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).expect(file);
    for def in REGISTRY {
        let documented = if def.is_kept() {
            // A row of the layers table (or the residual-block section for blocks).
            readme.contains(&format!("| `{}", def.keyword)) || readme.contains(&format!("{}(", def.keyword))
        } else {
            readme.contains(&format!("`{}`", def.keyword))
        };
        assert!(documented, "{file} does not document `{}`", def.keyword);
    }
}
