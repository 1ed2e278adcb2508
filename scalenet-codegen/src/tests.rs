//! The pipeline in process: expansion snapshots of the README's networks (committed under
//! `docs/expansion/` so a reviewer sees what `network!` writes) and the stub of an invalid
//! declaration. `SCALENET_BLESS=1 cargo test -p scalenet-codegen` rewrites the snapshots.

use crate::expand_network;
use proc_macro2::TokenStream;
use std::path::PathBuf;

const LENET: &str = r#"
    /// Strided LeNet for 3x32x32 images (max-pooling replaced by average pooling).
    pub struct LeNet {
        input: [3, 32, 32],
        typical_kernel: 5,
        conv1: conv(6, kernel = 5, padding = 2),
        relu,
        avg_pool(2),
        conv2: conv(16, kernel = 5),
        relu,
        avg_pool(2),
        flatten,
        fc1: linear(120),
        relu,
        fc2: linear(84),
        relu,
        fc3: linear(10),
    }
"#;

const RESNET: &str = r#"
    /// A small pre-activation ResNet with a global-average-pool head.
    pub struct SmallResNet {
        input: [3, 16, 16],
        stem: conv(16, kernel = 3, padding = 1),
        res1: residual(beta = 0.5) {
            relu, conv(16, kernel = 3, padding = 1),
            relu, conv(16, kernel = 3, padding = 1),
        },
        res2: residual(beta = 0.5) {
            relu, conv(32, kernel = 2, stride = 2),
            relu, conv(32, kernel = 3, padding = 1),
        } shortcut {
            conv(32, kernel = 2, stride = 2),
        },
        relu,
        dropout(0.1),
        global_avg_pool,
        fc: linear(10),
    }
"#;

fn pretty(tokens: TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("the expansion parses as a file");
    prettyplease::unparse(&file)
}

fn expansion(source: &str) -> String {
    pretty(expand_network(source.parse().expect("valid tokens")))
}

fn check_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/expansion").join(format!("{name}.rs"));
    let header = format!(
        "// What `network!` writes for the `{name}` declaration of scalenet-codegen/src/tests.rs, as\n// prettyplease prints it. Regenerate: SCALENET_BLESS=1 cargo test -p scalenet-codegen\n\n"
    );
    let actual = format!("{header}{actual}");
    if std::env::var_os("SCALENET_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "the expansion of {name} changed; review it and run `SCALENET_BLESS=1 cargo test -p scalenet-codegen`\n{actual}"
    );
}

#[test]
fn lenet_expansion_matches_its_snapshot() {
    check_snapshot("lenet", &expansion(LENET));
}

#[test]
fn residual_expansion_matches_its_snapshot() {
    check_snapshot("resnet", &expansion(RESNET));
}

/// An invalid declaration gets the stub, with every item of a valid one, beside its error.
#[test]
fn invalid_declaration_expands_to_the_stub_and_its_error() {
    let valid = expansion(LENET);
    let invalid = expansion(&LENET.replace("avg_pool(2),\n        conv2", "max_pool(2),\n        conv2"));
    assert!(invalid.contains("compile_error!"), "{invalid}");
    assert!(invalid.contains("max pooling does not preserve the scaling factor"));
    let items = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|line| {
                line.starts_with("pub fn")
                    || line.starts_with("pub const")
                    || line.starts_with("fn ")
                    || line.starts_with("impl")
                    || (line.starts_with("pub ") && line.ends_with(','))
            })
            .map(|line| line.split(['(', ':', '=']).next().unwrap().trim().to_string())
            .collect()
    };
    assert_eq!(items(&invalid), items(&valid));
    assert!(items(&valid).iter().any(|item| item == "pub fc3"), "{:?}", items(&valid));
}

/// Every layer in the registry parses and lowers from its own example.
#[test]
fn every_registered_example_is_accepted_by_the_parser() {
    for def in scalenet_calculus::registry::REGISTRY {
        let source = format!("struct Probe {{ input: [4, 8, 8], {} }}", def.example);
        let tokens = expand_network(source.parse().unwrap()).to_string();
        assert!(!tokens.contains("unknown layer"), "{}: {tokens}", def.keyword);
    }
}
