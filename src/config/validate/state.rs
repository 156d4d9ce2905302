//! `[state]`: where the migration ledger is kept.

use secrecy::SecretString;

use super::Validator;
use crate::config::defaults;
use crate::config::raw::RawState;
use crate::config::{redis_url_shown, State, StateStore};

const CHOOSE: &str = r#"set exactly one of path = "state/ledger.redb" (one gateway), redis = "redis://host:6379/0" (replicas sharing one ledger) or memory = true (nothing kept across restarts)"#;

impl Validator<'_> {
    pub(super) fn state(&mut self, raw: Option<&RawState>) -> State {
        let Some(raw) = raw else {
            return State {
                store: StateStore::Memory,
                flush_interval: defaults::STATE_FLUSH_INTERVAL,
                replicas: defaults::STATE_REPLICAS,
            };
        };
        let replicas = match raw.replicas {
            None => defaults::STATE_REPLICAS,
            Some(n) if (1..=1000).contains(&n) => n as u32,
            Some(n) => {
                self.problem(
                    "state.replicas",
                    format!(
                        "{n} is not a fleet size; use the number of gateway replicas, 1 to 1000"
                    ),
                );
                defaults::STATE_REPLICAS
            }
        };
        let flush_interval = self.positive(
            "state.flush_interval",
            raw.flush_interval.as_deref(),
            defaults::STATE_FLUSH_INTERVAL,
        );
        let memory = raw.memory == Some(true);
        let chosen = usize::from(raw.path.is_some())
            + usize::from(raw.redis.is_some())
            + usize::from(memory);
        if chosen != 1 {
            let what = if chosen == 0 {
                "names no store"
            } else {
                "names more than one store"
            };
            self.problem("state", format!("{what}; {CHOOSE}"));
            return State {
                store: StateStore::Memory,
                flush_interval,
                replicas,
            };
        }
        let store = if let Some(path) = &raw.path {
            self.state_path(path)
        } else if let Some(url) = &raw.redis {
            self.state_redis(url)
        } else {
            Some(StateStore::Memory)
        };
        State {
            store: store.unwrap_or(StateStore::Memory),
            flush_interval,
            replicas,
        }
    }

    fn state_path(&mut self, raw: &str) -> Option<StateStore> {
        let key = "state.path";
        let expanded = self.expand(key, raw, "export it or write the path directly")?;
        let expanded =
            self.non_empty(key, expanded, r#"name a file such as "state/ledger.redb""#)?;
        // Absolute, so `/status` and the report say exactly which file holds the evidence.
        let path = self.base_dir.join(expanded);
        let path = std::path::absolute(&path).unwrap_or(path);
        if path.is_dir() {
            self.problem(
                key,
                format!(
                    "\"{}\" is a directory; name a file in it, such as \"{}\"",
                    path.display(),
                    path.join("ledger.redb").display()
                ),
            );
            return None;
        }
        Some(StateStore::File(path))
    }

    fn state_redis(&mut self, raw: &str) -> Option<StateStore> {
        let key = "state.redis";
        // The expanded URL may hold a password: messages show it redacted.
        let url = self.expand(key, raw, "export it or set the password another way")?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            self.problem(
                key,
                format!(
                    r#""{}" is not a Redis URL; use "redis://[:PASSWORD@]HOST:PORT/DB" or "rediss://..." for TLS"#,
                    redis_url_shown(&url)
                ),
            );
            return None;
        }
        Some(StateStore::Redis(SecretString::from(url)))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;
    use crate::config::StateStore;

    #[test]
    fn exactly_one_store_is_named() {
        assert_error(
            &(minimal() + "[state]\nflush_interval = \"2s\"\n"),
            &["state: names no store; set exactly one of path"],
        );
        assert_error(
            &(minimal() + "[state]\npath = \"l.redb\"\nredis = \"redis://h:1/0\"\n"),
            &["state: names more than one store"],
        );
        assert_error(
            &(minimal() + "[state]\nredis = \"http://:hunter2@h:1/0\"\n"),
            &[r#"state.redis: "http://***@h:1/0" is not a Redis URL"#],
        );
        assert_error(
            &(minimal() + "[state]\nmemory = true\nflush_interval = \"0s\"\n"),
            &[r#"state.flush_interval: "0s" must be greater than zero"#],
        );
        assert_error(
            &(minimal() + "[state]\npath = \"x\"\ncolour = 1\n"),
            &["unknown field `colour`"],
        );
    }

    #[test]
    fn a_relative_path_is_taken_from_the_config_file_directory() {
        let config = parse(&(minimal() + "[state]\npath = \"state/ledger.redb\"\n")).unwrap();
        match &config.state.store {
            StateStore::File(p) => assert!(p.ends_with("state/ledger.redb"), "{}", p.display()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&minimal()).unwrap().state.store,
            StateStore::Memory
        ));
    }
}
