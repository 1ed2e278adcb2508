//! The `network!` macro of [scalenet](https://docs.rs/scalenet). Use it through `scalenet`, which
//! re-exports it with the runtime it expands to. The pipeline lives in `scalenet-codegen`, a plain
//! library, so it can be tested, fuzzed and benchmarked in process.
#![warn(missing_docs)]

#[doc = include_str!("dsl.md")]
#[proc_macro]
pub fn network(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    scalenet_codegen::expand_network(input.into()).into()
}
