//! Recipe ETags (docs/api.md#etags): the strong tag of a recipe version, and the
//! `If-Match` / `If-None-Match` headers parsed and compared, strongly for `If-Match` and weakly
//! for `If-None-Match`.

use actix_web::http::header::{self, HeaderMap};

/// The strong ETag of a recipe version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// A parsed `If-Match` / `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTags {
    Any,
    /// The listed tags with their `W/` prefix removed, and whether each was weak.
    List(Vec<(bool, String)>),
}

impl EntityTags {
    /// Reads a header; `None` when absent. A value that is not visible ASCII holds no tag we
    /// issue: it is an empty list (an `If-Match` that matches nothing), not an absent header.
    pub fn from_header(headers: &HeaderMap, name: header::HeaderName) -> Option<EntityTags> {
        let raw: Vec<&header::HeaderValue> = headers.get_all(name).collect();
        if raw.is_empty() {
            return None;
        }
        let values: Vec<&str> = raw.iter().filter_map(|v| v.to_str().ok()).collect();
        let mut tags = Vec::new();
        for part in values.iter().flat_map(|v| v.split(',')) {
            let part = part.trim();
            if part == "*" {
                return Some(EntityTags::Any);
            }
            if part.is_empty() {
                continue;
            }
            match part.strip_prefix("W/") {
                Some(rest) => tags.push((true, rest.to_string())),
                None => tags.push((false, part.to_string())),
            }
        }
        Some(EntityTags::List(tags))
    }

    /// Strong comparison (If-Match): weak tags never match.
    pub fn matches_strong(&self, current: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|(weak, tag)| !weak && tag == current),
        }
    }

    /// Weak comparison (If-None-Match).
    pub fn matches_weak(&self, current: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|(_, tag)| tag == current),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn a_header_that_is_not_ascii_is_present_and_matches_nothing() {
        let value = header::HeaderValue::from_bytes(b"\"1\"\xff").unwrap();
        let req = TestRequest::default()
            .insert_header((header::IF_MATCH, value))
            .to_http_request();
        let tags = EntityTags::from_header(req.headers(), header::IF_MATCH).unwrap();
        assert!(!tags.matches_strong("\"1\""));
        assert!(EntityTags::from_header(req.headers(), header::IF_NONE_MATCH).is_none());
    }

    #[test]
    fn entity_tags_compare_strongly_for_if_match_and_weakly_for_if_none_match() {
        let req = TestRequest::default()
            .insert_header((header::IF_MATCH, "W/\"1\", \"2\""))
            .to_http_request();
        let tags = EntityTags::from_header(req.headers(), header::IF_MATCH).unwrap();
        assert!(tags.matches_strong("\"2\""));
        assert!(!tags.matches_strong("\"1\""));
        assert!(tags.matches_weak("\"1\""));
        let any = TestRequest::default()
            .insert_header((header::IF_MATCH, "*"))
            .to_http_request();
        assert_eq!(
            EntityTags::from_header(any.headers(), header::IF_MATCH),
            Some(EntityTags::Any)
        );
    }
}
