//! Where each projection stands: what `hive projections status` prints and `GET /api/v1/projections`
//! answers.

use std::collections::BTreeMap;

use hive_schema::{dead_letters, projection_checkpoints};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QuerySelect};
use serde::Serialize;

/// One projection's standing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// The last event it applied.
    pub checkpoint: u64,
    /// The log's last event.
    pub head: u64,
    /// Events it has yet to apply.
    pub lag: u64,
    /// Events it could not apply.
    pub dead_letters: u64,
    /// When it last committed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(FromQueryResult)]
struct DeadCount {
    projection: String,
    count: i64,
}

/// Every projection with a checkpoint, against a log whose last event is `head`.
pub async fn projections(
    db: &impl ConnectionTrait,
    head: u64,
) -> Result<Vec<ProjectionStatus>, DbErr> {
    let dead: BTreeMap<String, i64> = dead_letters::Entity::find()
        .select_only()
        .column(dead_letters::Column::Projection)
        .column_as(dead_letters::Column::Id.count(), "count")
        .group_by(dead_letters::Column::Projection)
        .into_model::<DeadCount>()
        .all(db)
        .await?
        .into_iter()
        .map(|d| (d.projection, d.count))
        .collect();
    Ok(projection_checkpoints::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|row| {
            let checkpoint = u64::try_from(row.seq).unwrap_or(0);
            ProjectionStatus {
                dead_letters: dead.get(&row.name).copied().unwrap_or(0) as u64,
                name: row.name,
                checkpoint,
                head,
                lag: head.saturating_sub(checkpoint),
                updated_at: row.updated_at,
            }
        })
        .collect())
}
