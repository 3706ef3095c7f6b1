//! Assertions the unit tests share (test builds only): a failing test
//! prints the whole exit reason or error it looked into.

/// Asserts that `text` contains `part`.
#[track_caller]
pub(crate) fn assert_contains(text: impl AsRef<str>, part: &str) {
    let text = text.as_ref();
    assert!(text.contains(part), "{part:?} is not in {text:?}");
}

/// Asserts that `text` begins with `start`: the decisive part of a reason
/// comes first, because Pacemaker keeps only 128 characters of it.
#[track_caller]
pub(crate) fn assert_starts(text: impl AsRef<str>, start: &str) {
    let text = text.as_ref();
    assert!(
        text.starts_with(start),
        "{text:?} does not begin with {start:?}"
    );
}
