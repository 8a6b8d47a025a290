//! The agent's self-upgrade, sans-IO: the driver (in `dockmesh-http`'s agent) downloads, runs
//! and swaps; this module decides.
//!
//! - [`order`]: the checks an order passes before anything is downloaded (its shape, the
//!   downgrade rule, the release-key pinning rule).
//! - [`download`]: the resumed download: the next request, what an answer means, when to stop.
//! - [`machine`]: the swap on [`Trial`] until the server reads the new binary's `hello`
//!   ([`Confirmed`]), or [`Reverted`] with the reason; what a starting agent does with a trial
//!   ([`Startup`]); the watchdog's verdict ([`Watchdog::observe`]). The state is persisted as
//!   `upgrade.json` ([`Record`]).
//!
//! ```
//! use dockmesh_core::agent_upgrade::{Startup, Trial, Watch, Watchdog};
//! use jiff::Timestamp;
//! use std::time::Duration;
//!
//! let now = Timestamp::from_second(1_000).unwrap();
//! let trial = Trial::begin("1.1.0", "1.0.0", "/bin/dockmesh".into(),
//!     "/bin/dockmesh.previous".into(), 42, vec!["dockmesh".into()], now,
//!     Duration::from_secs(60));
//! // The new binary starts: it has a minute to connect.
//! let Startup::OnTrial { trial, exit_after } = trial.at_startup("1.1.0", now) else { panic!() };
//! assert_eq!(exit_after, Duration::from_secs(60));
//! // The watchdog waits while it runs.
//! assert!(matches!(Watchdog::default().observe(&trial, true, now), Watch::Wait(_)));
//! ```

pub mod download;
pub mod machine;
pub mod order;
#[cfg(test)]
mod tests;

pub use download::{ATTEMPTS, Answer, BACKOFF, Download, DownloadError, Next};
pub use machine::{
    Confirmed, GONE_CHECKS, HUNG_GRACE, Record, RevertReason, Reverted, Stage, Startup, Swap,
    Trial, UpgradeState, WATCH_EVERY, Watch, Watchdog,
};
pub use order::{
    Direction, KeyRefusal, MAX_BINARY, OrderError, check_not_older, check_offered_key, check_order,
};
