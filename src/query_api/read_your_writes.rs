//! `after=<partition:offset>`: wait until each projection a query reads has applied the
//! record at that position, i.e. its live group's stored next offset for the partition
//! is past it. Bounded: past `read_wait` the answer is 503 with where the projection is,
//! never stale data presented as current. A partition whose group refused its stored
//! offset (outside the log) is never caught up: 503 at once, with the reason.
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use projections::ProjectionKind;
use serde_json::json;

use super::params::After;
use super::{unavailable, ApiError, ApiState};

pub async fn wait_applied(
    state: &ApiState,
    projections: &[ProjectionKind],
    after: Option<After>,
) -> Result<(), ApiError> {
    let Some(after) = after else { return Ok(()) };
    let deadline = Instant::now() + state.read_wait;
    for projection in projections {
        loop {
            // Resolved every time: a rebuild may switch the live group while we wait.
            let live = state.reads.live_projection(*projection).await.map_err(unavailable)?;
            let faults = state
                .reads
                .offset_faults(&live.group, &state.topic, Some(after.partition))
                .await
                .map_err(unavailable)?;
            if let Some(fault) = faults.first() {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "offsets_refused", fault.reason())
                    .with("projection", projection.name())
                    .with("group", live.group)
                    .with("partition", after.partition)
                    .with("stored_offset", fault.stored_offset)
                    .with("log_start", fault.log_start)
                    .with("log_end", fault.log_end));
            }
            let stored =
                state.reads.stored_offsets(&live.group, &state.topic, &[after.partition]).await.map_err(unavailable)?;
            let next = stored.first().map(|(_, o)| *o);
            if next.is_some_and(|n| n > after.offset) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_caught_up",
                    format!(
                        "the {projection} projection has not applied {}:{} within {:?}; retry later",
                        after.partition, after.offset, state.read_wait
                    ),
                )
                .with("projection", projection.name())
                .with("group", live.group)
                .with("partition", after.partition)
                .with("wanted_offset", after.offset)
                .with("applied_up_to", json!(next.map(|n| n - 1))));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}
