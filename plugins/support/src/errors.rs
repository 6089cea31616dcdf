//! Error text the database plugins write alike: an error with the causes its driver keeps
//! in its source (a TLS or socket failure's reason), and a change's message naming the
//! change.

use golconde_plugin_api::Change;

/// `e` with its causes, each said once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `message` about `change`, led by the change's id when it has one.
pub fn with_id(change: &Change, message: String) -> String {
    match change.id.as_ref().into_option() {
        Some(id) => format!("change `{id}`: {message}"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use golconde_plugin_api::{ROption, RVec};

    use super::*;

    #[derive(Debug)]
    struct Failed(&'static str, Option<Box<Failed>>);

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_are_added_unless_already_said() {
        let root = Failed("certificate expired", None);
        let tls = Failed("tls handshake: certificate expired", Some(Box::new(root)));
        let e = Failed("error connecting", Some(Box::new(tls)));
        assert_eq!(
            chain(&e),
            "error connecting: tls handshake: certificate expired"
        );
    }

    #[test]
    fn a_change_is_named_by_its_id() {
        let mut change = Change {
            id: ROption::RSome("m-1".into()),
            operations: RVec::new(),
        };
        assert_eq!(with_id(&change, "bad".into()), "change `m-1`: bad");
        change.id = ROption::RNone;
        assert_eq!(with_id(&change, "bad".into()), "bad");
    }
}
