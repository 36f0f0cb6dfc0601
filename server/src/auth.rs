//! API-key check, run as a tonic interceptor before every `octet.v1` and
//! `qdrant` call, and on the HTTP metrics endpoint. Health, reflection and the
//! REST version probe stay open: probes and `grpcurl list` need no secret and
//! reveal no data.

use tonic::{Request, Status};

/// The key a request must carry (`authorization: Bearer KEY` or `api-key: KEY`),
/// or none when authentication is off.
#[derive(Clone, Default)]
pub struct ApiKey(Option<std::sync::Arc<str>>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(if self.0.is_some() {
            "ApiKey(set)"
        } else {
            "ApiKey(off)"
        })
    }
}

impl ApiKey {
    /// A checker for `key`; `None` lets every request through.
    pub fn new(key: Option<String>) -> Self {
        ApiKey(key.map(Into::into))
    }

    /// The interceptor: passes the request or answers UNAUTHENTICATED.
    pub fn check<T>(&self, req: Request<T>) -> Result<Request<T>, Status> {
        match self.verify(req.metadata().as_ref()) {
            Ok(()) => Ok(req),
            Err(why) => Err(Status::unauthenticated(why)),
        }
    }

    /// Whether `headers` carry the key (always, when authentication is off);
    /// the error says what is wrong without echoing what was sent.
    pub fn verify(&self, headers: &http::HeaderMap) -> Result<(), &'static str> {
        let Some(key) = &self.0 else {
            return Ok(());
        };
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let plain = headers.get("api-key").and_then(|v| v.to_str().ok());
        match bearer.or(plain) {
            Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => Ok(()),
            Some(_) => Err("wrong API key"),
            None => Err("missing API key: send `authorization: Bearer KEY` or `api-key: KEY`"),
        }
    }
}

/// Compares without an early exit, so timing does not reveal a key prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(header: &'static str, value: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert(header, value.parse().expect("ascii header"));
        r
    }

    #[test]
    fn both_header_forms_pass_and_wrong_or_missing_keys_fail() {
        let k = ApiKey::new(Some("s3cret".into()));
        assert!(k.check(req("authorization", "Bearer s3cret")).is_ok());
        assert!(k.check(req("api-key", "s3cret")).is_ok());
        let wrong = k.check(req("api-key", "s3cret2")).expect_err("wrong key");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let basic = k
            .check(req("authorization", "Basic s3cret"))
            .expect_err("not bearer");
        assert_eq!(basic.code(), tonic::Code::Unauthenticated);
        assert!(k.check(Request::new(())).is_err());
        assert!(ApiKey::new(None).check(Request::new(())).is_ok());
    }
}
