//! Version parsing, upgrade rules and upgrade plans.
//!
//! - [`Version`]: a release version, parsed leniently (`1.2.3`, `v1.2.3`, `1.2` = `1.2.0`, with
//!   pre-release and build metadata), compared by SemVer precedence (build metadata ignored).
//! - [`Rules`]: which single upgrade is allowed. Presets by name ([`Rules::preset`]: `dtr`, the
//!   default, and `k8s`) or custom fields. [`Rules::check`] answers one upgrade with a [`Check`];
//!   a refusal names the rule in words ([`Refusal`]).
//! - [`Rules::plan`]: the shortest chain of allowed upgrades through a list of known releases,
//!   or a [`PlanError`] naming the missing release or the rule that blocks.
//! - [`advice`]: recommendations that do not refuse anything (crossing a major from a release
//!   that is not the latest of its major).
//!
//! ```
//! use dockmesh_core::version::{Check, Rules, Version};
//!
//! let v = |s: &str| s.parse::<Version>().unwrap();
//! let rules = Rules::preset("dtr").unwrap();
//! assert_eq!(rules.check(&v("2.3.1"), &v("v2.4")), Check::Allowed);
//! let Check::Refused(why) = rules.check(&v("2.3.1"), &v("2.5.0")) else { panic!() };
//! assert_eq!(
//!     why.to_string(),
//!     "2.3.1 → 2.5.0 skips minor 2.4; upgrade to a 2.4.x release first"
//! );
//!
//! let releases: Vec<Version> = ["2.4.0", "2.4.3", "2.5.0"].iter().map(|s| v(s)).collect();
//! let plan = rules.plan(&v("2.3.1"), &v("2.5.0"), &releases).unwrap();
//! assert_eq!(plan.to_string(), "2.3.1 → 2.4.3 → 2.5.0");
//! ```

mod plan;
mod rules;

pub use plan::{Advice, Hop, NoPath, Plan, PlanError, advice};
pub use rules::{Check, Needed, Refusal, Rules, UnknownPreset};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// A release version.
///
/// Parsed leniently by [`Version::parse`] / [`FromStr`]. Equality, ordering and hashing follow
/// SemVer precedence ([`semver::Version::cmp_precedence`]): build metadata is ignored, so
/// `1.2.3+a == 1.2.3+b`, and `1.2.3-rc.1 < 1.2.3`. [`Display`](fmt::Display) prints the
/// canonical form, build metadata included (`v1.2` prints `1.2.0`).
///
/// Serialized as its canonical string; deserialized with the same lenient parser.
#[derive(Debug, Clone)]
pub struct Version(semver::Version);

impl Version {
    /// A plain release `major.minor.patch`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self(semver::Version::new(major, minor, patch))
    }

    /// Parse leniently: an optional leading `v` or `V`, surrounding whitespace, and a missing
    /// patch (`1.2` = `1.2.0`) are accepted; pre-release (`-rc.1`) and build metadata
    /// (`+build.5`) follow SemVer. A bare major (`1`) is refused as too ambiguous.
    pub fn parse(input: &str) -> Result<Self, ParseVersionError> {
        let trimmed = input.trim();
        let body = trimmed
            .strip_prefix('v')
            .or_else(|| trimmed.strip_prefix('V'))
            .unwrap_or(trimmed);
        if body.is_empty() {
            return Err(ParseVersionError::Empty {
                input: input.to_owned(),
            });
        }
        let core_end = body.find(['-', '+']).unwrap_or(body.len());
        let (core, rest) = body.split_at(core_end);
        let normalized = match core.split('.').count() {
            1 if core.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(ParseVersionError::MajorOnly {
                    input: input.to_owned(),
                });
            }
            2 => format!("{core}.0{rest}"),
            _ => body.to_owned(),
        };
        semver::Version::parse(&normalized)
            .map(Self)
            .map_err(|source| ParseVersionError::Malformed {
                input: input.to_owned(),
                source,
            })
    }

    /// The major component.
    pub fn major(&self) -> u64 {
        self.0.major
    }

    /// The minor component.
    pub fn minor(&self) -> u64 {
        self.0.minor
    }

    /// The patch component.
    pub fn patch(&self) -> u64 {
        self.0.patch
    }

    /// True for a pre-release (`2.0.0-rc.1`).
    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// The underlying [`semver::Version`].
    pub fn as_semver(&self) -> &semver::Version {
        &self.0
    }
}

impl From<semver::Version> for Version {
    fn from(v: semver::Version) -> Self {
        Self(v)
    }
}

impl From<Version> for semver::Version {
    fn from(v: Version) -> Self {
        v.0
    }
}

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }
}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with `Eq`: build metadata does not take part.
        (self.0.major, self.0.minor, self.0.patch, &self.0.pre).hash(state);
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A string that is not a version.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseVersionError {
    /// Nothing but whitespace (or a lone `v`).
    #[error("invalid version {input:?}: it is empty; expected MAJOR.MINOR[.PATCH], e.g. 1.2.3")]
    Empty {
        /// The input as given.
        input: String,
    },
    /// Only a major number (`1`): too ambiguous to name a release.
    #[error(
        "invalid version {input:?}: a major number alone does not name a release; \
         write at least MAJOR.MINOR, e.g. {}.0",
        .input.trim()
    )]
    MajorOnly {
        /// The input as given.
        input: String,
    },
    /// Not SemVer, even after the lenient fixes.
    #[error(
        "invalid version {input:?}: {source}; expected MAJOR.MINOR[.PATCH] with an optional \
         leading v, -pre-release and +build (e.g. 1.2.3, v1.2, 2.0.0-rc.1)"
    )]
    Malformed {
        /// The input as given.
        input: String,
        /// What the SemVer parser found wrong.
        #[source]
        source: semver::Error,
    },
}

#[cfg(test)]
mod tests;
