//! Typical daily consumption shapes of shops by type: the share of a day's energy used in each
//! local hour. The tariff preview uses them ("what would a restaurant using 120 kWh a day pay
//! under plan P versus Q"), and the meter simulator draws its consumption from them.

use serde::{Deserialize, Serialize};

/// Kinds of shop with a recognisable daily shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShopType {
    /// Fashion, electronics: lit and cooled from opening (10:00) to closing (22:00).
    Retail,
    /// Kitchens: peaks at lunch and dinner, prep in the morning.
    Restaurant,
    /// Offices: 08:00–19:00, little at night.
    Office,
    /// Supermarkets: refrigeration around the clock plus opening hours.
    Supermarket,
}

impl ShopType {
    pub const ALL: [ShopType; 4] = [
        ShopType::Retail,
        ShopType::Restaurant,
        ShopType::Office,
        ShopType::Supermarket,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShopType::Retail => "retail",
            ShopType::Restaurant => "restaurant",
            ShopType::Office => "office",
            ShopType::Supermarket => "supermarket",
        }
    }

    pub fn parse(text: &str) -> Option<ShopType> {
        ShopType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Per-mille of the day's energy in each local hour (sums to 1000).
    pub fn hourly_permille(self) -> [u16; 24] {
        match self {
            ShopType::Retail => [
                8, 8, 8, 8, 8, 8, 8, 10, 15, 30, 60, 70, 72, 72, 72, 72, 72, 75, 77, 76, 75, 60,
                20, 16,
            ],
            ShopType::Restaurant => [
                10, 10, 10, 10, 10, 10, 15, 25, 40, 50, 60, 90, 100, 60, 40, 35, 50, 80, 100, 80,
                60, 30, 15, 10,
            ],
            ShopType::Office => [
                10, 10, 10, 10, 10, 10, 15, 30, 60, 85, 90, 90, 75, 85, 90, 90, 85, 60, 30, 20, 10,
                10, 10, 5,
            ],
            ShopType::Supermarket => [
                25, 25, 25, 25, 25, 25, 30, 40, 50, 53, 53, 53, 53, 53, 53, 53, 53, 53, 53, 55, 50,
                40, 30, 25,
            ],
        }
    }

    /// A day of `daily_wh` split over the hours by the shape, in whole Wh that add up exactly
    /// (the rest of the integer division goes to the largest hours first).
    pub fn hourly_wh(self, daily_wh: i64) -> [i64; 24] {
        let shape = self.hourly_permille();
        let mut hours = [0i64; 24];
        let mut given = 0i64;
        for (slot, &permille) in hours.iter_mut().zip(shape.iter()) {
            *slot = daily_wh.saturating_mul(i64::from(permille)) / 1000;
            given += *slot;
        }
        let mut order: Vec<usize> = (0..24).collect();
        order.sort_by_key(|&h| std::cmp::Reverse(shape[h]));
        let mut rest = daily_wh - given;
        for &h in order.iter().cycle() {
            if rest <= 0 {
                break;
            }
            hours[h] += 1;
            rest -= 1;
        }
        hours
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_sum_to_a_whole_day() {
        for t in ShopType::ALL {
            let total: u32 = t.hourly_permille().iter().map(|&p| u32::from(p)).sum();
            assert_eq!(total, 1000, "{t:?}");
            assert_eq!(ShopType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn hourly_energy_adds_up_exactly() {
        for t in ShopType::ALL {
            for daily in [0, 1, 7, 999, 120_000, 123_457] {
                let hours = t.hourly_wh(daily);
                assert_eq!(hours.iter().sum::<i64>(), daily, "{t:?} {daily}");
                assert!(hours.iter().all(|&h| h >= 0));
            }
        }
        let restaurant = ShopType::Restaurant.hourly_wh(100_000);
        assert!(restaurant[12] > restaurant[3] * 5, "lunch beats the night");
    }
}
