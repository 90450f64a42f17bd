//! The admin token: which routes need `Authorization: Bearer TOKEN`, and the comparison
//! that does not tell an attacker how much of a guess was right.

use crate::config::Secret;
use crate::http::{Head, Response};
use crate::router::Route;

/// Wraps a route so it answers 401 unless the request carries the token; with no token
/// configured, the route is open.
pub fn guarded(
    token: Option<Secret>,
    decide: impl Fn(&Head<'_>) -> Route + 'static,
) -> impl Fn(&Head<'_>) -> Route + 'static {
    move |head| match &token {
        Some(token) if !presents(head, token) => unauthorized(),
        _ => decide(head),
    }
}

/// Whether the head carries `Authorization: Bearer TOKEN` (the scheme in any case).
fn presents(head: &Head<'_>, token: &Secret) -> bool {
    let Some(value) = head.header("authorization") else {
        return false;
    };
    let value = value.trim_ascii();
    let Some((scheme, credentials)) = value.split_at_checked(6) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer")
        && credentials.first() == Some(&b' ')
        && constant_time_eq(credentials.trim_ascii(), token.expose().as_bytes())
}

/// Equal bytes, compared in time that depends only on the lengths, never on where the first
/// difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

fn unauthorized() -> Route {
    let response = Response::text(401, "unauthorized\n")
        .with_header("WWW-Authenticate", "Bearer realm=\"miohttpd\"");
    Route::Respond(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{header_storage, parse_head, HeadLimits};

    fn decide_with(authorization: Option<&str>) -> u16 {
        let token = Some(Secret::new("s3cret-token").unwrap());
        let route = guarded(token, |_| Route::Respond(Response::text(200, "ok")));
        let mut raw = String::from("GET /metrics HTTP/1.1\r\nHost: x\r\n");
        if let Some(value) = authorization {
            raw.push_str(&format!("Authorization: {value}\r\n"));
        }
        raw.push_str("\r\n");
        let mut storage = header_storage();
        let head = parse_head(raw.as_bytes(), &mut storage, &HeadLimits::default()).unwrap();
        match route(&head) {
            Route::Respond(response) => response.status,
            _ => unreachable!(),
        }
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let rows = [
            (Some("Bearer s3cret-token"), 200),
            (Some("bearer s3cret-token"), 200),
            (Some("BEARER   s3cret-token  "), 200),
            (None, 401),
            (Some(""), 401),
            (Some("Bearer"), 401),
            (Some("Bearer "), 401),
            (Some("Bearer s3cret-toke"), 401),
            (Some("Bearer s3cret-tokenX"), 401),
            (Some("Bearer S3CRET-TOKEN"), 401),
            (Some("Basic s3cret-token"), 401),
            (Some("Bearers3cret-token"), 401),
            (Some("Token s3cret-token"), 401),
        ];
        for (authorization, status) in rows {
            assert_eq!(decide_with(authorization), status, "{authorization:?}");
        }
    }

    #[test]
    fn no_token_configured_means_open() {
        let route = guarded(None, |_| Route::Respond(Response::text(200, "ok")));
        let mut storage = header_storage();
        let raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = parse_head(raw, &mut storage, &HeadLimits::default()).unwrap();
        assert!(matches!(route(&head), Route::Respond(r) if r.status == 200));
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
