//! Quota windows: calendar days, ISO weeks and months in UTC.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};
use tollbridge_provider::QuotaPeriod;

const DAY: i64 = 86_400;

/// A quota period, as persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Period {
    Day,
    Week,
    Month,
}

impl From<QuotaPeriod> for Period {
    fn from(period: QuotaPeriod) -> Self {
        match period {
            QuotaPeriod::Day => Self::Day,
            QuotaPeriod::Week => Self::Week,
            QuotaPeriod::Month => Self::Month,
        }
    }
}

impl Period {
    /// The period's name in the shared store.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Day => "Day",
            Self::Week => "Week",
            Self::Month => "Month",
        }
    }
}

/// `[start, end)` in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl Window {
    /// The window of `period` holding the instant `second`.
    pub(crate) fn containing(period: Period, second: i64) -> Self {
        match period {
            Period::Day => {
                let start = second.div_euclid(DAY) * DAY;
                Self { start, end: start + DAY }
            }
            Period::Week => {
                // 1970-01-01 was a Thursday: day 0 is 3 days after a Monday.
                let days = second.div_euclid(DAY);
                let start = (days - (days + 3).rem_euclid(7)) * DAY;
                Self { start, end: start + 7 * DAY }
            }
            Period::Month => month_containing(second),
        }
    }

    /// Length in seconds: the advertised `w`.
    pub(crate) fn seconds(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }
}

fn month_containing(second: i64) -> Window {
    let month = || -> Result<Window, jiff::Error> {
        let first: Date = Timestamp::from_second(second)?.to_zoned(TimeZone::UTC).date().first_of_month();
        let next = first.checked_add(1.month())?;
        let start_of = |date: Date| date.to_zoned(TimeZone::UTC).map(|z| z.timestamp().as_second());
        Ok(Window { start: start_of(first)?, end: start_of(next)? })
    };
    // Only instants near the ends of jiff's range (years -9999 and 9999) fail; a day window there
    // keeps the arithmetic total.
    month().unwrap_or_else(|_| Window::containing(Period::Day, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_second()
    }

    fn window(period: Period, instant: &str) -> (String, String) {
        let w = Window::containing(period, at(instant));
        let show = |s| Timestamp::from_second(s).unwrap().to_string();
        (show(w.start), show(w.end))
    }

    fn pair(start: &str, end: &str) -> (String, String) {
        (start.to_owned(), end.to_owned())
    }

    #[test]
    fn days_start_at_midnight_utc() {
        let day = pair("2024-03-10T00:00:00Z", "2024-03-11T00:00:00Z");
        assert_eq!(window(Period::Day, "2024-03-10T00:00:00Z"), day);
        assert_eq!(window(Period::Day, "2024-03-10T23:59:59.999Z"), day);
        assert_eq!(window(Period::Day, "2024-03-11T00:00:00Z").0, "2024-03-11T00:00:00Z");
        assert_eq!(window(Period::Day, "1969-12-31T12:00:00Z").0, "1969-12-31T00:00:00Z");
        assert_eq!(Window::containing(Period::Day, 0).seconds(), 86_400);
    }

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2024-03-10 is a Sunday, 2024-03-11 a Monday.
        let week = pair("2024-03-04T00:00:00Z", "2024-03-11T00:00:00Z");
        assert_eq!(window(Period::Week, "2024-03-04T00:00:00Z"), week);
        assert_eq!(window(Period::Week, "2024-03-07T12:00:00Z"), week);
        assert_eq!(window(Period::Week, "2024-03-10T23:59:59Z"), week);
        assert_eq!(window(Period::Week, "2024-03-11T00:00:00Z").0, "2024-03-11T00:00:00Z");
        assert_eq!(window(Period::Week, "1970-01-01T00:00:00Z").0, "1969-12-29T00:00:00Z");
        // ISO week 1 of 2025 starts in 2024.
        assert_eq!(window(Period::Week, "2025-01-01T00:00:00Z").0, "2024-12-30T00:00:00Z");
        assert_eq!(Window::containing(Period::Week, 0).seconds(), 7 * 86_400);
    }

    #[test]
    fn months_start_on_the_first_utc() {
        assert_eq!(
            window(Period::Month, "2024-01-31T23:59:59Z"),
            pair("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
        );
        assert_eq!(
            window(Period::Month, "2024-02-01T00:00:00Z"),
            pair("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")
        );
        assert_eq!(
            window(Period::Month, "2023-12-15T08:00:00Z"),
            pair("2023-12-01T00:00:00Z", "2024-01-01T00:00:00Z")
        );
        assert_eq!(Window::containing(Period::Month, at("2024-02-10T00:00:00Z")).seconds(), 29 * 86_400);
        assert_eq!(Window::containing(Period::Month, at("2023-02-10T00:00:00Z")).seconds(), 28 * 86_400);
    }

    #[test]
    fn periods_map_from_the_ir() {
        assert_eq!(Period::from(QuotaPeriod::Day), Period::Day);
        assert_eq!(Period::from(QuotaPeriod::Week), Period::Week);
        assert_eq!(Period::from(QuotaPeriod::Month), Period::Month);
    }
}
