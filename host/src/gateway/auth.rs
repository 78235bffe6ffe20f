//! Login tokens: guest JWTs signed here (HS256), and JWTs issued elsewhere validated with
//! configured keys, issuer and audience.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who a connection belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub player_id: u64,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token: pass it as `?token=` or in Sec-WebSocket-Protocol")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// A key for tokens issued by someone else (an identity provider, a game backend).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuer {
    pub issuer: String,
    pub audience: String,
    /// `HS256` (with `secret`) or `RS256`/`ES256` (with `public_key_pem`).
    pub algorithm: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub public_key_pem: Option<String>,
}

/// The shortest guest-token signing key accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for guest tokens. When unset, one is generated at start and printed:
    /// fine on one machine, but tokens then die with the process.
    pub secret: Option<String>,
    pub issuer: String,
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub guest_token_ttl: Duration,
    pub external: Vec<ExternalIssuer>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: None,
            issuer: "ludus".into(),
            audience: "ludus".into(),
            guest_token_ttl: Duration::from_secs(24 * 3600),
            external: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: String,
    iss: String,
    aud: String,
    exp: u64,
    #[serde(default)]
    iat: u64,
    /// Not valid before (seconds since the epoch); checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

pub struct Auth {
    encoding: EncodingKey,
    own: (DecodingKey, Validation),
    external: Vec<(DecodingKey, Validation)>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    v.leeway = 5;
    v
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// Builds the validators; returns the generated secret when none was configured.
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<(Auth, Option<String>)> {
        let (secret, generated) = match &cfg.secret {
            Some(s) if s.len() >= MIN_SECRET_LEN => (s.clone(), None),
            Some(s) => anyhow::bail!(
                "auth.secret must be at least {MIN_SECRET_LEN} bytes, it has {}; make one \
                 with `openssl rand -hex 32`",
                s.len()
            ),
            None => {
                let s = crate::csprng::hex::<32>();
                (s.clone(), Some(s))
            }
        };
        let mut external = Vec::new();
        for ext in &cfg.external {
            let alg: Algorithm = ext.algorithm.parse().map_err(|_| {
                anyhow::anyhow!("auth.external: unknown algorithm `{}`", ext.algorithm)
            })?;
            let key = match (alg, &ext.secret, &ext.public_key_pem) {
                (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, Some(s), _) => {
                    DecodingKey::from_secret(s.as_bytes())
                }
                (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512, _, Some(pem)) => {
                    DecodingKey::from_rsa_pem(pem.as_bytes())?
                }
                (Algorithm::ES256 | Algorithm::ES384, _, Some(pem)) => {
                    DecodingKey::from_ec_pem(pem.as_bytes())?
                }
                _ => anyhow::bail!(
                    "auth.external for issuer `{}`: {} needs `secret` (HS*) or `public_key_pem` (RS*/ES*)",
                    ext.issuer,
                    ext.algorithm
                ),
            };
            external.push((key, validation(alg, &ext.issuer, &ext.audience)));
        }
        let auth = Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            own: (
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256, &cfg.issuer, &cfg.audience),
            ),
            external,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl: cfg.guest_token_ttl,
        };
        Ok((auth, generated))
    }

    /// A token for a new guest player. Player ids stay below 2^53 so JSON clients read
    /// them exactly.
    pub fn issue_guest(&self, name: &str) -> anyhow::Result<(String, Identity, u64)> {
        self.issue_guest_as(crate::csprng::id53(), name)
    }

    /// A token for the guest player `player_id` (one a device secret keeps).
    pub fn issue_guest_as(
        &self,
        player_id: u64,
        name: &str,
    ) -> anyhow::Result<(String, Identity, u64)> {
        let exp = now() + self.ttl.as_secs();
        let claims = Claims {
            sub: player_id.to_string(),
            name: name.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp,
            iat: now(),
            nbf: Some(now()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((
            token,
            Identity {
                player_id,
                name: name.to_owned(),
            },
            exp,
        ))
    }

    /// Signs arbitrary claims with the guest key (tests use it to forge expired tokens).
    #[doc(hidden)]
    pub fn sign_for_test(&self, sub: &str, exp: u64) -> String {
        self.sign_claims(sub, exp, None)
    }

    fn sign_claims(&self, sub: &str, exp: u64, nbf: Option<u64>) -> String {
        let claims = Claims {
            sub: sub.to_owned(),
            name: String::new(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp,
            iat: 0,
            nbf,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    pub fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        let mut last = None;
        for (i, (key, validation)) in std::iter::once(&self.own).chain(&self.external).enumerate() {
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => return Ok(identity(&data.claims, i == 0)),
                Err(e) => last = Some(e),
            }
        }
        Err(AuthError::Invalid(last.map_or_else(
            || "no key accepts it".into(),
            |e| e.to_string(),
        )))
    }
}

/// Our own subjects are player ids; another issuer's subject is hashed into one.
fn identity(claims: &Claims, own: bool) -> Identity {
    let own_id = if own {
        claims.sub.parse::<u64>().ok()
    } else {
        None
    };
    let player_id = own_id
        .filter(|id| *id > 0 && *id < (1 << 53))
        .unwrap_or_else(|| {
            let digest = Sha256::digest(format!("{}\0{}", claims.iss, claims.sub));
            (u64::from_le_bytes(digest[..8].try_into().unwrap_or_default()) & ((1 << 53) - 1))
                .max(1)
        });
    Identity {
        player_id,
        name: claims.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let cfg = AuthConfig {
            secret: Some("k".repeat(MIN_SECRET_LEN)),
            ..AuthConfig::default()
        };
        Auth::new(&cfg).unwrap().0
    }

    #[test]
    fn a_short_secret_is_refused_with_how_to_make_one() {
        let cfg = AuthConfig {
            secret: Some("k".repeat(MIN_SECRET_LEN - 1)),
            ..AuthConfig::default()
        };
        let err = Auth::new(&cfg).err().unwrap().to_string();
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(err.contains("openssl rand -hex 32"), "{err}");
        let (_, generated) = Auth::new(&AuthConfig::default()).unwrap();
        assert_eq!(generated.unwrap().len(), 64);
    }

    #[test]
    fn not_before_expiry_and_issuer_are_checked() {
        let auth = auth();
        let (token, who, _) = auth.issue_guest("ann").unwrap();
        assert_eq!(auth.validate(&token).unwrap(), who);
        let later = now() + 3600;
        let early = auth.sign_claims("7", later, Some(now() + 600));
        let err = auth.validate(&early).unwrap_err().to_string();
        assert!(err.contains("ImmatureSignature"), "{err}");
        assert!(
            auth.validate(&auth.sign_claims("7", later, Some(now())))
                .is_ok()
        );
        let expired = auth.sign_claims("7", now() - 600, None);
        let err = auth.validate(&expired).unwrap_err().to_string();
        assert!(err.contains("ExpiredSignature"), "{err}");
        let other = Auth::new(&AuthConfig {
            secret: Some("k".repeat(MIN_SECRET_LEN)),
            issuer: "someone else".into(),
            ..AuthConfig::default()
        })
        .unwrap()
        .0;
        let err = auth
            .validate(&other.sign_claims("7", later, None))
            .unwrap_err();
        assert!(err.to_string().contains("InvalidIssuer"), "{err}");
    }
}
