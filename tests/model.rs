//! Randomized model test: generated cases (two services that answer, fail, panic or hang after
//! a delay; a timeout or none; maybe a caller deadline; a caller that waits, cancels or drops),
//! each run in virtual time on every executor and checked against a model of the documented
//! rules: the outcome, the instant it comes, and that no call is left running afterwards.
//!
//! * replay one case: `FAILFAST_SEED=<seed> cargo test --all-features --test model -- --nocapture`
//! * cases per executor: `FAILFAST_CASES=<n>` (default 500)
//! * soak: `FAILFAST_SOAK=<n> cargo test --release --all-features --test model -- --ignored --nocapture`
//!   (default 20,000 cases per executor, seeds from the clock, printed)

mod common;

use std::any::TypeId;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::ops::RangeInclusive;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;

use common::{ms, on_every_executor};
use failfast::executor::{Executor, Inline};
use failfast::mock::{Calls, Mock};
use failfast::timer::Manual;
use failfast::{AggregateError, Context, Dashboard, UserAggregator, mock};

/// Real time one case may take, all waits included, before it is declared a hang.
const CASE_LIMIT: Duration = common::HANG;
/// Virtual time is drawn on a 100 ms grid, so that events often fall on the same instant.
const GRID_MS: u64 = 100;
const CI_CASES: u64 = 500;
const SOAK_CASES: u64 = 20_000;
/// In the message of every panic the mocks inject; the panic hook stays quiet about those.
const INJECTED: &str = "(injected)";
/// A run stops after this many failing cases: a hang or a leak costs [`CASE_LIMIT`] each.
const MAX_FAILURES: usize = 5;

on_every_executor!(
    async fn random_cases_end_as_the_model_predicts_and_leave_nothing_running(ex) {
        let seeds = match env("FAILFAST_SEED") {
            Some(seed) => seed..=seed,
            None => 1..=env("FAILFAST_CASES").unwrap_or(CI_CASES),
        };
        check_cases(ex, seeds).await;
    }
);

on_every_executor!(
    #[ignore = "soak, run by hand: FAILFAST_SOAK=<cases per executor>"]
    async fn a_long_soak_of_random_cases_ends_as_the_model_predicts(ex) {
        let seeds = match env("FAILFAST_SEED") {
            Some(seed) => seed..=seed,
            None => {
                let first = soak_first_seed();
                first..=first + env("FAILFAST_SOAK").unwrap_or(SOAK_CASES) - 1
            }
        };
        check_cases(ex, seeds).await;
    }
);

#[test]
fn the_model_follows_the_documented_tie_rules() {
    use Caller::{CancelsAt, Waits};
    use Fate::{Answers, Fails, Hangs, Panics};
    use Outcome::*;
    // (profile, orders, timeout, caller deadline, caller): (when, inline, spawned)
    let expect = |(profile, orders, timeout, caller_deadline, caller), (at, inline, spawned)| {
        let (profile, orders) = (Service::new(profile), Service::new(orders));
        let case = Case {
            profile,
            orders,
            timeout,
            caller_deadline,
            caller,
        };
        let together = predict(&case, Observation::Together);
        let any_order = predict(&case, Observation::InAnyOrder);
        assert_eq!(
            (together.at, &together.outcomes[..]),
            (at, inline),
            "{case}"
        );
        assert_eq!(
            (any_order.at, &any_order.outcomes[..]),
            (at, spawned),
            "{case}"
        );
    };
    // Answers due with the deadline win over it; spawned, the deadline may be seen first.
    expect(
        ((500, Answers), (500, Answers), Some(500), None, Waits),
        (500, &[Dashboard], &[Dashboard, DeadlineExceeded]),
    );
    // Both failed when observed: the profile's error; spawned, either may be observed first.
    expect(
        ((200, Fails), (200, Fails), Some(900), None, Waits),
        (
            200,
            &[Failed("profile")],
            &[Failed("orders"), Failed("profile")],
        ),
    );
    // An error due with a cancel is the cancel; a panic due with the deadline stays a panic.
    expect(
        ((300, Hangs), (300, Fails), Some(900), None, CancelsAt(300)),
        (300, &[Cancelled], &[Cancelled]),
    );
    expect(
        ((400, Panics), (0, Hangs), Some(900), Some(400), Waits),
        (
            400,
            &[Panicked("profile")],
            &[Panicked("profile"), DeadlineExceeded],
        ),
    );
    // A cancel wins over the deadline at the same instant, on every executor.
    expect(
        ((0, Hangs), (0, Hangs), Some(600), None, CancelsAt(600)),
        (600, &[Cancelled], &[Cancelled]),
    );
    // Apart in time, the first event decides.
    expect(
        ((100, Fails), (200, Panics), Some(300), None, Waits),
        (100, &[Failed("profile")], &[Failed("profile")]),
    );
    // With no timeout of its own, the caller's deadline bounds the aggregate.
    expect(
        ((300, Answers), (0, Hangs), None, Some(300), Waits),
        (300, &[DeadlineExceeded], &[DeadlineExceeded]),
    );
    // Under a context already past its deadline, nothing starts.
    expect(
        ((0, Answers), (0, Answers), Some(100), Some(0), Waits),
        (0, &[DeadlineExceeded], &[DeadlineExceeded]),
    );
}

// ---------------------------------------------------------------------------------------------
// Cases

/// One generated scenario. Times are virtual milliseconds from the start of the aggregate.
#[derive(Debug, Clone, PartialEq)]
struct Case {
    profile: Service,
    orders: Service,
    /// The aggregator's timeout (never zero); `None`: `Duration::MAX`, no timeout of its own,
    /// and then the caller always has a deadline.
    timeout: Option<u64>,
    /// A deadline on the caller's context, if any; 0 means already passed.
    caller_deadline: Option<u64>,
    caller: Caller,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Service {
    delay: u64,
    fate: Fate,
}

/// What a service does once its delay is over.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Answers,
    Fails,
    Panics,
    Hangs,
}

/// What the caller does. At 0, before the aggregate is first polled; at any other instant,
/// right after the clock reaches it and before the aggregate is polled again.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Waits,
    CancelsAt(u64),
    DropsAt(u64),
}

impl Case {
    /// The case of `seed`: the same on every run, every machine.
    fn generate(seed: u64) -> Case {
        let mut rng = SplitMix64(seed);
        let service = |rng: &mut SplitMix64| Service {
            delay: rng.grid(6),
            fate: match rng.below(10) {
                0..=4 => Fate::Answers,
                5..=6 => Fate::Fails,
                7 => Fate::Panics,
                _ => Fate::Hangs,
            },
        };
        let profile = service(&mut rng);
        let orders = service(&mut rng);
        let timeout = (rng.below(8) > 0).then(|| GRID_MS + rng.grid(7));
        let caller_deadline = (timeout.is_none() || rng.below(2) == 0).then(|| rng.grid(8));
        let caller = match rng.below(10) {
            0..=3 => Caller::Waits,
            4..=6 => Caller::CancelsAt(rng.grid(8)),
            _ => Caller::DropsAt(rng.grid(8)),
        };
        Case {
            profile,
            orders,
            timeout,
            caller_deadline,
            caller,
        }
    }

    /// The effective deadline: the earlier of the timeout and the caller's deadline.
    fn deadline(&self) -> u64 {
        let deadlines = [self.timeout, self.caller_deadline];
        let earliest = deadlines.into_iter().flatten().min();
        earliest.expect("a case without a timeout has a caller deadline")
    }

    fn cancel_at(&self) -> Option<u64> {
        match self.caller {
            Caller::CancelsAt(at) => Some(at),
            _ => None,
        }
    }

    /// When the caller's cancel ends the aggregate as a cancellation: not when the caller's
    /// own deadline came at or before it (its context's `err()` is then the deadline, and so
    /// is the aggregate's error).
    fn cancels_first_at(&self) -> Option<u64> {
        self.cancel_at()
            .filter(|&at| self.caller_deadline.is_none_or(|deadline| at < deadline))
    }

    fn drop_at(&self) -> Option<u64> {
        match self.caller {
            Caller::DropsAt(at) => Some(at),
            _ => None,
        }
    }

    fn services(&self) -> [(&'static str, Service); 2] {
        [("profile", self.profile), ("orders", self.orders)]
    }

    /// The calls that return or panic at an instant matching `when`, profile first.
    fn calls_ending(&self, when: impl Fn(u64) -> bool) -> Vec<(&'static str, Fate)> {
        self.services()
            .into_iter()
            .filter(|(_, service)| service.ends_at().is_some_and(&when))
            .map(|(name, service)| (name, service.fate))
            .collect()
    }

    /// How many sleeps are registered at `t` while the aggregate waits: its deadline's, and
    /// those of the calls whose delay is not over.
    fn sleepers_after(&self, t: u64) -> usize {
        let sleeping = [self.deadline(), self.profile.delay, self.orders.delay];
        sleeping.into_iter().filter(|&until| until > t).count()
    }

    /// How many competing events fall on instant `t`.
    fn events_at(&self, t: u64) -> usize {
        let services = self.calls_ending(|end| end == t).len();
        let caller = self.cancel_at().or(self.drop_at()) == Some(t);
        services + usize::from(caller) + usize::from(self.deadline() == t)
    }

    /// Every instant at which something happens, in order.
    fn instants(&self) -> Vec<u64> {
        let caller = self.cancel_at().or(self.drop_at());
        let mut instants = vec![0, self.profile.delay, self.orders.delay, self.deadline()];
        instants.extend(caller);
        instants.sort_unstable();
        instants.dedup();
        instants
    }
}

impl Service {
    fn new((delay, fate): (u64, Fate)) -> Service {
        Service { delay, fate }
    }

    /// When the call returns or panics; never if it hangs.
    fn ends_at(&self) -> Option<u64> {
        (self.fate != Fate::Hangs).then_some(self.delay)
    }

    fn mock<V>(&self, mock: Mock<V>, name: &str, clock: &Manual) -> Mock<V, Manual> {
        let mock = mock.delay(ms(self.delay));
        let mock = match self.fate {
            Fate::Answers => mock,
            Fate::Fails => mock.fail(failure_message(name)),
            Fate::Panics => mock.panic(panic_message(name)),
            Fate::Hangs => mock.hang(),
        };
        mock.timer(clock.clone())
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, service) in self.services() {
            let fate = format!("{:?}", service.fate).to_lowercase();
            write!(f, "{name} {fate} after {}ms, ", service.delay)?;
        }
        match self.timeout {
            Some(timeout) => write!(f, "timeout {timeout}ms, ")?,
            None => write!(f, "no timeout (Duration::MAX), ")?,
        }
        match self.caller_deadline {
            Some(deadline) => write!(f, "caller deadline {deadline}ms, ")?,
            None => write!(f, "no caller deadline, ")?,
        }
        match self.caller {
            Caller::Waits => write!(f, "caller waits"),
            Caller::CancelsAt(at) => write!(f, "caller cancels at {at}ms"),
            Caller::DropsAt(at) => write!(f, "caller drops the future at {at}ms"),
        }
    }
}

fn failure_message(service: &str) -> String {
    format!("{service} down")
}

fn panic_message(service: &str) -> String {
    format!("{service} exploded {INJECTED}")
}

/// Sebastiano Vigna's SplitMix64: tiny, fast, and every seed is a good seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is negligible for small `n`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A time on the grid, from 0 to `steps` steps.
    fn grid(&mut self, steps: u64) -> u64 {
        self.below(steps + 1) * GRID_MS
    }
}

// ---------------------------------------------------------------------------------------------
// The model

/// How an aggregate ends, as far as the model is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Dashboard,
    Failed(&'static str),
    Panicked(&'static str),
    Cancelled,
    DeadlineExceeded,
    /// The caller dropped the future: there is no outcome, only the cleanup to check.
    WalkedAway,
}

/// When the aggregate ends and how it may end then: one outcome when the competing events are
/// apart in time, every plausible one when they fall on the same instant and the executor may
/// observe them in either order.
#[derive(Debug, Clone, PartialEq)]
struct Prediction {
    at: u64,
    outcomes: Vec<Outcome>,
    /// Whether the calls were started at all.
    started: bool,
}

/// How the aggregate observes calls that end at the same instant as each other, or as a
/// cancellation or the deadline.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Observation {
    /// Inline: the calls run inside the aggregate's own poll, so it sees everything due at an
    /// instant together, and the documented tie rules decide.
    Together,
    /// Spawned: each call answers from its own task, so at one instant the aggregate may see
    /// any of them, in either order, before it sees the cancellation or the deadline.
    InAnyOrder,
}

/// What the documented rules say this case ends with.
fn predict(case: &Case, observation: Observation) -> Prediction {
    let deadline = case.deadline();
    let before_start = |outcome| Prediction {
        at: 0,
        outcomes: vec![outcome],
        started: false,
    };
    // Before the first poll: dropped unpolled, already cancelled (checked first, unless its
    // own deadline came first), already late.
    if case.drop_at() == Some(0) {
        return before_start(Outcome::WalkedAway);
    }
    if case.cancels_first_at() == Some(0) {
        return before_start(Outcome::Cancelled);
    }
    if deadline == 0 {
        return before_start(Outcome::DeadlineExceeded);
    }

    for t in case.instants() {
        let started = |outcomes| Prediction {
            at: t,
            outcomes,
            started: true,
        };
        if case.drop_at() == Some(t) {
            return started(vec![Outcome::WalkedAway]);
        }
        let earlier = case.calls_ending(|end| end < t);
        let now = case.calls_ending(|end| end == t);
        let cancelled = case.cancels_first_at() == Some(t);
        let expired = deadline == t;

        // What the deciding poll may have seen of the calls ending now.
        let views: Vec<Vec<_>> = match observation {
            Observation::Together => vec![now.clone()],
            Observation::InAnyOrder => {
                let reversed: Vec<_> = now.iter().rev().copied().collect();
                [now.clone(), reversed]
                    .iter()
                    .flat_map(|order| (0..=order.len()).map(|seen| order[..seen].to_vec()))
                    .collect()
            }
        };
        let mut outcomes: Vec<Outcome> = views
            .into_iter()
            .filter_map(|seen| {
                let seen: Vec<_> = earlier.iter().chain(&seen).copied().collect();
                decide(&seen, cancelled, expired)
            })
            .collect();
        outcomes.sort_unstable();
        outcomes.dedup();
        if !outcomes.is_empty() {
            return started(outcomes);
        }
    }
    unreachable!("the deadline ends every aggregate: {case}")
}

/// The documented rules, for one poll that has seen the calls in `seen` end, and maybe a
/// cancellation or the deadline. `None`: still pending.
fn decide(seen: &[(&'static str, Fate)], cancelled: bool, expired: bool) -> Option<Outcome> {
    // The join looks at the profile call first: its error wins if both have failed.
    let failure = ["profile", "orders"].into_iter().find_map(|name| {
        seen.iter()
            .find(|&&(service, fate)| service == name && fate != Fate::Answers)
    });
    let joined = match failure {
        Some(&(service, Fate::Panics)) => Some(Outcome::Panicked(service)),
        Some(&(service, _)) => Some(Outcome::Failed(service)),
        None if seen.len() == 2 => Some(Outcome::Dashboard),
        None => None,
    };
    // Answers win over a cancel, which wins over the deadline; an error seen with either is
    // reported as that cause; a panic stays a panic.
    match joined {
        None | Some(Outcome::Failed(_)) if cancelled => Some(Outcome::Cancelled),
        None | Some(Outcome::Failed(_)) if expired => Some(Outcome::DeadlineExceeded),
        joined => joined,
    }
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcomes.as_slice() {
            [outcome] => write!(f, "{outcome:?} at {}ms", self.at)?,
            outcomes => write!(f, "one of {outcomes:?} at {}ms", self.at)?,
        }
        if !self.started {
            write!(f, ", nothing started")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The runner

/// Runs the cases `seeds` on `ex`, reports each one that differs from the model with its seed,
/// and fails if any did.
async fn check_cases<E: Executor + Clone>(ex: E, seeds: RangeInclusive<u64>) {
    silence_injected_panics();
    let executor = std::any::type_name::<E>()
        .rsplit("::")
        .next()
        .unwrap_or("?");
    let observation = if TypeId::of::<E>() == TypeId::of::<Inline>() {
        Observation::Together
    } else {
        Observation::InAnyOrder
    };
    let replay = seeds.start() == seeds.end();
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for seed in seeds.clone() {
        let case = Case::generate(seed);
        let prediction = predict(&case, observation);
        let run = AssertUnwindSafe(run_case(&ex, &case, &prediction))
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| Err(format!("panicked: {}", message_of(&*payload))));
        stats.record(&case, &prediction, run.as_ref().ok());
        match run {
            Ok(ended) if replay => {
                eprintln!(
                    "seed {seed} on {executor}: {case}\n  expected {prediction}\n  ended {ended}"
                );
            }
            Ok(_) => {}
            Err(why) => {
                eprintln!(
                    "model case FAILED on {executor}, replay with FAILFAST_SEED={seed}\n  case: {case}\n  \
                     expected {prediction}\n  {why}"
                );
                failures.push(seed);
                if failures.len() == MAX_FAILURES {
                    eprintln!("stopping after {MAX_FAILURES} failures");
                    break;
                }
            }
        }
    }
    let cases = stats.cases;
    eprintln!(
        "model on {executor}: {cases} cases, seeds {}..={}, {:.1?}, {} failures\n  {stats}",
        seeds.start(),
        seeds.start() + cases - 1,
        start.elapsed(),
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed on {executor}, seeds {failures:?}",
        failures.len()
    );
    if cases >= CI_CASES {
        stats.assert_coverage();
    }
}

/// How a run ended: the instant the aggregate returned or was dropped, and how.
#[derive(Debug)]
struct Ended {
    at: u64,
    outcome: Outcome,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {}ms", self.outcome, self.at)
    }
}

/// Runs one case in virtual time: steps the clock through the case's instants, acting for the
/// caller and driving the aggregate between steps, then checks the outcome against the model
/// and that nothing is left running.
async fn run_case<E: Executor + Clone>(
    ex: &E,
    case: &Case,
    prediction: &Prediction,
) -> Result<Ended, String> {
    let limit = Instant::now() + CASE_LIMIT;
    let clock = Manual::new();
    let start = clock.now();
    let profiles = case.profile.mock(mock::profile("Alice"), "profile", &clock);
    let orders = case.orders.mock(mock::orders(5), "orders", &clock);
    let calls = [profiles.calls(), orders.calls()];
    let agg = UserAggregator::builder(profiles, orders)
        .executor(ex.clone())
        .timer(clock.clone())
        .timeout(case.timeout.map_or(Duration::MAX, ms))
        .build()
        .map_err(|err| format!("build failed: {err}"))?;
    // On the virtual clock: the caller's cancel is stamped in the time its deadline is in.
    let (ctx, cancel) = Context::background()
        .with_timer(clock.clone())
        .with_cancel();
    let ctx = match case.caller_deadline {
        Some(deadline) => ctx.with_deadline(start + ms(deadline)),
        None => ctx,
    };
    let state = |calls: &[Calls; 2]| {
        format!(
            "profile {:?}, orders {:?}, {} sleepers",
            calls[0],
            calls[1],
            clock.sleepers()
        )
    };

    let mut aggregate = Some(Box::pin(agg.aggregate(&ctx, 1)));
    let driver = Driver::new();
    let mut ended = None;
    for t in case.instants() {
        clock.advance(ms(t) - clock.elapsed());
        if case.cancel_at() == Some(t) {
            cancel.cancel();
        }
        if case.drop_at() == Some(t) {
            aggregate = None;
            ended = Some(Ended {
                at: t,
                outcome: Outcome::WalkedAway,
            });
            break;
        }
        // Unless the model says it ends now, drive it until both calls have started, every
        // call due by now has ended and every party that should be asleep is: only then is
        // the next instant apart from this one.
        let settled = || {
            t != prediction.at
                && clock.sleepers() == case.sleepers_after(t)
                && case
                    .services()
                    .iter()
                    .zip(&calls)
                    .all(|((_, service), calls)| {
                        let due = service.ends_at().is_some_and(|end| end <= t);
                        calls.started() == 1 && (!due || calls.finished() == 1)
                    })
        };
        let future = aggregate.as_mut().expect("still running").as_mut();
        match driver.drive(future, settled, limit).await {
            Some(Some(result)) => {
                let outcome = outcome_of(result, clock.elapsed())?;
                ended = Some(Ended { at: t, outcome });
                break;
            }
            Some(None) => {}
            None => {
                return Err(format!(
                    "HANG: still pending (or never woken) at {t}ms after {CASE_LIMIT:?} of real \
                     time; {}",
                    state(&calls)
                ));
            }
        }
    }
    drop(aggregate);
    let ended = ended.ok_or("the aggregate outlived every instant of the case")?;
    if ended.at != prediction.at || !prediction.outcomes.contains(&ended.outcome) {
        return Err(format!("actual {ended}"));
    }

    // Nothing left running: every call's future dropped, every sleep with it.
    let quiet = || calls.iter().all(|calls| calls.in_flight() == 0) && clock.sleepers() == 0;
    if !wait_until(quiet, limit).await {
        return Err(format!(
            "LEAK: {ended}, and after {CASE_LIMIT:?} still {}",
            state(&calls)
        ));
    }
    for ((name, service), calls) in case.services().into_iter().zip(&calls) {
        let deadline = start + ms(case.deadline());
        let mut checked = check_calls(name, service, calls, prediction.started, ended.at, deadline);
        // A spawned task that passed its abort check just before the group aborted it calls
        // its service late (after `run` returned) and drops it at its next poll: if that is
        // what the counters caught, wait for the drop and look again.
        if checked.is_err() && calls.in_flight() > 0 {
            if !wait_until(quiet, limit).await {
                return Err(format!(
                    "LEAK: {ended}, a late {name} call was never dropped"
                ));
            }
            checked = check_calls(name, service, calls, prediction.started, ended.at, deadline);
        }
        checked?;
    }
    let caller_cancelled = case.cancel_at().is_some_and(|at| at <= ended.at);
    if ctx.is_cancelled() && !caller_cancelled {
        return Err(format!(
            "{ended}, but the caller's own context was cancelled"
        ));
    }
    Ok(ended)
}

/// The name of one of the kata's two calls, as the model spells it.
fn service_name(service: &str) -> &'static str {
    match service {
        "profile" => "profile",
        "orders" => "orders",
        _ => "an unknown call",
    }
}

/// The model's view of what `aggregate` returned, checking the details on the way: the
/// dashboard's content, the service's own error or panic message, `elapsed` to the instant.
fn outcome_of(
    result: Result<Dashboard, AggregateError>,
    elapsed: Duration,
) -> Result<Outcome, String> {
    Ok(match &result {
        Ok(dashboard) if dashboard.to_string() == "User: Alice | Orders: 5" => Outcome::Dashboard,
        Err(AggregateError::Service { service, source })
            if source.to_string() == failure_message(service) =>
        {
            Outcome::Failed(service_name(service))
        }
        Err(AggregateError::Panicked { service, message })
            if *message == panic_message(service) =>
        {
            Outcome::Panicked(service_name(service))
        }
        Err(AggregateError::Cancelled {
            elapsed: reported, ..
        }) if *reported == elapsed => Outcome::Cancelled,
        Err(AggregateError::DeadlineExceeded { elapsed: reported }) if *reported == elapsed => {
            Outcome::DeadlineExceeded
        }
        _ => {
            return Err(format!(
                "actual {result:?} after {elapsed:?}: wrong details, or not a result the model knows"
            ));
        }
    })
}

/// A call's counters once the aggregate has ended at `end`: ended before, it finished; still
/// due, it was cancelled; due at that very instant, one or the other. A call is made when its
/// task first runs, so an aggregate that ends at its very first instant may have ended before
/// the other call was made at all (inline, the profile call is polled first; spawned, the
/// orders task may be aborted before it ever ran): then it was neither started nor cancelled.
/// A call that was made got the effective deadline, and its context is cancelled by now.
fn check_calls(
    name: &str,
    service: Service,
    calls: &Calls,
    started: bool,
    end: u64,
    deadline: Instant,
) -> Result<(), String> {
    let counts = (calls.started(), calls.finished(), calls.cancelled());
    let consistent = match service.ends_at() {
        _ if !started => counts == (0, 0, 0),
        _ if end == 0 && counts == (0, 0, 0) => true,
        Some(at) if at < end => counts == (1, 1, 0),
        Some(at) if at == end => counts.0 == 1 && counts.1 + counts.2 == 1,
        _ => counts == (1, 0, 1),
    };
    if !consistent {
        return Err(format!(
            "{name} calls (started, finished, cancelled) = {counts:?}, inconsistent with an end at \
             {end}ms"
        ));
    }
    if let Some(given) = calls.last_context() {
        if given.deadline() != Some(deadline) {
            return Err(format!(
                "{name} was given the deadline {:?}",
                given.deadline()
            ));
        }
        if !given.is_cancelled() {
            return Err(format!(
                "{name}'s context was not cancelled when the aggregate ended"
            ));
        }
    }
    Ok(())
}

/// Polls the aggregate as a runtime would: only when it was woken, so that a lost wake-up
/// shows up as a hang instead of being papered over by polling in a loop.
struct Driver {
    woken: Arc<Woken>,
    waker: Waker,
}

struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Driver {
    fn new() -> Driver {
        let woken = Arc::new(Woken(AtomicBool::new(true))); // the first poll needs no wake-up
        let waker = Waker::from(woken.clone());
        Driver { woken, waker }
    }

    /// Polls `future` whenever it is woken, until it completes (`Some(Some(output))`) or
    /// `settled` holds with no wake-up pending (`Some(None)`); `None` once `limit` has passed.
    async fn drive<F: Future>(
        &self,
        mut future: Pin<&mut F>,
        settled: impl Fn() -> bool,
        limit: Instant,
    ) -> Option<Option<F::Output>> {
        let mut round = 0;
        loop {
            if self.woken.0.swap(false, Ordering::SeqCst) {
                let mut cx = TaskContext::from_waker(&self.waker);
                if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                    return Some(Some(output));
                }
            }
            if settled() && !self.woken.0.load(Ordering::SeqCst) {
                return Some(None);
            }
            if Instant::now() >= limit {
                return None;
            }
            pause(&mut round).await;
        }
    }
}

/// Waits until `condition` holds, or `limit` passes (`false`).
async fn wait_until(condition: impl Fn() -> bool, limit: Instant) -> bool {
    let mut round = 0;
    while !condition() {
        if Instant::now() >= limit {
            return false;
        }
        pause(&mut round).await;
    }
    true
}

/// Lets the executor's threads run for a moment: a yield at first, short sleeps after; then
/// yields to the runtime that runs the test too, whichever it is.
async fn pause(round: &mut u32) {
    *round += 1;
    if *round < 100 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// What the cases covered, so that a generator that stopped exploring is noticed.
#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    outcomes: BTreeMap<Outcome, u64>,
    not_started: u64,
    /// Cases whose deciding instant had several competing events.
    simultaneous: u64,
    /// How the cases with several plausible outcomes (spawned executors only) ended.
    ambiguous: BTreeMap<Outcome, u64>,
}

impl Stats {
    fn record(&mut self, case: &Case, prediction: &Prediction, ended: Option<&Ended>) {
        self.cases += 1;
        for outcome in &prediction.outcomes {
            *self.outcomes.entry(*outcome).or_default() += 1;
        }
        self.not_started += u64::from(!prediction.started);
        self.simultaneous += u64::from(case.events_at(prediction.at) > 1);
        if let Some(ended) = ended.filter(|_| prediction.outcomes.len() > 1) {
            *self.ambiguous.entry(ended.outcome).or_default() += 1;
        }
    }

    /// Every kind of outcome, a case that starts nothing and simultaneous events came up.
    fn assert_coverage(&self) {
        let kinds: HashSet<_> = (self.outcomes.keys()).map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), 6, "not every kind of outcome came up: {self}");
        assert!(self.not_started > 0 && self.simultaneous > 0, "{self}");
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "predicted outcomes:")?;
        for (outcome, count) in &self.outcomes {
            write!(f, " {outcome:?} {count},")?;
        }
        write!(
            f,
            " nothing started {}, simultaneous events {}; several plausible, ended as:",
            self.not_started, self.simultaneous
        )?;
        for (outcome, count) in &self.ambiguous {
            write!(f, " {outcome:?} {count},")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/// A number from the environment, if set.
fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let number = value.trim().replace('_', "").parse();
    Some(number.unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}

/// The soak's first seed: from the clock, the same for every executor in one run.
fn soak_first_seed() -> u64 {
    static FIRST: OnceLock<u64> = OnceLock::new();
    *FIRST.get_or_init(|| {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        let nanos = now.map_or(0, |now| now.as_nanos() as u64);
        SplitMix64(nanos).next() >> 20 // small enough to count up from without overflow
    })
}

/// Keeps the default panic hook quiet about the panics the mocks inject (thousands, on
/// executor threads that the test harness does not capture); every other panic is printed.
fn silence_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !message_of(info.payload()).contains(INJECTED) {
                default(info);
            }
        }));
    });
}

fn message_of(payload: &(dyn std::any::Any + Send)) -> &str {
    match payload.downcast_ref::<String>() {
        Some(message) => message,
        None => payload.downcast_ref::<&str>().copied().unwrap_or("?"),
    }
}
