//! Who may do what: API keys, their scopes, and how a key is made and recognised.
//!
//! A key is `es_` and 43 characters of URL-safe base64 (256 random bits from the operating
//! system). The store keeps only its SHA-256: keys are random, so a fast hash is as strong as a
//! slow one, and a leaked table gives nobody a key.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use earshot_store::ApiKeyRecord;
use sha2::{Digest, Sha256};

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

#[cfg(test)]
mod tests {
    use super::*;

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
