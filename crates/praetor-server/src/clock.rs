//! The server's only source of "now". Tests use `ManualClock` to replay time.

use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        ms_since_epoch(std::time::SystemTime::now())
    }
}

/// Milliseconds from the Unix epoch to `t`, negative before it. A system clock set
/// before 1970 (or past what `i64` milliseconds hold) is still a time, not a panic:
/// `chrono::Utc::now` would panic there and leave the request unanswered.
fn ms_since_epoch(t: std::time::SystemTime) -> i64 {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => ms(after),
        // Rounded down, as after the epoch: 1.5 ms before it is -2, not -1.
        Err(before) => {
            let d = before.duration();
            -(ms(d).saturating_add(i64::from(d.subsec_nanos() % 1_000_000 != 0)))
        }
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: naive UTC, as the wire contract asks (§0 rule 9).
pub fn iso(ms: i64) -> String {
    praetor_core::iso_millis(ms)
}

/// Parse an RFC 3339 time, or milliseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()).or_else(|| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc().timestamp_millis())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_is_utc_with_milliseconds_and_parses_back() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso(1_700_000_000_000), "2023-11-14T22:13:20.000Z", "whole seconds keep their .000");
        assert_eq!(parse_time(&iso(1_700_000_000_123)), Some(1_700_000_000_123));
    }

    #[test]
    fn the_system_clock_reads_any_time() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(ms_since_epoch(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)), 1_700_000_000_123);
        assert_eq!(ms_since_epoch(UNIX_EPOCH + Duration::from_micros(1_500)), 1);
        assert_eq!(ms_since_epoch(UNIX_EPOCH - Duration::from_millis(1_500)), -1_500);
        assert_eq!(ms_since_epoch(UNIX_EPOCH - Duration::from_micros(1_500)), -2);
        // Year 10,000 and later: chrono cannot write it, the clock still reads it.
        assert_eq!(ms_since_epoch(UNIX_EPOCH + Duration::from_secs(300_000_000_000)), 300_000_000_000_000);
        // The system clock is the host's, read this way.
        let before = ms_since_epoch(std::time::SystemTime::now());
        let now = SystemClock.now_ms();
        assert!(before <= now && now <= ms_since_epoch(std::time::SystemTime::now()), "{before} {now}");
    }
}
