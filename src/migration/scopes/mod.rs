//! Which OAuth scope a Coupa API request needs, from its method and path.
//!
//! Coupa names scopes `service.object.right` (docs/coupa-api.md §8) and maps them onto `/api` routes
//! by the rule "GET → `.read`, POST/PUT/PATCH/DELETE → `.write`", with special actions on top
//! (§9). The catalogue grows every release, so the built-in table here is a default that
//! `proxy.toml`'s `[[scope_rules]]` can extend or correct (§8: "keep the path→scope map in
//! configuration").
//!
//! Lookups sit on the request path, so a [`ScopeTable`] is compiled once: rules are bucketed by
//! the resource segment after `/api/` (sorted, binary-searched) and each bucket is pre-sorted by
//! precedence, so [`ScopeTable::needed`] is one binary search plus a short scan, parses the path
//! into a fixed-size array on the stack and returns a reference into the table: it never
//! allocates.
//!
//! Rows marked `[INF]` in comments are inferences, as in docs/coupa-api.md; confirm them against an
//! instance's `/oauth2/scopes` page.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

pub use category::Category;
use path::{ParsedPath, PathSeg};
use table::builtin_rules;

mod category;
mod path;
mod table;
#[cfg(test)]
mod tests;

/// What a request needs: any one of these scopes satisfies it (e.g. creating an invoice takes
/// `core.invoice.create` or `core.invoice.write`).
///
/// An **empty** `any_of` means the scope cannot be determined from the path (GraphQL, writes to
/// `/api/attachments/:id`): callers should treat it as "unknown, don't enforce".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// Alternatives, the preferred (documented) scope first.
    pub any_of: Arc<[Arc<str>]>,
    /// Index of the matched rule in [`ScopeTable::rules`], for diagnostics.
    pub rule: usize,
    /// How reports and errors name it: the scope, or `a or b` for alternatives (built once, so
    /// recording a request clones an `Arc` instead of joining strings).
    pub label: Arc<str>,
}

impl Needed {
    /// True when the path alone does not tell which scope is needed (empty `any_of`).
    pub fn is_undetermined(&self) -> bool {
        self.any_of.is_empty()
    }
}

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    /// The table compiled into the gateway (docs/coupa-api.md §9).
    BuiltIn,
    /// `proxy.toml`'s `[[scope_rules]]`; `index` is the entry's position there.
    Config {
        /// Position in `[[scope_rules]]`, as used in error messages (`scope_rules[index]`).
        index: usize,
    },
}

/// One path → scope rule, as written (built in or from configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRule {
    /// Segment pattern such as `/api/invoices/*/abandon`; `*` matches exactly one segment.
    pub pattern: String,
    /// Methods the rule applies to; `None` = any method.
    pub methods: Option<Vec<Method>>,
    /// Match only paths with exactly the pattern's segments, not paths below it.
    pub exact: bool,
    /// Any one of these satisfies the request; empty = cannot be determined from the path.
    pub scopes: Vec<String>,
    /// Built in or `[[scope_rules]]` entry.
    pub source: RuleSource,
}

/// A `[[scope_rules]]` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScopeRuleError {
    /// Position of the entry in `[[scope_rules]]`.
    pub index: usize,
    /// Names the field and the bad value and suggests the fix, e.g.
    /// `scope_rules[2].path: "api/x" must start with "/api/", e.g. "/api/invoices"`.
    pub message: String,
}

/// True for a plausible scope name: non-empty, only `[a-z0-9_.]`, no leading, trailing or
/// doubled dot (`core.invoice.read`, `openid`). Coupa's scopes are all of this form (§8).
pub fn is_valid_scope_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// The standard method named `s` (upper case only, as HTTP spells them), else `None`.
pub fn parse_method(s: &str) -> Option<Method> {
    STANDARD_METHODS
        .iter()
        .find(|(m, _)| m.as_str() == s)
        .map(|(m, _)| m.clone())
}

// Methods are compiled into bit masks so a rule's method check is one AND. Extension methods get
// their own bit, which only "any method" rules (all bits set) include.
const M_GET: u16 = 1 << 0;
const M_HEAD: u16 = 1 << 1;
const M_OPTIONS: u16 = 1 << 2;
const M_POST: u16 = 1 << 3;
const M_PUT: u16 = 1 << 4;
const M_PATCH: u16 = 1 << 5;
const M_DELETE: u16 = 1 << 6;
const M_CONNECT: u16 = 1 << 7;
const M_TRACE: u16 = 1 << 8;
const M_EXTENSION: u16 = 1 << 15;
const M_ANY: u16 = u16::MAX;

static STANDARD_METHODS: [(Method, u16); 9] = [
    (Method::GET, M_GET),
    (Method::POST, M_POST),
    (Method::PUT, M_PUT),
    (Method::HEAD, M_HEAD),
    (Method::OPTIONS, M_OPTIONS),
    (Method::PATCH, M_PATCH),
    (Method::DELETE, M_DELETE),
    (Method::CONNECT, M_CONNECT),
    (Method::TRACE, M_TRACE),
];

fn method_bit(m: &Method) -> u16 {
    // Standard methods compare by enum discriminant, no string comparison.
    STANDARD_METHODS
        .iter()
        .find(|(s, _)| s == m)
        .map_or(M_EXTENSION, |&(_, bit)| bit)
}

fn methods_mask(methods: Option<&[Method]>) -> u16 {
    methods.map_or(M_ANY, |ms| ms.iter().fold(0, |acc, m| acc | method_bit(m)))
}

/// One compiled pattern segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatSeg {
    Lit(Box<str>),
    Any,
}

#[derive(Debug, Clone)]
struct Compiled {
    /// Segments after `api`.
    segs: Box<[PatSeg]>,
    exact: bool,
    methods: u16,
    needed: Needed,
}

impl Compiled {
    fn wildcards(&self) -> usize {
        self.segs.iter().filter(|s| **s == PatSeg::Any).count()
    }

    fn matches(&self, path: &[PathSeg<'_>], method: u16) -> bool {
        if self.methods & method == 0 {
            return false;
        }
        let fits = if self.exact {
            path.len() == self.segs.len()
        } else {
            path.len() >= self.segs.len()
        };
        fits && self.segs.iter().zip(path).all(|(pat, seg)| match pat {
            PatSeg::Any => true,
            PatSeg::Lit(lit) => seg.is(lit),
        })
    }
}

/// Compiled path → scope table: the built-in rules (docs/coupa-api.md §9) plus configured overrides.
#[derive(Debug, Clone)]
pub struct ScopeTable {
    /// Overrides first (so a config rule's index here equals its `[[scope_rules]]` index when
    /// the caller passed them in order), then built-ins.
    rules: Vec<ScopeRule>,
    /// Same indices as `rules`.
    compiled: Vec<Compiled>,
    /// Resource segment → candidate rule indices in precedence order, including the generic
    /// rules. Sorted by key length, then key ([`PathSeg::cmp_len_first`]), for binary search.
    buckets: Vec<(Box<str>, Box<[u32]>)>,
    /// Rules whose first segment is `*` or that are just `/api`, in precedence order: the
    /// candidates for resources no rule names.
    generic: Box<[u32]>,
}

impl ScopeTable {
    /// The built-in table plus `overrides` (from proxy.toml), which win over built-in rules of
    /// equal or lower specificity.
    ///
    /// Precedence, for every request: the matching rule with the most segments wins, then the
    /// one with fewer `*`, then `exact` over prefix, then config over built-in, then the earlier
    /// config entry. So an override of `/api/invoices` changes plain invoice reads and writes
    /// but **not** the more specific built-in `/api/invoices/*/abandon` (still
    /// `core.invoice.delete`) nor the exact built-in `POST /api/invoices` (create); to change
    /// those, override the same pattern (with `exact` for the latter). An override limited to
    /// some `methods` leaves the other methods to the next rule in line.
    ///
    /// `overrides[i].source` should be `RuleSource::Config { index: i }`; that index is used in
    /// errors, and a `BuiltIn` source is replaced by `Config { index: i }`.
    pub fn new(overrides: Vec<ScopeRule>) -> Result<ScopeTable, ScopeRuleError> {
        let mut rules: Vec<ScopeRule> = Vec::with_capacity(overrides.len() + 256);
        let mut compiled: Vec<Compiled> = Vec::with_capacity(overrides.len() + 256);
        let mut interned: HashMap<String, Arc<str>> = HashMap::new();

        for (pos, mut rule) in overrides.into_iter().enumerate() {
            let index = match rule.source {
                RuleSource::Config { index } => index,
                RuleSource::BuiltIn => {
                    rule.source = RuleSource::Config { index: pos };
                    pos
                }
            };
            let segs = validate(index, &rule)?;
            let c = compile(segs, &rule, rules.len(), &mut interned);
            if let Some(prev) = compiled
                .iter()
                .zip(&rules)
                .find_map(|(p, r): (&Compiled, _)| {
                    let same = p.segs == c.segs && p.exact == c.exact && p.methods & c.methods != 0;
                    same.then_some(r)
                })
            {
                let prev_index = match prev.source {
                    RuleSource::Config { index } => index,
                    RuleSource::BuiltIn => 0,
                };
                return Err(ScopeRuleError {
                    index,
                    message: format!(
                        "scope_rules[{index}].path: {:?} repeats scope_rules[{prev_index}] for \
                         the same method(s), so one of them would never apply; merge them or \
                         give them disjoint methods",
                        rule.pattern
                    ),
                });
            }
            rules.push(rule);
            compiled.push(c);
        }

        for rule in builtin_rules() {
            // The built-in table is checked by the tests; a failure here is a bug in table.rs.
            let segs = validate(0, &rule).unwrap_or_else(|e| panic!("built-in scope rule: {e}"));
            let c = compile(segs, &rule, rules.len(), &mut interned);
            rules.push(rule);
            compiled.push(c);
        }

        let key = |i: usize| {
            let c = &compiled[i];
            let config_first = match rules[i].source {
                RuleSource::Config { .. } => 0u8,
                RuleSource::BuiltIn => 1,
            };
            (
                Reverse(c.segs.len()),
                c.wildcards(),
                !c.exact,
                config_first,
                i,
            )
        };
        let mut order: Vec<usize> = (0..compiled.len()).collect();
        order.sort_by_key(|&i| key(i));

        let mut generic = Vec::new();
        let mut by_resource: HashMap<&str, Vec<u32>> = HashMap::new();
        for &i in &order {
            // Rule counts are bounded by the config file; u32 halves the index lists.
            let idx = u32::try_from(i).expect("fewer than 2^32 scope rules");
            match compiled[i].segs.first() {
                Some(PatSeg::Lit(r)) => by_resource.entry(r).or_default().push(idx),
                _ => generic.push(idx),
            }
        }
        let mut rank = vec![0usize; order.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let mut buckets: Vec<(Box<str>, Box<[u32]>)> = by_resource
            .into_iter()
            .map(|(r, mut list)| {
                // Generic rules can match any resource, so each bucket carries them too,
                // interleaved by precedence; the scan can then stop at the first match.
                list.extend_from_slice(&generic);
                list.sort_by_key(|&i| rank[i as usize]);
                (Box::from(r), list.into_boxed_slice())
            })
            .collect();
        buckets.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));

        Ok(ScopeTable {
            rules,
            compiled,
            buckets,
            generic: generic.into_boxed_slice(),
        })
    }

    /// The built-in table alone (docs/coupa-api.md §9).
    pub fn builtin() -> ScopeTable {
        // Cannot fail: only overrides are user input, and the built-ins are tested.
        ScopeTable::new(Vec::new()).unwrap_or_else(|e| panic!("built-in scope rule: {e}"))
    }

    /// The scope `method` on `path` needs, or `None` when no rule knows the path (unknown
    /// resources are not guessed) or the path is not under `/api`.
    ///
    /// `path` is the Coupa path after the route prefix was stripped, e.g.
    /// `/api/invoices/12/abandon`. It is normalised the way Coupa's Rails router and front end
    /// see it: a query (if any) is ignored, empty segments (`//`, trailing `/`) and `.` are
    /// skipped, `..` removes the previous segment, `%XX` escapes are decoded when comparing,
    /// and a `.json`/`.xml` format suffix on the last segment is ignored (Rails routes accept
    /// one, `[INF]`). Paths with more than 32 segments give `None`.
    ///
    /// Cost: no allocation. The path is split into a stack array, the resource segment is
    /// binary-searched among the bucket keys, and the bucket's few rules are scanned in
    /// precedence order. The result borrows from the table: no refcount traffic; clone it
    /// (two `Arc` increments) only if it must outlive the borrow.
    pub fn needed(&self, method: &Method, path: &str) -> Option<&Needed> {
        let parsed = ParsedPath::parse(path)?;
        let segs = parsed.resource_segs();
        let method = method_bit(method);
        let candidates: &[u32] = match segs.first() {
            Some(first) => match self
                .buckets
                .binary_search_by(|(key, _)| first.cmp_len_first(key).reverse())
            {
                Ok(b) => &self.buckets[b].1,
                Err(_) => &self.generic,
            },
            None => &self.generic,
        };
        candidates
            .iter()
            .map(|&i| &self.compiled[i as usize])
            .find(|c| c.matches(segs, method))
            .map(|c| &c.needed)
    }

    /// All rules: overrides first, then built-ins. [`Needed::rule`] indexes this slice.
    pub fn rules(&self) -> &[ScopeRule] {
        &self.rules
    }
}

/// Checks one rule and splits its pattern; `index` names it in messages.
fn validate(index: usize, rule: &ScopeRule) -> Result<Vec<PatSeg>, ScopeRuleError> {
    let err = |field: &str, message: String| ScopeRuleError {
        index,
        message: format!("scope_rules[{index}].{field}: {message}"),
    };
    let p = rule.pattern.as_str();
    let bad_path = |problem: String| Err(err("path", format!("{p:?} {problem}")));
    if p.contains(['?', '#']) {
        return bad_path(
            "contains a query or fragment; scope rules match the path only, \
             drop everything from \"?\""
                .into(),
        );
    }
    if p.contains('%') {
        return bad_path(
            "contains \"%\"; write segments unescaped (request paths are decoded before \
             matching)"
                .into(),
        );
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad_path("contains whitespace or a control character; remove it".into());
    }
    let rest = match p.strip_prefix("/api") {
        Some("") => "",
        Some(rest) if rest.starts_with('/') => rest,
        _ => {
            return bad_path(
                "must start with \"/api/\" (the Coupa path after the route prefix), \
                 e.g. \"/api/invoices\""
                    .into(),
            )
        }
    };
    if rest == "/" || (rest.len() > 1 && rest.ends_with('/')) {
        return bad_path(format!(
            "ends with \"/\"; write {:?} (a trailing \"/\" on a request is ignored anyway)",
            p.trim_end_matches('/')
        ));
    }
    let mut segs = Vec::new();
    for seg in rest.split('/').skip(1) {
        let pat = match seg {
            "" => return bad_path("has an empty segment (\"//\"); use a single \"/\"".into()),
            "*" => PatSeg::Any,
            _ if seg.contains('*') => {
                return bad_path(format!(
                    "has \"*\" inside segment {seg:?}; \"*\" must be a whole segment and \
                     matches exactly one, e.g. \"/api/invoices/*/void\""
                ))
            }
            _ if seg.contains('.') => {
                return bad_path(format!(
                    "has \".\" in segment {seg:?}; Coupa resource names have none, and \
                     \".\"/\"..\" segments and \".json\" suffixes are normalised away before \
                     matching"
                ))
            }
            _ => PatSeg::Lit(seg.into()),
        };
        segs.push(pat);
    }
    if let Some(methods) = &rule.methods {
        if methods.is_empty() {
            return Err(err(
                "methods",
                "is empty, so the rule would never apply; list methods such as [\"GET\"] or \
                 omit methods for any method"
                    .into(),
            ));
        }
        if let Some((j, m)) = methods
            .iter()
            .enumerate()
            .find(|(_, m)| method_bit(m) == M_EXTENSION)
        {
            return Err(err(
                &format!("methods[{j}]"),
                format!(
                    "{:?} is not a standard HTTP method; use upper-case GET, HEAD, OPTIONS, \
                     POST, PUT, PATCH, DELETE, CONNECT or TRACE, or omit methods for any method",
                    m.as_str()
                ),
            ));
        }
    }
    if rule.scopes.is_empty() && rule.source != RuleSource::BuiltIn {
        // Built-ins use an empty list for "cannot be determined" (GraphQL); in configuration it
        // is more likely a mistake, and not enforcing a route is the route's scope_check job.
        return Err(err(
            "scopes",
            "is empty; list at least one scope, e.g. scopes = [\"core.invoice.read\"]".into(),
        ));
    }
    if let Some((j, s)) = rule
        .scopes
        .iter()
        .enumerate()
        .find(|(_, s)| !is_valid_scope_name(s))
    {
        return Err(err(
            &format!("scopes[{j}]"),
            format!(
                "{s:?} is not a scope name; scopes are lower-case letters, digits, \"_\" and \
                 \".\", e.g. \"core.invoice.read\""
            ),
        ));
    }
    Ok(segs)
}

fn compile(
    segs: Vec<PatSeg>,
    rule: &ScopeRule,
    index: usize,
    interned: &mut HashMap<String, Arc<str>>,
) -> Compiled {
    // Interning shares one allocation per distinct scope name across all rules.
    let any_of: Arc<[Arc<str>]> = rule
        .scopes
        .iter()
        .map(|s| {
            interned
                .entry(s.clone())
                .or_insert_with(|| Arc::from(s.as_str()))
                .clone()
        })
        .collect();
    let label: Arc<str> = match &any_of[..] {
        [one] => one.clone(),
        many => many
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(" or ")
            .into(),
    };
    Compiled {
        segs: segs.into_boxed_slice(),
        exact: rule.exact,
        methods: methods_mask(rule.methods.as_deref()),
        needed: Needed {
            any_of,
            rule: index,
            label,
        },
    }
}
