//! Part one: every outcome, one aggregate after another, a million times over, with memory
//! sampled every tenth.

use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use failfast::mock::{Calls, Mock};
use failfast::timer::Manual;
use failfast::{
    AggregateError, Context, Dashboard, Executor, Profile, Timer, UserAggregator, mock,
};

use crate::measure::{Checked, Checks, Memory, settle, signed_bytes, spin};
use crate::{Job, Options, PLANNED_PANIC, SETTLE};

/// The virtual deadline of the aggregators that run in virtual time.
const VIRTUAL_TIMEOUT: Duration = Duration::from_secs(1);
/// The real deadline of every 1000th aggregate.
const REAL_TIMEOUT: Duration = Duration::from_millis(1);

/// `--sequential` aggregates on one executor.
pub struct Sequential<'a>(pub &'a Options);

impl Job for Sequential<'_> {
    const PART: &'static str = "sequential";

    async fn run<E: Executor + Clone, T: Timer>(self, name: &str, ex: E, timer: T) -> Checked {
        let options = self.0;
        let n = options.sequential as u64;
        let tag = format!("[sequential {name}]");
        let fleet = Fleet::new(ex, timer);
        // A long-lived cancellable parent, as a server has: every aggregate runs under it.
        let (server, _shutdown) = Context::background().with_cancel();
        let mut errors = Vec::new();
        let mut counts = [0_u64; SCENARIOS];
        let every = (n / 10).max(1);

        let at_start = Memory::now();
        let mut warm = at_start;
        let mut peak_rss = None;
        println!("{tag} {n} aggregates; at start {at_start}");
        let start = Instant::now();
        for i in 0..n {
            match fleet.step(&server, i).await {
                Ok(scenario) => counts[scenario as usize] += 1,
                Err(error) if errors.len() < 5 => errors.push(format!("{tag} {error}")),
                Err(_) => {}
            }
            let done = i + 1;
            if done % every == 0 || done == n {
                let now = Memory::now();
                if done == every {
                    warm = now;
                }
                peak_rss = peak_rss.max(now.rss_kib);
                println!(
                    "{tag} {done:>9} done  {now}  since warm-up: {}  {:.1?}",
                    now.since(&warm),
                    start.elapsed()
                );
            }
        }
        let elapsed = start.elapsed();
        let settled = settle(SETTLE, || {
            fleet.calls.iter().all(|c| c.in_flight() == 0) && fleet.clock.sleepers() == 0
        })
        .await;
        let at_end = Memory::now();

        let (mut started, mut finished, mut cancelled) = (0, 0, 0);
        for calls in &fleet.calls {
            started += calls.started();
            finished += calls.finished();
            cancelled += calls.cancelled();
        }
        let (mut most_started, mut want_finished) = (0, 0);
        for (scenario, &count) in ALL.iter().zip(&counts) {
            let (s, f) = scenario.calls();
            most_started += s * count as usize;
            want_finished += f * count as usize;
        }
        let count = |s: Scenario| counts[s as usize];
        println!(
            "{tag} {n} aggregates in {elapsed:.2?} ({:.1} µs each): ok {}, service errors {}, panics {}, deadlines {} virtual + {} real, caller cancelled {}, caller dropped {}, context already cancelled {}",
            elapsed.as_secs_f64() * 1e6 / n.max(1) as f64,
            count(Scenario::Ok),
            count(Scenario::ProfileFails) + count(Scenario::OrdersFails),
            count(Scenario::Panics),
            count(Scenario::Deadline),
            count(Scenario::RealDeadline),
            count(Scenario::CallerCancels),
            count(Scenario::CallerDrops),
            count(Scenario::AlreadyCancelled),
        );
        println!(
            "{tag} calls: started {started}, finished {finished}, cancelled {cancelled}, manual-clock sleepers {}; {}",
            fleet.clock.sleepers(),
            settled
                .as_ref()
                .map_or_else(Clone::clone, |t| format!("settled in {t:.1?}")),
        );
        println!(
            "{tag} memory: at start {at_start}; after warm-up {warm}; at end {at_end}; peak RSS {} KiB; growth after warm-up: {}",
            peak_rss.map_or("n/a".into(), |k| k.to_string()),
            at_end.since(&warm),
        );

        let mut checks = Checks::new(&tag);
        checks.expect(
            errors.is_empty() && counts.iter().sum::<u64>() == n,
            format!("each of the {n} aggregates ended as its scenario requires"),
        );
        for error in errors {
            checks.expect(false, error);
        }
        checks.expect(
            settled.is_ok() && started == finished + cancelled,
            format!("every call ended: started {started} == finished {finished} + cancelled {cancelled}, none in flight"),
        );
        checks.expect(
            finished == want_finished && started <= most_started,
            format!("calls finished: {finished} of {want_finished} expected; started {started}, at most {most_started} (a call cancelled before its first poll never calls its service)"),
        );
        let rss = at_end.rss_growth(&warm);
        checks.expect(
            rss.is_none_or(|kib| kib <= options.rss_bound_kib as i64),
            format!(
                "RSS growth after warm-up {} KiB <= {} KiB",
                rss.map_or("n/a".into(), |k| format!("{k:+}")),
                options.rss_bound_kib
            ),
        );
        let heap = at_end.heap_growth(&warm);
        checks.expect(
            heap <= options.heap_bound_kib as i64 * 1024,
            format!(
                "live heap growth after warm-up {} <= {} KiB",
                signed_bytes(heap),
                options.heap_bound_kib
            ),
        );
        checks.done()
    }
}

/// What one aggregate is made to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Ok,
    ProfileFails,
    OrdersFails,
    Deadline,
    CallerCancels,
    CallerDrops,
    AlreadyCancelled,
    Panics,
    RealDeadline,
}

const SCENARIOS: usize = 9;

/// Every scenario, in discriminant order; the first eight make the cycle.
const ALL: [Scenario; SCENARIOS] = [
    Scenario::Ok,
    Scenario::ProfileFails,
    Scenario::OrdersFails,
    Scenario::Deadline,
    Scenario::CallerCancels,
    Scenario::CallerDrops,
    Scenario::AlreadyCancelled,
    Scenario::Panics,
    Scenario::RealDeadline,
];

impl Scenario {
    /// The scenario of aggregate `i`: the cycle of eight, and a real deadline every 1000th.
    fn of(i: u64) -> Scenario {
        if i % 1000 == 999 {
            Scenario::RealDeadline
        } else {
            ALL[(i % 8) as usize]
        }
    }

    fn expects(self, outcome: &Outcome) -> bool {
        use AggregateError as E;
        let result = match outcome {
            Outcome::Returned(result) => result,
            Outcome::Dropped => return self == Scenario::CallerDrops,
            Outcome::Stuck { .. } => return false,
        };
        match (self, result) {
            (Scenario::Ok, Ok(dashboard)) => dashboard.orders == 5,
            (Scenario::ProfileFails, Err(E::Service { service, .. })) => *service == "profile",
            (Scenario::OrdersFails, Err(E::Service { service, .. })) => *service == "orders",
            (Scenario::Deadline, Err(E::DeadlineExceeded { elapsed })) => {
                *elapsed == VIRTUAL_TIMEOUT
            }
            (Scenario::CallerCancels, Err(E::Cancelled { .. })) => true,
            (Scenario::AlreadyCancelled, Err(E::Cancelled { elapsed, .. })) => elapsed.is_zero(),
            (Scenario::Panics, Err(E::Panicked { service, message })) => {
                *service == "profile" && message == PLANNED_PANIC
            }
            (Scenario::RealDeadline, Err(E::DeadlineExceeded { elapsed })) => {
                *elapsed >= REAL_TIMEOUT
            }
            _ => false,
        }
    }

    /// (calls started at most, calls finished) by one aggregate of this scenario.
    fn calls(self) -> (usize, usize) {
        match self {
            Scenario::Ok => (2, 2),
            Scenario::ProfileFails | Scenario::OrdersFails | Scenario::Panics => (2, 1),
            Scenario::AlreadyCancelled => (0, 0),
            Scenario::Deadline
            | Scenario::CallerCancels
            | Scenario::CallerDrops
            | Scenario::RealDeadline => (2, 0),
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Returned(Result<Dashboard, AggregateError>),
    Dropped,
    /// The calls had not both started on the executor in time: only `started` had.
    Stuck {
        started: usize,
    },
}

type Virtual<E> = UserAggregator<Mock<Profile, Manual>, Mock<u32, Manual>, E, Manual>;
type Real<E, T> = UserAggregator<Mock<Profile, T>, Mock<u32, T>, E, T>;

/// One aggregator per kind of outcome, all on one executor; all but `real` in virtual time.
struct Fleet<E, T> {
    clock: Manual,
    ok: Virtual<E>,
    profile_fails: Virtual<E>,
    orders_fails: Virtual<E>,
    hangs: Virtual<E>,
    panics: Virtual<E>,
    real: Real<E, T>,
    /// The counters of every mock.
    calls: Vec<Calls>,
    /// The counters of `hangs`' two mocks.
    hung: [Calls; 2],
}

impl<E: Executor + Clone, T: Timer> Fleet<E, T> {
    fn new(ex: E, timer: T) -> Fleet<E, T> {
        let clock = Manual::new();
        let mut calls = Vec::new();
        let mut build = |profiles: Mock<Profile>, orders: Mock<u32>| -> Virtual<E> {
            calls.extend([profiles.calls(), orders.calls()]);
            UserAggregator::builder(profiles.timer(clock.clone()), orders.timer(clock.clone()))
                .executor(ex.clone())
                .timer(clock.clone())
                .timeout(VIRTUAL_TIMEOUT)
                .build()
                .expect("a non-zero timeout is valid")
        };
        let ok = build(mock::profile("Alice"), mock::orders(5));
        let profile_fails = build(mock::profile("Alice").fail("down"), mock::orders(5).hang());
        let orders_fails = build(
            mock::profile("Alice").delay(Duration::from_secs(3600)),
            mock::orders(5).fail("down"),
        );
        let panics = build(
            mock::profile("Alice").panic(PLANNED_PANIC),
            mock::orders(5).hang(),
        );
        let (profiles, orders) = (mock::profile("Alice").hang(), mock::orders(5).hang());
        let hung = [profiles.calls(), orders.calls()];
        let hangs = build(profiles, orders);

        let (profiles, orders) = (mock::profile("Alice").hang(), mock::orders(5).hang());
        calls.extend([profiles.calls(), orders.calls()]);
        let real =
            UserAggregator::builder(profiles.timer(timer.clone()), orders.timer(timer.clone()))
                .executor(ex)
                .timer(timer)
                .timeout(REAL_TIMEOUT)
                .build()
                .expect("a non-zero timeout is valid");
        Fleet {
            clock,
            ok,
            profile_fails,
            orders_fails,
            hangs,
            panics,
            real,
            calls,
            hung,
        }
    }

    /// Runs aggregate `i` under `ctx` and checks how it ended.
    async fn step(&self, ctx: &Context, i: u64) -> Result<Scenario, String> {
        let scenario = Scenario::of(i);
        // A spawned call cancelled before its task first runs never calls its service. Every
        // other cycle, wait until both hanging calls run before ending the aggregate, so that
        // both paths are taken.
        // (A call of an earlier aggregate, aborted while its task was being polled, may still
        // reach its service meanwhile: hence at least two more.)
        let hung = || self.hung[0].started() + self.hung[1].started();
        let (wait, base) = ((i / 8) % 2 == 0, hung());
        let running = || !wait || spin(SETTLE, || hung() >= base + 2);
        let stuck = || Outcome::Stuck {
            started: hung() - base,
        };

        let outcome = match scenario {
            Scenario::Ok => Outcome::Returned(self.ok.aggregate(ctx, i).await),
            Scenario::ProfileFails => Outcome::Returned(self.profile_fails.aggregate(ctx, i).await),
            Scenario::OrdersFails => Outcome::Returned(self.orders_fails.aggregate(ctx, i).await),
            Scenario::Panics => Outcome::Returned(self.panics.aggregate(ctx, i).await),
            Scenario::RealDeadline => Outcome::Returned(self.real.aggregate(ctx, i).await),
            Scenario::AlreadyCancelled => {
                let (child, cancel) = ctx.with_cancel();
                cancel.cancel();
                Outcome::Returned(self.hangs.aggregate(&child, i).await)
            }
            Scenario::Deadline => {
                let mut aggregate = pin!(self.hangs.aggregate(ctx, i));
                match futures::poll!(aggregate.as_mut()) {
                    Poll::Ready(result) => Outcome::Returned(result),
                    Poll::Pending if !running() => stuck(),
                    Poll::Pending => {
                        // The first poll registered the deadline's sleep: this makes it due.
                        self.clock.advance(VIRTUAL_TIMEOUT);
                        Outcome::Returned(aggregate.await)
                    }
                }
            }
            Scenario::CallerCancels => {
                let (child, cancel) = ctx.with_cancel();
                let mut aggregate = pin!(self.hangs.aggregate(&child, i));
                match futures::poll!(aggregate.as_mut()) {
                    Poll::Ready(result) => Outcome::Returned(result),
                    Poll::Pending if !running() => stuck(),
                    Poll::Pending => {
                        cancel.cancel();
                        Outcome::Returned(aggregate.await)
                    }
                }
            }
            Scenario::CallerDrops => {
                let mut aggregate = pin!(self.hangs.aggregate(ctx, i));
                match futures::poll!(aggregate.as_mut()) {
                    Poll::Ready(result) => Outcome::Returned(result),
                    Poll::Pending if !running() => stuck(),
                    Poll::Pending => Outcome::Dropped,
                }
            }
        };
        match outcome {
            _ if scenario.expects(&outcome) => Ok(scenario),
            Outcome::Stuck { started } => Err(format!(
                "aggregate {i} ({scenario:?}): its two calls had not started on the executor after {SETTLE:?} (only {started} had)"
            )),
            _ => Err(format!("aggregate {i} ({scenario:?}) ended {outcome:?}")),
        }
    }
}
