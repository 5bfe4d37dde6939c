//! Money in integer fen (1 yuan = 100 fen). Never floats; every operation is checked, so an
//! overflow is an error the caller sees rather than a wrapped balance.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of money in fen. May be negative (a debit, an overdrawn balance).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct AmountFen(i64);

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
    {
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
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 2 {
            return Err(AmountParseError::Malformed);
        }
        if digits.contains('.') && frac.is_empty() {
            return Err(AmountParseError::Malformed);
        }
        let whole_fen = whole
            .parse::<i64>()
            .map_err(|_| AmountParseError::TooLarge)?
            .checked_mul(100)
            .ok_or(AmountParseError::TooLarge)?;
        let frac_fen = match frac.len() {
            0 => 0,
            1 => frac.parse::<i64>().expect("one ascii digit parses") * 10,
            _ => frac.parse::<i64>().expect("two ascii digits parse"),
        };
        let fen = whole_fen
            .checked_add(frac_fen)
            .ok_or(AmountParseError::TooLarge)?;
        Ok(if negative { -fen } else { fen })
    }
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
