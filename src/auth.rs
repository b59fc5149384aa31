//! Authentication: simplejwt-compatible HS256 access tokens.
//!
//! Owns token verification (signature, algorithm, `exp` with leeway,
//! `token_type == "access"`, the user-id claim as a number or a decimal
//! string, the presence of the `jti` claim) and minting (for the `token` subcommand, demos and tests).
//! Whether the user exists and is active is the store's answer, not ours.
//!
//! Must never: log or return the token text, or accept any algorithm other
//! than HS256 (`alg: none` included).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::config::JwtConfig;
use crate::store::UserId;

/// Why a token was refused (a bounded label for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("algorithm not allowed")]
    BadAlgorithm,
    #[error("token expired")]
    Expired,
    #[error("not an access token")]
    WrongType,
    #[error("missing or invalid claim")]
    BadClaims,
    /// simplejwt: "Token has no id".
    #[error("token has no id")]
    NoId,
}

impl AuthError {
    /// A bounded label for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::BadAlgorithm => "bad_algorithm",
            Self::Expired => "expired",
            Self::WrongType => "wrong_type",
            Self::BadClaims => "bad_claims",
            Self::NoId => "no_jti",
        }
    }
}

/// A token that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: UserId,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Verifies access tokens; built once, shared read-only by all shards.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    user_id_claim: String,
    token_type_claim: String,
    jti_claim: Option<String>,
}

impl Verifier {
    pub fn new(cfg: &JwtConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = cfg.leeway.as_secs();
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(&cfg.secret),
            validation,
            user_id_claim: cfg.user_id_claim.clone(),
            token_type_claim: cfg.token_type_claim.clone(),
            jti_claim: cfg.jti_claim.clone(),
        }
    }

    /// Checks a token; `None` or an empty string is [`AuthError::Missing`].
    pub fn verify(&self, token: Option<&str>) -> Result<VerifiedToken, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| map_error(e.kind()))?;
        let claims = data.claims;
        // simplejwt checks the id's presence only (any value), before the type.
        if let Some(jti) = &self.jti_claim {
            if !claims.contains_key(jti) {
                return Err(AuthError::NoId);
            }
        }
        if claims.get(&self.token_type_claim).and_then(Value::as_str) != Some("access") {
            return Err(AuthError::WrongType);
        }
        let user_id = claims
            .get(&self.user_id_claim)
            .and_then(user_id_of)
            .ok_or(AuthError::BadClaims)?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::BadClaims)?;
        Ok(VerifiedToken { user_id, exp })
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::BadAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            AuthError::BadClaims
        }
        _ => AuthError::Malformed,
    }
}

/// A user id as a positive JSON integer or a decimal string of one.
fn user_id_of(v: &Value) -> Option<UserId> {
    let id = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        _ => return None,
    };
    (id > 0).then_some(id)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints an access token the way simplejwt does (`token_type`, `exp`, `iat`,
/// `jti`, and the user-id claim), valid for `ttl`.
pub fn mint_token(cfg: &JwtConfig, user_id: UserId, ttl: Duration) -> String {
    let now = now_secs();
    let mut claims = Map::new();
    claims.insert(cfg.token_type_claim.clone(), Value::from("access"));
    claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
    claims.insert("iat".into(), Value::from(now));
    let jti = cfg.jti_claim.clone().unwrap_or_else(|| "jti".into());
    claims.insert(jti, Value::from(random_jti()));
    claims.insert(cfg.user_id_claim.clone(), Value::from(user_id));
    let key = EncodingKey::from_secret(&cfg.secret);
    // Encoding a JSON map with an HMAC key cannot fail.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .expect("HS256 encoding of a JSON object never fails")
}

fn random_jti() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JwtConfig {
        JwtConfig::new("test-secret")
    }

    fn token_with(claims: Value, alg: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn future() -> u64 {
        now_secs() + 3600
    }

    #[test]
    fn minted_token_verifies() {
        let v = Verifier::new(&cfg());
        let t = mint_token(&cfg(), 42, Duration::from_secs(60));
        assert_eq!(v.verify(Some(&t)).unwrap().user_id, 42);
    }

    #[test]
    fn user_id_as_string() {
        let v = Verifier::new(&cfg());
        let t = token_with(
            serde_json::json!({"token_type":"access","jti":"j","exp":future(),"user_id":"17"}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(v.verify(Some(&t)).unwrap().user_id, 17);
    }

    #[test]
    fn refusals() {
        let v = Verifier::new(&cfg());
        let ok = serde_json::json!({"token_type":"access","jti":"j","exp":future(),"user_id":1});
        assert_eq!(v.verify(None), Err(AuthError::Missing));
        assert_eq!(v.verify(Some("")), Err(AuthError::Missing));
        assert_eq!(v.verify(Some("garbage")), Err(AuthError::Malformed));
        let bad_sig = token_with(ok.clone(), Algorithm::HS256, "other");
        assert_eq!(v.verify(Some(&bad_sig)), Err(AuthError::BadSignature));
        let hs512 = token_with(ok.clone(), Algorithm::HS512, "test-secret");
        assert_eq!(v.verify(Some(&hs512)), Err(AuthError::BadAlgorithm));
        let expired = token_with(
            serde_json::json!({"token_type":"access","jti":"j","exp":now_secs() - 10,"user_id":1}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(v.verify(Some(&expired)), Err(AuthError::Expired));
        let refresh = token_with(
            serde_json::json!({"token_type":"refresh","jti":"j","exp":future(),"user_id":1}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(v.verify(Some(&refresh)), Err(AuthError::WrongType));
        for claims in [
            serde_json::json!({"token_type":"access","jti":"j","exp":future()}),
            serde_json::json!({"token_type":"access","jti":"j","exp":future(),"user_id":"x1"}),
            serde_json::json!({"token_type":"access","jti":"j","exp":future(),"user_id":0}),
            serde_json::json!({"token_type":"access","jti":"j","exp":future(),"user_id":-3}),
            serde_json::json!({"token_type":"access","jti":"j","exp":future(),"user_id":1.5}),
            serde_json::json!({"token_type":"access","jti":"j","exp":future(),"user_id":null}),
        ] {
            let t = token_with(claims, Algorithm::HS256, "test-secret");
            assert_eq!(v.verify(Some(&t)), Err(AuthError::BadClaims));
        }
        let no_exp = token_with(
            serde_json::json!({"token_type":"access","jti":"j","user_id":1}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(v.verify(Some(&no_exp)), Err(AuthError::BadClaims));
    }

    #[test]
    fn alg_none_is_refused() {
        let v = Verifier::new(&cfg());
        let b64 = |s: &str| {
            use std::fmt::Write;
            // URL-safe base64 without padding, hand-rolled to avoid a test dependency.
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let b = s.as_bytes();
            let mut out = String::new();
            for chunk in b.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, &c| acc << 8 | c as u32)
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    let _ = write!(out, "{}", A[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        };
        let t = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"token_type":"access","exp":{},"user_id":1}}"#,
                future()
            ))
        );
        assert!(v.verify(Some(&t)).is_err());
    }

    #[test]
    fn custom_claim_names_and_leeway() {
        let mut c = cfg();
        c.user_id_claim = "uid".into();
        c.token_type_claim = "typ".into();
        c.leeway = Duration::from_secs(120);
        let v = Verifier::new(&c);
        let t = token_with(
            serde_json::json!({"typ":"access","jti":"j","exp":now_secs() - 30,"uid":5}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(v.verify(Some(&t)).unwrap().user_id, 5);
        assert_eq!(
            v.verify(Some(&mint_token(&c, 9, Duration::from_secs(5))))
                .unwrap()
                .user_id,
            9
        );
    }

    #[test]
    fn a_token_without_an_id_is_refused() {
        let v = Verifier::new(&cfg());
        let no_jti = token_with(
            serde_json::json!({"token_type":"access","exp":future(),"user_id":1}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(v.verify(Some(&no_jti)), Err(AuthError::NoId));
        // Any value counts, as in simplejwt (it checks the key's presence).
        let null_jti = token_with(
            serde_json::json!({"token_type":"access","exp":future(),"user_id":1,"jti":null}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(v.verify(Some(&null_jti)).unwrap().user_id, 1);
    }

    #[test]
    fn the_id_claim_can_be_renamed_or_turned_off() {
        let claims =
            serde_json::json!({"token_type":"access","exp":future(),"user_id":3,"tid":"a"});
        let t = token_with(claims, Algorithm::HS256, "test-secret");
        let mut renamed = cfg();
        renamed.jti_claim = Some("tid".into());
        assert_eq!(Verifier::new(&renamed).verify(Some(&t)).unwrap().user_id, 3);
        assert_eq!(Verifier::new(&cfg()).verify(Some(&t)), Err(AuthError::NoId));
        let minted = mint_token(&renamed, 4, Duration::from_secs(5));
        assert_eq!(
            Verifier::new(&renamed)
                .verify(Some(&minted))
                .unwrap()
                .user_id,
            4
        );
        let mut off = cfg();
        off.jti_claim = None;
        let bare = token_with(
            serde_json::json!({"token_type":"access","exp":future(),"user_id":5}),
            Algorithm::HS256,
            "test-secret",
        );
        assert_eq!(Verifier::new(&off).verify(Some(&bare)).unwrap().user_id, 5);
    }
}
