//! The checks an upgrade order passes before anything is downloaded: its shape, the
//! downgrade rule, and the release-key pinning rule.

use crate::rollout::UpgradeOrder;
use crate::version::{ParseVersionError, Version};
use std::path::PathBuf;

/// The largest binary an order may name (1 GiB).
pub const MAX_BINARY: u64 = 1 << 30;

/// Why an order was refused. Nothing was downloaded or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The version is empty, too long or not printable.
    #[error("the order's version {0:?} is not a version")]
    BadVersionText(String),
    /// The SHA-256 is not 64 hex digits.
    #[error("the order's SHA-256 {0:?} is not 64 hex digits")]
    BadSha256(String),
    /// The size is 0 or over [`MAX_BINARY`].
    #[error("the order's size {0} is not between 1 byte and {MAX_BINARY} bytes")]
    BadSize(u64),
    /// There is no signature.
    #[error("the order carries no release signature: refused")]
    Unsigned,
    /// The order's version does not parse.
    #[error("the order's version {version:?} is not a version: {reason}")]
    OrderVersion {
        /// The version as the order says it.
        version: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The running version does not parse.
    #[error("the running version {running:?} is not a version: {reason}")]
    RunningVersion {
        /// The running version.
        running: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The order is older than the running version and the policy does not allow downgrades.
    #[error(
        "the order is for dockmesh {version}, older than the running {running}: downgrades are \
         refused and nothing was downloaded; install an older binary by hand if it is meant"
    )]
    Downgrade {
        /// The order's version.
        version: String,
        /// The running version.
        running: String,
    },
}

/// The order's shape: a printable version of at most 64 characters, a 64-hex-digit SHA-256, a
/// size between 1 byte and [`MAX_BINARY`], and a signature.
pub fn check_order(order: &UpgradeOrder) -> Result<(), OrderError> {
    let v = &order.version;
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(OrderError::BadVersionText(v.clone()));
    }
    if order.sha256.len() != 64 || !order.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(OrderError::BadSha256(order.sha256.clone()));
    }
    if order.size == 0 || order.size > MAX_BINARY {
        return Err(OrderError::BadSize(order.size));
    }
    if order.signature.is_none() {
        return Err(OrderError::Unsigned);
    }
    Ok(())
}

/// What the downgrade rule says of an order that passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The same version or a newer one.
    Forward,
    /// An older version, which the policy allows.
    AllowedDowngrade,
}

/// An order for a version older than the running one is refused unless `allowed` (the
/// policy's `allow_downgrade`): a correctly signed old release is still a downgrade (it may
/// bring back what a newer one fixed).
pub fn check_not_older(
    version: &str,
    running: &str,
    allowed: bool,
) -> Result<Direction, OrderError> {
    let order =
        Version::parse(version).map_err(|e: ParseVersionError| OrderError::OrderVersion {
            version: version.to_owned(),
            reason: e.to_string(),
        })?;
    let running_v =
        Version::parse(running).map_err(|e: ParseVersionError| OrderError::RunningVersion {
            running: running.to_owned(),
            reason: e.to_string(),
        })?;
    match (order < running_v, allowed) {
        (false, _) => Ok(Direction::Forward),
        (true, true) => Ok(Direction::AllowedDowngrade),
        (true, false) => Err(OrderError::Downgrade {
            version: version.to_owned(),
            running: running.to_owned(),
        }),
    }
}

/// Why a release key offered by the server was not taken: upgrades signed with it are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRefusal {
    /// The agent pinned no key at enrollment and takes none later.
    #[error(
        "this agent pinned no release key at enrollment (its server had none) and does not take \
         one offered later: upgrades are refused; to trust the key {offered}, copy the server's \
         release public key to {} on this host", pinned_file.display()
    )]
    NonePinned {
        /// The offered key's fingerprint.
        offered: String,
        /// Where the pinned key is kept.
        pinned_file: PathBuf,
    },
    /// The agent pinned another key.
    #[error(
        "this agent pinned the release key {pinned} and the server offers {offered}: upgrades \
         signed with the new key are refused; to trust it, remove {} on this host",
        pinned_file.display()
    )]
    OtherPinned {
        /// The pinned key's fingerprint.
        pinned: String,
        /// The offered key's fingerprint.
        offered: String,
        /// Where the pinned key is kept.
        pinned_file: PathBuf,
    },
}

/// A key offered later is taken only when it is the one pinned (by fingerprint): a server that
/// had none at enrollment cannot pin one without the operator copying it in place.
pub fn check_offered_key(
    pinned: Option<&str>,
    offered: &str,
    pinned_file: PathBuf,
) -> Result<(), KeyRefusal> {
    match pinned {
        Some(p) if p == offered => Ok(()),
        Some(p) => Err(KeyRefusal::OtherPinned {
            pinned: p.to_owned(),
            offered: offered.to_owned(),
            pinned_file,
        }),
        None => Err(KeyRefusal::NonePinned {
            offered: offered.to_owned(),
            pinned_file,
        }),
    }
}
