//! Upgrade rules: which single upgrade from one version to another is allowed.

use super::Version;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The rules one upgrade must follow.
///
/// Use a preset ([`Rules::dtr`], the [`Default`]; [`Rules::k8s`]; or by name with
/// [`Rules::preset`] / [`FromStr`]) or set the fields for custom rules, starting from a preset:
///
/// ```
/// use dockmesh_core::version::Rules;
/// let relaxed = Rules { max_minor_skip: 1, allow_prerelease: true, ..Rules::dtr() };
/// # let _ = relaxed;
/// ```
///
/// How [`Rules::check`] applies them, in order:
/// 1. the same version (by precedence, build metadata ignored): nothing to do;
/// 2. a downgrade: refused unless `allow_downgrade`; an allowed downgrade has no step limits
///    (whether the data can go back is the schema guard's question, not the version's);
/// 3. a pre-release target: refused unless `allow_prerelease`;
/// 4. within one minor: allowed, but with `patch_skip == false` only one patch at a time
///    (a pre-release reaching its own release counts as no step);
/// 5. across minors of one major: at most `max_minor_skip` minors skipped (0: the next minor
///    only), landing on any patch;
/// 6. across majors: refused when `max_major_step` is 0; at most `max_major_step` majors at a
///    time; with `major_lands_on_minor_zero`, the target must be a `X.0.*` release.
///
/// Majors 0 are treated like any other major (`0.3 → 0.4` is a minor upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// How many minor versions one upgrade may skip within a major (0: the next minor only).
    pub max_minor_skip: u64,
    /// Whether an upgrade within one minor may skip patches (`x.y.0 → x.y.2`).
    pub patch_skip: bool,
    /// How many majors one upgrade may advance (0: major upgrades are refused).
    pub max_major_step: u64,
    /// Whether a major upgrade must land on the new major's first minor (`x.y.z → x+1.0.*`).
    pub major_lands_on_minor_zero: bool,
    /// Whether downgrades are allowed at all.
    pub allow_downgrade: bool,
    /// Whether a pre-release may be the target of an upgrade.
    pub allow_prerelease: bool,
}

impl Default for Rules {
    /// The `dtr` preset.
    fn default() -> Self {
        Self::dtr()
    }
}

impl Rules {
    /// The names [`Rules::preset`] accepts.
    pub const PRESETS: [&'static str; 2] = ["dtr", "k8s"];

    /// The `dtr` preset (the default): patch upgrades may skip patches; minor upgrades may not
    /// skip a minor (`x.y → x.y+1`, not `x.y+2`); a major upgrade goes one major at a time and
    /// lands on the new major's first minor (`x.y.z → x+1.0.*`); every downgrade is refused;
    /// pre-release targets are refused.
    pub const fn dtr() -> Self {
        Self {
            max_minor_skip: 0,
            patch_skip: true,
            max_major_step: 1,
            major_lands_on_minor_zero: true,
            allow_downgrade: false,
            allow_prerelease: false,
        }
    }

    /// The `k8s` preset, after the Kubernetes version skew policy: patches may be skipped,
    /// minor versions may not; downgrades and pre-release targets are refused.
    ///
    /// Kubernetes defines no upgrade between majors, so this preset refuses every major upgrade
    /// rather than guess one (`max_major_step: 0`); use custom rules when a release documents
    /// its major upgrade path.
    pub const fn k8s() -> Self {
        Self {
            max_minor_skip: 0,
            patch_skip: true,
            max_major_step: 0,
            major_lands_on_minor_zero: true,
            allow_downgrade: false,
            allow_prerelease: false,
        }
    }

    /// A preset by name: `dtr` or `k8s` (case-insensitive).
    pub fn preset(name: &str) -> Result<Self, UnknownPreset> {
        match name.trim().to_ascii_lowercase().as_str() {
            "dtr" => Ok(Self::dtr()),
            "k8s" => Ok(Self::k8s()),
            _ => Err(UnknownPreset {
                name: name.to_owned(),
            }),
        }
    }

    /// Whether the upgrade `from → to` is allowed, nothing to do, or refused (and by which rule).
    pub fn check(&self, from: &Version, to: &Version) -> Check {
        let refuse = |rule| {
            Check::Refused(Refusal {
                from: from.clone(),
                to: to.clone(),
                rule,
            })
        };
        if from == to {
            return Check::NothingToDo;
        }
        if to < from {
            return if self.allow_downgrade {
                if to.is_prerelease() && !self.allow_prerelease {
                    refuse(RefusalRule::PreRelease)
                } else {
                    Check::Allowed
                }
            } else {
                refuse(RefusalRule::Downgrade)
            };
        }
        if to.is_prerelease() && !self.allow_prerelease {
            return refuse(RefusalRule::PreRelease);
        }
        if to.major() == from.major() {
            if to.minor() == from.minor() {
                if !self.patch_skip && to.patch() - from.patch() > 1 {
                    return refuse(RefusalRule::SkipsPatches);
                }
                return Check::Allowed;
            }
            if to.minor() - from.minor() - 1 > self.max_minor_skip {
                return refuse(RefusalRule::SkipsMinors {
                    max_skip: self.max_minor_skip,
                });
            }
            return Check::Allowed;
        }
        if self.max_major_step == 0 {
            return refuse(RefusalRule::NoMajorUpgrade);
        }
        if to.major() - from.major() > self.max_major_step {
            return refuse(RefusalRule::SkipsMajors {
                max_step: self.max_major_step,
                lands_on_minor_zero: self.major_lands_on_minor_zero,
            });
        }
        if self.major_lands_on_minor_zero && to.minor() != 0 {
            return refuse(RefusalRule::MajorNotOnMinorZero);
        }
        Check::Allowed
    }
}

impl FromStr for Rules {
    type Err = UnknownPreset;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::preset(s)
    }
}

/// A rule preset name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown upgrade rules {name:?}: the presets are dtr (the default) and k8s")]
#[non_exhaustive]
pub struct UnknownPreset {
    /// The name as given.
    pub name: String,
}

/// The answer to one upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The rules allow it.
    Allowed,
    /// `from` and `to` are the same version: there is nothing to upgrade.
    NothingToDo,
    /// The rules refuse it; the refusal says which rule and what to do instead.
    Refused(Refusal),
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allowed => f.write_str("allowed"),
            Self::NothingToDo => f.write_str("nothing to do"),
            Self::Refused(r) => write!(f, "refused: {r}"),
        }
    }
}

/// An upgrade the rules refuse, with the rule that refuses it.
///
/// Its [`Display`](fmt::Display) names the rule in words and says what to do instead, e.g.
/// `2.3.1 → 2.5.0 skips minor 2.4; upgrade to a 2.4.x release first`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct Refusal {
    /// The version upgraded from.
    pub from: Version,
    /// The version refused.
    pub to: Version,
    rule: RefusalRule,
}

/// Which rule refused (kept private: the words are the interface, [`Refusal::needs`] the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusalRule {
    Downgrade,
    PreRelease,
    SkipsPatches,
    SkipsMinors {
        max_skip: u64,
    },
    NoMajorUpgrade,
    SkipsMajors {
        max_step: u64,
        lands_on_minor_zero: bool,
    },
    MajorNotOnMinorZero,
}

/// A release an upgrade has to pass through first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Needed {
    /// Any release of one minor series (`2.4.x`).
    Minor {
        /// Its major.
        major: u64,
        /// Its minor.
        minor: u64,
    },
    /// Any release of one major (`3.x`).
    Major {
        /// The major.
        major: u64,
    },
    /// One exact release (`1.2.4`).
    Exact(Version),
}

impl Needed {
    /// True when `v` is a release that satisfies this need.
    pub fn matches(&self, v: &Version) -> bool {
        match self {
            Self::Minor { major, minor } => v.major() == *major && v.minor() == *minor,
            Self::Major { major } => v.major() == *major,
            Self::Exact(e) => v == e,
        }
    }
}

impl fmt::Display for Needed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Minor { major, minor } => write!(f, "a {major}.{minor}.x release"),
            Self::Major { major } => write!(f, "a {major}.x release"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl Refusal {
    /// The release to upgrade to first, when the refusal is a skipped step (a minor, a
    /// major, a patch); `None` when no intermediate release helps (a downgrade, a pre-release
    /// target, major upgrades refused altogether).
    pub fn needs(&self) -> Option<Needed> {
        let (from, to) = (&self.from, &self.to);
        match self.rule {
            RefusalRule::Downgrade | RefusalRule::PreRelease | RefusalRule::NoMajorUpgrade => None,
            RefusalRule::SkipsPatches => Some(Needed::Exact(Version::new(
                from.major(),
                from.minor(),
                from.patch() + 1,
            ))),
            RefusalRule::SkipsMinors { max_skip } => Some(Needed::Minor {
                major: from.major(),
                minor: from.minor() + 1 + max_skip,
            }),
            RefusalRule::SkipsMajors {
                max_step,
                lands_on_minor_zero,
            } => {
                let major = from.major() + max_step;
                Some(if lands_on_minor_zero {
                    Needed::Minor { major, minor: 0 }
                } else {
                    Needed::Major { major }
                })
            }
            RefusalRule::MajorNotOnMinorZero => Some(Needed::Minor {
                major: to.major(),
                minor: 0,
            }),
        }
    }

    /// True when the refusal is a downgrade.
    pub fn is_downgrade(&self) -> bool {
        self.rule == RefusalRule::Downgrade
    }

    /// A stable identifier of the refusing rule, for machines: `downgrade`, `pre_release`,
    /// `skips_patch`, `skips_minor`, `no_major_upgrade`, `skips_major`,
    /// `major_not_on_minor_zero`.
    pub fn rule_id(&self) -> &'static str {
        match self.rule {
            RefusalRule::Downgrade => "downgrade",
            RefusalRule::PreRelease => "pre_release",
            RefusalRule::SkipsPatches => "skips_patch",
            RefusalRule::SkipsMinors { .. } => "skips_minor",
            RefusalRule::NoMajorUpgrade => "no_major_upgrade",
            RefusalRule::SkipsMajors { .. } => "skips_major",
            RefusalRule::MajorNotOnMinorZero => "major_not_on_minor_zero",
        }
    }

    fn describe(&self) -> String {
        let (from, to) = (&self.from, &self.to);
        let hop = format!("{from} → {to}");
        let first = self
            .needs()
            .map(|n| format!("; upgrade to {n} first"))
            .unwrap_or_default();
        match self.rule {
            RefusalRule::Downgrade => format!(
                "{hop} is a downgrade, and these rules refuse every downgrade \
                 (data written by {from} may not be readable by {to}); stay on {from}, \
                 or restore the backup taken before upgrading to {from}"
            ),
            RefusalRule::PreRelease => format!(
                "{hop} targets a pre-release, and these rules refuse pre-release targets \
                 unless allowed explicitly; wait for the {}.{}.{} release",
                to.major(),
                to.minor(),
                to.patch()
            ),
            RefusalRule::SkipsPatches => {
                let skipped = range_words(
                    "patch",
                    "patches",
                    (from.patch() + 1, to.patch() - 1),
                    |p| format!("{}.{}.{p}", from.major(), from.minor()),
                );
                format!("{hop} skips {skipped}, and these rules allow one patch at a time{first}")
            }
            RefusalRule::SkipsMinors { max_skip } => {
                let skipped =
                    range_words("minor", "minors", (from.minor() + 1, to.minor() - 1), |m| {
                        format!("{}.{m}", from.major())
                    });
                if max_skip == 0 {
                    format!("{hop} skips {skipped}{first}")
                } else {
                    format!("{hop} skips {skipped}, more than the {max_skip} allowed{first}")
                }
            }
            RefusalRule::NoMajorUpgrade => format!(
                "{hop} crosses a major version, and these rules define no major upgrade; \
                 follow the upgrade notes of {to}, or use custom rules that allow it"
            ),
            RefusalRule::SkipsMajors { max_step, .. } => {
                if max_step == 1 {
                    let skipped =
                        range_words("major", "majors", (from.major() + 1, to.major() - 1), |m| {
                            m.to_string()
                        });
                    format!("{hop} skips {skipped}; majors go one at a time{first}")
                } else {
                    format!(
                        "{hop} crosses {} majors, more than the {max_step} allowed at a time{first}",
                        to.major() - from.major()
                    )
                }
            }
            RefusalRule::MajorNotOnMinorZero => format!(
                "{hop} lands on {}.{}, but a major upgrade must land on the new major's \
                 first minor{first}",
                to.major(),
                to.minor()
            ),
        }
    }
}

/// `minor 2.4` or `minors 2.4 to 2.6`.
fn range_words(
    one: &str,
    many: &str,
    (lo, hi): (u64, u64),
    name: impl Fn(u64) -> String,
) -> String {
    if lo == hi {
        format!("{one} {}", name(lo))
    } else {
        format!("{many} {} to {}", name(lo), name(hi))
    }
}
