//! Accounts on Redis, shared by every server on it.
//!
//! Keys written together (a user with its email claim, an owner with the owned set)
//! share the `{acct}` hash tag, so on Redis Cluster they live in one slot and every
//! script and transaction names only keys of that slot. Sessions and throttles stand
//! alone and spread over the cluster.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `turbo:{acct}:user:<id>` | string | the user, as JSON |
//! | `turbo:{acct}:useremail:<email>` | string | the user id (one account per email; created with the user in one script) |
//! | `turbo:{acct}:users` | set | every user id |
//! | `turbo:{acct}:owner:<key\|node\|invoice>:<id>` | string | the owning user id |
//! | `turbo:{acct}:owned:<user>:<key\|node\|invoice>` | set | what the user owns |
//! | `turbo:websession:{sha256 hex}` | string | the session (JSON), expiring after [`SESSION_TTL_SECS`] of disuse |
//! | `turbo:throttle:{subject}` | string | attempts (`login:{email}` failed sign-ins, `signup:{ip}` sign-ups), expiring [`LOGIN_WINDOW_SECS`] after the first |

use crate::store::redis::events::Conn;
use redis::AsyncCommands;

use super::{
    normalise_email, AccountError, AccountFuture, AccountStore, Owned, Role, User, WebSession,
    LOGIN_WINDOW_SECS, SESSION_TTL_SECS,
};

/// Creates a user atomically: claims the email (unless it is claimed), writes the user
/// and lists it. KEYS (one slot): email claim, user, user set; ARGV: id, user JSON.
/// Returns 0 when the email is taken.
const CREATE_USER_LUA: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
";

/// Every user id.
const USERS: &str = "turbo:{acct}:users";

/// Accounts on Redis.
#[derive(Clone)]
pub struct RedisAccounts {
    conn: Conn,
}

fn unavailable(e: impl std::fmt::Display) -> AccountError {
    AccountError::Unavailable(e.to_string())
}

impl RedisAccounts {
    /// Connects to `url`.
    ///
    /// # Errors
    /// [`AccountError::Unavailable`].
    pub async fn connect(url: &str) -> Result<RedisAccounts, AccountError> {
        let (_, conn) = crate::store::redis::events::manager(url)
            .await
            .map_err(unavailable)?;
        Ok(RedisAccounts { conn })
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, AccountError> {
    serde_json::from_str(text).map_err(|e| unavailable(format!("malformed account record: {e}")))
}

impl AccountStore for RedisAccounts {
    fn create_user<'a>(
        &'a self,
        email: &'a str,
        role: Role,
        hash: String,
    ) -> AccountFuture<'a, User> {
        Box::pin(async move {
            let email = normalise_email(email)?;
            let user = User::new(email, role, hash);
            let json = serde_json::to_string(&user).map_err(unavailable)?;
            let created: i32 = redis::Script::new(CREATE_USER_LUA)
                .key(format!("turbo:{{acct}}:useremail:{}", user.email))
                .key(format!("turbo:{{acct}}:user:{}", user.id))
                .key(USERS)
                .arg(&user.id)
                .arg(json)
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if created == 0 {
                return Err(AccountError::EmailTaken);
            }
            Ok(user)
        })
    }

    fn user<'a>(&'a self, id: &'a str) -> AccountFuture<'a, User> {
        Box::pin(async move {
            let text: Option<String> = self
                .conn()
                .get(format!("turbo:{{acct}}:user:{id}"))
                .await
                .map_err(unavailable)?;
            parse(&text.ok_or(AccountError::NoUser)?)
        })
    }

    fn user_by_email<'a>(&'a self, email: &'a str) -> AccountFuture<'a, Option<User>> {
        Box::pin(async move {
            let Ok(email) = normalise_email(email) else {
                return Ok(None);
            };
            let id: Option<String> = self
                .conn()
                .get(format!("turbo:{{acct}}:useremail:{email}"))
                .await
                .map_err(unavailable)?;
            match id {
                Some(id) => match self.user(&id).await {
                    Ok(u) => Ok(Some(u)),
                    // A claim whose user is gone (written by hand or by an old version).
                    Err(AccountError::NoUser) => Ok(None),
                    Err(e) => Err(e),
                },
                None => Ok(None),
            }
        })
    }

    fn list_users(&self) -> AccountFuture<'_, Vec<User>> {
        Box::pin(async move {
            let mut c = self.conn();
            let ids: Vec<String> = c.smembers(USERS).await.map_err(unavailable)?;
            let mut users = Vec::with_capacity(ids.len());
            for id in ids {
                match self.user(&id).await {
                    Ok(u) => users.push(u),
                    Err(AccountError::NoUser) => {}
                    Err(e) => return Err(e),
                }
            }
            users.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
            Ok(users)
        })
    }

    fn grant<'a>(&'a self, user_id: &'a str, what: Owned, id: &'a str) -> AccountFuture<'a, ()> {
        Box::pin(async move {
            self.user(user_id).await?;
            let kind = what.as_str();
            redis::pipe()
                .atomic()
                .set(format!("turbo:{{acct}}:owner:{kind}:{id}"), user_id)
                .sadd(format!("turbo:{{acct}}:owned:{user_id}:{kind}"), id)
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)
        })
    }

    fn owned<'a>(&'a self, user_id: &'a str, what: Owned) -> AccountFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut ids: Vec<String> = self
                .conn()
                .smembers(format!("turbo:{{acct}}:owned:{user_id}:{}", what.as_str()))
                .await
                .map_err(unavailable)?;
            ids.sort();
            Ok(ids)
        })
    }

    fn owner_of<'a>(&'a self, what: Owned, id: &'a str) -> AccountFuture<'a, Option<String>> {
        Box::pin(async move {
            self.conn()
                .get(format!("turbo:{{acct}}:owner:{}:{id}", what.as_str()))
                .await
                .map_err(unavailable)
        })
    }

    fn put_session<'a>(
        &'a self,
        token_hash: &'a str,
        session: &'a WebSession,
    ) -> AccountFuture<'a, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(session).map_err(unavailable)?;
            self.conn()
                .set_ex(
                    format!("turbo:websession:{token_hash}"),
                    json,
                    SESSION_TTL_SECS,
                )
                .await
                .map_err(unavailable)
        })
    }

    fn session<'a>(&'a self, token_hash: &'a str) -> AccountFuture<'a, Option<WebSession>> {
        Box::pin(async move {
            let key = format!("turbo:websession:{token_hash}");
            let mut c = self.conn();
            let text: Option<String> = redis::cmd("GETEX")
                .arg(&key)
                .arg("EX")
                .arg(SESSION_TTL_SECS)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            text.map(|t| parse(&t)).transpose()
        })
    }

    fn drop_session<'a>(&'a self, token_hash: &'a str) -> AccountFuture<'a, ()> {
        Box::pin(async move {
            self.conn()
                .del(format!("turbo:websession:{token_hash}"))
                .await
                .map_err(unavailable)
        })
    }

    fn throttle_hit<'a>(&'a self, subject: &'a str) -> AccountFuture<'a, u32> {
        Box::pin(async move {
            let key = format!("turbo:throttle:{}", subject.to_ascii_lowercase());
            let (n, _): (u32, bool) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(LOGIN_WINDOW_SECS)
                .arg("NX")
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            Ok(n)
        })
    }

    fn throttle_count<'a>(&'a self, subject: &'a str) -> AccountFuture<'a, u32> {
        Box::pin(async move {
            let n: Option<u32> = self
                .conn()
                .get(format!("turbo:throttle:{}", subject.to_ascii_lowercase()))
                .await
                .map_err(unavailable)?;
            Ok(n.unwrap_or(0))
        })
    }
}
