//! The benchmark's ceiling on DynamoDB: how fast the table takes single conditional writes, the
//! kind every claim and outcome is, through the same primitives the store writes with.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::expr::Expr;
use super::item::{Item, n, s};
use super::schema;
use super::table::{Table, Write};
use crate::store::StoreError;

/// Writes `count` counter items (`ceiling#<i>`) into `table`, then times `count` conditional
/// increments of them, `concurrency` at once, calling `tick` after each; the time they took.
pub async fn conditional_writes(
    client: aws_sdk_dynamodb::Client,
    table: &str,
    count: usize,
    concurrency: usize,
    tick: &(dyn Fn() + Sync),
) -> Result<Duration, StoreError> {
    let table = Table::new(client, table);
    let key = |i: usize| format!("ceiling#{i}");
    futures::stream::iter(0..count)
        .map(|i| {
            let item: Item = [(schema::ID.to_owned(), s(key(i))), ("n".to_owned(), n(0))].into();
            table.put(item, Expr::new("attribute_not_exists(id)"))
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let started = Instant::now();
    let increment = || Expr::new("SET n = n + :one").value(":one", n(1));
    let holds = || Expr::new("attribute_exists(id) AND n >= :zero").value(":zero", n(0));
    futures::stream::iter(0..count)
        .map(|i| {
            let table = &table;
            async move {
                let written = table.update(&key(i), increment(), holds()).await?;
                tick();
                match written {
                    Write::Done(()) => Ok(()),
                    Write::ConditionFailed(_) => Err(StoreError::backend(
                        "a ceiling write failed its condition on an item written for it",
                    )),
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}
