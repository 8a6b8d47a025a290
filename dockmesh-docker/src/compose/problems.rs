//! Collecting every problem of a file, to report them together.

use super::ComposeError;

/// The problems found in a file so far; [`Problems::finish`] makes one error of them.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ComposeError>);

impl Problems {
    pub(crate) fn push(&mut self, e: ComposeError) {
        match e {
            ComposeError::Several { problems } => self.0.extend(problems),
            e => self.0.push(e),
        }
    }

    /// Record the error of `r`, if any, and pass its value on.
    pub(crate) fn take<T>(&mut self, r: Result<T, ComposeError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when there were none; the one problem; or all of them.
    pub(crate) fn finish(mut self) -> Result<(), ComposeError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ComposeError::Several { problems: self.0 }),
        }
    }
}
