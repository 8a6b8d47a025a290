//! The schema guard's decision, from the binary's known migrations and the database's applied
//! ones: up to date, pending, or a refusal (newer, modified, gap).

/// A migration the binary carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub version: i64,
    pub checksum: Vec<u8>,
    #[allow(dead_code)]
    pub reversible: bool,
}

/// A migration the database has applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    pub version: i64,
    pub checksum: Vec<u8>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    UpToDate,
    Pending { versions: Vec<i64> },
    Newer { unknown: Vec<i64> },
    Modified { version: i64 },
    Gap { missing: Vec<i64> },
}

/// Decide. Refusals are checked in this order: newer (an applied migration the binary does
/// not know), modified (an applied migration whose checksum differs), gap (a known migration
/// missing below the newest applied one).
pub(crate) fn decide(known: &[Known], applied: &[Applied]) -> Decision {
    let unknown: Vec<i64> = applied
        .iter()
        .filter(|a| !known.iter().any(|k| k.version == a.version))
        .map(|a| a.version)
        .collect();
    if !unknown.is_empty() {
        let mut unknown = unknown;
        unknown.sort_unstable();
        return Decision::Newer { unknown };
    }
    let mut sorted: Vec<&Known> = known.iter().collect();
    sorted.sort_by_key(|k| k.version);
    for k in &sorted {
        if let Some(a) = applied.iter().find(|a| a.version == k.version)
            && a.checksum != k.checksum
        {
            return Decision::Modified { version: k.version };
        }
    }
    let newest_applied = applied.iter().map(|a| a.version).max();
    let pending: Vec<i64> = sorted
        .iter()
        .filter(|k| !applied.iter().any(|a| a.version == k.version))
        .map(|k| k.version)
        .collect();
    if let Some(newest) = newest_applied {
        let missing: Vec<i64> = pending.iter().copied().filter(|v| *v < newest).collect();
        if !missing.is_empty() {
            return Decision::Gap { missing };
        }
    }
    if pending.is_empty() {
        Decision::UpToDate
    } else {
        Decision::Pending { versions: pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: i64) -> Known {
        Known {
            version: v,
            checksum: vec![v as u8],
            reversible: true,
        }
    }
    fn a(v: i64) -> Applied {
        Applied {
            version: v,
            checksum: vec![v as u8],
        }
    }

    fn check(applied: &[Applied], expected: Decision) {
        let known = [k(1), k(2), k(3)];
        assert_eq!(decide(&known, applied), expected, "applied {applied:?}");
    }

    #[test]
    fn decisions() {
        check(
            &[],
            Decision::Pending {
                versions: vec![1, 2, 3],
            },
        );
        check(
            &[a(1)],
            Decision::Pending {
                versions: vec![2, 3],
            },
        );
        check(&[a(1), a(2), a(3)], Decision::UpToDate);
        check(
            &[a(1), a(2), a(3), a(4)],
            Decision::Newer { unknown: vec![4] },
        );
        check(
            &[
                a(1),
                Applied {
                    version: 2,
                    checksum: vec![9],
                },
            ],
            Decision::Modified { version: 2 },
        );
        check(&[a(1), a(3)], Decision::Gap { missing: vec![2] });
        // newer wins over the other refusals
        check(&[a(1), a(3), a(7)], Decision::Newer { unknown: vec![7] });
    }
}
