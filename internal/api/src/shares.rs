//! A batch request split into one share per partition, the shares run at
//! once, and the answers put back in request order (`PublishBatch`,
//! `CancelBatch`).

use std::collections::BTreeMap;
use std::future::Future;

use tonic::Status;

/// Runs `run(partition, items)` for each partition's share of `items`
/// (routed by `route`) concurrently; one answer per item, in request
/// order. A failed share fails the call (the others have run).
pub(crate) async fn run_by_partition<T, R, F, Fut>(
    items: Vec<T>,
    route: impl Fn(&T) -> u32,
    run: F,
) -> Result<Vec<R>, Status>
where
    R: Default,
    F: Fn(u32, Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, Status>>,
{
    let total = items.len();
    let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<T>)> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let slot = by_partition.entry(route(&item)).or_default();
        slot.0.push(i);
        slot.1.push(item);
    }
    let run = &run;
    let shares = by_partition
        .into_iter()
        .map(|(p, (idx, share))| async move { run(p, share).await.map(|answers| (idx, answers)) });
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(total).collect();
    let mut failure = None;
    for share in futures::future::join_all(shares).await {
        match share {
            Ok((idx, answers)) if answers.len() == idx.len() => {
                for (i, r) in idx.into_iter().zip(answers) {
                    results[i] = Some(r);
                }
            }
            Ok((idx, answers)) => {
                let why = format!(
                    "a partition answered {} of {} items",
                    answers.len(),
                    idx.len()
                );
                failure = failure.or(Some(Status::internal(why)));
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(results.into_iter().map(Option::unwrap_or_default).collect()),
    }
}
