//! The storage conformance suite: every case is written once, against `dyn Store`, and
//! runs on SQLite and on PostgreSQL (see `backend.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backend;
mod cases;

/// One `#[tokio::test]` per backend for each case in `cases`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::cases::$case(crate::backend::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = crate::backend::Backend::postgres() {
                        crate::cases::$case(b).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    concurrent_commits_get_unique_contiguous_sequence_numbers,
    a_failing_transaction_leaves_no_trace_and_spares_the_others,
    reopening_restores_the_log_without_rebuilding_it,
    the_vault_cannot_be_rewritten_through_sql,
    a_database_migrated_by_a_newer_version_is_refused,
    a_running_store_stops_once_a_newer_version_migrates_its_database,
    a_batch_waits_for_a_migration_in_progress_and_then_stops,
    a_migration_waits_for_batches_in_flight_before_it_changes_anything,
    a_batch_held_back_by_a_migration_gives_up_after_five_seconds,
    two_writers_on_one_database_share_one_log,
    records_round_trip_and_updates_keep_what_decisions_own,
    sessions_and_objects_keep_the_newest_version,
    decisions_filter_and_page,
    shadow_hits_violations_and_deliveries,
    violations_read_back_their_decisions_sealed_context,
    a_violation_its_sealed_entry_gives_back_is_stored_once,
    checkpoints_and_proofs,
    text_survives_exactly,
    vault_check_names_every_bad_entry_not_only_the_first,
    vault_check_compares_decision_and_violation_rows_with_their_entries,
    vault_check_compares_older_violation_rows_with_their_own_entries,
    vault_check_of_an_unmigrated_store_verifies_every_workspace_log,
    etag_guards_refuse_decisions_made_from_stale_copies,
    refusals_inside_one_batch_are_each_their_own,
    connections_the_database_closed_are_replaced_before_the_next_use,
    agent_and_session_state_read_back_their_history,
    approved_actions_count_in_the_history_until_a_decision_runs_them,
    the_change_feed_numbers_changes_in_commit_order,
    leases_and_delivery_claims_have_one_holder,
    nonces_and_column_wise_agent_edits_hold_across_writers,
    the_last_admin_key_survives_revocations_on_two_writers,
    policy_changes_from_a_stale_copy_are_refused,
    settings_patches_merge_with_the_stored_settings,
    one_first_workspace_stands_when_two_writers_start_together,
);
