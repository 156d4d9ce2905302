//! Longest-prefix routing on path-segment boundaries.
//!
//! A handful of routes is typical, so the table is a vector sorted by prefix length (longest
//! first) and scanned linearly: for < 50 entries that beats any trie on cache behaviour, and it
//! makes "longest prefix wins" true by construction.

/// A route table over values of type `T` (the runtime's per-route data).
#[derive(Debug)]
pub struct RouteTable<T> {
    entries: Vec<(String, T)>,
}

/// The result of a match: the route's value and the path left after the prefix.
#[derive(Debug)]
pub struct Match<'t, 'p, T> {
    /// The matched route's value.
    pub route: &'t T,
    /// The rest of the path, always starting with `/` (a bare prefix maps to `/`).
    pub rest: &'p str,
}

impl<T> RouteTable<T> {
    /// Builds a table. Prefixes are expected validated (`/`-led, unique, no trailing `/`
    /// except the root `/`).
    pub fn new(routes: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut entries: Vec<(String, T)> = routes.into_iter().collect();
        // Stable sort: equal lengths keep file order, which only matters for diagnostics
        // because validated prefixes are unique.
        entries.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { entries }
    }

    /// Finds the route for `path` (the path part of the request target, no query).
    ///
    /// `/prod` matches `/prod` and `/prod/...`, never `/production`.
    pub fn find<'t, 'p>(&'t self, path: &'p str) -> Option<Match<'t, 'p, T>> {
        for (prefix, route) in &self.entries {
            if prefix == "/" {
                return Some(Match { route, rest: path });
            }
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                if rest.is_empty() {
                    return Some(Match { route, rest: "/" });
                }
                if rest.starts_with('/') {
                    return Some(Match { route, rest });
                }
            }
        }
        None
    }

    /// The routes, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries.iter().map(|(p, t)| (p.as_str(), t))
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[&str]) -> RouteTable<String> {
        RouteTable::new(prefixes.iter().map(|p| (p.to_string(), p.to_string())))
    }

    fn hit(t: &RouteTable<String>, path: &str) -> Option<(String, String)> {
        t.find(path).map(|m| (m.route.clone(), m.rest.to_string()))
    }

    #[test]
    fn matches_on_segment_boundaries_only() {
        let t = table(&["/prod", "/test"]);
        assert_eq!(
            hit(&t, "/prod/api/invoices"),
            Some(("/prod".into(), "/api/invoices".into()))
        );
        assert_eq!(hit(&t, "/prod"), Some(("/prod".into(), "/".into())));
        assert_eq!(hit(&t, "/prod/"), Some(("/prod".into(), "/".into())));
        assert_eq!(hit(&t, "/production/api"), None);
        assert_eq!(hit(&t, "/pro"), None);
        assert_eq!(hit(&t, "/"), None);
    }

    #[test]
    fn longest_prefix_wins_regardless_of_order() {
        let t = table(&["/prod", "/prod/api/invoices", "/"]);
        assert_eq!(
            hit(&t, "/prod/api/invoices/7"),
            Some(("/prod/api/invoices".into(), "/7".into()))
        );
        assert_eq!(
            hit(&t, "/prod/api/invoices_x"),
            Some(("/prod".into(), "/api/invoices_x".into()))
        );
        assert_eq!(hit(&t, "/other"), Some(("/".into(), "/other".into())));
    }
}
