//! `temporal` policies: match on the local time of the decision.
//!
//! Conditions (at least one of the four lists, none of them empty):
//! ```json
//! { "timezone": "Europe/London",          // IANA name, default "UTC"
//!   "blocked_hours": [0, 1, 2],           // local hours 0-23
//!   "blocked_days": ["sat", "sunday"],    // mon..sun or full names, any case
//!   "allowed_hours": [9, 10, 11],         // outside these hours: match
//!   "allowed_days": ["mon", "tue"] }      // outside these days: match
//! ```
//! `now` is converted to local time in the zone (DST-aware, via chrono-tz). The policy
//! matches when the local hour is blocked, or the local weekday is blocked, or allowed
//! hours/days are given and now is outside them. Hours are whole hours: `17` covers
//! 17:00:00-17:59:59 local.

use chrono::{DateTime, Datelike, Timelike, Weekday};
use chrono_tz::Tz;

use super::conditions::Obj;
use super::{Hit, PolicyDef, PolicyError};

#[derive(Debug)]
pub(crate) struct Rule {
    tz: Tz,
    blocked_hours: u32,
    blocked_days: u8,
    allowed_hours: Option<u32>,
    allowed_days: Option<u8>,
}

fn hours(c: &Obj<'_>, key: &str) -> Result<Option<u32>, PolicyError> {
    let Some(items) = c.array(key)? else { return Ok(None) };
    if items.is_empty() {
        return Err(c.err(key, "must not be empty"));
    }
    let mut mask = 0u32;
    for (i, v) in items.iter().enumerate() {
        match v.as_u64() {
            Some(h) if h <= 23 => mask |= 1 << h,
            _ => {
                return Err(PolicyError::new(
                    format!("{}[{i}]", c.field(key)),
                    format!("expected an hour 0-23, found `{v}`"),
                ));
            }
        }
    }
    Ok(Some(mask))
}

fn parse_day(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Mon,
        "tue" | "tues" | "tuesday" => Weekday::Tue,
        "wed" | "wednesday" => Weekday::Wed,
        "thu" | "thur" | "thurs" | "thursday" => Weekday::Thu,
        "fri" | "friday" => Weekday::Fri,
        "sat" | "saturday" => Weekday::Sat,
        "sun" | "sunday" => Weekday::Sun,
        _ => return None,
    })
}

fn day_bit(d: Weekday) -> u8 {
    1 << d.num_days_from_monday()
}

fn days(c: &Obj<'_>, key: &str) -> Result<Option<u8>, PolicyError> {
    let Some(items) = c.str_list(key)? else { return Ok(None) };
    if items.is_empty() {
        return Err(c.err(key, "must not be empty"));
    }
    let mut mask = 0u8;
    for (i, s) in items.iter().enumerate() {
        let d = parse_day(s).ok_or_else(|| {
            PolicyError::new(
                format!("{}[{i}]", c.field(key)),
                format!("expected a weekday (`mon`..`sun`), found `{s}`"),
            )
        })?;
        mask |= day_bit(d);
    }
    Ok(Some(mask))
}

pub(crate) fn compile(def: &PolicyDef) -> Result<Rule, PolicyError> {
    let c = Obj::new(
        &def.conditions,
        "conditions",
        &[
            "timezone",
            "blocked_hours",
            "blocked_days",
            "allowed_hours",
            "allowed_days",
        ],
    )?;
    let tz = match c.str("timezone")? {
        None => Tz::UTC,
        Some(name) => name.parse::<Tz>().map_err(|_| {
            c.err(
                "timezone",
                format!("unknown time zone `{name}`; expected an IANA name such as `Europe/London`"),
            )
        })?,
    };
    let blocked_hours = hours(&c, "blocked_hours")?;
    let blocked_days = days(&c, "blocked_days")?;
    let allowed_hours = hours(&c, "allowed_hours")?;
    let allowed_days = days(&c, "allowed_days")?;
    if blocked_hours.is_none() && blocked_days.is_none() && allowed_hours.is_none() && allowed_days.is_none() {
        return Err(PolicyError::new(
            "conditions",
            "one of `blocked_hours`, `blocked_days`, `allowed_hours`, `allowed_days` is required",
        ));
    }
    Ok(Rule {
        tz,
        blocked_hours: blocked_hours.unwrap_or(0),
        blocked_days: blocked_days.unwrap_or(0),
        allowed_hours,
        allowed_days,
    })
}

impl Rule {
    pub(crate) fn eval(&self, now_ms: i64) -> Result<Option<Hit>, String> {
        let utc =
            DateTime::from_timestamp_millis(now_ms).ok_or_else(|| format!("time `{now_ms}` ms is out of range"))?;
        let local = utc.with_timezone(&self.tz);
        let (hour, day) = (local.hour(), local.weekday());
        let why = if self.blocked_hours & (1 << hour) != 0 {
            format!("hour {hour} is in blocked_hours")
        } else if self.blocked_days & day_bit(day) != 0 {
            format!("{} is in blocked_days", day_name(day))
        } else if self.allowed_hours.is_some_and(|m| m & (1 << hour) == 0) {
            format!("hour {hour} is outside allowed_hours")
        } else if self.allowed_days.is_some_and(|m| m & day_bit(day) == 0) {
            format!("{} is outside allowed_days", day_name(day))
        } else {
            return Ok(None);
        };
        Ok(Some(Hit::new(format!(
            "local time {} {} {}: {why}",
            day_name(day),
            local.format("%Y-%m-%d %H:%M"),
            self.tz.name()
        ))))
    }
}

fn day_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{def, err_of};
    use serde_json::{Value, json};

    fn rule(c: Value) -> Rule {
        compile(&def(
            "t",
            json!({"name": "t", "policy_type": "temporal", "decision": "block", "conditions": c}),
        ))
        .unwrap()
    }

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
    }

    fn matches(c: Value, at: &str) -> bool {
        rule(c).eval(ms(at)).unwrap().is_some()
    }

    #[test]
    fn utc_by_default() {
        let c = json!({"blocked_hours": [12]});
        assert!(matches(c.clone(), "2026-01-07T12:00:00Z"));
        assert!(matches(c.clone(), "2026-01-07T12:59:59Z"));
        assert!(!matches(c.clone(), "2026-01-07T11:59:59Z"));
        assert!(!matches(c, "2026-01-07T13:00:00Z"));
    }

    #[test]
    fn reason_names_local_time_and_zone() {
        let hit = rule(json!({"timezone": "Europe/London", "blocked_hours": [12]}))
            .eval(ms("2026-07-01T11:30:00Z"))
            .unwrap();
        assert_eq!(
            hit.unwrap().reason,
            "local time wed 2026-07-01 12:30 Europe/London: hour 12 is in blocked_hours"
        );
    }

    #[test]
    fn weekday_differs_between_utc_and_local() {
        // Wednesday 02:00 UTC is Tuesday 21:00 in New York (EST).
        let c = json!({"timezone": "America/New_York", "blocked_days": ["tuesday"]});
        assert!(matches(c.clone(), "2026-01-07T02:00:00Z"));
        assert!(!matches(json!({"blocked_days": ["tue"]}), "2026-01-07T02:00:00Z"));
        // And Asia/Tokyo is already Thursday at 16:00 UTC Wednesday.
        assert!(matches(
            json!({"timezone": "Asia/Tokyo", "blocked_days": ["THU"]}),
            "2026-01-07T16:00:00Z"
        ));
    }

    #[test]
    fn midnight_boundary_across_dst_start_in_new_york() {
        // DST starts Sunday 2026-03-08 at 02:00 EST (07:00Z): clocks jump to 03:00 EDT.
        let sun = json!({"timezone": "America/New_York", "blocked_days": ["sun"]});
        assert!(!matches(sun.clone(), "2026-03-08T04:59:00Z"), "Sat 23:59 EST");
        assert!(matches(sun.clone(), "2026-03-08T05:00:00Z"), "Sun 00:00 EST");
        // After the change the offset is -4: Sunday ends at 04:00Z, not 05:00Z.
        assert!(matches(sun.clone(), "2026-03-09T03:59:00Z"), "Sun 23:59 EDT");
        assert!(!matches(sun, "2026-03-09T04:00:00Z"), "Mon 00:00 EDT");
        // The hour 2 never happens that night.
        let two = json!({"timezone": "America/New_York", "blocked_hours": [2]});
        assert!(!matches(two.clone(), "2026-03-08T06:59:59Z"), "01:59:59 EST");
        assert!(!matches(two.clone(), "2026-03-08T07:00:00Z"), "03:00 EDT");
        assert!(matches(two, "2026-03-09T06:30:00Z"), "02:30 EDT next day");
    }

    #[test]
    fn dst_end_repeats_an_hour() {
        // 2026-11-01 01:00-01:59 happens twice in New York (05:xxZ EDT, 06:xxZ EST).
        let one = json!({"timezone": "America/New_York", "blocked_hours": [1]});
        assert!(matches(one.clone(), "2026-11-01T05:30:00Z"));
        assert!(matches(one.clone(), "2026-11-01T06:30:00Z"));
        assert!(!matches(one, "2026-11-01T07:30:00Z"));
    }

    #[test]
    fn allowed_windows() {
        let office = json!({"timezone": "Europe/Paris", "allowed_hours": [9, 10, 11, 12, 13, 14, 15, 16, 17],
                            "allowed_days": ["mon", "tue", "wed", "thu", "fri"]});
        assert!(!matches(office.clone(), "2026-01-07T12:00:00Z"), "Wed 13:00 CET");
        assert!(matches(office.clone(), "2026-01-07T17:00:00Z"), "Wed 18:00 CET");
        assert!(matches(office.clone(), "2026-01-10T12:00:00Z"), "Saturday");
        let hit = rule(office).eval(ms("2026-01-10T12:00:00Z")).unwrap().unwrap();
        assert!(hit.reason.ends_with("sat is outside allowed_days"), "{}", hit.reason);
    }

    #[test]
    fn validation() {
        let base = |c: Value| json!({"name": "t", "policy_type": "temporal", "decision": "block", "conditions": c});
        assert_eq!(
            err_of(base(json!({"blocked_hours": [23, 24]}))).field,
            "conditions.blocked_hours[1]"
        );
        assert_eq!(
            err_of(base(json!({"blocked_hours": [-1]}))).field,
            "conditions.blocked_hours[0]"
        );
        assert_eq!(
            err_of(base(json!({"blocked_hours": ["9"]}))).field,
            "conditions.blocked_hours[0]"
        );
        assert_eq!(
            err_of(base(json!({"timezone": "Mars/Olympus", "blocked_hours": [1]}))).field,
            "conditions.timezone"
        );
        assert_eq!(
            err_of(base(json!({"blocked_days": ["funday"]}))).field,
            "conditions.blocked_days[0]"
        );
        assert_eq!(err_of(base(json!({"timezone": "UTC"}))).field, "conditions");
        assert_eq!(
            err_of(base(json!({"allowed_days": []}))).field,
            "conditions.allowed_days"
        );
        assert_eq!(
            err_of(base(json!({"blocked_hour": [1]}))).field,
            "conditions.blocked_hour"
        );
    }
}
