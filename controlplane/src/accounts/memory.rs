//! Accounts in this process: users and ownership persisted to a JSON file (written to
//! a temporary file, then renamed; owner-only), sessions and sign-in failures in
//! memory (a restart signs everyone out and forgets failures).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    normalise_email, AccountError, AccountFuture, AccountStore, Owned, Role, User, WebSession,
    LOGIN_WINDOW_SECS, SESSION_TTL_SECS,
};

/// What the file keeps.
#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    users: BTreeMap<String, User>,
    /// (kind, id) → owner, as `"<kind> <id>"`.
    owners: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    saved: Persisted,
    sessions: HashMap<String, (WebSession, Instant)>,
    failures: HashMap<String, (u32, Instant)>,
}

/// The in-memory account store.
pub struct MemoryAccounts {
    state: Mutex<State>,
    path: Option<PathBuf>,
}

fn owner_key(what: Owned, id: &str) -> String {
    format!("{} {id}", what.as_str())
}

fn ttl(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

impl MemoryAccounts {
    /// Accounts kept in `path` (read now when it exists), or only in memory.
    ///
    /// # Errors
    /// [`AccountError::Unavailable`] when the file exists and cannot be read.
    pub fn open(path: Option<PathBuf>) -> Result<MemoryAccounts, AccountError> {
        let saved = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| AccountError::Unavailable(format!("{}: {e}", p.display())))?;
                serde_json::from_str(&text)
                    .map_err(|e| AccountError::Unavailable(format!("{}: {e}", p.display())))?
            }
            _ => Persisted::default(),
        };
        Ok(MemoryAccounts {
            state: Mutex::new(State {
                saved,
                ..State::default()
            }),
            path,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the persisted part (under the state lock, so writes never interleave).
    fn save(&self, saved: &Persisted) -> Result<(), AccountError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_vec_pretty(saved)
            .map_err(|e| AccountError::Unavailable(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        crate::tls::write_private(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| AccountError::Unavailable(format!("{}: {e}", path.display())))
    }
}

impl AccountStore for MemoryAccounts {
    fn create_user<'a>(
        &'a self,
        email: &'a str,
        role: Role,
        hash: String,
    ) -> AccountFuture<'a, User> {
        Box::pin(async move {
            let email = normalise_email(email)?;
            let mut st = self.lock();
            if st.saved.users.values().any(|u| u.email == email) {
                return Err(AccountError::EmailTaken);
            }
            let user = User::new(email, role, hash);
            st.saved.users.insert(user.id.clone(), user.clone());
            if let Err(e) = self.save(&st.saved) {
                st.saved.users.remove(&user.id);
                return Err(e);
            }
            Ok(user)
        })
    }

    fn user<'a>(&'a self, id: &'a str) -> AccountFuture<'a, User> {
        Box::pin(async move {
            self.lock()
                .saved
                .users
                .get(id)
                .cloned()
                .ok_or(AccountError::NoUser)
        })
    }

    fn user_by_email<'a>(&'a self, email: &'a str) -> AccountFuture<'a, Option<User>> {
        Box::pin(async move {
            let Ok(email) = normalise_email(email) else {
                return Ok(None);
            };
            Ok(self
                .lock()
                .saved
                .users
                .values()
                .find(|u| u.email == email)
                .cloned())
        })
    }

    fn list_users(&self) -> AccountFuture<'_, Vec<User>> {
        Box::pin(async move {
            let mut users: Vec<User> = self.lock().saved.users.values().cloned().collect();
            users.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
            Ok(users)
        })
    }

    fn grant<'a>(&'a self, user_id: &'a str, what: Owned, id: &'a str) -> AccountFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            if !st.saved.users.contains_key(user_id) {
                return Err(AccountError::NoUser);
            }
            let key = owner_key(what, id);
            let before = st.saved.owners.insert(key.clone(), user_id.to_owned());
            if let Err(e) = self.save(&st.saved) {
                match before {
                    Some(b) => st.saved.owners.insert(key, b),
                    None => st.saved.owners.remove(&key),
                };
                return Err(e);
            }
            Ok(())
        })
    }

    fn owned<'a>(&'a self, user_id: &'a str, what: Owned) -> AccountFuture<'a, Vec<String>> {
        Box::pin(async move {
            let prefix = format!("{} ", what.as_str());
            let st = self.lock();
            let ids: BTreeSet<String> = st
                .saved
                .owners
                .iter()
                .filter(|(k, owner)| owner.as_str() == user_id && k.starts_with(&prefix))
                .map(|(k, _)| k[prefix.len()..].to_owned())
                .collect();
            Ok(ids.into_iter().collect())
        })
    }

    fn owner_of<'a>(&'a self, what: Owned, id: &'a str) -> AccountFuture<'a, Option<String>> {
        Box::pin(async move { Ok(self.lock().saved.owners.get(&owner_key(what, id)).cloned()) })
    }

    fn put_session<'a>(
        &'a self,
        token_hash: &'a str,
        session: &'a WebSession,
    ) -> AccountFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            let now = Instant::now();
            st.sessions
                .retain(|_, (_, at)| now.duration_since(*at) < ttl(SESSION_TTL_SECS));
            st.sessions
                .insert(token_hash.to_owned(), (session.clone(), now));
            Ok(())
        })
    }

    fn session<'a>(&'a self, token_hash: &'a str) -> AccountFuture<'a, Option<WebSession>> {
        Box::pin(async move {
            let mut st = self.lock();
            let now = Instant::now();
            match st.sessions.get_mut(token_hash) {
                Some((s, at)) if now.duration_since(*at) < ttl(SESSION_TTL_SECS) => {
                    *at = now;
                    Ok(Some(s.clone()))
                }
                _ => Ok(None),
            }
        })
    }

    fn drop_session<'a>(&'a self, token_hash: &'a str) -> AccountFuture<'a, ()> {
        Box::pin(async move {
            self.lock().sessions.remove(token_hash);
            Ok(())
        })
    }

    fn throttle_hit<'a>(&'a self, subject: &'a str) -> AccountFuture<'a, u32> {
        Box::pin(async move {
            let mut st = self.lock();
            let now = Instant::now();
            let entry = st
                .failures
                .entry(subject.to_ascii_lowercase())
                .or_insert((0, now));
            if now.duration_since(entry.1) >= ttl(LOGIN_WINDOW_SECS) {
                *entry = (0, now);
            }
            entry.0 += 1;
            Ok(entry.0)
        })
    }

    fn throttle_count<'a>(&'a self, subject: &'a str) -> AccountFuture<'a, u32> {
        Box::pin(async move {
            let st = self.lock();
            Ok(match st.failures.get(&subject.to_ascii_lowercase()) {
                Some((n, at)) if at.elapsed() < ttl(LOGIN_WINDOW_SECS) => *n,
                _ => 0,
            })
        })
    }
}
