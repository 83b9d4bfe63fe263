//! HS256 JSON Web Tokens, as Centrifugo reads them: connection tokens
//! (`sub` = user, `exp`, `channels` for server-side subscriptions, `info`)
//! and subscription tokens (`sub`, `channel`, `exp`).
//!
//! Checked in Centrifugo's order: shape, algorithm, signature (HMAC-SHA256,
//! compared in constant time), claims, and only then `exp`/`nbf`, so an
//! expired token with a bad signature is "invalid", not "expired". The
//! caller passes the time (sans-IO).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, wrong algorithm, wrong signature or bad claims: the
    /// server disconnects with 3500 "invalid token".
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// `exp` has passed (or `nbf` is still ahead): error 109, the SDK
    /// fetches a new token.
    #[error("token expired")]
    Expired,
}

/// The claims this server uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: Option<i64>,
    /// Not before, Unix seconds.
    pub nbf: Option<i64>,
    /// Connection token: channels to subscribe at connect.
    pub channels: Vec<String>,
    /// Subscription token: the channel it grants.
    pub channel: Option<String>,
    /// Connection info, attached to the client's publications.
    pub info: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
}

/// Verifies an HS256 token with `secret` at Unix time `now`.
pub fn verify(token: &str, secret: &[u8], now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid("not three dot-separated parts"));
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Invalid("header is not base64url"))?;
    let h: Header<'_> =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Invalid("bad header"))?;
    if h.alg != "HS256" {
        return Err(TokenError::Invalid("algorithm is not HS256"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Invalid("signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::Invalid("signature mismatch"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Invalid("payload is not base64url"))?;
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid("bad claims"))?;
    if claims.exp.is_some_and(|exp| exp <= now) || claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Signs `claims_json` (a JSON object) with `secret`: for tests, tools and
/// the bench client.
pub fn sign(claims_json: &str, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims_json.as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"secret";

    #[test]
    fn a_signed_token_round_trips() {
        let t = sign(
            r#"{"sub":"42","exp":2000,"channels":["news"],"info":{"n":1}}"#,
            SECRET,
        );
        let c = verify(&t, SECRET, 1000).unwrap();
        assert_eq!(c.sub, "42");
        assert_eq!(c.channels, ["news"]);
        assert_eq!(c.info.unwrap().get(), r#"{"n":1}"#);
        assert_eq!(verify(&t, SECRET, 2000).unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn matches_a_token_made_elsewhere() {
        // PyJWT: jwt.encode({"sub": "1234567890", "name": "John Doe",
        // "iat": 1516239022}, "your-256-bit-secret", algorithm="HS256")
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                 eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
                 SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let c = verify(t, b"your-256-bit-secret", 0).unwrap();
        assert_eq!(c.sub, "1234567890");
    }

    #[test]
    fn bad_tokens_are_invalid_before_they_are_expired() {
        let good = sign(r#"{"sub":"1","exp":10}"#, SECRET);
        // Expired *and* wrong key: invalid wins.
        assert!(matches!(
            verify(&good, b"other", 100),
            Err(TokenError::Invalid("signature mismatch"))
        ));
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"1"}"#)
        );
        assert!(matches!(
            verify(&none_alg, SECRET, 0),
            Err(TokenError::Invalid("algorithm is not HS256"))
        ));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(
                matches!(verify(bad, SECRET, 0), Err(TokenError::Invalid(_))),
                "{bad}"
            );
        }
        let nbf = sign(r#"{"sub":"1","nbf":50}"#, SECRET);
        assert_eq!(verify(&nbf, SECRET, 49).unwrap_err(), TokenError::Expired);
        assert!(verify(&nbf, SECRET, 50).is_ok());
    }
}
