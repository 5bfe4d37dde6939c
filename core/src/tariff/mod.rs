//! Tariff plans (DESIGN.md: Tariffs and rating): what a kWh costs at a given moment for a given
//! meter. A plan is a list of versions, each in force from 00:00 local time of its effective date
//! until the next one, so a price change never rewrites history. A version has a base price per
//! TOU period (one period for a flat price), seasonal day schedules that say which period each
//! minute of a workday or a holiday belongs to, optional tiers on the meter's monthly or annual
//! kWh, and optional fixed service fees.
//!
//! Prices are integer "price units" of 0.0001 yuan/kWh. One Wh at one price unit costs exactly
//! 1e-5 fen, so every charge is an exact integer in 1e-5 fen (`rating` carries the sub-fen rest).
//! Everything here is plain data with validation; [`crate::tariff::rating`] uses it.

pub mod profile;
pub mod rating;

#[cfg(feature = "db")]
pub mod plans;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Price units (0.0001 yuan/kWh) above which a price is surely a typing error: 100 yuan/kWh.
pub const PRICE_UNITS_MAX: i64 = 1_000_000;
/// Switch points allowed in one day schedule (the issue asks for at least 14).
pub const SWITCHES_MAX: usize = 48;
/// Tiers allowed in one version.
pub const TIERS_MAX: usize = 8;
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// A time-of-use period (尖 峰 平 谷 深谷).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Period {
    Sharp,
    Peak,
    Flat,
    Valley,
    DeepValley,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Sharp,
        Period::Peak,
        Period::Flat,
        Period::Valley,
        Period::DeepValley,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Sharp => "sharp",
            Period::Peak => "peak",
            Period::Flat => "flat",
            Period::Valley => "valley",
            Period::DeepValley => "deep_valley",
        }
    }
}

/// From this minute of the local day on (until the next switch), energy is in `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Switch {
    /// Minute of the local day, 0..1440.
    pub minute: u16,
    pub period: Period,
}

/// Which period each minute of a day belongs to. The first switch is at minute 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DaySchedule {
    pub switches: Vec<Switch>,
}

impl DaySchedule {
    /// A whole day in one period (a flat price).
    pub fn all_day(period: Period) -> Self {
        DaySchedule {
            switches: vec![Switch { minute: 0, period }],
        }
    }

    /// The period at `minute` of the day.
    pub fn period_at(&self, minute: u16) -> Period {
        self.switches
            .iter()
            .take_while(|s| s.minute <= minute)
            .last()
            .map_or(self.switches[0].period, |s| s.period)
    }
}

/// A date range of the year (inclusive month/day bounds, may wrap over New Year) with its day
/// schedules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Season {
    /// First day, as [month, day].
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u32>))]
    pub from: (u32, u32),
    /// Last day, as [month, day]; before `from` means the season wraps over New Year.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u32>))]
    pub to: (u32, u32),
    pub workday: DaySchedule,
    /// Weekends and holidays; the workday schedule when absent.
    pub holiday: Option<DaySchedule>,
}

impl Season {
    fn contains(&self, month: u32, day: u32) -> bool {
        let key = (month, day);
        if self.from <= self.to {
            self.from <= key && key <= self.to
        } else {
            key >= self.from || key <= self.to
        }
    }
}

/// How tier thresholds count energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TierBasis {
    /// kWh rated for the meter in the local calendar month.
    Monthly,
    /// kWh rated for the meter in the local calendar year.
    Annual,
}

/// What a tier does to the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "price_units")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TierPrice {
    /// Replaces the base price (flat plans only).
    Absolute(i64),
    /// Added to the base price of the period.
    AddOn(i64),
}

/// From `from_wh` of cumulative energy on, this tier's price applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tier {
    pub from_wh: i64,
    pub price: TierPrice,
}

/// Tiers of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tiers {
    pub basis: TierBasis,
    /// Sorted by `from_wh`, the first from 0.
    pub tiers: Vec<Tier>,
}

/// A fixed service fee (charged by the billing side per local day or month, not by rating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "per", content = "amount_fen")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Fee {
    Day(i64),
    Month(i64),
}

/// One version of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TariffVersion {
    /// In force from 00:00 local time of this date.
    pub effective: NaiveDate,
    /// Price units per period; a flat plan has only `flat`.
    pub prices: BTreeMap<Period, i64>,
    /// Seasons covering the whole year; empty means "flat all year" (every minute `flat`).
    #[serde(default)]
    pub seasons: Vec<Season>,
    #[serde(default)]
    pub tiers: Option<Tiers>,
    #[serde(default)]
    pub fees: Vec<Fee>,
}

/// Weekend and public-holiday rules of a company (holidays and make-up workdays, 调休).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    pub holidays: BTreeSet<NaiveDate>,
    /// Weekend days that are workdays (make-up workdays).
    pub workdays: BTreeSet<NaiveDate>,
}

impl Calendar {
    /// Whether `date` follows the holiday schedule: a public holiday, or a weekend day that is
    /// not a make-up workday.
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        if self.workdays.contains(&date) {
            return false;
        }
        self.holidays.contains(&date) || matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
    }
}

impl TariffVersion {
    /// A flat price all year.
    pub fn flat(effective: NaiveDate, price_units: i64) -> Self {
        TariffVersion {
            effective,
            prices: BTreeMap::from([(Period::Flat, price_units)]),
            seasons: vec![],
            tiers: None,
            fees: vec![],
        }
    }

    /// The day schedule in force on `date`.
    pub fn schedule_for(&self, date: NaiveDate, calendar: &Calendar) -> DaySchedule {
        let season = self
            .seasons
            .iter()
            .find(|s| s.contains(date.month(), date.day()));
        match season {
            None => DaySchedule::all_day(Period::Flat),
            Some(season) => match (&season.holiday, calendar.is_holiday(date)) {
                (Some(holiday), true) => holiday.clone(),
                _ => season.workday.clone(),
            },
        }
    }

    /// The base price of `period` (validation guarantees every used period has one).
    pub fn price_of(&self, period: Period) -> i64 {
        self.prices.get(&period).copied().unwrap_or(0)
    }

    /// Checks the version; the map names each field in error with its message.
    pub fn validate(&self) -> Result<(), BTreeMap<String, String>> {
        let mut errors = BTreeMap::new();
        for (period, price) in &self.prices {
            if !(0..=PRICE_UNITS_MAX).contains(price) {
                errors.insert(
                    format!("prices.{}", period.as_str()),
                    "between 0 and 100 yuan/kWh".into(),
                );
            }
        }
        let mut used = BTreeSet::new();
        for (i, season) in self.seasons.iter().enumerate() {
            for (name, schedule) in [
                ("workday", Some(&season.workday)),
                ("holiday", season.holiday.as_ref()),
            ] {
                let Some(schedule) = schedule else { continue };
                if let Err(message) = check_schedule(schedule) {
                    errors.insert(format!("seasons.{i}.{name}"), message);
                }
                used.extend(schedule.switches.iter().map(|s| s.period));
            }
            if NaiveDate::from_ymd_opt(2024, season.from.0, season.from.1).is_none()
                || NaiveDate::from_ymd_opt(2024, season.to.0, season.to.1).is_none()
            {
                errors.insert(format!("seasons.{i}"), "not a calendar date".into());
            }
        }
        if self.seasons.is_empty() {
            used.insert(Period::Flat);
        } else if !errors.keys().any(|k| k.starts_with("seasons")) {
            if let Err(message) = check_seasons_cover_year(&self.seasons) {
                errors.insert("seasons".into(), message);
            }
        }
        for period in used {
            if !self.prices.contains_key(&period) {
                errors.insert(
                    format!("prices.{}", period.as_str()),
                    "the schedule uses this period: give it a price".into(),
                );
            }
        }
        if let Some(tiers) = &self.tiers {
            if let Err(message) = check_tiers(tiers, self.seasons.is_empty()) {
                errors.insert("tiers".into(), message);
            }
        }
        for fee in &self.fees {
            let (Fee::Day(amount) | Fee::Month(amount)) = fee;
            if !(0..=10_000_000).contains(amount) {
                errors.insert("fees".into(), "between 0 and 100,000 yuan".into());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Parses a price typed in yuan/kWh with up to four decimals (`0.8123`) into price units.
pub fn parse_price_units(text: &str) -> Result<i64, &'static str> {
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole)
        || (!frac.is_empty() && !digits(frac))
        || frac.len() > 4
        || (text.contains('.') && frac.is_empty())
    {
        return Err("yuan per kWh with at most four decimals, e.g. 0.8123");
    }
    let whole: i64 = whole.parse().map_err(|_| "too large")?;
    let frac: i64 = format!("{frac:0<4}").parse().expect("four ascii digits");
    let units = whole
        .checked_mul(10_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or("too large")?;
    if units > PRICE_UNITS_MAX {
        return Err("at most 100 yuan/kWh");
    }
    Ok(units)
}

/// Formats price units as yuan/kWh with four decimals.
pub fn format_price_units(units: i64) -> String {
    format!("{}.{:04}", units / 10_000, units % 10_000)
}

impl Period {
    /// Reads an English or Chinese period name (`peak`, `峰`, …).
    pub fn parse(text: &str) -> Option<Period> {
        match text.trim() {
            "sharp" | "尖" => Some(Period::Sharp),
            "peak" | "峰" => Some(Period::Peak),
            "flat" | "平" => Some(Period::Flat),
            "valley" | "谷" => Some(Period::Valley),
            "deep_valley" | "深谷" => Some(Period::DeepValley),
            _ => None,
        }
    }
}

/// Parses a day schedule typed as `00:00 valley, 08:00 flat, 18:00 peak, 22:00 valley`
/// (Chinese period names work too; commas, semicolons or new lines separate switch points).
pub fn parse_schedule(text: &str) -> Result<DaySchedule, String> {
    let mut switches = Vec::new();
    for item in text
        .split([',', ';', '\n', '，', '；'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (time, period) = item
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("\"{item}\": write a time and a period, e.g. 08:00 flat"))?;
        let (h, m) = time
            .split_once(':')
            .ok_or_else(|| format!("\"{time}\" is not a time like 08:00"))?;
        let (h, m): (u16, u16) = match (h.parse(), m.parse()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => (h, m),
            _ => return Err(format!("\"{time}\" is not a time like 08:00")),
        };
        let period = Period::parse(period).ok_or_else(|| {
            format!(
                "\"{}\" is not a period (sharp, peak, flat, valley, deep_valley)",
                period.trim()
            )
        })?;
        switches.push(Switch {
            minute: h * 60 + m,
            period,
        });
    }
    let schedule = DaySchedule { switches };
    check_schedule(&schedule)?;
    Ok(schedule)
}

fn check_schedule(schedule: &DaySchedule) -> Result<(), String> {
    let switches = &schedule.switches;
    if switches.is_empty() || switches[0].minute != 0 {
        return Err("the first switch point is at 00:00".into());
    }
    if switches.len() > SWITCHES_MAX {
        return Err(format!("at most {SWITCHES_MAX} switch points a day"));
    }
    if switches.iter().any(|s| s.minute >= MINUTES_PER_DAY) {
        return Err("switch points are times of day before 24:00".into());
    }
    if switches.windows(2).any(|w| w[0].minute >= w[1].minute) {
        return Err("switch points overlap or are out of order".into());
    }
    Ok(())
}

fn check_seasons_cover_year(seasons: &[Season]) -> Result<(), String> {
    // 2024 is a leap year, so 29 February is checked too.
    let mut day = NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date");
    while day.year() == 2024 {
        let count = seasons
            .iter()
            .filter(|s| s.contains(day.month(), day.day()))
            .count();
        if count != 1 {
            let problem = if count == 0 {
                "no season covers"
            } else {
                "seasons overlap on"
            };
            return Err(format!("{problem} {:02}-{:02}", day.month(), day.day()));
        }
        day = day.succ_opt().expect("next day");
    }
    Ok(())
}

fn check_tiers(tiers: &Tiers, flat_base: bool) -> Result<(), String> {
    let list = &tiers.tiers;
    if list.is_empty() || list[0].from_wh != 0 {
        return Err("the first tier starts at 0 kWh".into());
    }
    if list.len() > TIERS_MAX {
        return Err(format!("at most {TIERS_MAX} tiers"));
    }
    if list.windows(2).any(|w| w[0].from_wh >= w[1].from_wh) {
        return Err("tier thresholds must increase".into());
    }
    for tier in list {
        match tier.price {
            TierPrice::Absolute(p) | TierPrice::AddOn(p) if !(0..=PRICE_UNITS_MAX).contains(&p) => {
                return Err("tier prices between 0 and 100 yuan/kWh".into());
            }
            TierPrice::Absolute(_) if !flat_base => {
                return Err(
                    "absolute tier prices need a flat base price; use add-on prices with TOU"
                        .into(),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn tou_schedule() -> DaySchedule {
        let s = |h: u16, period| Switch {
            minute: h * 60,
            period,
        };
        DaySchedule {
            switches: vec![
                s(0, Period::Valley),
                s(8, Period::Flat),
                s(10, Period::Peak),
                s(12, Period::Sharp),
                s(14, Period::Peak),
                s(18, Period::Flat),
                s(23, Period::Valley),
            ],
        }
    }

    pub(crate) fn tou_version(effective: NaiveDate) -> TariffVersion {
        TariffVersion {
            effective,
            prices: BTreeMap::from([
                (Period::Sharp, 16_400),
                (Period::Peak, 14_800),
                (Period::Flat, 8_000),
                (Period::Valley, 3_200),
            ]),
            seasons: vec![Season {
                from: (1, 1),
                to: (12, 31),
                workday: tou_schedule(),
                holiday: Some(DaySchedule::all_day(Period::Valley)),
            }],
            tiers: None,
            fees: vec![],
        }
    }

    #[test]
    fn a_day_schedule_gives_the_period_of_each_minute() {
        let s = tou_schedule();
        assert_eq!(s.period_at(0), Period::Valley);
        assert_eq!(s.period_at(8 * 60 - 1), Period::Valley);
        assert_eq!(s.period_at(8 * 60), Period::Flat);
        assert_eq!(s.period_at(12 * 60 + 30), Period::Sharp);
        assert_eq!(s.period_at(23 * 60 + 59), Period::Valley);
    }

    #[test]
    fn holidays_weekends_and_make_up_workdays() {
        let mut calendar = Calendar::default();
        calendar.holidays.insert(date(2026, 10, 1)); // a Thursday
        calendar.workdays.insert(date(2026, 10, 10)); // a Saturday
        assert!(calendar.is_holiday(date(2026, 10, 1)));
        assert!(calendar.is_holiday(date(2026, 10, 4)), "Sunday");
        assert!(!calendar.is_holiday(date(2026, 10, 10)), "make-up workday");
        assert!(!calendar.is_holiday(date(2026, 10, 12)), "Monday");
        let v = tou_version(date(2026, 1, 1));
        assert_eq!(
            v.schedule_for(date(2026, 10, 1), &calendar),
            DaySchedule::all_day(Period::Valley)
        );
        assert_eq!(
            v.schedule_for(date(2026, 10, 10), &calendar),
            tou_schedule()
        );
    }

    #[test]
    fn prices_and_schedules_parse_as_people_type_them() {
        assert_eq!(parse_price_units("0.8123"), Ok(8123));
        assert_eq!(parse_price_units("1.48"), Ok(14_800));
        assert_eq!(parse_price_units("2"), Ok(20_000));
        for bad in ["", "0.81234", "-1", "1.", "abc", "101"] {
            assert!(parse_price_units(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_price_units(8123), "0.8123");
        let s = parse_schedule("00:00 谷, 08:00 flat；18:00 峰\n22:00 valley").unwrap();
        assert_eq!(s.switches.len(), 4);
        assert_eq!(s.period_at(19 * 60), Period::Peak);
        assert!(parse_schedule("08:00 flat").unwrap_err().contains("00:00"));
        assert!(parse_schedule("00:00 flat, 25:00 peak").is_err());
        assert!(parse_schedule("00:00 cheap").unwrap_err().contains("cheap"));
        assert!(parse_schedule("00:00 flat, 08:00 peak, 07:00 valley")
            .unwrap_err()
            .contains("order"));
    }

    #[test]
    fn seasons_may_wrap_over_new_year() {
        let winter = Season {
            from: (11, 1),
            to: (2, 28),
            workday: DaySchedule::all_day(Period::Peak),
            holiday: None,
        };
        assert!(winter.contains(12, 31) && winter.contains(1, 15) && winter.contains(2, 28));
        assert!(!winter.contains(3, 1) && !winter.contains(10, 31));
    }

    #[test]
    fn valid_versions_pass() {
        assert_eq!(
            TariffVersion::flat(date(2026, 1, 1), 8123).validate(),
            Ok(())
        );
        assert_eq!(tou_version(date(2026, 1, 1)).validate(), Ok(()));
    }

    #[test]
    fn validation_names_each_problem() {
        let mut v = tou_version(date(2026, 1, 1));
        v.seasons[0].workday.switches[2].minute = 8 * 60; // same minute as the previous switch
        v.prices.remove(&Period::Sharp);
        let errors = v.validate().unwrap_err();
        assert!(
            errors["seasons.0.workday"].contains("overlap"),
            "{errors:?}"
        );
        assert!(errors.contains_key("prices.sharp"), "{errors:?}");

        let mut v = tou_version(date(2026, 1, 1));
        v.seasons[0].to = (6, 30);
        assert!(v.validate().unwrap_err()["seasons"].contains("no season covers 07-01"));

        let mut v = TariffVersion::flat(date(2026, 1, 1), 8000);
        v.tiers = Some(Tiers {
            basis: TierBasis::Monthly,
            tiers: vec![
                Tier {
                    from_wh: 0,
                    price: TierPrice::AddOn(0),
                },
                Tier {
                    from_wh: 400_000,
                    price: TierPrice::AddOn(500),
                },
                Tier {
                    from_wh: 240_000,
                    price: TierPrice::AddOn(3000),
                },
            ],
        });
        assert!(v.validate().unwrap_err()["tiers"].contains("increase"));

        let mut v = tou_version(date(2026, 1, 1));
        v.tiers = Some(Tiers {
            basis: TierBasis::Annual,
            tiers: vec![Tier {
                from_wh: 0,
                price: TierPrice::Absolute(9000),
            }],
        });
        assert!(v.validate().unwrap_err()["tiers"].contains("flat base"));

        let v = TariffVersion::flat(date(2026, 1, 1), -1);
        assert!(v.validate().unwrap_err().contains_key("prices.flat"));
    }
}
