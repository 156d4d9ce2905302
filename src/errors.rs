//! Walking an error's causes: the one place that knows how to step through `source()` chains,
//! including into `io::Error`s, whose own `source()` skips the error they wrap.

use std::error::Error;

/// `e` and its causes, outermost first.
pub fn causes<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&err| match err.downcast_ref::<std::io::Error>() {
        // `io::Error::source()` returns the wrapped error's source, skipping the wrapped error
        // itself; hyper-rustls wraps rustls' certificate errors in two io::Errors (Other
        // around InvalidData), and hyper wraps a body's error in one, so step into each.
        Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
        None => err.source(),
    })
}

/// The first cause of `e` (itself included) that is an `E`, if any.
pub fn cause_ref<'a, E: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a E> {
    causes(e).find_map(|err| err.downcast_ref::<E>())
}

/// True when `e` or one of its causes is an `E`.
pub fn is_caused_by<E: Error + 'static>(e: &(dyn Error + 'static)) -> bool {
    cause_ref::<E>(e).is_some()
}

/// An error and its causes on one line (`a: b: c`), skipping causes already quoted by the level
/// above. For logs and `/status`; classification uses [`is_caused_by`] instead.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_found_inside_io_errors_and_chains_print_once() {
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, Inner));
        let outer = Outer(io);
        assert!(is_caused_by::<Inner>(&outer));
        assert!(is_caused_by::<Outer>(&outer));
        assert!(!is_caused_by::<std::fmt::Error>(&outer));
        assert_eq!(error_chain(&outer), "outer: inner");
    }
}
