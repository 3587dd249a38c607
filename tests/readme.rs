//! The README's "Any fan-out" example, with the services it leaves out filled in, so that the
//! README keeps compiling and saying what happens.

use std::time::Duration;

use failfast::{BoxError, Context, Error, FailFast};
use futures::future::{try_join_all, try_join3};

mod profiles {
    pub async fn get(_ctx: failfast::Context, id: u64) -> Result<String, failfast::BoxError> {
        Ok(format!("user {id}"))
    }
}

mod orders {
    pub async fn count(_ctx: failfast::Context, _id: u64) -> Result<u32, failfast::BoxError> {
        Ok(5)
    }
}

mod recs {
    pub struct Item;

    pub async fn top(_ctx: failfast::Context, _id: u64) -> Result<Vec<Item>, std::io::Error> {
        futures_timer::Delay::new(std::time::Duration::from_secs(5)).await;
        Ok(vec![Item])
    }
}

async fn dashboard(ff: &FailFast, ctx: &Context, id: u64) -> Result<String, Error> {
    let group = ff.group(ctx);
    let (name, orders, recs) = group
        .run(try_join3(
            group.call("profile", move |ctx| profiles::get(ctx, id)), // -> Result<String, _>
            group.call("orders", move |ctx| orders::count(ctx, id)),  // -> Result<u32, _>
            group
                .call("recs", move |ctx| recs::top(ctx, id)) // -> Result<Vec<Item>, _>
                .timeout(Duration::from_millis(50)) // its own deadline
                .optional(), // its failure: Ok(None)
        ))
        .await?;
    Ok(format!(
        "{name}: {orders} orders, {} recommendations",
        recs.map_or(0, |r| r.len())
    ))
}

#[test]
fn the_readme_dashboard_answers_without_the_slow_optional_call()
-> Result<(), Box<dyn std::error::Error>> {
    let ff = FailFast::builder()
        .timeout(Duration::from_secs(1))
        .limit(16)
        .build()?;
    let page = futures::executor::block_on(dashboard(&ff, &Context::background(), 42))?;
    assert_eq!(page, "user 42: 5 orders, 0 recommendations");
    Ok(())
}

#[test]
fn the_readme_shards_fail_fast_naming_the_shard() {
    let ff = FailFast::builder().build().unwrap();
    let ctx = Context::background();
    async fn fetch(_ctx: Context, i: usize) -> Result<usize, BoxError> {
        if i == 93 {
            return Err("connection refused".into());
        }
        futures_timer::Delay::new(Duration::from_secs(5)).await;
        Ok(i)
    }
    let n = 100;
    let err = futures::executor::block_on(async {
        let group = ff.group(&ctx);
        group
            .run(try_join_all((0..n).map(|i| {
                group.call(format!("shard-{i}"), move |ctx| fetch(ctx, i))
            })))
            .await
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "shard-93 service failed");
    assert_eq!(
        format!("{err:#}"),
        "shard-93 service failed: connection refused"
    );
}

/// The README's "Contexts" example.
mod contexts {
    use failfast::{BoxError, Context, ContextError};
    use std::time::Duration;

    struct TraceId(u64); // a value's type is its key

    async fn slow_report() -> String {
        futures_timer::Delay::new(Duration::from_secs(5)).await; // stands in for real work
        "all good".to_owned()
    }

    async fn report(ctx: Context) -> Result<String, BoxError> {
        let trace = ctx.value::<TraceId>().map_or(0, |id| id.0);
        // Gives up when the context is done: cancelled, or at its deadline.
        match ctx.run_until_cancelled(slow_report()).await {
            Some(report) => Ok(format!("trace {trace}: {report}")),
            None => Err(ctx.cause().expect("the context is done").into()),
        }
    }

    async fn handle_request() -> Result<String, BoxError> {
        let (ctx, cancel) = Context::background()
            .with_value(TraceId(7))
            .with_cancel_timeout(Duration::from_millis(50));
        let _guard = cancel.drop_guard(); // Go's `defer cancel()`
        let _cleanup = ctx.after(|| println!("request over")); // Go's `context.AfterFunc`
        let result = report(ctx.clone()).await;
        assert_eq!(ctx.err(), Some(ContextError::DeadlineExceeded));
        result
    }

    #[test]
    fn the_request_gives_up_at_its_deadline_with_the_deadline_as_the_cause() {
        let start = std::time::Instant::now();
        let err = futures::executor::block_on(handle_request()).unwrap_err();
        assert_eq!(err.to_string(), "context deadline exceeded");
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "waited for the report"
        );
    }
}

/// The README's "Fighting the tail" example.
mod fighting_the_tail {
    use failfast::{BoxError, Budget, BuildError, Context, Error, FailFast, Hedge, Retry};
    use futures::future::try_join;
    use std::time::Duration;

    async fn get(_ctx: Context, key: &str) -> Result<String, BoxError> {
        Ok(format!("value of {key}"))
    }

    /// Built once and shared by every request, so that the budget counts across them.
    struct Policies {
        retry: Retry,
        hedge: Hedge,
    }

    fn policies() -> Result<Policies, BuildError> {
        let budget = Budget::new(0.2, 3)?; // retries and hedges: at most 20% more, 3 a second
        Ok(Policies {
            retry: Retry::builder()
                .attempts(3)
                .attempt_timeout(Duration::from_millis(50))
                .budget(budget.clone())
                .build()?,
            hedge: Hedge::builder()
                .attempts(3)
                .delay(Duration::from_millis(10))
                .budget(budget)
                .build()?,
        })
    }

    async fn page(
        ff: &FailFast,
        ctx: &Context,
        policies: &Policies,
    ) -> Result<(String, Vec<(usize, String)>), Error> {
        let group = ff.group(ctx);
        let user = group
            .idempotent("user", |ctx| get(ctx, "user"))
            .retry(policies.retry.clone());
        let shards = (0..10).map(|i| {
            let hedge = policies.hedge.clone();
            group
                .idempotent(format!("shard-{i}"), move |ctx| get(ctx, "shard"))
                .hedge(hedge)
        });
        // The user, and the first 8 of 10 shards: the two slowest are cancelled.
        group.run(try_join(user, group.gather(8, shards))).await
    }

    #[test]
    fn the_page_gets_the_user_and_eight_shards() {
        let ff = FailFast::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let policies = policies().unwrap();
        for _ in 0..3 {
            let (user, shards) =
                futures::executor::block_on(page(&ff, &Context::background(), &policies)).unwrap();
            assert_eq!(user, "value of user");
            assert_eq!(shards.len(), 8);
            assert_eq!(shards[0], (0, "value of shard".to_owned()));
        }
    }
}
