//! The `#[task]` attribute refuses the mistakes users make with a message that says what
//! to write instead (compile-fail cases in `tests/ui`).

#[test]
fn task_attribute_mistakes_fail_to_compile_with_readable_messages() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
