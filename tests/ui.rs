//! Compile-time behaviour of `network!`: one mistake per file under `tests/ui/fail`, each with the
//! spanned, fix-naming message in its `.stderr`; declarations that must compile under `tests/ui/pass`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
