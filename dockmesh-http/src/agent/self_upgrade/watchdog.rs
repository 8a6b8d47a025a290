//! The watchdog of an upgrade on trial: a process of the previous binary, started before the
//! swap, that looks at the new binary's process every [`WATCH_EVERY`] and, when core's
//! [`Watchdog`] says so (the new binary exited, or hung past its deadline), puts the previous
//! binary back and starts it in its own place.

use super::{read_state, write_state};
use crate::agent::error_chain as chain;
use dockmesh_core::agent_upgrade::{
    RevertReason, Trial, UpgradeState, WATCH_EVERY, Watch, Watchdog,
};
use std::path::Path;
use std::time::Duration;

/// How the watchdog ended (when it starts the previous binary, it does not return).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchdogEnd {
    /// Nothing (or nothing any more) is on trial: the upgrade was confirmed, or given up
    /// before the swap.
    Settled,
    /// The previous binary could not be put back or started; `say` was told why.
    Failed,
}

/// Watch the upgrade on trial in `state_dir`; put the previous binary back and start it when
/// the new one exits or hangs before it is confirmed. What it does and why is told to `say`,
/// one line at a time (it runs beside the agent, whose log it cannot write).
pub fn watchdog(state_dir: &Path, mut say: impl FnMut(&str)) -> WatchdogEnd {
    let mut watch = Watchdog::default();
    loop {
        let Some(UpgradeState::Trial(trial)) = read_state(state_dir) else {
            return WatchdogEnd::Settled;
        };
        match watch.observe(&trial, alive(trial.0.pid), jiff::Timestamp::now()) {
            Watch::Wait(next) => watch = next,
            Watch::Revert { kill, reason } => {
                if kill {
                    if let Some(pid) = i32::try_from(trial.0.pid)
                        .ok()
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                return revert(state_dir, trial, &reason, &mut say);
            }
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Whether process `pid` runs (exists and is not a zombie).
pub(super) fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn revert(
    state_dir: &Path,
    trial: Trial,
    reason: &RevertReason,
    say: &mut impl FnMut(&str),
) -> WatchdogEnd {
    use std::os::unix::process::CommandExt;
    say(&format!("{reason}; putting {} back", trial.0.from_version));
    let (exe, previous, argv) = (
        trial.0.exe.clone(),
        trial.0.previous.clone(),
        trial.0.argv.clone(),
    );
    if let Err(e) = std::fs::rename(&previous, &exe) {
        say(&format!(
            "cannot put {} back in place of {}: {e}",
            previous.display(),
            exe.display()
        ));
        return WatchdogEnd::Failed;
    }
    if let Err(e) = write_state(state_dir, trial.revert(reason).into()) {
        say(&chain(&e));
    }
    let err = std::process::Command::new(&exe)
        .args(argv.iter().skip(1))
        .exec();
    say(&format!("starting {} failed: {err}", exe.display()));
    WatchdogEnd::Failed
}
