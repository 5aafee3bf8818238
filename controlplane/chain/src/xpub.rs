//! Deposit addresses from an extended public key (BIP-32). Invoice `i` is paid to the
//! address of child `0/i` below the operator's account-level `xpub` (what a wallet
//! derives at `m/44'/60'/0'/0/i` from the matching seed), so the server never holds a
//! deposit private key: the operator's wallet, which does, sweeps them.

use alloy::primitives::{keccak256, Address};
use bip32::{ChildNumber, XPub};

/// Why an extended public key is refused.
#[derive(Debug, thiserror::Error)]
pub enum XpubError {
    /// Not a valid BIP-32 extended public key (`xpub…`).
    #[error("deposit_xpub is not a BIP-32 extended public key: {0}")]
    Parse(bip32::Error),
    /// An extended *private* key (or another non-public prefix): the server must never
    /// hold one.
    #[error("deposit_xpub must be an extended public key (xpub… or tpub…), not {0}…")]
    NotPublic(String),
    /// Public derivation failed (with odds of about 2⁻¹²⁷ per index).
    #[error("cannot derive deposit address {index}: {source}")]
    Derive {
        /// The child index.
        index: u32,
        /// bip32's reason.
        source: bip32::Error,
    },
    /// Past the last non-hardened child index.
    #[error("deposit address index {0} is out of range")]
    Index(u32),
}

/// The operator's deposit keys: the external chain (`…/0`) below an account `xpub`.
#[derive(Clone)]
pub struct DepositKeys {
    external: XPub,
}

impl std::fmt::Debug for DepositKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DepositKeys(xpub)")
    }
}

impl DepositKeys {
    /// Parses an account-level `xpub…`.
    ///
    /// # Errors
    /// [`XpubError::NotPublic`], [`XpubError::Parse`] or, vanishingly rarely,
    /// [`XpubError::Derive`].
    pub fn parse(xpub: &str) -> Result<Self, XpubError> {
        let xpub = xpub.trim();
        if !xpub.starts_with("xpub") && !xpub.starts_with("tpub") {
            return Err(XpubError::NotPublic(xpub.chars().take(4).collect()));
        }
        let account: XPub = xpub.parse().map_err(XpubError::Parse)?;
        let external = account
            .derive_child(child(0)?)
            .map_err(|source| XpubError::Derive { index: 0, source })?;
        Ok(DepositKeys { external })
    }

    /// The deposit address with index `index`.
    ///
    /// # Errors
    /// [`XpubError::Index`] past 2³¹ − 1, or [`XpubError::Derive`].
    pub fn address(&self, index: u32) -> Result<Address, XpubError> {
        let key = self
            .external
            .derive_child(child(index)?)
            .map_err(|source| XpubError::Derive { index, source })?;
        let point = key.public_key().to_sec1_point(false);
        // An Ethereum address: the last 20 bytes of keccak(x ‖ y).
        let digest = keccak256(&point.as_bytes()[1..]);
        Ok(Address::from_slice(&digest[12..]))
    }
}

fn child(index: u32) -> Result<ChildNumber, XpubError> {
    ChildNumber::new(index, false).map_err(|_| XpubError::Index(index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;
    use bip32::{Prefix, XPrv};

    /// The address a wallet holding the seed gets for `m/44'/60'/0'/0/i`, computed
    /// from the private key by alloy's signer (an independent derivation).
    fn wallet_address(account: &XPrv, i: u32) -> Address {
        let key = account
            .derive_child(ChildNumber::new(0, false).expect("child"))
            .and_then(|k| k.derive_child(ChildNumber::new(i, false).expect("child")))
            .expect("derive");
        let secret = key.private_key().to_bytes();
        PrivateKeySigner::from_slice(&secret)
            .expect("key")
            .address()
    }

    #[test]
    fn public_derivation_matches_the_wallet_that_holds_the_seed() {
        let seed = [7u8; 64];
        let path = "m/44'/60'/0'".parse().expect("path");
        let account = XPrv::derive_from_path(&seed, &path).expect("account key");
        let xpub = account.public_key().to_string(Prefix::XPUB);
        assert!(xpub.starts_with("xpub"));
        let keys = DepositKeys::parse(&xpub).expect("parse");
        for i in [0, 1, 2, 1000] {
            assert_eq!(
                keys.address(i).expect("address"),
                wallet_address(&account, i)
            );
        }
        assert_ne!(keys.address(0).ok(), keys.address(1).ok());
    }

    #[test]
    fn refuses_what_is_not_an_xpub() {
        let xprv = XPrv::new(&[3u8; 32]).expect("key").to_string(Prefix::XPRV);
        assert!(matches!(
            DepositKeys::parse(&xprv),
            Err(XpubError::NotPublic(_))
        ));
        for bad in ["", "xpub", "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi", "not a key"] {
            assert!(DepositKeys::parse(bad).is_err(), "{bad}");
        }
        let keys = DepositKeys::parse(
            &XPrv::new(&[1u8; 32])
                .expect("key")
                .public_key()
                .to_string(Prefix::XPUB),
        )
        .expect("parse");
        assert!(matches!(keys.address(1 << 31), Err(XpubError::Index(_))));
    }
}
