//! Hand-made histories for the linearizability checker: the classic anomalies it must catch and
//! the concurrent histories it must accept, each small enough to verify by eye. Times are
//! `[call, return]`; operations overlap when their intervals do (equal ends included).

mod support;

use mosaic_engine::ClientId;
use mosaic_sim::linearizability::{
    CheckLimits, DeadEnd, Exclusion, History, KeyOutcome, Operation, Output, UnexplainedRead,
    Violation, check, check_with_limits,
};
use support::{Script, brute_force_linearizable, bytes, must_be_linearizable, must_violate};

/// The violation of key `k`, which must be a dead end of the search.
fn must_dead_end(script: &Script) -> DeadEnd {
    match must_violate(&script.history, "k") {
        Violation::DeadEnd(dead_end) => dead_end,
        other => panic!("expected a dead end of the search, got:\n{other}"),
    }
}

/// The violation of key `k`, which must be a read no write explains.
fn must_unexplained(script: &Script) -> UnexplainedRead {
    match must_violate(&script.history, "k") {
        Violation::UnexplainedRead(read) => read,
        other => panic!("expected an unexplained read, got:\n{other}"),
    }
}

/// The ids of a dead end's prefix and of its stuck operations.
fn ids(dead_end: &DeadEnd) -> (Vec<u32>, Vec<u32>) {
    (
        dead_end.prefix.iter().map(|record| record.id.0).collect(),
        dead_end.stuck.iter().map(|misfit| misfit.operation.id.0).collect(),
    )
}

/// For each stuck operation, the id of the get it strands.
fn stranded(dead_end: &DeadEnd) -> Vec<Option<u32>> {
    dead_end.stuck.iter().map(|misfit| misfit.stranded_get.as_ref().map(|get| get.id.0)).collect()
}

/// The writers of an unexplained read (`None`: the initial value) and why each is excluded:
/// `"late"` (called after the get returned), `"#N"` (overwritten by operation N), or the
/// value an append would have needed before it.
fn writers(read: &UnexplainedRead) -> Vec<(Option<u32>, String)> {
    read.writers
        .iter()
        .map(|excluded| {
            let reason = match &excluded.reason {
                Exclusion::CalledAfterTheGet => "late".to_owned(),
                Exclusion::Overwritten { by } => by.id.to_string(),
                Exclusion::PriorValueUnexplained { prior } => {
                    String::from_utf8(prior.to_vec()).expect("text")
                }
            };
            (excluded.writer.as_ref().map(|writer| writer.id.0), reason)
        })
        .collect()
}

/// `(writer, reason)` pairs as [`writers`] gives them.
fn excluded(pairs: &[(Option<u32>, &str)]) -> Vec<(Option<u32>, String)> {
    pairs.iter().map(|(writer, reason)| (*writer, (*reason).to_owned())).collect()
}

// ---- Linearizable histories ------------------------------------------------------------------

#[test]
fn empty_history_is_linearizable() {
    let verdict = must_be_linearizable(&History::new());
    assert!(verdict.keys.is_empty());
    assert!(!verdict.has_violation());
}

#[test]
fn sequential_history_is_linearizable_in_its_only_order() {
    let mut script = Script::new();
    script.get(1, None, 0, 1);
    script.put(1, "a", 2, 3);
    script.get(1, Some("a"), 4, 5);
    script.append(1, "b", 6, 7);
    script.get(1, Some("ab"), 8, 9);
    script.delete(1, 10, 11);
    script.get(1, None, 12, 13);
    let verdict = must_be_linearizable(&script.history);
    let KeyOutcome::Linearizable { order } = &verdict.keys[0].outcome else { unreachable!() };
    let order: Vec<u32> = order.iter().map(|id| id.0).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn concurrent_puts_may_be_ordered_either_way() {
    // Two puts overlap; later readers agree on which came last. Both outcomes are fine.
    for (first, last) in [("a", "b"), ("b", "a")] {
        let mut script = Script::new();
        script.put(1, "a", 0, 100);
        script.put(2, "b", 0, 100);
        script.get(3, Some(first), 10, 20);
        script.get(3, Some(last), 120, 130);
        script.get(4, Some(last), 125, 140);
        must_be_linearizable(&script.history);
    }
}

#[test]
fn a_write_not_applied_is_left_out_and_a_read_of_it_is_unexplained() {
    let mut script = Script::new();
    script.put(1, "a", 0, 10);
    script.put_not_applied(2, "b", 5);
    script.get(3, Some("a"), 20, 30);
    must_be_linearizable(&script.history);
    // The same, but a get read the write said not to be applied.
    let mut script = Script::new();
    script.put(1, "a", 0, 10);
    script.put_not_applied(2, "b", 5);
    script.get(3, Some("b"), 20, 30);
    assert!(matches!(must_violate(&script.history, "k"), Violation::UnexplainedRead(_)));
    assert!(!brute_force_linearizable(&script.history, b"k"));
}

#[test]
fn reads_during_a_put_may_see_the_old_or_the_new_value() {
    let mut script = Script::new();
    script.put(1, "x", 10, 20);
    script.get(2, None, 5, 15);
    script.get(3, Some("x"), 5, 15);
    script.get(4, None, 12, 25);
    must_be_linearizable(&script.history);
}

#[test]
fn a_read_may_see_a_value_then_its_overwrite_while_both_puts_run() {
    // Three puts overlap with two reads of one client: any order of puts that explains the
    // reads will do; here "c" must be placed between "a" and "b", ending with "b".
    let mut script = Script::new();
    script.put(1, "a", 0, 50);
    script.put(2, "b", 0, 50);
    script.put(3, "c", 0, 50);
    script.get(4, Some("c"), 1, 2);
    script.get(4, Some("a"), 3, 4);
    script.get(4, Some("b"), 60, 70);
    must_be_linearizable(&script.history);
}

#[test]
fn operations_whose_times_touch_are_concurrent() {
    // The put returns at 10 and the get is called at 10: either order is allowed.
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.get(2, None, 10, 20);
    must_be_linearizable(&script.history);
}

#[test]
fn concurrent_appends_may_land_in_either_order() {
    for observed in ["xy", "yx"] {
        let mut script = Script::new();
        script.append(1, "x", 0, 10);
        script.append(2, "y", 0, 10);
        script.get(3, Some(observed), 20, 30);
        must_be_linearizable(&script.history);
    }
}

#[test]
fn append_to_an_absent_key_starts_from_empty() {
    let mut script = Script::new();
    script.append(1, "x", 0, 1);
    script.get(1, Some("x"), 2, 3);
    script.delete(1, 4, 5);
    script.append(1, "", 6, 7);
    // An empty append still creates the key.
    script.get(1, Some(""), 8, 9);
    must_be_linearizable(&script.history);
}

#[test]
fn a_delete_concurrent_with_reads_may_be_seen_or_not() {
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.delete(1, 20, 40);
    script.get(2, Some("x"), 25, 30);
    script.get(3, None, 25, 35);
    script.get(2, None, 41, 50);
    must_be_linearizable(&script.history);
}

#[test]
fn keys_are_checked_independently() {
    // Each key alone is linearizable; across keys the reads would need a cycle if the keys
    // were one object, but different keys never constrain each other.
    let mut script = Script::new();
    script.on("a").put(1, "1", 0, 10);
    script.on("b").put(2, "1", 0, 10);
    script.on("a").get(3, None, 5, 15);
    script.on("b").get(4, None, 5, 15);
    let verdict = must_be_linearizable(&script.history);
    assert_eq!(verdict.keys.len(), 2);
    assert_eq!(verdict.keys[0].key, "a");
    assert_eq!(verdict.keys[1].key, "b");
}

// ---- Classic anomalies -----------------------------------------------------------------------

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    let mut script = Script::new();
    script.put(1, "1", 0, 10);
    script.put(1, "2", 20, 30);
    script.get(2, Some("1"), 40, 50);
    // The only write of "1" is followed by put 2, which returned before the get was called.
    let read = must_unexplained(&script);
    assert_eq!(read.get.id.0, 2);
    assert_eq!(writers(&read), excluded(&[(Some(0), "#1")]));
}

#[test]
fn a_client_that_misses_its_own_write_is_caught() {
    let mut script = Script::new();
    script.put(1, "mine", 0, 10);
    script.get(1, None, 20, 30);
    // Absent is only the initial value, and the client's put came after it.
    let read = must_unexplained(&script);
    assert_eq!(writers(&read), excluded(&[(None, "#0")]));
}

#[test]
fn reads_that_see_two_writes_in_opposite_orders_are_caught() {
    // Client 3 sees a then b, client 4 sees b then a, with both second reads after both first
    // reads: no single order of the two puts explains both, though each read alone could be.
    let dead_end = must_dead_end(&opposite_orders());
    assert_eq!(ids(&dead_end), (vec![0, 2], vec![1, 3]));
    assert_eq!(stranded(&dead_end), [Some(5), None]);
}

/// Two concurrent puts, and two clients that each read both values, in opposite orders.
fn opposite_orders() -> Script {
    let mut script = Script::new();
    script.put(1, "a", 0, 100);
    script.put(2, "b", 0, 100);
    script.get(3, Some("a"), 10, 20);
    script.get(4, Some("b"), 10, 20);
    script.get(3, Some("b"), 30, 40);
    script.get(4, Some("a"), 30, 40);
    script
}

#[test]
fn a_lost_append_is_caught() {
    let mut script = Script::new();
    script.append(1, "x", 0, 10);
    script.append(2, "y", 20, 30);
    script.get(3, Some("y"), 40, 50);
    let dead_end = must_dead_end(&script);
    // Once "x" is appended, nothing that may precede the get leads to "y".
    assert_eq!(ids(&dead_end), (vec![], vec![0]));
    assert_eq!(stranded(&dead_end), [Some(2)]);
    assert_eq!(dead_end.value_after_prefix, None);
}

#[test]
fn appends_applied_out_of_real_time_order_are_caught() {
    let mut script = Script::new();
    script.append(1, "x", 0, 10);
    script.append(2, "y", 20, 30);
    script.get(3, Some("yx"), 40, 50);
    // Only the append of "x" can leave a value ending in "x", and the append of "y" follows it.
    let read = must_unexplained(&script);
    assert_eq!(writers(&read), excluded(&[(Some(0), "#1")]));
}

#[test]
fn readers_disagreeing_on_the_order_of_concurrent_appends_are_caught() {
    let mut script = Script::new();
    script.append(1, "x", 0, 10);
    script.append(2, "y", 0, 10);
    script.get(3, Some("xy"), 20, 30);
    script.get(4, Some("yx"), 20, 30);
    must_dead_end(&script);
}

#[test]
fn a_read_of_a_deleted_key_after_the_delete_is_caught() {
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.delete(1, 20, 30);
    script.get(2, Some("x"), 31, 40);
    assert_eq!(writers(&must_unexplained(&script)), excluded(&[(Some(0), "#1")]));
}

#[test]
fn a_value_never_written_is_caught() {
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.get(2, Some("ghost"), 0, 10);
    assert_eq!(writers(&must_unexplained(&script)), excluded(&[]));
}

#[test]
fn a_read_of_a_value_before_its_write_was_called_is_caught() {
    let mut script = Script::new();
    script.get(2, Some("x"), 0, 10);
    script.put(1, "x", 11, 20);
    assert_eq!(writers(&must_unexplained(&script)), excluded(&[(Some(1), "late")]));
}

#[test]
fn a_read_that_goes_back_to_an_older_value_is_caught() {
    // The second read starts after the first returned, so it must not see an older state;
    // each read alone is explained, as the put of "new" is still running.
    let mut script = Script::new();
    script.put(1, "old", 0, 10);
    script.put(1, "new", 20, 100);
    script.get(2, Some("new"), 30, 40);
    script.get(3, Some("old"), 50, 60);
    must_dead_end(&script);
}

#[test]
fn only_the_broken_key_fails() {
    let mut script = Script::new();
    script.on("good").put(1, "x", 0, 10);
    script.on("bad").put(1, "x", 11, 20);
    script.on("good").get(2, Some("x"), 21, 30);
    script.on("bad").get(2, None, 31, 40);
    let verdict = check(&script.history);
    assert!(!verdict.is_linearizable());
    let broken: Vec<_> = verdict.violations().map(|(key, _)| key.clone()).collect();
    assert_eq!(broken, [bytes("bad")]);
    assert!(matches!(
        verdict.key(b"good").expect("key good").outcome,
        KeyOutcome::Linearizable { .. }
    ));
}

// ---- Compare-and-set ---------------------------------------------------------------------------

#[test]
fn a_compare_and_set_takes_effect_only_on_the_value_it_expects() {
    let mut script = Script::new();
    script.cas(1, None, Some("x"), (0, 10), Some(true));
    script.cas(2, None, Some("y"), (20, 30), Some(false));
    script.cas(2, Some("x"), Some("y"), (40, 50), Some(true));
    script.get(3, Some("y"), 60, 70);
    script.cas(1, Some("y"), None, (80, 90), Some(true));
    script.get(3, None, 100, 110);
    must_be_linearizable(&script.history);
}

#[test]
fn a_compare_and_set_that_took_effect_on_a_value_already_overwritten_is_caught() {
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.put(1, "y", 20, 30);
    script.cas(2, Some("x"), Some("z"), (40, 50), Some(true));
    let read = must_unexplained(&script);
    assert_eq!(read.get.id.0, 2);
    assert_eq!(writers(&read), excluded(&[(Some(0), "#1")]));
    assert!(read.to_string().contains("this compare-and-set took effect on"), "{read}");
}

#[test]
fn a_compare_and_set_that_failed_although_the_value_was_the_one_it_expected_is_caught() {
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.cas(2, Some("x"), Some("z"), (20, 30), Some(false));
    script.get(3, Some("x"), 40, 50);
    let dead_end = must_dead_end(&script);
    assert!(dead_end.to_string().contains("its condition failed"), "{dead_end}");
}

#[test]
fn two_compare_and_sets_on_one_value_cannot_both_take_effect() {
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.cas(2, Some("x"), Some("a"), (20, 40), Some(true));
    script.cas(3, Some("x"), Some("b"), (20, 40), Some(true));
    must_dead_end(&script);
    // With one failed, either order explains it.
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.cas(2, Some("x"), Some("a"), (20, 40), Some(true));
    script.cas(3, Some("x"), Some("b"), (20, 40), Some(false));
    script.get(1, Some("a"), 50, 60);
    must_be_linearizable(&script.history);
}

#[test]
fn a_compare_and_set_of_unknown_outcome_took_effect_or_not_where_its_value_held() {
    for (observed, linearizable) in [(Some("y"), true), (Some("x"), true), (None, false)] {
        let mut script = Script::new();
        script.put(1, "x", 0, 10);
        script.cas(2, Some("x"), Some("y"), (20, 0), None);
        script.get(3, observed, 30, 40);
        let verdict = check(&script.history);
        assert_eq!(verdict.is_linearizable(), linearizable, "read {observed:?}: {verdict}");
    }
    // Where the value it expects never held, it cannot take effect.
    let mut script = Script::new();
    script.put(1, "w", 0, 10);
    script.cas(2, Some("x"), Some("y"), (20, 0), None);
    script.get(3, Some("y"), 30, 40);
    must_violate(&script.history, "k");
}

#[test]
fn a_failed_compare_and_set_may_be_explained_by_a_write_of_unknown_outcome_no_get_saw() {
    // Only the unknown put can have made the condition fail, although no get read its value.
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.put_unknown(2, "z", 20);
    script.cas(3, Some("x"), Some("y"), (30, 40), Some(false));
    must_be_linearizable(&script.history);
    // Without it, the failure is unexplained.
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.cas(3, Some("x"), Some("y"), (30, 40), Some(false));
    must_dead_end(&script);
}

// ---- Operations of unknown outcome -----------------------------------------------------------

#[test]
fn an_unknown_write_that_took_effect_is_accepted() {
    let mut script = Script::new();
    script.put_unknown(1, "x", 10);
    script.get(2, Some("x"), 20, 30);
    must_be_linearizable(&script.history);
}

#[test]
fn an_unknown_write_that_never_took_effect_is_accepted() {
    let mut script = Script::new();
    script.put_unknown(1, "x", 10);
    script.get(2, None, 20, 30);
    script.get(2, None, 1_000, 1_010);
    must_be_linearizable(&script.history);
}

#[test]
fn an_unknown_write_may_take_effect_long_after_the_client_gave_up() {
    let mut script = Script::new();
    script.put_unknown(1, "x", 10);
    // The same client goes on; the write lands later.
    script.get(1, None, 20, 30);
    script.put(1, "y", 40, 50);
    script.get(2, Some("y"), 60, 70);
    script.get(2, Some("x"), 80, 90);
    must_be_linearizable(&script.history);
}

#[test]
fn an_unknown_write_cannot_take_effect_before_its_call() {
    let mut script = Script::new();
    script.get(2, Some("x"), 0, 5);
    script.put_unknown(1, "x", 10);
    assert_eq!(writers(&must_unexplained(&script)), excluded(&[(Some(1), "late")]));
}

#[test]
fn an_unknown_write_takes_effect_at_most_once() {
    // Seen, then overwritten, then seen again: that needs a second put of "x".
    let mut script = Script::new();
    script.put_unknown(1, "x", 0);
    script.get(2, Some("x"), 10, 20);
    script.put(3, "y", 30, 40);
    script.get(2, Some("x"), 50, 60);
    must_dead_end(&script);
}

#[test]
fn an_unknown_append_may_land_anywhere_after_its_call_or_nowhere() {
    for (observed, linearizable) in [("b", true), ("ab", true), ("ba", true), ("aab", false)] {
        let mut script = Script::new();
        script.append_unknown(1, "a", 0);
        script.append(2, "b", 20, 30);
        script.get(3, Some(observed), 40, 50);
        let verdict = check(&script.history);
        assert_eq!(verdict.is_linearizable(), linearizable, "read {observed:?}: {verdict}");
    }
}

#[test]
fn an_unknown_delete_may_or_may_not_have_happened() {
    for observed in [None, Some("x")] {
        let mut script = Script::new();
        script.put(1, "x", 0, 10);
        script.delete_unknown(2, 20);
        script.get(3, observed, 30, 40);
        must_be_linearizable(&script.history);
    }
}

#[test]
fn a_get_of_unknown_outcome_constrains_nothing() {
    let mut script = Script::new();
    script.put(1, "x", 0, 10);
    script.get_unknown(2, 20);
    let verdict = must_be_linearizable(&script.history);
    assert_eq!(verdict.keys[0].operation_count, 1, "the unknown get is left out");
}

#[test]
fn operations_still_pending_count_as_unknown() {
    let mut history = History::new();
    let key = bytes("k");
    let put = history.record_call(ClientId(1), key.clone(), Operation::Put(bytes("x")), 0);
    let get = history.record_call(ClientId(2), key.clone(), Operation::Get, 10);
    history.record_return(get, Output::Value(Some(bytes("x"))), 20);
    // A pending get is left out; the pending put may have happened.
    history.record_call(ClientId(3), key, Operation::Get, 30);
    let verdict = must_be_linearizable(&history);
    assert_eq!(verdict.keys[0].operation_count, 2);
    assert!(history.get(put).expect("the put").return_time().is_none());
}

// ---- Limits and reports ----------------------------------------------------------------------

#[test]
fn the_step_limit_gives_an_explicit_unknown() {
    let mut script = Script::new();
    for client in 0..6 {
        script.put(client, &format!("v{client}"), 0, 100);
    }
    script.get(9, Some("v0"), 200, 210);
    let limits = CheckLimits { steps_max: 3, ..CheckLimits::default() };
    let verdict = check_with_limits(&script.history, &limits);
    assert_eq!(verdict.keys[0].outcome, KeyOutcome::Unknown, "{verdict}");
    assert_eq!(verdict.keys[0].steps, 3);
    assert!(!verdict.is_linearizable() && !verdict.has_violation());
    assert!(verdict.to_string().contains("undecided"), "{verdict}");
    // With the default limits the same history is decided.
    must_be_linearizable(&script.history);
}

#[test]
fn verdicts_do_not_depend_on_the_cache() {
    // Without memory for the cache, the search is slower but reaches the same conclusions.
    let no_cache = CheckLimits { cache_bytes_max: 0, ..CheckLimits::default() };
    let mut good = Script::new();
    good.put(1, "a", 0, 100);
    good.put(2, "b", 0, 100);
    good.append(3, "c", 0, 100);
    good.get(4, Some("bc"), 10, 20);
    good.get(4, Some("a"), 110, 120);
    let verdict = check_with_limits(&good.history, &no_cache);
    assert!(verdict.is_linearizable(), "{verdict}");
    assert_eq!(verdict.keys[0].cached_configurations, 0);
    assert!(check(&good.history).keys[0].cached_configurations > 0);

    let mut bad = Script::new();
    bad.put(1, "a", 0, 100);
    bad.put(2, "b", 0, 100);
    bad.append(3, "c", 0, 100);
    bad.get(4, Some("bc"), 10, 20);
    bad.get(4, Some("ac"), 110, 120);
    assert!(check_with_limits(&bad.history, &no_cache).has_violation());
    assert!(check(&bad.history).has_violation());
}

#[test]
fn the_report_of_a_dead_end_names_the_prefix_the_value_and_the_misfits() {
    let report = check(&opposite_orders().history).to_string();
    for expected in [
        "1 not linearizable",
        "key \"k\": NOT linearizable (6 ops)",
        "longest linearizable prefix found: 2 operations",
        "\n        1. #0 client 1 [0, 100] put \"a\"",
        "\n        2. #2 client 3 [10, 20] get -> \"a\"",
        "after it the value is \"a\"",
        "\n           #1 client 2 [0, 100] put \"b\"  <- after it, no write that may still go \
         before this get leads to what it read: #5 client 4 [30, 40] get -> \"a\"",
        "\n           #3 client 4 [10, 20] get -> \"b\"  <- read \"b\", not \"a\"",
        "operations not placed besides these: 2",
    ] {
        assert!(report.contains(expected), "{expected:?} missing from:\n{report}");
    }
}

#[test]
fn the_report_of_an_unexplained_read_names_every_writer_and_why_it_is_excluded() {
    let mut script = Script::new();
    script.put(1, "1", 0, 10);
    script.put(1, "2", 20, 30);
    script.get(2, Some("1"), 40, 50);
    script.put(3, "1", 60, 70);
    let report = check(&script.history).to_string();
    for expected in [
        "key \"k\": NOT linearizable (4 ops)",
        "this get read a value no write can have left:\n           #2 client 2 [40, 50] get -> \"1\"",
        "no write of \"1\" can be the last one before it:",
        "\n           #0 client 1 [0, 10] put \"1\"  <- overwritten by a write that returned \
         before the get was called: #1 client 1 [20, 30] put \"2\"",
        "\n           #3 client 3 [60, 70] put \"1\"  <- called after the get returned",
    ] {
        assert!(report.contains(expected), "{expected:?} missing from:\n{report}");
    }
}

#[test]
fn the_report_shortens_long_prefixes_and_values() {
    // 28 appends one after the other, two concurrent ones, and two readers that disagree on
    // the order of those two.
    let mut script = Script::new();
    let mut value = String::new();
    for index in 0..28 {
        let part = format!("{index:04}");
        script.append(1, &part, index * 10, index * 10 + 5);
        value.push_str(&part);
    }
    script.append(1, "0028", 280, 300);
    script.append(2, "0029", 280, 300);
    script.get(3, Some(&format!("{value}00280029")), 310, 320);
    script.get(4, Some(&format!("{value}00290028")), 310, 320);
    let report = check(&script.history).to_string();
    for expected in [
        "prefix found: 28 operations (the first 8 not shown)\n        9. #8 client 1 [80, 85] \
         append \"0008\"\n",
        "\n       28. #27 client 1 [270, 275] append \"0027\"\n",
        "the value is \"000000010002000300040005...002200230024002500260027\" (112 bytes)",
        "\n           #28 client 1 [280, 300] append \"0028\"  <- after it, no write that may \
         still go before this get leads to what it read: #31 client 4 [310, 320] get -> \
         \"000000010002000300040005...002400250026002700290028\" (120 bytes)",
        "\n           #29 client 2 [280, 300] append \"0029\"  <- after it",
    ] {
        assert!(report.contains(expected), "{expected:?} missing from:\n{report}");
    }
    assert!(!report.contains("#7 "), "{report}");
}

// ---- Misuse of the history -------------------------------------------------------------------

#[test]
#[should_panic(expected = "has already completed")]
fn returning_twice_panics() {
    let mut history = History::new();
    let id = history.record_call(ClientId(1), bytes("k"), Operation::Delete, 0);
    history.record_return(id, Output::Written, 1);
    history.record_return(id, Output::Written, 2);
}

#[test]
#[should_panic(expected = "before its call")]
fn returning_before_the_call_panics() {
    let mut history = History::new();
    let id = history.record_call(ClientId(1), bytes("k"), Operation::Delete, 10);
    history.record_return(id, Output::Written, 9);
}

#[test]
#[should_panic(expected = "not an output of its kind")]
fn a_get_that_returns_a_write_acknowledgement_panics() {
    let mut history = History::new();
    let id = history.record_call(ClientId(1), bytes("k"), Operation::Get, 0);
    history.record_return(id, Output::Written, 1);
}

#[test]
#[should_panic(expected = "is still pending")]
fn a_client_calling_while_pending_panics() {
    let mut history = History::new();
    history.record_call(ClientId(1), bytes("k"), Operation::Get, 0);
    history.record_call(ClientId(1), bytes("k"), Operation::Get, 1);
}

#[test]
#[should_panic(expected = "before its previous operation ended")]
fn a_client_calling_before_its_previous_return_panics() {
    let mut history = History::new();
    let id = history.record_call(ClientId(1), bytes("k"), Operation::Get, 0);
    history.record_return(id, Output::Value(None), 10);
    history.record_call(ClientId(1), bytes("k"), Operation::Get, 5);
}
