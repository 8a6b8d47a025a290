//! Timestamps as both backends store them.
//!
//! PostgreSQL keeps `TIMESTAMPTZ` (microsecond precision) through `jiff-sqlx`. SQLite has no
//! timestamp type and `jiff-sqlx` writes variable-width text there (`…:05Z` and `…:05.5Z`),
//! which does not sort as time does; so on SQLite [`Ts`] writes one fixed-width UTC form,
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ`, that sorts lexically in time order and that `jiff-sqlx`
//! (which decodes it) and SQLite's own date functions both read. Both backends therefore keep
//! timestamps to the microsecond; [`Ts::new`] truncates to that so that a value reads back equal
//! to what was written, whichever backend holds it.

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Type};

/// A timestamp truncated to whole microseconds, encoded so that it sorts on both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub Timestamp);

impl Ts {
    /// `t` truncated to whole microseconds.
    pub fn new(t: Timestamp) -> Ts {
        Ts(truncate_micros(t))
    }

    /// The fixed-width text form stored by SQLite and written to backup bundles.
    pub fn to_text(self) -> String {
        static PRINTER: DateTimePrinter = DateTimePrinter::new().precision(Some(6));
        let mut out = String::with_capacity(27);
        PRINTER
            .print_timestamp(&self.0, &mut out)
            .expect("printing a timestamp into a String cannot fail");
        out
    }

    /// Parse any RFC 3339 / RFC 9557 timestamp (as written by [`Ts::to_text`]).
    pub fn parse(text: &str) -> Result<Ts, jiff::Error> {
        text.parse::<Timestamp>().map(Ts::new)
    }
}

/// `t` truncated to whole microseconds (toward the past).
pub fn truncate_micros(t: Timestamp) -> Timestamp {
    let micros = t.as_microsecond();
    // `as_microsecond` rounds toward zero; keep negative times on the earlier microsecond too.
    let micros = if t.as_nanosecond() < i128::from(micros) * 1000 {
        micros - 1
    } else {
        micros
    };
    Timestamp::from_microsecond(micros).unwrap_or(t)
}

impl From<Timestamp> for Ts {
    fn from(t: Timestamp) -> Ts {
        Ts::new(t)
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <jiff_sqlx::Timestamp as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <jiff_sqlx::Timestamp as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.to_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let t = <jiff_sqlx::Timestamp as Decode<Sqlite>>::decode(value)?;
        Ok(Ts::new(t.to_jiff()))
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <jiff_sqlx::Timestamp as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <jiff_sqlx::Timestamp as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        use jiff_sqlx::ToSqlx;
        Encode::<Postgres>::encode(self.0.to_sqlx(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let t = <jiff_sqlx::Timestamp as Decode<Postgres>>::decode(value)?;
        Ok(Ts::new(t.to_jiff()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form_is_fixed_width() {
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(Ts::new(t).to_text(), "2027-01-15T08:00:00.000000Z");
        let t = Timestamp::from_nanosecond(1_800_000_000_123_456_789).unwrap();
        assert_eq!(Ts::new(t).to_text(), "2027-01-15T08:00:00.123456Z");
        assert_eq!(
            Ts::parse("2027-01-15T08:00:00.123456Z").unwrap(),
            Ts::new(t)
        );
    }

    proptest! {
        #[test]
        fn text_sorts_as_time(a in 0i64..253_402_300_799_000_000, b in 0i64..253_402_300_799_000_000) {
            let ta = Ts::new(Timestamp::from_microsecond(a).unwrap());
            let tb = Ts::new(Timestamp::from_microsecond(b).unwrap());
            prop_assert_eq!(ta.cmp(&tb), ta.to_text().cmp(&tb.to_text()));
            prop_assert_eq!(Ts::parse(&ta.to_text()).unwrap(), ta);
        }

        #[test]
        fn truncation_keeps_whole_microseconds(n in -1_000_000_000_000_000_000i128..1_000_000_000_000_000_000i128) {
            let t = Timestamp::from_nanosecond(n).unwrap();
            let tr = truncate_micros(t);
            prop_assert!(tr <= t);
            prop_assert_eq!(tr.as_nanosecond() % 1000, 0);
            prop_assert!(t.as_nanosecond() - tr.as_nanosecond() < 1000);
        }
    }
}
