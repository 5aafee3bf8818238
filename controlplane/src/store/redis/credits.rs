//! Adding credits to a key: plainly (an operator's top-up) or once per operation (a
//! payment), each in one script so the balance check and the add are atomic.

use redis::Script;

use super::lua::{TOP_UP_LUA, TOP_UP_ONCE_LUA};
use super::{key_name, RedisStore};
use crate::store::{KeyRecord, Store, StoreError, MAX_BALANCE};

impl RedisStore {
    /// [`Store::add_credits`].
    pub(super) async fn top_up(&self, id: &str, bytes: u64) -> Result<KeyRecord, StoreError> {
        if bytes > MAX_BALANCE {
            return Err(StoreError::OverMaximum);
        }
        let now: i64 = Script::new(TOP_UP_LUA)
            .key(key_name(id))
            .arg(bytes)
            .arg(MAX_BALANCE)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match now {
            -1 => return Err(StoreError::NotFound(id.to_owned())),
            -2 => return Err(StoreError::OverMaximum),
            _ => {}
        }
        self.publish(&format!("credit {id}")).await?;
        self.key(id).await
    }

    /// [`Store::add_credits_once`].
    pub(super) async fn top_up_once(
        &self,
        id: &str,
        bytes: u64,
        op: &str,
    ) -> Result<bool, StoreError> {
        if bytes > MAX_BALANCE {
            return Err(StoreError::OverMaximum);
        }
        let now: i64 = Script::new(TOP_UP_ONCE_LUA)
            .key(key_name(id))
            .arg(bytes)
            .arg(MAX_BALANCE)
            .arg(format!("op:{op}"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        match now {
            -1 => Err(StoreError::NotFound(id.to_owned())),
            -2 => Err(StoreError::OverMaximum),
            -3 => Ok(false),
            _ => {
                self.publish(&format!("credit {id}")).await?;
                Ok(true)
            }
        }
    }
}
