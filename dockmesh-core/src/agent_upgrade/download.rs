//! The download of a new binary, resumed after an interruption: which request to make next
//! (a range from what the file holds), what an answer's status means, and when to give up.
//! The driver makes the requests and writes the bytes.

use std::time::Duration;

/// Attempts at a download, each resuming where the last stopped.
pub const ATTEMPTS: u32 = 4;
/// The wait before attempt `n` is `n` times this.
pub const BACKOFF: Duration = Duration::from_millis(250);

/// A download of `size` bytes from `url`, in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    url: String,
    running: String,
    size: u64,
    /// Bytes of the file that hold the download so far (after the last attempt).
    have: u64,
    /// Bytes written in the current attempt's answer (from the file's start).
    written: u64,
    attempt: u32,
    reached: bool,
    last: String,
}

/// The next step of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Wait `wait`, then request the binary, from byte `from` when it is set (a range).
    Request {
        /// The wait first.
        wait: Duration,
        /// The first byte wanted (`Range: bytes=FROM-`), `None` for the whole binary.
        from: Option<u64>,
    },
    /// The file holds the whole binary.
    Done,
    /// Out of attempts.
    GiveUp(DownloadError),
}

/// What to do with an answer's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Cut the file to `at` bytes and write the body from there.
    WriteAt(u64),
    /// Nothing of this answer is used; go to the next attempt.
    Retry,
}

/// Why a download failed. The file is removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The server answered a status that is neither the binary nor a part of it.
    #[error("downloading {url}: the server answered {status}; the agent keeps running {running}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status, as the driver words it.
        status: String,
        /// The running version.
        running: String,
    },
    /// The answer is longer than the signed size.
    #[error(
        "the download from {url} is longer than the signed size of {size} bytes: refused and \
         removed"
    )]
    TooLong {
        /// The URL.
        url: String,
        /// The signed size.
        size: u64,
    },
    /// No attempt reached the server (an air-gapped host).
    #[error("cannot reach {url}: {last}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The last error.
        last: String,
    },
    /// Every attempt ended short.
    #[error(
        "the download from {url} stayed truncated: {have} of {size} bytes after {ATTEMPTS} \
         attempts ({last}); the agent keeps running {running}"
    )]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes had.
        have: u64,
        /// The signed size.
        size: u64,
        /// Why the last attempt ended.
        last: String,
        /// The running version.
        running: String,
    },
}

impl Download {
    /// A download of the `size` bytes at `url` by an agent running `running`.
    pub fn new(url: &str, size: u64, running: &str) -> Download {
        Download {
            url: url.to_owned(),
            running: running.to_owned(),
            size,
            have: 0,
            written: 0,
            attempt: 0,
            reached: false,
            last: "no attempt made".to_owned(),
        }
    }

    /// The next step.
    pub fn next_step(&mut self) -> Next {
        if self.have == self.size {
            return Next::Done;
        }
        if self.attempt == ATTEMPTS {
            return Next::GiveUp(self.give_up());
        }
        let wait = BACKOFF * self.attempt;
        self.attempt += 1;
        Next::Request {
            wait,
            from: (self.have > 0).then_some(self.have),
        }
    }

    fn give_up(&self) -> DownloadError {
        if !self.reached {
            return DownloadError::Unreachable {
                url: self.url.clone(),
                last: self.last.clone(),
            };
        }
        DownloadError::Truncated {
            url: self.url.clone(),
            have: self.have,
            size: self.size,
            last: self.last.clone(),
            running: self.running.clone(),
        }
    }

    /// The request could not be made or sent (`why`).
    pub fn unreachable(&mut self, why: String) {
        self.last = why;
    }

    /// The server answered `status` (`words` is how the driver prints it).
    pub fn answered(&mut self, status: u16, words: &str) -> Result<Answer, DownloadError> {
        self.reached = true;
        let at = match status {
            206 => self.have,
            200 => 0,
            416 => {
                self.have = 0;
                self.last = "the server refused to resume the download".to_owned();
                return Ok(Answer::Retry);
            }
            _ => {
                return Err(DownloadError::Status {
                    url: self.url.clone(),
                    status: words.to_owned(),
                    running: self.running.clone(),
                });
            }
        };
        self.written = at;
        Ok(Answer::WriteAt(at))
    }

    /// `len` more bytes of the body arrived; `Err` when they go past the signed size (nothing
    /// of them is to be written).
    pub fn chunk(&mut self, len: u64) -> Result<(), DownloadError> {
        self.written = self.written.saturating_add(len);
        if self.written > self.size {
            return Err(DownloadError::TooLong {
                url: self.url.clone(),
                size: self.size,
            });
        }
        Ok(())
    }

    /// The body ended, cut by `broke` when it is set. True when the file now holds the whole
    /// binary; otherwise why it is short is kept and the next attempt resumes.
    pub fn ended(&mut self, broke: Option<String>) -> bool {
        self.have = self.written;
        if self.have == self.size {
            return true;
        }
        self.last =
            broke.unwrap_or_else(|| format!("the answer ended after {} bytes", self.written));
        false
    }

    /// Bytes the file holds and the signed size.
    pub fn progress(&self) -> (u64, u64) {
        (self.have, self.size)
    }

    /// Why the last attempt ended short.
    pub fn last(&self) -> &str {
        &self.last
    }
}
