//! Flag or file key? A setting may come from the command line or from the file (the flag
//! wins), and an error about it names the one that gave it: that is what the operator edits.

use std::fmt;

/// Where a setting came from, as an error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin<'a> {
    /// The flag gave the value: `--threads`.
    Flag(&'static str),
    /// The file gave it, or nobody did and the default is in use (the file is where it would
    /// be set): `FILE: key 'server.threads'`.
    Key { file: &'a str, key: &'static str },
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            // Without a file the default was in use: name the key alone.
            Origin::Key { file: "", key } => write!(f, "key '{key}'"),
            Origin::Key { file, key } => write!(f, "{file}: key '{key}'"),
        }
    }
}

/// The configuration file's name as errors show it (empty without a file).
#[derive(Debug, Clone, Copy)]
pub(super) struct Source<'a> {
    file: &'a str,
}

impl<'a> Source<'a> {
    pub(super) const fn new(file: &'a str) -> Source<'a> {
        Source { file }
    }

    /// The file key `section.key`, for settings no flag overrides (and errors that have
    /// always named the key).
    pub(super) fn key(self, key: &'static str) -> Origin<'a> {
        Origin::Key {
            file: self.file,
            key,
        }
    }

    /// The flag's value if it was given, else the file key's, and where it came from.
    pub(super) fn pick<T>(
        self,
        flag: &'static str,
        by_flag: Option<T>,
        key: &'static str,
        in_file: Option<T>,
    ) -> (Option<T>, Origin<'a>) {
        match by_flag {
            Some(v) => (Some(v), Origin::Flag(flag)),
            None => (in_file, self.key(key)),
        }
    }
}

/// A repeatable flag counts as given when it was given at least once.
pub(super) fn given<T>(values: &[T]) -> Option<&[T]> {
    (!values.is_empty()).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_is_named() {
        let src = Source::new("f.toml");
        let (v, at) = src.pick("--threads", Some(2), "server.threads", Some(3));
        assert_eq!((v, at.to_string()), (Some(2), "--threads".to_owned()));
        let (v, at) = src.pick("--threads", None, "server.threads", Some(3));
        assert_eq!(
            (v, at.to_string()),
            (Some(3), "f.toml: key 'server.threads'".to_owned())
        );
        let (v, at) = src.pick::<u8>("--threads", None, "server.threads", None);
        assert_eq!((v, at), (None, src.key("server.threads")));
        assert_eq!(given::<u8>(&[]), None);
    }
}
