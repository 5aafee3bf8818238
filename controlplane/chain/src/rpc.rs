//! The chain, as the gateway reads and writes it through alloy: the head, block
//! headers (number, hash, parent, time), the token's `Transfer` logs to a set of
//! addresses in one block, the token's decimals, and ERC-20 transfers signed by the
//! treasury key.

use alloy::eips::BlockNumberOrTag;
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolEvent};

sol! {
    /// ERC-20's transfer event.
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// ERC-20's decimals.
    function decimals() external view returns (uint8);
    /// ERC-20's transfer.
    function transfer(address to, uint256 value) external returns (bool);
    /// ERC-20's balance.
    function balanceOf(address owner) external view returns (uint256);
}

/// Most addresses one log query filters on.
const ADDRESSES_PER_QUERY: usize = 500;

/// A chain call that failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The RPC endpoint failed or answered with an error.
    #[error("chain RPC: {0}")]
    Transport(#[from] alloy::transports::TransportError),
    /// The endpoint's answer made no sense (a missing field, an undecodable value).
    #[error("chain RPC answered nonsense: {0}")]
    Malformed(String),
    /// The RPC URL is not http(s) or ws(s).
    #[error("chain_rpc {0:?} is not an http://, https://, ws:// or wss:// URL")]
    Url(String),
}

/// Whether `url` has a scheme [`Chain::connect`] takes.
pub fn is_rpc_url(url: &str) -> bool {
    ["http://", "https://", "ws://", "wss://"]
        .iter()
        .any(|s| url.starts_with(s))
}

/// A block header, as the follower keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its parent's hash.
    pub parent: B256,
    /// Its timestamp (Unix seconds).
    pub time: u64,
}

/// One token transfer, from a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLog {
    /// Its transaction.
    pub tx: B256,
    /// Its log index in the block.
    pub log_index: u64,
    /// The sender.
    pub from: Address,
    /// The receiver.
    pub to: Address,
    /// Token units.
    pub value: U256,
}

/// A connection to the chain, for one token.
#[derive(Clone)]
pub struct Chain {
    provider: DynProvider,
    token: Address,
}

impl Chain {
    /// Connects to `url` (http, https, ws or wss; a websocket reconnects by itself
    /// when it drops) for `token`; with `signer`, transactions are signed by it.
    ///
    /// # Errors
    /// [`RpcError`] when the URL is unusable or a websocket cannot be opened.
    pub async fn connect(
        url: &str,
        token: Address,
        signer: Option<PrivateKeySigner>,
    ) -> Result<Chain, RpcError> {
        if !is_rpc_url(url) {
            return Err(RpcError::Url(url.into()));
        }
        let builder = ProviderBuilder::new();
        let provider = match signer {
            Some(s) => builder
                .wallet(EthereumWallet::from(s))
                .connect(url)
                .await?
                .erased(),
            None => builder.connect(url).await?.erased(),
        };
        Ok(Chain { provider, token })
    }

    /// The token contract.
    pub fn token(&self) -> Address {
        self.token
    }

    /// The provider, for calls this module has no helper for.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The chain's id.
    ///
    /// # Errors
    /// [`RpcError`].
    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        Ok(self.provider.get_chain_id().await?)
    }

    /// Calls the token's view function `call`.
    async fn view<C: SolCall>(&self, call: C) -> Result<C::Return, RpcError> {
        let tx = TransactionRequest::default()
            .with_to(self.token)
            .with_input(call.abi_encode());
        let out = self.provider.call(tx).await?;
        C::abi_decode_returns(&out)
            .map_err(|e| RpcError::Malformed(format!("{}: {e}", C::SIGNATURE)))
    }

    /// The token's decimals, read from the contract.
    ///
    /// # Errors
    /// [`RpcError`], [`RpcError::Malformed`] when the contract does not answer.
    pub async fn decimals(&self) -> Result<u8, RpcError> {
        self.view(decimalsCall {}).await
    }

    /// `owner`'s token balance.
    ///
    /// # Errors
    /// [`RpcError`].
    pub async fn balance_of(&self, owner: Address) -> Result<U256, RpcError> {
        self.view(balanceOfCall { owner }).await
    }

    /// The latest block number.
    ///
    /// # Errors
    /// [`RpcError`].
    pub async fn head(&self) -> Result<u64, RpcError> {
        Ok(self.provider.get_block_number().await?)
    }

    /// Block `number`'s header, or `None` past the head.
    ///
    /// # Errors
    /// [`RpcError`].
    pub async fn block(&self, number: u64) -> Result<Option<BlockRef>, RpcError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await?;
        Ok(block.map(|b| BlockRef {
            number: b.header.number,
            hash: b.header.hash,
            parent: b.header.parent_hash,
            time: b.header.timestamp,
        }))
    }

    /// The token's transfers to any of `to` in the block with hash `block`.
    ///
    /// # Errors
    /// [`RpcError`], [`RpcError::Malformed`] for a log without its position.
    pub async fn transfers_to(
        &self,
        block: B256,
        to: &[Address],
    ) -> Result<Vec<TransferLog>, RpcError> {
        let mut found = Vec::new();
        for batch in to.chunks(ADDRESSES_PER_QUERY) {
            let topics: Vec<B256> = batch.iter().map(|a| a.into_word()).collect();
            let filter = Filter::new()
                .at_block_hash(block)
                .address(self.token)
                .event_signature(Transfer::SIGNATURE_HASH)
                .topic2(topics);
            for log in self.provider.get_logs(&filter).await? {
                let (Some(tx), Some(log_index)) = (log.transaction_hash, log.log_index) else {
                    return Err(RpcError::Malformed("a log without its position".into()));
                };
                let event = log
                    .log_decode::<Transfer>()
                    .map_err(|e| RpcError::Malformed(format!("Transfer log: {e}")))?;
                let t = event.inner.data;
                found.push(TransferLog {
                    tx,
                    log_index,
                    from: t.from,
                    to: t.to,
                    value: t.value,
                });
            }
        }
        found.sort_by_key(|t| t.log_index);
        Ok(found)
    }

    /// The calldata of an ERC-20 transfer of `value` units to `to`.
    pub fn transfer_call(to: Address, value: U256) -> Vec<u8> {
        transferCall { to, value }.abi_encode()
    }
}
