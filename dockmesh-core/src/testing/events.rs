//! Migration events made up by number, for generated logs (timelines, pictures): any kind, at
//! any time, in any order, whether the machine would accept them or not.

use crate::migration::{MigrationEvent, Step};
use crate::preflight::PreflightReport;
use jiff::Timestamp;

/// How many kinds [`migration_event`] makes.
pub const MIGRATION_EVENT_KINDS: usize = 14;

/// An event of kind `kind` (modulo [`MIGRATION_EVENT_KINDS`]) at `at`, naming `volume` where
/// it names one: pre-flight passed, source stopped, transfer started, cut, verified, files
/// shipped, target started, healthy, committed, a transfer failed, the start failed, target
/// cleaned, source restarted, failed.
pub fn migration_event(kind: usize, at: Timestamp, volume: &str) -> MigrationEvent {
    use MigrationEvent as E;
    let volume = volume.to_owned();
    let failed = |step| E::StepFailed {
        at,
        step,
        reason: "it broke".into(),
        kind: None,
    };
    match kind % MIGRATION_EVENT_KINDS {
        0 => E::PreflightPassed {
            at,
            report: PreflightReport { checks: vec![] },
            volumes: vec![],
        },
        1 => E::SourceStopped { at },
        2 => E::VolumeTransferStarted { at, volume },
        3 => E::VolumeTransferInterrupted {
            at,
            volume,
            reason: "agent went away".into(),
        },
        4 => E::VolumeVerified {
            at,
            volume,
            bytes: 10,
            digest: "d".into(),
            outside_links: vec![],
        },
        5 => E::FilesShipped { at },
        6 => E::TargetStarted { at },
        7 => E::TargetHealthy { at },
        8 => E::Committed {
            at,
            retain_until: at,
        },
        9 => failed(Step::TransferVolumes),
        10 => failed(Step::StartTarget),
        11 => E::TargetCleaned { at },
        12 => E::SourceRestarted {
            at,
            redeployed: false,
        },
        _ => E::Failed { at },
    }
}
