use super::*;
use proptest::prelude::*;

/// `known` like `1 2! 3`: versions, `!` marks an irreversible one; checksums are derived from
/// the version. `applied` like `1 2*`: `*` marks a checksum that differs from the known one.
fn parse_known(known: &str) -> Vec<KnownMigration> {
    known
        .split_whitespace()
        .map(|t| {
            let version: i64 = t.trim_end_matches('!').parse().unwrap();
            KnownMigration::new(
                version,
                format!("step {version}"),
                sum(version),
                !t.ends_with('!'),
            )
        })
        .collect()
}

fn parse_applied(applied: &str) -> Vec<AppliedMigration> {
    applied
        .split_whitespace()
        .map(|t| {
            let version: i64 = t.trim_end_matches('*').parse().unwrap();
            let checksum = if t.ends_with('*') {
                Checksum::new([0xee; 20])
            } else {
                sum(version)
            };
            AppliedMigration::new(version, checksum)
        })
        .collect()
}

fn sum(version: i64) -> Checksum {
    let mut bytes = [0xab; 20];
    bytes[..8].copy_from_slice(&version.to_be_bytes());
    Checksum::new(bytes)
}

/// `input` is `KNOWN | APPLIED`; `expected` is the status's display or `refused: …`.
fn check_case(input: &str, expected: &str) {
    let (known, applied) = input.split_once('|').expect("KNOWN | APPLIED");
    let got = match check(&parse_known(known), &parse_applied(applied)) {
        Ok(status) => status.to_string(),
        Err(refusal) => format!("refused: {refusal}"),
    };
    assert_eq!(got, expected, "{input}");
}

#[test]
fn up_to_date_and_pending() {
    check_case("|", "up to date: no migration is known and none is applied");
    check_case("1 2 3 | 1 2 3", "up to date at schema version 3");
    check_case("3 1 2 | 2 3 1", "up to date at schema version 3");
    check_case(
        "1 2 3 | ",
        "3 migrations pending, schema an empty database → 3: 1 step 1, 2 step 2, 3 step 3",
    );
    check_case(
        "1 2 3 | 1",
        "2 migrations pending, schema 1 → 3: 2 step 2, 3 step 3",
    );
    check_case(
        "10 20 30 | 10 20",
        "1 migration pending, schema 20 → 30: 30 step 30",
    );
}

#[test]
fn refuses_a_database_newer_than_the_binary() {
    check_case(
        "1 2 | 1 2 3",
        "refused: the database schema is at version 3, newer than this binary knows (its \
         latest migration is 2): it was migrated by a newer dockmesh. Nothing was changed. \
         Restore the backup taken before that upgrade, or install a dockmesh at least as \
         new as the one that migrated it",
    );
    check_case(
        " | 1",
        "refused: the database schema is at version 1, newer than this binary knows (it \
         knows no migration): it was migrated by a newer dockmesh. Nothing was changed. \
         Restore the backup taken before that upgrade, or install a dockmesh at least as \
         new as the one that migrated it",
    );
    // Newer wins over every other finding: it is the one to act on.
    check_case(
        "1 2 3 | 1* 3 9",
        "refused: the database schema is at version 9, newer than this binary knows (its \
         latest migration is 3): it was migrated by a newer dockmesh. Nothing was changed. \
         Restore the backup taken before that upgrade, or install a dockmesh at least as \
         new as the one that migrated it",
    );
}

#[test]
fn refuses_unknown_applied_migrations() {
    check_case(
        "1 2 4 | 1 2 3",
        "refused: the database has applied migration 3 that this binary does not know, \
         although the binary knows later ones (up to 4): it was migrated by a different \
         build. Nothing was changed. Use the build that migrated it, or restore the backup \
         taken before",
    );
}

#[test]
fn refuses_a_modified_migration() {
    check_case(
        "1 2 3 | 1 2* 3*",
        "refused: migration 2 (step 2) was applied from a script with checksum eeeeeeeeeeee… \
         but this binary's script has 000000000000…: it was changed after it ran. Nothing \
         was changed. Use a binary whose migration 2 is the one that ran, or restore a backup",
    );
}

#[test]
fn refuses_a_gap() {
    check_case(
        "1 2 3 4 | 1 3",
        "refused: known migration 2 was never applied, although later migration 3 was: the \
         database was migrated out of order. Nothing was changed. Restore a backup taken \
         before, or migrate a copy of the database with the same binary from the start",
    );
    check_case(
        "1 2 3 4 | 4",
        "refused: known migrations 1, 2, 3 were never applied, although later migration 4 \
         was: the database was migrated out of order. Nothing was changed. Restore a backup \
         taken before, or migrate a copy of the database with the same binary from the start",
    );
}

#[test]
fn downgrades_across_irreversible_migrations() {
    let known = parse_known("1 2! 3 4! 5");
    let versions = |from, to| {
        irreversible_between(&known, from, to)
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(5, 0), [2, 4]);
    assert_eq!(versions(5, 4), Vec::<i64>::new());
    assert_eq!(versions(5, 3), [4]);
    assert_eq!(versions(4, 3), [4]);
    assert_eq!(versions(3, 1), [2]);
    assert_eq!(versions(3, 2), Vec::<i64>::new());
    assert_eq!(versions(2, 5), Vec::<i64>::new());
    assert_eq!(versions(3, 3), Vec::<i64>::new());
}

#[test]
fn checksums_are_hex() {
    let c = Checksum::from_hex("00FFa0").unwrap();
    assert_eq!(c.as_bytes(), [0, 255, 160]);
    assert_eq!(c.to_string(), "00ffa0");
    assert_eq!(format!("{c:.2}"), "00");
    assert_eq!(serde_json::to_string(&c).unwrap(), r#""00ffa0""#);
    let back: Checksum = serde_json::from_str(r#""00ffa0""#).unwrap();
    assert_eq!(back, c);
    assert!(serde_json::from_str::<Checksum>(r#""xyz""#).is_err());
    let status = check(&parse_known("1"), &[]).unwrap();
    assert_eq!(
        serde_json::to_value(&status).unwrap()["status"],
        serde_json::json!("pending")
    );
}

fn arb_known() -> impl Strategy<Value = Vec<KnownMigration>> {
    prop::collection::btree_map(
        1i64..10_000,
        (prop::collection::vec(any::<u8>(), 1..6), any::<bool>()),
        0..12,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(v, (sum, rev))| KnownMigration::new(v, format!("m{v}"), sum, rev))
            .collect()
    })
}

fn applied_of(known: &[KnownMigration]) -> Vec<AppliedMigration> {
    known
        .iter()
        .map(|m| AppliedMigration::new(m.version, m.checksum.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prefixes_are_up_to_date_or_pending(
        known in arb_known(),
        cut in any::<prop::sample::Index>(),
        shuffle in any::<u64>(),
    ) {
        let k = cut.index(known.len() + 1);
        let mut applied = applied_of(&known[..k]);
        let mut shuffled_known = known.clone();
        // Order does not matter.
        let n = applied.len().max(1);
        applied.rotate_left(shuffle as usize % n);
        shuffled_known.reverse();
        let status = check(&shuffled_known, &applied).unwrap();
        if k == known.len() {
            prop_assert_eq!(status, SchemaStatus::UpToDate { version: known.last().map(|m| m.version) });
        } else {
            prop_assert_eq!(status, SchemaStatus::Pending {
                from: k.checked_sub(1).map(|i| known[i].version),
                to: known.last().unwrap().version,
                migrations: known[k..].to_vec(),
            });
        }
    }

    #[test]
    fn a_changed_checksum_is_refused(
        known in arb_known(),
        cut in any::<prop::sample::Index>(),
        which in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!known.is_empty());
        let k = cut.index(known.len()) + 1;
        let i = which.index(k);
        let mut applied = applied_of(&known[..k]);
        let mut changed = applied[i].checksum.as_bytes().to_vec();
        changed[0] ^= 0xff;
        applied[i].checksum = Checksum::new(changed);
        let refused = check(&known, &applied).unwrap_err();
        let SchemaRefusal::Modified { version, expected, applied: found, .. } = refused else {
            return Err(TestCaseError::fail(format!("{refused}")));
        };
        prop_assert_eq!(version, known[i].version);
        prop_assert_eq!(&expected, &known[i].checksum);
        prop_assert_ne!(expected, found);
    }

    #[test]
    fn a_skipped_migration_is_a_gap(
        known in arb_known(),
        cut in any::<prop::sample::Index>(),
        which in any::<prop::sample::Index>(),
    ) {
        prop_assume!(known.len() >= 2);
        let k = cut.index(known.len() - 1) + 2;
        let i = which.index(k - 1);
        let mut applied = applied_of(&known[..k]);
        applied.remove(i);
        prop_assert_eq!(
            check(&known, &applied).unwrap_err(),
            SchemaRefusal::Gap { missing: vec![known[i].version], latest_applied: known[k - 1].version }
        );
    }

    #[test]
    fn an_older_binary_is_refused_naming_both_versions(
        known in arb_known(),
        cut in any::<prop::sample::Index>(),
        older in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!known.is_empty());
        let k = cut.index(known.len()) + 1;
        let j = older.index(k);
        let applied = applied_of(&known[..k]);
        let refused = check(&known[..j], &applied).unwrap_err();
        prop_assert_eq!(
            &refused,
            &SchemaRefusal::NewerThanBinary {
                database: known[k - 1].version,
                binary: j.checked_sub(1).map(|i| known[i].version),
            }
        );
        let words = refused.to_string();
        prop_assert!(words.contains(&known[k - 1].version.to_string()));
        prop_assert!(words.contains("restore the backup") || words.contains("Restore the backup"));
    }

    #[test]
    fn an_unknown_applied_migration_is_refused(
        known in arb_known(),
        extra in 1i64..10_000,
    ) {
        prop_assume!(known.iter().all(|m| m.version != extra));
        prop_assume!(known.last().is_some_and(|m| m.version > extra));
        let mut applied = applied_of(&known);
        applied.push(AppliedMigration::new(extra, [1u8]));
        prop_assert_eq!(
            check(&known, &applied).unwrap_err(),
            SchemaRefusal::UnknownApplied { versions: vec![extra], binary: known.last().unwrap().version }
        );
    }

    #[test]
    fn irreversible_between_is_the_irreversible_range(
        known in arb_known(),
        from in 0i64..10_001,
        to in 0i64..10_001,
    ) {
        let got: Vec<i64> = irreversible_between(&known, from, to).iter().map(|m| m.version).collect();
        let expected: Vec<i64> = known
            .iter()
            .filter(|m| !m.reversible && m.version > to && m.version <= from)
            .map(|m| m.version)
            .collect();
        prop_assert_eq!(&got, &expected);
        if from <= to || known.iter().all(|m| m.reversible) {
            prop_assert!(got.is_empty());
        }
    }
}
