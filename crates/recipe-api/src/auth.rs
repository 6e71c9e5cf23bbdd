//! Bearer-token authentication for writes. Tokens are compared in constant time (against
//! every configured token, without short-circuit) and never logged.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The configured write tokens.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Vec<u8>>);

impl Tokens {
    pub fn new(tokens: &[String]) -> Tokens {
        Tokens(tokens.iter().map(|t| t.as_bytes().to_vec()).collect())
    }

    /// True when `candidate` equals one of the tokens.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let mut accepted = subtle::Choice::from(0u8);
        for token in &self.0 {
            accepted |= token.as_slice().ct_eq(candidate);
        }
        bool::from(accepted)
    }
}

/// The token from an `Authorization: Bearer <token>` header, if well-formed.
pub fn bearer_token(req: &HttpRequest) -> Option<&[u8]> {
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Proof that the request carries a valid token: handlers of writes take it as an argument.
pub struct Authenticated;

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Authenticated, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ok = match (req.app_data::<web::Data<Tokens>>(), bearer_token(req)) {
            (Some(tokens), Some(token)) => tokens.accepts(token),
            _ => false,
        };
        ready(if ok {
            Ok(Authenticated)
        } else {
            Err(ApiError::Unauthorized)
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn only_configured_tokens_are_accepted() {
        let tokens = Tokens::new(&["alpha".into(), "beta".into()]);
        assert!(tokens.accepts(b"alpha"));
        assert!(tokens.accepts(b"beta"));
        assert!(!tokens.accepts(b"alph"));
        assert!(!tokens.accepts(b""));
        assert!(!Tokens::default().accepts(b"alpha"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        let cases = [
            ("Bearer abc", Some(&b"abc"[..])),
            ("bearer abc", Some(&b"abc"[..])),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ];
        for (header_value, expected) in cases {
            let req = TestRequest::default()
                .insert_header((header::AUTHORIZATION, header_value))
                .to_http_request();
            assert_eq!(bearer_token(&req), expected, "{header_value}");
        }
    }
}
