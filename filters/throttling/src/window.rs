//! Windows and the arithmetic of the two counting algorithms.
//!
//! Every window is aligned to the Unix epoch in UTC: a window of `w` ms is
//! `[k·w, (k+1)·w)`. For lengths that divide the next unit (`1s`…`30s`,
//! `1m`…`30m`, `1h`…`12h`, `1d`) that is the wall clock: `10m` windows begin
//! at :00, :10, :20…, `1d` windows at 00:00 UTC.
//!
//! - **fixed**: a counter per window; a request is admitted while
//!   `count < limit`. Exact: never more than `limit` per window.
//! - **sliding**: the two-bucket estimate
//!   `previous · (w − elapsed) / w + current`, admitted while the estimate
//!   after the request is at most `limit`. It smooths the double burst a
//!   fixed window allows around its edge; it is an estimate that assumes the
//!   previous window's requests were spread evenly. Computed in integers.

use std::fmt;

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// The longest window accepted.
pub const MAX_WINDOW_MS: u64 = 366 * DAY_MS;
/// The longest window the sliding algorithm accepts.
pub const MAX_SLIDING_MS: u64 = HOUR_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    ms: u64,
}

impl Window {
    /// Parses `<whole number><unit>` with unit `s`, `m`, `h` or `d`: `1s`, `10m`, `1h`, `1d`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let not_a_window = || {
            format!(
                "`{text}` is not a window; use a whole number and a unit: `1s`, `10m`, `1h`, `1d`"
            )
        };
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let unit_ms = match unit {
            "s" => SECOND_MS,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => DAY_MS,
            _ => return Err(not_a_window()),
        };
        if number.is_empty() || number.len() > 9 {
            return Err(not_a_window());
        }
        let count: u64 = number.parse().map_err(|_| not_a_window())?;
        if count == 0 {
            return Err(format!("`{text}` is empty; a window is at least `1s`"));
        }
        let ms = count.saturating_mul(unit_ms);
        if ms > MAX_WINDOW_MS {
            return Err(format!(
                "`{text}` is longer than the longest window, `366d`"
            ));
        }
        Ok(Self { ms })
    }

    pub fn ms(self) -> u64 {
        self.ms
    }

    /// The number of the window `now_ms` falls in, counted from the epoch.
    pub fn index(self, now_ms: u64) -> u64 {
        now_ms / self.ms
    }

    /// Milliseconds since the current window began.
    pub fn elapsed(self, now_ms: u64) -> u64 {
        now_ms % self.ms
    }

    /// Milliseconds until the current window ends (at least 1).
    pub fn until_end(self, now_ms: u64) -> u64 {
        self.ms - self.elapsed(now_ms)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit_ms, unit) in [(DAY_MS, "d"), (HOUR_MS, "h"), (MINUTE_MS, "m")] {
            if self.ms % unit_ms == 0 {
                return write!(f, "{}{unit}", self.ms / unit_ms);
            }
        }
        write!(f, "{}s", self.ms / SECOND_MS)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    Fixed,
    Sliding,
}

/// What one counter allows: so many requests per window, counted one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counting {
    pub window: Window,
    pub algorithm: Algorithm,
    pub limit: u32,
}

/// A counter's state as the algorithms see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Admitted in the previous window (sliding only; 0 for fixed).
    pub previous: u32,
    /// Admitted in the current window.
    pub current: u32,
}

impl Counting {
    /// Whether one more request fits.
    pub fn admits(&self, counts: Counts, now_ms: u64) -> bool {
        match self.algorithm {
            Algorithm::Fixed => counts.current < self.limit,
            Algorithm::Sliding => {
                let w = u128::from(self.window.ms);
                self.scaled_estimate(counts, now_ms) + w <= u128::from(self.limit) * w
            }
        }
    }

    /// How many more requests fit now (the estimate rounded up, for sliding).
    pub fn remaining(&self, counts: Counts, now_ms: u64) -> u32 {
        match self.algorithm {
            Algorithm::Fixed => self.limit.saturating_sub(counts.current),
            Algorithm::Sliding => {
                let w = u128::from(self.window.ms);
                let room = (u128::from(self.limit) * w)
                    .saturating_sub(self.scaled_estimate(counts, now_ms));
                u32::try_from(room / w).unwrap_or(u32::MAX)
            }
        }
    }

    /// Milliseconds until one more request fits, if nothing else is admitted
    /// meanwhile; 0 when it fits now.
    pub fn wait_ms(&self, counts: Counts, now_ms: u64) -> u64 {
        if self.admits(counts, now_ms) {
            return 0;
        }
        let until_end = self.window.until_end(now_ms);
        match self.algorithm {
            Algorithm::Fixed => until_end,
            Algorithm::Sliding => {
                let w = self.window.ms;
                let elapsed = self.window.elapsed(now_ms);
                let limit = u64::from(self.limit);
                let current = u64::from(counts.current);
                // Later in this window: previous·(w − e) ≤ (limit − current − 1)·w.
                if current < limit && counts.previous > 0 {
                    let rest = (limit - current - 1).saturating_mul(w) / u64::from(counts.previous);
                    if rest > 0 {
                        return (w - rest.min(w)).saturating_sub(elapsed);
                    }
                }
                // In the next window, this window's count is the previous one:
                // current·(w − e) ≤ (limit − 1)·w.
                let rest = (limit - 1)
                    .saturating_mul(w)
                    .checked_div(current)
                    .unwrap_or(w);
                until_end + (w - rest.min(w))
            }
        }
    }

    /// `previous·(w − elapsed) + current·w`: the estimate times `w`.
    fn scaled_estimate(&self, counts: Counts, now_ms: u64) -> u128 {
        let w = u128::from(self.window.ms);
        let left = w - u128::from(self.window.elapsed(now_ms));
        u128::from(counts.previous) * left + u128::from(counts.current) * w
    }
}

/// Whole seconds for `Retry-After` and `X-RateLimit-Reset`: rounded up, at least 1.
pub fn whole_seconds(ms: u64) -> u64 {
    ms.div_ceil(SECOND_MS).max(1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Milliseconds since the epoch for a UTC date and time.
    pub(crate) fn utc(date: (i64, u32, u32), time: (u64, u64, u64), ms: u64) -> u64 {
        let (y, m, d) = date;
        // Days from civil (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (i64::from(m) + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = u64::try_from(era * 146_097 + doe - 719_468).unwrap();
        let (h, mi, s) = time;
        days * DAY_MS + h * HOUR_MS + mi * MINUTE_MS + s * SECOND_MS + ms
    }

    fn fixed(limit: u32, window: &str) -> Counting {
        Counting {
            window: Window::parse(window).unwrap(),
            algorithm: Algorithm::Fixed,
            limit,
        }
    }

    fn sliding(limit: u32, window: &str) -> Counting {
        Counting {
            algorithm: Algorithm::Sliding,
            ..fixed(limit, window)
        }
    }

    fn counts(previous: u32, current: u32) -> Counts {
        Counts { previous, current }
    }

    #[test]
    fn the_date_helper_agrees_with_known_timestamps() {
        assert_eq!(utc((1970, 1, 1), (0, 0, 0), 0), 0);
        assert_eq!(utc((2000, 3, 1), (0, 0, 0), 0), 951_868_800_000);
        assert_eq!(utc((2026, 1, 1), (0, 0, 0), 0), 1_767_225_600_000);
    }

    #[test]
    fn windows_parse_from_a_number_and_a_unit() {
        for (text, ms) in [
            ("1s", 1_000),
            ("30s", 30_000),
            ("1m", 60_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("6h", 21_600_000),
            ("1d", 86_400_000),
            ("7d", 604_800_000),
            ("366d", MAX_WINDOW_MS),
        ] {
            assert_eq!(Window::parse(text).map(Window::ms), Ok(ms), "{text}");
        }
    }

    #[test]
    fn malformed_windows_are_refused_with_the_reason() {
        let syntax = |t: &str| {
            format!("`{t}` is not a window; use a whole number and a unit: `1s`, `10m`, `1h`, `1d`")
        };
        for text in [
            "",
            "s",
            "1",
            "1 s",
            " 1s",
            "1S",
            "1min",
            "1.5h",
            "-1s",
            "1ms",
            "1w",
            "+1s",
            "9999999999s",
        ] {
            assert_eq!(Window::parse(text), Err(syntax(text)), "{text:?}");
        }
        assert_eq!(
            Window::parse("0m"),
            Err("`0m` is empty; a window is at least `1s`".into())
        );
        assert_eq!(
            Window::parse("367d"),
            Err("`367d` is longer than the longest window, `366d`".into())
        );
    }

    #[test]
    fn windows_display_in_their_largest_whole_unit() {
        for text in ["1s", "90s", "10m", "1h", "36h", "1d", "7d"] {
            assert_eq!(Window::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Window::parse("60m").unwrap().to_string(), "1h");
        assert_eq!(Window::parse("120s").unwrap().to_string(), "2m");
    }

    #[test]
    fn a_minute_window_ends_exactly_at_the_utc_minute() {
        let minute = Window::parse("1m").unwrap();
        let last_ms = utc((2026, 5, 17), (13, 41, 59), 999);
        let next = utc((2026, 5, 17), (13, 42, 0), 0);
        assert_eq!(minute.index(last_ms) + 1, minute.index(next));
        assert_eq!(minute.until_end(last_ms), 1);
        assert_eq!(minute.elapsed(next), 0);
        assert_eq!(minute.until_end(next), MINUTE_MS);
        assert_eq!(whole_seconds(minute.until_end(last_ms)), 1);
    }

    #[test]
    fn an_hour_window_ends_exactly_at_the_utc_hour() {
        let hour = Window::parse("1h").unwrap();
        let last_ms = utc((2026, 5, 17), (13, 59, 59), 999);
        let next = utc((2026, 5, 17), (14, 0, 0), 0);
        assert_eq!(hour.index(last_ms) + 1, hour.index(next));
        assert_eq!(
            hour.index(utc((2026, 5, 17), (13, 0, 0), 0)),
            hour.index(last_ms)
        );
        assert_eq!(
            hour.until_end(utc((2026, 5, 17), (13, 30, 0), 0)),
            30 * MINUTE_MS
        );
    }

    #[test]
    fn a_day_window_ends_at_utc_midnight_including_leap_days_and_new_year() {
        let day = Window::parse("1d").unwrap();
        for (last, next) in [
            ((2028, 2, 28), (2028, 2, 29)),
            ((2028, 2, 29), (2028, 3, 1)),
            ((2026, 12, 31), (2027, 1, 1)),
        ] {
            let last_ms = utc(last, (23, 59, 59), 999);
            let next_ms = utc(next, (0, 0, 0), 0);
            assert_eq!(day.index(last_ms) + 1, day.index(next_ms), "{last:?}");
            assert_eq!(day.until_end(last_ms), 1);
            assert_eq!(day.elapsed(next_ms), 0);
        }
        let noon = utc((2026, 5, 17), (12, 0, 0), 0);
        assert_eq!(whole_seconds(day.until_end(noon)), 43_200);
    }

    #[test]
    fn ten_minute_windows_begin_on_the_tens() {
        let ten = Window::parse("10m").unwrap();
        let at = |m, s| utc((2026, 5, 17), (9, m, s), 0);
        assert_eq!(ten.index(at(10, 0)), ten.index(at(19, 59)));
        assert_ne!(ten.index(at(19, 59)), ten.index(at(20, 0)));
        assert_eq!(ten.until_end(at(17, 30)), 150 * SECOND_MS);
    }

    #[test]
    fn a_fixed_window_admits_the_limit_and_then_waits_for_the_next_window() {
        let quota = fixed(3, "1m");
        let now = utc((2026, 5, 17), (9, 0, 45), 250);
        assert!(quota.admits(counts(0, 2), now));
        assert_eq!(quota.remaining(counts(0, 2), now), 1);
        assert!(!quota.admits(counts(0, 3), now));
        assert_eq!(quota.remaining(counts(0, 3), now), 0);
        assert_eq!(quota.wait_ms(counts(0, 3), now), 14_750);
        assert_eq!(whole_seconds(quota.wait_ms(counts(0, 3), now)), 15);
        assert_eq!(quota.wait_ms(counts(0, 2), now), 0);
    }

    #[test]
    fn the_sliding_estimate_weighs_the_previous_window_by_what_is_left_of_it() {
        let quota = sliding(10, "1m");
        let start = utc((2026, 5, 17), (9, 1, 0), 0);
        // A quarter in: 8 · 0.75 = 6 from before, plus 3 now = 9; one more fits.
        let quarter = start + 15 * SECOND_MS;
        assert!(quota.admits(counts(8, 3), quarter));
        assert_eq!(quota.remaining(counts(8, 3), quarter), 1);
        assert!(!quota.admits(counts(8, 4), quarter));
        // Right at the edge the whole previous window still counts.
        assert!(!quota.admits(counts(10, 0), start));
        // Halfway the previous 10 weigh 5.
        assert_eq!(quota.remaining(counts(10, 0), start + 30 * SECOND_MS), 5);
    }

    #[test]
    fn the_sliding_window_has_no_double_burst_at_the_edge() {
        let fixed_quota = fixed(10, "1m");
        let sliding_quota = sliding(10, "1m");
        let start = utc((2026, 5, 17), (9, 1, 0), 0);
        // 10 admitted at the end of the previous minute; 1 s into the next:
        let now = start + SECOND_MS;
        let admitted = |quota: &Counting| {
            let mut c = counts(10, 0);
            while quota.admits(c, now) {
                c.current += 1;
            }
            c.current
        };
        assert_eq!(admitted(&fixed_quota), 10, "fixed allows a second burst");
        assert_eq!(
            admitted(&sliding_quota),
            0,
            "10 · 59/60 leaves less than one"
        );
    }

    #[test]
    fn the_sliding_wait_is_when_the_estimate_has_room_again() {
        let quota = sliding(10, "1m");
        let start = utc((2026, 5, 17), (9, 1, 0), 0);
        // 10 before, 2 now, at 30 s: 5 + 2 = 7 → fits.
        assert_eq!(quota.wait_ms(counts(10, 2), start + 30 * SECOND_MS), 0);
        // 10 before, 6 now at 6 s: 9 + 6 = 15. Room for one more when
        // 10·(60 − e)/60 ≤ 3, i.e. at e = 42 s: 36 s from now.
        let now = start + 6 * SECOND_MS;
        let wait = quota.wait_ms(counts(10, 6), now);
        assert_eq!(wait, 36 * SECOND_MS);
        assert!(!quota.admits(counts(10, 6), now + wait - 1));
        assert!(quota.admits(counts(10, 6), now + wait));
        // 0 before, 10 now: next minute, once 10·(60 − e)/60 ≤ 9, at e = 6 s.
        let wait = quota.wait_ms(counts(0, 10), start + 50 * SECOND_MS);
        assert_eq!(wait, 16 * SECOND_MS);
        // With a limit of 1, the whole next window must pass.
        let one = sliding(1, "10s");
        assert_eq!(
            one.wait_ms(counts(0, 1), start + 4 * SECOND_MS),
            16 * SECOND_MS
        );
    }

    #[test]
    fn the_sliding_wait_is_exact_to_the_millisecond() {
        let quota = sliding(7, "10s");
        let start = utc((2026, 5, 17), (9, 1, 0), 0);
        for previous in 0..12 {
            for current in 0..9 {
                for elapsed in [0, 1, 999, 3_333, 9_999] {
                    let c = counts(previous, current);
                    let now = start + elapsed;
                    let wait = quota.wait_ms(c, now);
                    if wait == 0 {
                        assert!(quota.admits(c, now));
                        continue;
                    }
                    // Later on, the counts are as given, or rolled over once or twice.
                    let at = |t: u64| match quota.window.index(t) - quota.window.index(now) {
                        0 => c,
                        1 => counts(current, 0),
                        _ => counts(0, 0),
                    };
                    let (later, before) = (now + wait, now + wait - 1);
                    assert!(
                        quota.admits(at(later), later),
                        "{c:?} +{elapsed} wait {wait}"
                    );
                    assert!(
                        !quota.admits(at(before), before),
                        "{c:?} +{elapsed} wait {wait}"
                    );
                }
            }
        }
    }

    #[test]
    fn large_limits_and_long_windows_do_not_overflow() {
        let quota = sliding(u32::MAX, "1h");
        let now = utc((2026, 5, 17), (9, 30, 0), 0);
        assert!(quota.admits(counts(u32::MAX, 0), now));
        assert!(!quota.admits(counts(0, u32::MAX), now));
        assert_eq!(
            fixed(u32::MAX, "366d").remaining(counts(0, 1), now),
            u32::MAX - 1
        );
        assert!(quota.wait_ms(counts(u32::MAX, u32::MAX), now) <= 2 * HOUR_MS);
    }

    #[test]
    fn whole_seconds_round_up_and_are_at_least_one() {
        assert_eq!(whole_seconds(0), 1);
        assert_eq!(whole_seconds(1), 1);
        assert_eq!(whole_seconds(1_000), 1);
        assert_eq!(whole_seconds(1_001), 2);
    }
}
