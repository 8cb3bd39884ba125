//! Who may do what: API keys, their scopes, and how a key is made and recognised.
//!
//! A key is `es_` and 43 characters of URL-safe base64 (256 random bits from the operating
//! system). The store keeps only its SHA-256: keys are random, so a fast hash is as strong as a
//! slow one, and a leaked table gives nobody a key.

use std::fmt;
use std::str::FromStr;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use earshot_store::{ApiKeyRecord, StoreError, TranscriptStore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every Earshot key starts with, so that a leaked one is recognisable (secret scanners,
/// logs) and a token is told from a key at a glance.
pub const KEY_PREFIX: &str = "es_";

/// Random bytes in a key.
const KEY_BYTES: usize = 32;

/// The longest key name, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 64;

/// What a credential allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Open streaming sessions and mint short-lived tokens for them.
    Stream,
    /// Read one's own transcripts.
    Read,
    /// Everything: every tenant's transcripts, `/metrics`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Stream, Scope::Read, Scope::Admin];
    /// The scopes of a key created without `--scope`.
    pub const DEFAULT: [Scope; 2] = [Scope::Stream, Scope::Read];

    /// The name used on the command line, in the store and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Stream => "stream",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = KeyError;

    fn from_str(name: &str) -> Result<Self, KeyError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == name)
            .ok_or_else(|| KeyError::UnknownScope(name.chars().take(32).collect()))
    }
}

/// Why a key could not be made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown scope {0:?}: expected stream, read or admin")]
    UnknownScope(String),
    #[error(
        "a key name is 1 to {MAX_KEY_NAME_LEN} characters of letters, digits, '.', '_' and '-'"
    )]
    BadName,
    #[error("--max-sessions must be at least 1")]
    ZeroSessions,
}

/// A key just made: the key itself, shown once, and the record that is stored.
pub struct NewKey {
    pub key: String,
    pub record: ApiKeyRecord,
}

/// Makes a key named `name`. No scopes means [`Scope::DEFAULT`]; repeated scopes count once.
pub fn new_key(
    name: &str,
    scopes: &[Scope],
    max_sessions: Option<u32>,
    now_ms: i64,
) -> Result<NewKey, KeyError> {
    check_key_name(name)?;
    if max_sessions == Some(0) {
        return Err(KeyError::ZeroSessions);
    }
    let mut scopes = if scopes.is_empty() {
        Scope::DEFAULT.to_vec()
    } else {
        scopes.to_vec()
    };
    scopes.sort();
    scopes.dedup();
    let mut random = [0u8; KEY_BYTES];
    getrandom::fill(&mut random).expect("the operating system's random number generator");
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let record = ApiKeyRecord {
        name: name.to_owned(),
        key_hash: hash_key(&key),
        scopes: scopes
            .iter()
            .map(|scope| scope.as_str().to_owned())
            .collect(),
        max_sessions,
        created_at_ms: now_ms,
        last_used_ms: None,
    };
    Ok(NewKey { key, record })
}

/// The lower-case hex SHA-256 of `key`, as the store keeps it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Names appear in logs and URLs: keep them short and plain.
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_KEY_NAME_LEN || !name.chars().all(plain) {
        return Err(KeyError::BadName);
    }
    Ok(())
}

/// The subprotocol a browser names beside its credential, and the one the server selects.
pub const PROTOCOL_V1: &str = "earshot.v1";
/// The prefix of the subprotocol that carries a credential: `bearer.<KEY_OR_TOKEN>`.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";
/// The query parameter that carries a credential (the least safe way: URLs get logged).
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Where a request's credential came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer …` or `Authorization: Token …`.
    Header,
    /// `Sec-WebSocket-Protocol: earshot.v1, bearer.…`.
    Subprotocol,
    /// `?access_token=…`.
    Query,
}

/// The credential a request carries, looked for in the `Authorization` header, then the
/// WebSocket subprotocols, then the query; `None` when it carries none. A header with another
/// scheme, or an empty credential, counts as none.
pub fn presented_credential(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<(String, CredentialSource)> {
    let from_header = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (scheme, credential) = value.trim().split_once(' ')?;
            let known =
                scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
            known.then(|| credential.trim().to_owned())
        })
        .filter(|credential| !credential.is_empty());
    if let Some(credential) = from_header {
        return Some((credential, CredentialSource::Header));
    }
    let from_subprotocol = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        .filter(|credential| !credential.is_empty());
    if let Some(credential) = from_subprotocol {
        return Some((credential.to_owned(), CredentialSource::Subprotocol));
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, value)| name == ACCESS_TOKEN_PARAM && !value.is_empty())
        .map(|(_, value)| (value.into_owned(), CredentialSource::Query))
}

/// The stored key `presented` is, if any. The store is searched by the key's hash, and the hash
/// found is compared again in constant time, so that no timing tells how much of a guess matched.
pub async fn find_key(
    store: &dyn TranscriptStore,
    presented: &str,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    if !presented.starts_with(KEY_PREFIX) {
        return Ok(None);
    }
    let hash = hash_key(presented);
    let found = store.find_key(&hash).await?;
    Ok(found.filter(|key| bool::from(key.key_hash.as_bytes().ct_eq(hash.as_bytes()))))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(axum::http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn credentials_come_from_the_header_the_subprotocols_or_the_query() {
        let cases = [
            (
                headers(&[(AUTHORIZATION, "Bearer es_abc")]),
                None,
                Some(("es_abc", CredentialSource::Header)),
            ),
            (
                headers(&[(AUTHORIZATION, "token es_abc")]),
                None,
                Some(("es_abc", CredentialSource::Header)),
            ),
            (
                headers(&[(AUTHORIZATION, "Basic dXNlcjpwdw==")]),
                None,
                None,
            ),
            (headers(&[(AUTHORIZATION, "Bearer ")]), None, None),
            (
                headers(&[(SEC_WEBSOCKET_PROTOCOL, "earshot.v1, bearer.es_xyz")]),
                None,
                Some(("es_xyz", CredentialSource::Subprotocol)),
            ),
            (
                headers(&[(SEC_WEBSOCKET_PROTOCOL, "earshot.v1")]),
                None,
                None,
            ),
            (
                HeaderMap::new(),
                Some("sample_rate=16000&access_token=es_q%2Bz"),
                Some(("es_q+z", CredentialSource::Query)),
            ),
            (HeaderMap::new(), Some("access_token="), None),
            (HeaderMap::new(), None, None),
            // The header wins over the others.
            (
                headers(&[
                    (AUTHORIZATION, "Bearer es_h"),
                    (SEC_WEBSOCKET_PROTOCOL, "bearer.es_s"),
                ]),
                Some("access_token=es_q"),
                Some(("es_h", CredentialSource::Header)),
            ),
        ];
        for (headers, query, expected) in cases {
            let found = presented_credential(&headers, query);
            assert_eq!(
                found
                    .as_ref()
                    .map(|(credential, source)| (credential.as_str(), *source)),
                expected,
                "{headers:?} {query:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_key_is_found_by_its_hash_and_nothing_else() {
        let store = earshot_store::SqliteStore::open_in_memory().await.unwrap();
        let made = new_key("laptop", &[], None, 1).unwrap();
        store.create_key(&made.record).await.unwrap();
        let found = find_key(&store, &made.key).await.unwrap().unwrap();
        assert_eq!(found.name, "laptop");
        let mut near = made.key.clone();
        near.pop();
        assert!(find_key(&store, &near).await.unwrap().is_none());
        // The hash itself is no key.
        assert!(
            find_key(&store, &made.record.key_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(find_key(&store, "").await.unwrap().is_none());
    }

    #[test]
    fn a_key_is_prefixed_random_and_stored_only_as_its_hash() {
        let first = new_key("laptop", &[], None, 7).unwrap();
        let second = new_key("laptop", &[], None, 7).unwrap();
        assert!(first.key.starts_with(KEY_PREFIX), "{}", first.key);
        assert_eq!(first.key.len(), KEY_PREFIX.len() + 43);
        assert!(
            first.key[KEY_PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(first.key, second.key);
        assert_eq!(first.record.key_hash, hash_key(&first.key));
        assert!(
            !first
                .record
                .key_hash
                .contains(&first.key[KEY_PREFIX.len()..])
        );
        assert_eq!(first.record.name, "laptop");
        assert_eq!(first.record.scopes, ["stream", "read"]);
        assert_eq!(first.record.created_at_ms, 7);
        assert_eq!(first.record.last_used_ms, None);
    }

    #[test]
    fn the_hash_is_hex_sha256() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn scopes_are_parsed_by_name_deduplicated_and_ordered() {
        assert_eq!("admin".parse(), Ok(Scope::Admin));
        assert_eq!(
            "Admin".parse::<Scope>(),
            Err(KeyError::UnknownScope("Admin".into()))
        );
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse(), Ok(scope));
        }
        let key = new_key(
            "ops",
            &[Scope::Admin, Scope::Read, Scope::Admin],
            Some(2),
            0,
        )
        .unwrap();
        assert_eq!(key.record.scopes, ["read", "admin"]);
        assert_eq!(key.record.max_sessions, Some(2));
    }

    #[test]
    fn names_and_limits_are_checked() {
        for name in ["", "a b", "naïve", "x\n", &"n".repeat(MAX_KEY_NAME_LEN + 1)] {
            assert_eq!(
                new_key(name, &[], None, 0).err(),
                Some(KeyError::BadName),
                "{name:?}"
            );
        }
        assert!(new_key(&"n".repeat(MAX_KEY_NAME_LEN), &[], None, 0).is_ok());
        assert!(new_key("ci-runner_2.eu", &[], None, 0).is_ok());
        assert_eq!(
            new_key("x", &[], Some(0), 0).err(),
            Some(KeyError::ZeroSessions)
        );
    }
}
