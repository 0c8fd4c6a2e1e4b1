//! The origin check done before a browser upgrade (gorilla's safe default).
//!
//! Accepted: no `Origin` header (not a browser), an origin whose host equals
//! the `Host` header, or one listed with `--allowed-origin` (`*` for any).

/// Whether an upgrade with these headers is allowed.
pub fn allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    host.is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn same_host_or_no_origin_is_allowed_by_default() {
        assert!(allowed(None, Some("a:1"), &[]));
        assert!(allowed(Some("http://a:1"), Some("a:1"), &[]));
        assert!(allowed(Some("https://A:1"), Some("a:1"), &[]));
        assert!(!allowed(Some("http://evil:1"), Some("a:1"), &[]));
        assert!(!allowed(Some("http://a:2"), Some("a:1"), &[]));
        assert!(!allowed(Some("http://a:1"), None, &[]));
        assert!(!allowed(Some("null"), Some("a:1"), &[]));
    }

    #[test]
    fn the_allow_list_extends_it() {
        let list = vec!["http://b:2".to_owned()];
        assert!(allowed(Some("http://b:2"), Some("a:1"), &list));
        assert!(!allowed(Some("http://c:2"), Some("a:1"), &list));
        assert!(allowed(Some("http://c:2"), Some("a:1"), &["*".to_owned()]));
    }
}
