//! Users, their passwords, and per-destination authorization.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;

use crate::config::{AuthorizationEntry, UserConfig};
use crate::router::Destination;

/// A user's password: an argon2 hash, or the password itself (from an
/// environment variable or a file). Never printed.
#[derive(Clone)]
pub struct Secret(SecretKind);

#[derive(Clone)]
enum SecretKind {
    Hash(String),
    Plain(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl Secret {
    /// An argon2 PHC string, as `hash-password` prints.
    pub fn hash(phc: &str) -> Result<Self, String> {
        PasswordHash::new(phc).map_err(|e| format!("invalid password_hash: {e}"))?;
        Ok(Self(SecretKind::Hash(phc.to_owned())))
    }

    pub fn plain(password: String) -> Self {
        Self(SecretKind::Plain(password))
    }

    /// The password itself, for a network connector to log in with
    /// (`None` for a hash, which cannot be reversed).
    pub fn reveal(&self) -> String {
        match &self.0 {
            SecretKind::Plain(p) => p.clone(),
            SecretKind::Hash(_) => String::new(),
        }
    }

    fn is_hash(&self) -> bool {
        matches!(self.0, SecretKind::Hash(_))
    }

    pub fn verify(&self, password: &str) -> bool {
        self.verify_with(password, &mut Vec::new())
    }

    /// [`Self::verify`] with argon2's working memory in `memory`, kept by
    /// the caller from one check to the next: a thread that checks
    /// passwords all day holds one block of it, not a new one per check.
    pub fn verify_with(&self, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
        match &self.0 {
            SecretKind::Hash(phc) => verify_phc(phc, password, memory).unwrap_or(false),
            SecretKind::Plain(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
        }
    }
}

/// Checks `password` against an argon2 PHC string; `None` if the string is
/// not one argon2 can check.
fn verify_phc(phc: &str, password: &str, memory: &mut Vec<argon2::Block>) -> Option<bool> {
    let hash = PasswordHash::new(phc).ok()?;
    let (salt, expected) = (hash.salt?, hash.hash?);
    let algorithm = argon2::Algorithm::try_from(hash.algorithm).ok()?;
    let version = match hash.version {
        Some(v) => argon2::Version::try_from(v).ok()?,
        None => argon2::Version::default(),
    };
    let params = argon2::Params::try_from(&hash).ok()?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).ok()?;
    memory.resize(params.block_count(), argon2::Block::default());
    let mut computed = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut computed, &mut memory[..])
        .ok()?;
    Some(constant_time_eq(&computed, expected.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hashes a password for `password_hash` (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Who may connect and what they may do.
#[derive(Debug, Clone)]
pub struct Auth {
    users: Vec<UserConfig>,
    entries: Vec<AuthorizationEntry>,
    /// What an unknown user's password is checked against, so that a
    /// wrong user name costs as long as a wrong password.
    dummy: Secret,
}

/// An argon2id hash with the default parameters, of a password nobody uses.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$WnMmrqFLgJKvkeL01ZlVyw$pw/orvmS2IfvK0Tf+29T6FV+DfVKPRT7mKvcZZ3YGic";

/// A connected client's identity.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub groups: Vec<String>,
    /// May open a network bridge (`bridge = true` on the user, or a broker
    /// with no users at all).
    pub bridge: bool,
}

impl Principal {
    /// Nobody in particular: what a broker with no users calls a client.
    pub fn anonymous(login: Option<&str>) -> Self {
        Self {
            user: login.unwrap_or("anonymous").to_owned(),
            groups: Vec::new(),
            bridge: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
    Admin,
}

impl Auth {
    pub fn new(users: Vec<UserConfig>, entries: Vec<AuthorizationEntry>) -> Self {
        let dummy = if users.iter().any(|u| u.secret.is_hash()) {
            Secret::hash(DUMMY_HASH).expect("the dummy hash is a valid PHC string")
        } else {
            Secret::plain("\u{0}no user has this password\u{0}".into())
        };
        Self {
            users,
            entries,
            dummy,
        }
    }

    /// Whether any user is configured (otherwise anyone may connect).
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// With no users configured, anyone may connect (as "anonymous").
    pub fn authenticate(&self, login: Option<&str>, passcode: Option<&str>) -> Option<Principal> {
        self.authenticate_with(login, passcode, &mut Vec::new())
    }

    /// [`Self::authenticate`] with argon2's working memory kept by the
    /// caller (see [`Secret::verify_with`]).
    pub fn authenticate_with(
        &self,
        login: Option<&str>,
        passcode: Option<&str>,
        memory: &mut Vec<argon2::Block>,
    ) -> Option<Principal> {
        if self.users.is_empty() {
            return Some(Principal::anonymous(login));
        }
        let passcode = passcode.unwrap_or_default();
        let Some(user) = self.users.iter().find(|u| Some(u.name.as_str()) == login) else {
            // As slow as a known user's check: user names cannot be told apart.
            let _ = self.dummy.verify_with(passcode, memory);
            return None;
        };
        user.secret
            .verify_with(passcode, memory)
            .then(|| Principal {
                user: user.name.clone(),
                groups: user.groups.clone(),
                bridge: user.bridge,
            })
    }

    /// With no authorization entries, every user may do everything;
    /// otherwise an entry matching the destination must grant the operation
    /// to one of the user's groups (or to the user by name).
    pub fn allows(&self, who: &Principal, op: Operation, destination: &Destination) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        self.entries
            .iter()
            .filter(|e| e.destination.matches(destination))
            .any(|e| {
                let granted = match op {
                    Operation::Read => &e.read,
                    Operation::Write => &e.write,
                    Operation::Admin => &e.admin,
                };
                granted
                    .iter()
                    .any(|g| g == "*" || g == &who.user || who.groups.contains(g))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Filter;

    #[test]
    fn hashed_and_plain_passwords_verify() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let secret = Secret::hash(&hash).unwrap();
        assert!(secret.verify("s3cret") && !secret.verify("wrong"));
        assert!(Secret::plain("p".into()).verify("p"));
        assert!(!Secret::plain("p".into()).verify("q"));
        assert_eq!(format!("{secret:?}"), "Secret(****)");
        assert!(Secret::hash("not a hash").is_err());
    }

    #[test]
    fn authorization_follows_matching_entries() {
        let users = vec![UserConfig {
            name: "app".into(),
            secret: Secret::plain("pw".into()),
            groups: vec!["apps".into()],
            bridge: false,
        }];
        let entries = vec![
            AuthorizationEntry {
                destination: Filter::parse("queue://ORDERS.>").unwrap(),
                read: vec!["apps".into()],
                write: vec!["apps".into()],
                admin: vec![],
            },
            AuthorizationEntry {
                destination: Filter::parse("topic://>").unwrap(),
                read: vec!["*".into()],
                write: vec![],
                admin: vec![],
            },
        ];
        let auth = Auth::new(users, entries);
        assert!(auth.authenticate(Some("app"), Some("bad")).is_none());
        let who = auth.authenticate(Some("app"), Some("pw")).unwrap();
        let d = |s: &str| Destination::parse(s).unwrap();
        assert!(auth.allows(&who, Operation::Write, &d("/queue/ORDERS.new")));
        assert!(!auth.allows(&who, Operation::Write, &d("/queue/OTHER")));
        assert!(auth.allows(&who, Operation::Read, &d("/topic/news")));
        assert!(!auth.allows(&who, Operation::Write, &d("/topic/news")));
    }
}
