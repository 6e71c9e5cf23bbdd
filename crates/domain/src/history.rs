//! BigQuery change-history windows (docs/sync.md#change-history), shared by both syncs.
//! BigQuery answers `CHANGES(TABLE t, start, end)` only for an `end` at least 10 minutes in the
//! past and at most a day after `start`. After a detection that saw the whole table at `T` (a
//! full diff, a full partition listing), windows resume at `T` minus a clock-skew margin and are
//! applied only once their end is past `T`: an earlier end would bring back row versions
//! already replaced. Applying a window converges whatever it touches to its state at the
//! window's end; everything else did not change since.

use std::time::Duration;

/// How far behind now a window ends: BigQuery's 10 minutes, plus a minute for clock skew.
pub const SETTLE: Duration = Duration::from_secs(11 * 60);
/// The longest window one `CHANGES` call may read.
const MAX_WINDOW_MICROS: i64 = 86_400_000_000;
/// How far before a full diff's start the history resumes (clock skew).
const SKEW_MICROS: i64 = 60_000_000;

/// Where the next history window starts, and the earliest end it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    from_micros: i64,
    not_before_micros: i64,
}

impl HistoryCursor {
    /// After a detection of the whole table that started at `started_micros`.
    pub fn after_full_diff(started_micros: i64) -> HistoryCursor {
        let t = started_micros;
        HistoryCursor {
            from_micros: t - SKEW_MICROS,
            not_before_micros: t,
        }
    }

    /// The next window `[from, end)` at `now_micros`; `None` while its end would not be past
    /// the last full diff.
    pub fn window(&self, now_micros: i64) -> Option<(i64, i64)> {
        let settled = now_micros - SETTLE.as_micros() as i64;
        let end = settled.min(self.from_micros + MAX_WINDOW_MICROS);
        (end > self.not_before_micros && end > self.from_micros).then_some((self.from_micros, end))
    }

    /// Moves the cursor `by` into the past (tests).
    pub fn age(&mut self, by: Duration) {
        let micros = by.as_micros() as i64;
        self.from_micros -= micros;
        self.not_before_micros -= micros;
    }

    /// The cursor after the window ending at `end_micros` was applied.
    pub fn after(&self, end_micros: i64) -> HistoryCursor {
        HistoryCursor {
            from_micros: end_micros,
            not_before_micros: self.not_before_micros,
        }
    }

    /// The stored form: (next window's start, earliest end), microseconds.
    pub fn parts(&self) -> (i64, i64) {
        (self.from_micros, self.not_before_micros)
    }

    /// From [`HistoryCursor::parts`].
    pub fn from_parts(from_micros: i64, not_before_micros: i64) -> HistoryCursor {
        HistoryCursor {
            from_micros,
            not_before_micros,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_settle_ten_minutes_behind_and_never_end_before_the_last_full_diff() {
        let t = 1_800_000_000_000_000;
        let cursor = HistoryCursor::after_full_diff(t);
        let settle = SETTLE.as_micros() as i64;
        assert_eq!(cursor.window(t), None, "right after the diff");
        assert_eq!(
            cursor.window(t + settle),
            None,
            "the end would be the diff's start"
        );
        assert_eq!(
            cursor.window(t + settle + 5_000_000),
            Some((t - SKEW_MICROS, t + 5_000_000))
        );
        let next = cursor.after(t + 5_000_000);
        assert_eq!(
            next.window(t + settle + 5_000_000),
            None,
            "nothing new settled"
        );
        // After a long pause, one day at most per window.
        let far = t + 3 * MAX_WINDOW_MICROS;
        assert_eq!(
            next.window(far),
            Some((t + 5_000_000, t + 5_000_000 + MAX_WINDOW_MICROS))
        );
    }
}
