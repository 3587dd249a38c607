//! Structured records through `log`, to the aggregator's own logger when one is set.

use std::time::Duration;

mod common;

use common::Capture;
use failfast::{Context, UserAggregator, mock};

#[test]
fn each_fetch_is_logged_with_user_id_service_and_elapsed_ms() {
    let capture = Capture::new();
    let agg = UserAggregator::builder(mock::profile("Alice"), mock::orders(5))
        .logger(capture.clone())
        .build()
        .unwrap();

    futures::executor::block_on(agg.aggregate(&Context::background(), 42)).unwrap();

    let lines = capture.lines();
    let finished: Vec<_> = lines
        .iter()
        .filter(|(_, msg, _)| msg == "fetch finished")
        .collect();
    assert_eq!(finished.len(), 2, "{lines:#?}");
    for service in ["profile", "orders"] {
        let (level, _, kvs) = finished
            .iter()
            .find(|(_, _, kvs)| kvs.contains(&format!("service={service}")))
            .unwrap_or_else(|| panic!("no record for {service}: {lines:#?}"));
        assert_eq!(*level, log::Level::Debug);
        assert!(kvs.contains(&"user_id=42".to_owned()), "{kvs:?}");
        assert!(
            kvs.iter().any(|kv| kv.starts_with("elapsed_ms=")),
            "{kvs:?}"
        );
    }
    assert!(
        lines.iter().all(|(level, _, _)| *level > log::Level::Warn),
        "{lines:#?}"
    );
}

#[test]
fn a_failure_is_logged_once_at_warn_with_what_was_cancelled() {
    let capture = Capture::new();
    let agg = UserAggregator::builder(
        mock::profile("Alice").fail("profile db down"),
        mock::orders(5).delay(Duration::from_secs(10)),
    )
    .logger(capture.clone())
    .build()
    .unwrap();

    futures::executor::block_on(agg.aggregate(&Context::background(), 7)).unwrap_err();

    let lines = capture.lines();
    let warnings: Vec<_> = lines
        .iter()
        .filter(|(level, _, _)| *level == log::Level::Warn)
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    let (_, _, kvs) = warnings[0];
    assert!(kvs.contains(&"user_id=7".to_owned()), "{kvs:?}");
    assert!(kvs.contains(&"cancelled=orders".to_owned()), "{kvs:?}");
    assert!(
        kvs.contains(&"error=profile service failed: profile db down".to_owned()),
        "{kvs:?}"
    );
}
