//! Money in integer fen (1 yuan = 100 fen) and energy in whole Wh. Never floats; every operation
//! is checked, so an overflow is an error the caller sees rather than a wrapped balance.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of money in fen. May be negative (a debit, an overdrawn balance). Serialises as
/// the bare integer and is stored as `bigint`, so APIs and columns keep their `*_fen` integers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct AmountFen(i64);

/// Stores a newtype over `i64` as a Postgres `bigint`.
macro_rules! bigint_newtype {
    ($name:ident) => {
        #[cfg(feature = "db")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <i64 as sqlx::Type<sqlx::Postgres>>::type_info()
            }
        }

        #[cfg(feature = "db")]
        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <i64 as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        #[cfg(feature = "db")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok($name(<i64 as sqlx::Decode<sqlx::Postgres>>::decode(value)?))
            }
        }
    };
}

bigint_newtype!(AmountFen);
bigint_newtype!(EnergyWh);

/// Energy in whole watt-hours, the unit every register delta, tier threshold and charge line
/// counts in (DESIGN.md: energy in Wh). Checked arithmetic only; shown as kWh from integers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct EnergyWh(i64);

impl EnergyWh {
    pub const ZERO: EnergyWh = EnergyWh(0);

    pub const fn from_wh(wh: i64) -> Self {
        EnergyWh(wh)
    }

    pub const fn wh(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: EnergyWh) -> Option<EnergyWh> {
        self.0.checked_add(other.0).map(EnergyWh)
    }

    pub fn checked_sub(self, other: EnergyWh) -> Option<EnergyWh> {
        self.0.checked_sub(other.0).map(EnergyWh)
    }

    /// Parses kWh as people type them (`1234.5`, up to three decimals); never negative.
    pub fn parse_kwh(text: &str) -> Result<EnergyWh, AmountParseError> {
        parse_kwh_as_wh(text).map(EnergyWh)
    }
}

impl std::fmt::Display for EnergyWh {
    /// As kWh with up to three decimals (`1234.5`), from integers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_wh_as_kwh(self.0))
    }
}

/// Why a yuan text could not be read as an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountParseError {
    #[error("not an amount: use digits with at most two decimals, e.g. 12.50")]
    Malformed,
    #[error("amount too large")]
    TooLarge,
}

impl AmountFen {
    pub const ZERO: AmountFen = AmountFen(0);

    pub const fn from_fen(fen: i64) -> Self {
        AmountFen(fen)
    }

    pub const fn fen(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: AmountFen) -> Option<AmountFen> {
        self.0.checked_add(other.0).map(AmountFen)
    }

    pub fn checked_sub(self, other: AmountFen) -> Option<AmountFen> {
        self.0.checked_sub(other.0).map(AmountFen)
    }

    pub fn checked_neg(self) -> Option<AmountFen> {
        self.0.checked_neg().map(AmountFen)
    }

    /// Parses a yuan amount as people type it: `12`, `12.5`, `12.50`, `-3.05`, `0.07`.
    /// More than two decimals is refused rather than rounded: money is never invented.
    pub fn parse_yuan(text: &str) -> Result<AmountFen, AmountParseError> {
        parse_hundredths(text).map(AmountFen)
    }
}

/// Parses a decimal with at most two decimals into hundredths (yuan → fen, m² → 0.01 m²).
pub fn parse_hundredths(text: &str) -> Result<i64, AmountParseError> {
    parse_fixed(text, 2)
}

/// Parses kWh as people type them (`1234.5`, up to three decimals) into whole Wh; never
/// negative (register readings only count up from zero).
pub fn parse_kwh_as_wh(text: &str) -> Result<i64, AmountParseError> {
    match parse_fixed(text, 3)? {
        wh if wh < 0 => Err(AmountParseError::Malformed),
        wh => Ok(wh),
    }
}

/// Whole Wh as kWh with up to three decimals, trailing zeros dropped (`1234.5`).
pub fn format_wh_as_kwh(wh: i64) -> String {
    let sign = if wh < 0 { "-" } else { "" };
    let abs = wh.unsigned_abs();
    let frac = format!("{:03}", abs % 1000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", abs / 1000)
    } else {
        format!("{sign}{}.{frac}", abs / 1000)
    }
}

/// Parses a decimal with at most `decimals` decimals into an integer of that scale.
fn parse_fixed(text: &str, decimals: u32) -> Result<i64, AmountParseError> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > decimals as usize
    {
        return Err(AmountParseError::Malformed);
    }
    if digits.contains('.') && frac.is_empty() {
        return Err(AmountParseError::Malformed);
    }
    let scale = 10_i64.pow(decimals);
    let whole_units = whole
        .parse::<i64>()
        .map_err(|_| AmountParseError::TooLarge)?
        .checked_mul(scale)
        .ok_or(AmountParseError::TooLarge)?;
    // `frac` has at most `decimals` (≤ 18) ASCII digits, so it parses; pad it to the scale.
    let frac_units = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>()
            .map_err(|_| AmountParseError::Malformed)?
            * 10_i64.pow(decimals - frac.len() as u32)
    };
    let units = whole_units
        .checked_add(frac_units)
        .ok_or(AmountParseError::TooLarge)?;
    Ok(if negative { -units } else { units })
}

impl fmt::Display for AmountFen {
    /// Yuan with two decimals, e.g. `-3.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_parses_and_shows_as_kwh_from_integers() {
        let e = EnergyWh::parse_kwh("1234.5").unwrap();
        assert_eq!(e.wh(), 1_234_500);
        assert_eq!(e.to_string(), "1234.5");
        assert!(EnergyWh::parse_kwh("-1").is_err());
        assert!(EnergyWh::parse_kwh("1.2345").is_err());
        assert_eq!(
            EnergyWh::from_wh(i64::MAX).checked_add(EnergyWh::from_wh(1)),
            None
        );
        assert_eq!(serde_json::to_string(&e).unwrap(), "1234500");
    }

    #[test]
    fn parses_yuan_with_up_to_two_decimals() {
        assert_eq!(AmountFen::parse_yuan("12"), Ok(AmountFen::from_fen(1200)));
        assert_eq!(AmountFen::parse_yuan("12.5"), Ok(AmountFen::from_fen(1250)));
        assert_eq!(AmountFen::parse_yuan(" 0.07 "), Ok(AmountFen::from_fen(7)));
        assert_eq!(
            AmountFen::parse_yuan("-3.05"),
            Ok(AmountFen::from_fen(-305))
        );
    }

    #[test]
    fn refuses_malformed_or_over_precise_amounts() {
        for bad in ["", "abc", "1.234", "1.", ".5", "1,5", "--1", "1e3", "+1"] {
            assert_eq!(
                AmountFen::parse_yuan(bad),
                Err(AmountParseError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            AmountFen::parse_yuan("999999999999999999999"),
            Err(AmountParseError::TooLarge)
        );
    }

    #[test]
    fn displays_as_yuan_and_round_trips() {
        for fen in [0, 7, -7, 100, -305, 123_456_789, i64::MAX, i64::MIN + 1] {
            let amount = AmountFen::from_fen(fen);
            assert_eq!(AmountFen::parse_yuan(&amount.to_string()), Ok(amount));
        }
        assert_eq!(AmountFen::from_fen(-305).to_string(), "-3.05");
    }

    #[test]
    fn kwh_parse_to_whole_wh_and_back() {
        assert_eq!(parse_kwh_as_wh("1234.5"), Ok(1_234_500));
        assert_eq!(parse_kwh_as_wh("0.001"), Ok(1));
        assert_eq!(parse_kwh_as_wh("7"), Ok(7000));
        for bad in ["-1", "1.2345", "", "1."] {
            assert!(parse_kwh_as_wh(bad).is_err(), "{bad:?}");
        }
        for wh in [0, 1, 10, 1_234_500, 7000, 999_999_999] {
            assert_eq!(parse_kwh_as_wh(&format_wh_as_kwh(wh)), Ok(wh));
        }
        assert_eq!(format_wh_as_kwh(1_234_500), "1234.5");
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = AmountFen::from_fen(i64::MAX);
        assert_eq!(max.checked_add(AmountFen::from_fen(1)), None);
        assert_eq!(AmountFen::from_fen(i64::MIN).checked_neg(), None);
        assert_eq!(
            AmountFen::from_fen(5).checked_sub(AmountFen::from_fen(7)),
            Some(AmountFen::from_fen(-2))
        );
    }
}
