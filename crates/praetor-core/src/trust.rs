//! The adaptive trust rule. Deterministic: the next score depends only on the current
//! score, the clean streak, the decision and the baseline.
//!
//! - A violation that blocked (`violation && verdict == Block`) lowers the score by 5;
//!   a violation that escalated lowers it by 2 (never below 0). Both reset the clean
//!   streak to 0. A block that replaced an escalation because the workspace held as
//!   many as it may (`__escalation_limit`) counts as the escalation: the agent is not
//!   penalised for the workspace being full.
//! - An allowed action (`verdict == Allow`, with or without a warning) adds one to the
//!   streak; every 10th consecutive allowed action raises the score by 1, up to the
//!   baseline. A score already at or above the baseline is left as it is (an operator
//!   may have set it higher on purpose).
//! - Anything else (a refusal that is not a violation, such as an identity failure or a
//!   default-decision refusal; a termination) leaves both unchanged.
//!
//! The score never exceeds 100.

use crate::decision::{Decision, Verdict};

/// Clean actions in a row needed for one point back.
pub const STREAK_FOR_ONE_POINT: u32 = 10;
pub const BLOCK_PENALTY: u8 = 5;
pub const ESCALATE_PENALTY: u8 = 2;

/// The next `(score, clean_streak)` after `decision`.
pub fn next_trust(score: u8, clean_streak: u32, decision: &Decision, baseline: u8) -> (u8, u32) {
    let score = score.min(100);
    match decision.verdict {
        Verdict::Block if decision.violation && !decision.escalation_refused() => (score.saturating_sub(BLOCK_PENALTY), 0),
        Verdict::Escalate | Verdict::Block if decision.violation => (score.saturating_sub(ESCALATE_PENALTY), 0),
        Verdict::Allow => {
            let streak = clean_streak.saturating_add(1);
            let score = if streak.is_multiple_of(STREAK_FOR_ONE_POINT) && score < baseline.min(100) {
                score + 1
            } else {
                score
            };
            (score, streak)
        }
        _ => (score, clean_streak),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Outcome;

    fn d(verdict: Verdict, violation: bool) -> Decision {
        Decision { violation, ..Decision::plain(verdict, Outcome::Allowed, vec![], String::new()) }
    }

    #[test]
    fn violations_lower_and_reset() {
        assert_eq!(next_trust(80, 7, &d(Verdict::Block, true), 80), (75, 0));
        assert_eq!(next_trust(80, 7, &d(Verdict::Escalate, true), 80), (78, 0));
        assert_eq!(next_trust(3, 7, &d(Verdict::Block, true), 80), (0, 0));
        assert_eq!(next_trust(1, 7, &d(Verdict::Escalate, true), 80), (0, 0));
    }

    #[test]
    fn a_block_at_the_escalation_limit_costs_what_the_escalation_would_have() {
        let mut refused = d(Verdict::Escalate, true);
        refused.block_instead_of_escalating("the workspace is full".into());
        assert_eq!(refused.verdict, Verdict::Block);
        assert_eq!(next_trust(80, 7, &refused, 80), (78, 0));
        let mut not_a_violation = d(Verdict::Escalate, false);
        not_a_violation.block_instead_of_escalating("the workspace is full".into());
        assert_eq!(next_trust(80, 7, &not_a_violation, 80), (80, 7));
    }

    #[test]
    fn clean_streak_climbs_to_baseline() {
        assert_eq!(next_trust(70, 0, &d(Verdict::Allow, false), 80), (70, 1));
        assert_eq!(next_trust(70, 8, &d(Verdict::Allow, false), 80), (70, 9));
        assert_eq!(next_trust(70, 9, &d(Verdict::Allow, false), 80), (71, 10));
        assert_eq!(next_trust(70, 19, &d(Verdict::Allow, false), 80), (71, 20));
        assert_eq!(
            next_trust(80, 9, &d(Verdict::Allow, false), 80),
            (80, 10),
            "at baseline"
        );
        assert_eq!(
            next_trust(90, 9, &d(Verdict::Allow, false), 80),
            (90, 10),
            "above baseline left alone"
        );
    }

    #[test]
    fn other_outcomes_change_nothing() {
        assert_eq!(next_trust(50, 4, &d(Verdict::Block, false), 80), (50, 4));
        assert_eq!(next_trust(50, 4, &d(Verdict::Escalate, false), 80), (50, 4));
        assert_eq!(next_trust(50, 4, &d(Verdict::Terminate, false), 80), (50, 4));
        assert_eq!(next_trust(50, u32::MAX, &d(Verdict::Allow, false), 80), (50, u32::MAX));
    }

    #[test]
    fn a_run_of_twenty_clean_actions() {
        let (mut s, mut k) = (75u8, 0u32);
        for _ in 0..20 {
            (s, k) = next_trust(s, k, &d(Verdict::Allow, false), 80);
        }
        assert_eq!((s, k), (77, 20));
    }
}
