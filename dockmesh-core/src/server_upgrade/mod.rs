//! The server's self-upgrade, sans-IO: the driver (`dockmesh upgrade apply`) runs binaries and
//! moves files; this module decides.
//!
//! - [`judgement`]: the target, the version rule and plan as preflight rows, the verdict, the
//!   plan of a new run, `--max-backup-age` and releases files.
//! - [`machine`]: one hop `FROM → TO` through `backed_up → swapped → migrated → checked →
//!   done` ([`HopState`]), what to undo when it fails ([`Undo`]), and what a run does with the
//!   record it finds ([`resume`]).
//! - [`record`]: `upgrade-run.json` ([`RunRecord`]), written before the next stage starts.
//!
//! ```
//! use dockmesh_core::server_upgrade::{HopCommand, HopState, Paths, RunRecord};
//! use dockmesh_core::version::{Hop, Version};
//! use std::path::Path;
//!
//! let v = |s| Version::parse(s).unwrap();
//! let run = RunRecord::new(&v("0.2.0"), "dtr", Path::new("/bin/dockmesh"),
//!     &[Hop { from: v("0.1.0"), to: v("0.2.0") }]);
//! let paths = Paths { binary: Path::new("/bin/dockmesh"), backups: Path::new("/data/backups") };
//! let hop = HopState::from_record(&run.hops[0]).unwrap();
//! let Some(HopCommand::Backup { expect, bundle }) = hop.next(paths) else { panic!() };
//! assert_eq!(expect, "0.1.0");
//! assert_eq!(bundle, Path::new("/data/backups/pre-upgrade-0.2.0.tar.zst"));
//! ```

pub mod judgement;
pub mod machine;
pub mod record;
#[cfg(test)]
mod tests;

pub use judgement::{
    AgeError, ReleasesError, RunPlanError, Target, TargetError, age_words, backup_age, parse_age,
    parse_releases, passed, plan_check, row, run_plan, version_rule_check,
};
pub use machine::{
    BackedUp, DamagedHop, Ends, Failed, Failing, HopCommand, HopState, Installed, Paths, Pending,
    Resume, ResumeError, TransitionError, Undo, resume,
};
pub use record::{HopRecord, RunRecord, RunResult, Stage, bundle_path, previous_path};
