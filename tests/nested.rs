//! A call may open its own group under the context it was given: cancellation flows down.

#![allow(clippy::clone_on_copy)]

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use common::{drive_until, eventually, finish, ms, on_every_executor, order};
use failfast::mock::Mock;
use failfast::timer::Manual;
use failfast::{BoxError, Context, Executor, FailFast, Timer};
use futures::future::{try_join, try_join_all};

/// A call that fans out to `n` shards of `shard` in a group of its own, under its context.
fn region<E: Executor, T: Timer>(
    ff: Arc<FailFast<E, T>>,
    shard: Mock<u32, T>,
    n: usize,
) -> impl FnOnce(Context) -> futures::future::BoxFuture<'static, Result<u32, BoxError>> + Send + 'static
{
    move |ctx| {
        Box::pin(async move {
            let group = ff.group(&ctx);
            let values = group
                .run(try_join_all(
                    (0..n).map(|i| group.call(format!("shard-{i}"), order(&shard))),
                ))
                .await?;
            Ok(values.into_iter().sum())
        })
    }
}

on_every_executor!(
    async fn a_call_can_fan_out_in_a_group_of_its_own(ex) {
        let ff = Arc::new(FailFast::builder().executor(ex).build().unwrap());
        let group = ff.group(&Context::background());
        let shard = Mock::new(2_u32);
        let (east, west) = finish(group.run(try_join(
            group.call("east", region(ff.clone(), shard.clone(), 3)),
            group.call("west", region(ff.clone(), shard.clone(), 4)),
        )))
        .await
        .unwrap();
        assert_eq!((east, west), (6, 8));
        assert_eq!(shard.calls().finished(), 7);
    }
);

on_every_executor!(
    async fn a_failure_in_the_outer_group_cancels_the_calls_of_the_inner_one(ex) {
        let clock = Manual::new();
        let ff = Arc::new(
            FailFast::builder().executor(ex).timer(clock.clone()).build().unwrap(),
        );
        let hanging = Mock::new(1_u32).hang().timer(clock.clone());
        let broken = Mock::new(1_u32).delay(ms(10)).fail("down").timer(clock.clone());
        let inner_calls = hanging.calls();
        let group = ff.group(&Context::background());
        let mut run = pin!(group.run(try_join(
            group.call("region", region(ff.clone(), hanging.clone(), 3)),
            group.call("broken", order(&broken)),
        )));
        assert!(
            drive_until(run.as_mut(), || inner_calls.started() == 3 && clock.sleepers() == 1)
                .await
                .is_none()
        );

        clock.advance(ms(10));
        let err = finish(run).await.unwrap_err();

        assert_eq!(err.service(), Some("broken"));
        eventually("the inner calls were cancelled", || inner_calls.cancelled() == 3).await;
        // Their context was a grandchild of the outer group's: it is cancelled too.
        assert!(inner_calls.last_context().unwrap().is_cancelled());
    }
);

on_every_executor!(
    async fn an_inner_groups_deadline_is_never_later_than_the_outer_ones(ex) {
        let clock = Manual::new();
        let ff = Arc::new(
            FailFast::builder()
                .executor(ex)
                .timer(clock.clone())
                .timeout(ms(100))
                .build()
                .unwrap(),
        );
        let shard = Mock::new(1_u32).timer(clock.clone());
        let group = ff.group(&Context::background());
        let outer_deadline = group.deadline().unwrap();
        clock.advance(ms(50)); // the inner group is made later: its own 100 ms would end later
        finish(group.run(group.call("region", region(ff.clone(), shard.clone(), 1))))
            .await
            .unwrap();
        assert_eq!(shard.calls().last_context().unwrap().deadline(), Some(outer_deadline));
        assert!(Duration::from_millis(50) <= clock.elapsed());
    }
);
