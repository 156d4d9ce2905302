//! `[[scope_rules]]`: path → scope rules added to the built-in table.

use super::Validator;
use crate::config::defaults;
use crate::config::raw::RawScopeRule;
use crate::migration::scopes::{self, RuleSource, ScopeRule, ScopeTable};

impl Validator<'_> {
    pub(super) fn scope_table(&mut self, raw: &[RawScopeRule]) -> ScopeTable {
        let before = self.problems.len();
        let mut rules = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("scope_rules[{i}]");
            let pattern = self
                .required(
                    &format!("{key}.path"),
                    &r.path,
                    r#"path = "/api/RESOURCE" (may use * for one segment)"#,
                )
                .unwrap_or_default()
                .to_owned();
            let methods = r.methods.as_ref().map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(j, m)| {
                        let parsed = scopes::parse_method(m).ok_or_else(|| {
                            format!(r#"{m:?} is not an HTTP method; use upper-case names such as "GET" or "POST""#)
                        });
                        self.check(&format!("{key}.methods[{j}]"), parsed)
                    })
                    .collect()
            });
            let scopes = match &r.scopes {
                None => {
                    self.problem(format!("{key}.scopes"), r#"missing; list the scopes that allow it, e.g. scopes = ["core.common.read"] (any one suffices)"#);
                    Vec::new()
                }
                Some(list) => list.clone(),
            };
            rules.push(ScopeRule {
                pattern,
                methods,
                exact: r.exact.unwrap_or(defaults::SCOPE_RULE_EXACT),
                scopes,
                source: RuleSource::Config { index: i },
            });
        }
        if self.problems.len() > before {
            // Reported already; the table would only repeat them.
            return ScopeTable::builtin();
        }
        match ScopeTable::new(rules) {
            Ok(table) => table,
            Err(e) => {
                self.problems.push(e.message);
                ScopeTable::builtin()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn scope_rules_extend_the_table_with_indexed_errors() {
        let text = minimal()
            + "[[scope_rules]]\npath = \"/api/custom_objects/*\"\nmethods = [\"GET\"]\nscopes = [\"core.custom_objects.read_write\"]\n";
        let config = parse(&text).expect("valid");
        let needed = config
            .scopes
            .needed(&http::Method::GET, "/api/custom_objects/widgets")
            .expect("rule applies");
        assert_eq!(&*needed.label, "core.custom_objects.read_write");
        assert_error(
            &(minimal() + "[[scope_rules]]\npath = \"api/x\"\nscopes = [\"core.common.read\"]\n"),
            &["scope_rules[0].path", "api/x"],
        );
        assert_error(
            &(minimal() + "[[scope_rules]]\npath = \"/api/x\"\nmethods = [\"get\"]\n"),
            &[
                "scope_rules[0].methods[0]",
                "\"get\"",
                "scope_rules[0].scopes: missing",
            ],
        );
        assert_error(
            &(minimal() + "[migration]\nrevoke_after = \"soon\"\n"),
            &["migration.revoke_after", "soon"],
        );
    }
}
