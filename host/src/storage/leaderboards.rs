//! Leaderboards: records of (player, score, subscore, metadata) in a sort order, kept
//! by an operator (best, set, increment), optionally reset every period. Ranks follow
//! the order: score, then subscore, then who got there first, then the player id.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::time::Duration;

use super::{Storage, StorageError, db_id, now_ms};

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Highest first.
    #[default]
    Descending,
    /// Lowest first.
    Ascending,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    /// A submission counts only if it beats the player's record.
    #[default]
    Best,
    /// A submission replaces the record.
    Set,
    /// A submission adds to the record.
    Increment,
}

/// A leaderboard's definition (`[leaderboards.<id>]` in the config, or made by a game).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Leaderboard {
    #[serde(skip)]
    pub id: String,
    pub order: Order,
    pub operator: Operator,
    /// Records count only within the current period of this length (from the Unix
    /// epoch: `1d` resets at midnight UTC); unset: never reset.
    #[serde(with = "humantime_serde")]
    pub reset_every: Option<Duration>,
}

/// A player's record, with its rank (1 is first).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub rank: u64,
    pub owner: u64,
    pub username: String,
    pub score: i64,
    pub subscore: i64,
    pub metadata: serde_json::Value,
    pub submissions: i64,
    pub updated_ms: i64,
}

fn order_code(o: Order) -> i64 {
    match o {
        Order::Descending => 0,
        Order::Ascending => 1,
    }
}

fn operator_code(o: Operator) -> i64 {
    match o {
        Operator::Best => 0,
        Operator::Set => 1,
        Operator::Increment => 2,
    }
}

/// The start of the current period (0 for a board that never resets).
fn period(reset_secs: i64, now: i64) -> i64 {
    if reset_secs <= 0 {
        0
    } else {
        let len = reset_secs * 1000;
        now - now.rem_euclid(len)
    }
}

/// SQL for "row `a` ranks before the values of row `b`" in `order`; `a` and `b` are
/// column prefixes (`r.`) or parameter lists.
fn before(order: Order, a: [&str; 4], b: [&str; 4]) -> String {
    let cmp = match order {
        Order::Descending => ">",
        Order::Ascending => "<",
    };
    let [s, ss, t, o] = a;
    let [bs, bss, bt, bo] = b;
    format!(
        "({s} {cmp} {bs} OR ({s} = {bs} AND {ss} {cmp} {bss}) \
         OR ({s} = {bs} AND {ss} = {bss} AND {t} < {bt}) \
         OR ({s} = {bs} AND {ss} = {bss} AND {t} = {bt} AND {o} < {bo}))"
    )
}

const ROW: [&str; 4] = ["score", "subscore", "updated_ms", "owner"];

fn record(row: &sqlx::any::AnyRow, rank: u64) -> Result<Record, StorageError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(Record {
        rank,
        owner: row.try_get::<i64, _>("owner")? as u64,
        username: row.try_get("username")?,
        score: row.try_get("score")?,
        subscore: row.try_get("subscore")?,
        metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
        submissions: row.try_get("submissions")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

const RECORD: &str = "owner, username, score, subscore, metadata, submissions, updated_ms";

impl Storage {
    /// Creates the leaderboard, or updates its definition (its records stay).
    pub async fn define_leaderboard(&self, board: &Leaderboard) -> Result<(), StorageError> {
        super::objects::check_name("leaderboard id", &board.id)?;
        let reset = board.reset_every.map_or(0, |d| d.as_secs().max(1) as i64);
        sqlx::query(
            "INSERT INTO ludus_leaderboards (id, sort_order, operator, reset_secs, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             sort_order = excluded.sort_order, operator = excluded.operator, \
             reset_secs = excluded.reset_secs",
        )
        .bind(&board.id)
        .bind(order_code(board.order))
        .bind(operator_code(board.operator))
        .bind(reset)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The leaderboard `id`'s definition.
    pub async fn leaderboard(&self, id: &str) -> Result<(Leaderboard, i64), StorageError> {
        let row = sqlx::query(
            "SELECT sort_order, operator, reset_secs FROM ludus_leaderboards WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)?;
        let reset: i64 = row.try_get("reset_secs")?;
        let board = Leaderboard {
            id: id.to_owned(),
            order: match row.try_get::<i64, _>("sort_order")? {
                1 => Order::Ascending,
                _ => Order::Descending,
            },
            operator: match row.try_get::<i64, _>("operator")? {
                1 => Operator::Set,
                2 => Operator::Increment,
                _ => Operator::Best,
            },
            reset_every: (reset > 0).then(|| Duration::from_secs(reset as u64)),
        };
        Ok((board, period(reset, now_ms())))
    }

    /// Submits a score for `owner`; returns the record as kept, with its rank.
    pub async fn submit_score(
        &self,
        id: &str,
        owner: u64,
        username: &str,
        score: i64,
        subscore: i64,
        metadata: Option<&str>,
    ) -> Result<Record, StorageError> {
        let (board, period) = self.leaderboard(id).await?;
        let metadata = metadata.unwrap_or("{}");
        self.check_size(metadata)?;
        serde_json::from_str::<serde_json::Value>(metadata)
            .map_err(|e| StorageError::Invalid(format!("the metadata is not JSON: {e}")))?;
        let r = "ludus_leaderboard_records";
        let better = before(
            board.order,
            ["excluded.score", "excluded.subscore", "0", "0"],
            // Ties do not count as better: the record keeps its time, and its place.
            [&format!("{r}.score"), &format!("{r}.subscore"), "0", "0"],
        );
        let fresh = format!("{r}.period_ms <> excluded.period_ms");
        let (score_sql, subscore_sql, keep_new) = match board.operator {
            Operator::Set => (
                "excluded.score".to_owned(),
                "excluded.subscore".to_owned(),
                "TRUE".to_owned(),
            ),
            Operator::Increment => (
                format!("{r}.score + excluded.score"),
                format!("{r}.subscore + excluded.subscore"),
                "TRUE".to_owned(),
            ),
            Operator::Best => (
                format!("CASE WHEN {better} THEN excluded.score ELSE {r}.score END"),
                format!("CASE WHEN {better} THEN excluded.subscore ELSE {r}.subscore END"),
                better.clone(),
            ),
        };
        let sql = format!(
            "INSERT INTO {r} (leaderboard, owner, username, score, subscore, metadata, \
             submissions, period_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8) \
             ON CONFLICT (leaderboard, owner) DO UPDATE SET \
             score = CASE WHEN {fresh} THEN excluded.score ELSE {score_sql} END, \
             subscore = CASE WHEN {fresh} THEN excluded.subscore ELSE {subscore_sql} END, \
             metadata = CASE WHEN {fresh} OR {keep_new} THEN excluded.metadata ELSE {r}.metadata END, \
             username = excluded.username, \
             updated_ms = CASE WHEN {fresh} OR {keep_new} THEN excluded.updated_ms ELSE {r}.updated_ms END, \
             submissions = CASE WHEN {fresh} THEN 1 ELSE {r}.submissions + 1 END, \
             period_ms = excluded.period_ms \
             RETURNING {RECORD}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(db_id(owner)?)
            .bind(username)
            .bind(score)
            .bind(subscore)
            .bind(metadata)
            .bind(period)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        let rank = self.rank_before(&board, period, &row).await?;
        record(&row, rank)
    }

    /// 1 + the number of records of the period that rank before `row`.
    async fn rank_before(
        &self,
        board: &Leaderboard,
        period: i64,
        row: &sqlx::any::AnyRow,
    ) -> Result<u64, StorageError> {
        let cond = before(board.order, ROW, ["$3", "$4", "$5", "$6"]);
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM ludus_leaderboard_records \
             WHERE leaderboard = $1 AND period_ms = $2 AND {cond}"
        )))
        .bind(&board.id)
        .bind(period)
        .bind(row.try_get::<i64, _>("score")?)
        .bind(row.try_get::<i64, _>("subscore")?)
        .bind(row.try_get::<i64, _>("updated_ms")?)
        .bind(row.try_get::<i64, _>("owner")?)
        .fetch_one(&self.pool)
        .await?;
        Ok(count as u64 + 1)
    }

    /// The first `limit` records (after `cursor`); the cursor of the next page, if any.
    pub async fn top(
        &self,
        id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Record>, Option<String>), StorageError> {
        let (board, period) = self.leaderboard(id).await?;
        let limit = limit.clamp(1, 100);
        let order = order_by(board.order, false);
        let (rows, first_rank) = match cursor {
            None => (
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {RECORD} FROM ludus_leaderboard_records \
                     WHERE leaderboard = $1 AND period_ms = $2 ORDER BY {order} LIMIT $3"
                )))
                .bind(id)
                .bind(period)
                .bind(limit as i64 + 1)
                .fetch_all(&self.pool)
                .await?,
                1,
            ),
            Some(c) => {
                let (rank, [s, ss, t, o]) = decode_cursor(c)?;
                let cond = before(board.order, ["$3", "$4", "$5", "$6"], ROW);
                (
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {RECORD} FROM ludus_leaderboard_records \
                         WHERE leaderboard = $1 AND period_ms = $2 AND {cond} \
                         ORDER BY {order} LIMIT $7"
                    )))
                    .bind(id)
                    .bind(period)
                    .bind(s)
                    .bind(ss)
                    .bind(t)
                    .bind(o)
                    .bind(limit as i64 + 1)
                    .fetch_all(&self.pool)
                    .await?,
                    rank + 1,
                )
            }
        };
        let mut records = rows
            .iter()
            .enumerate()
            .map(|(i, row)| record(row, first_rank + i as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(encode_cursor)
        } else {
            None
        };
        Ok((records, next))
    }

    /// `owner`'s record with its rank, if they have one this period.
    pub async fn rank_of(&self, id: &str, owner: u64) -> Result<Record, StorageError> {
        let (board, period) = self.leaderboard(id).await?;
        let row = self.own_row(id, period, owner).await?;
        let rank = self.rank_before(&board, period, &row).await?;
        record(&row, rank)
    }

    async fn own_row(
        &self,
        id: &str,
        period: i64,
        owner: u64,
    ) -> Result<sqlx::any::AnyRow, StorageError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD} FROM ludus_leaderboard_records \
             WHERE leaderboard = $1 AND period_ms = $2 AND owner = $3"
        )))
        .bind(id)
        .bind(period)
        .bind(db_id(owner)?)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)
    }

    /// Up to `limit` records around `owner`'s: about half before it, the rest from it on.
    pub async fn around(
        &self,
        id: &str,
        owner: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let (board, period) = self.leaderboard(id).await?;
        let limit = limit.clamp(1, 100);
        let row = self.own_row(id, period, owner).await?;
        let rank = self.rank_before(&board, period, &row).await?;
        let values = (
            row.try_get::<i64, _>("score")?,
            row.try_get::<i64, _>("subscore")?,
            row.try_get::<i64, _>("updated_ms")?,
            row.try_get::<i64, _>("owner")?,
        );
        let params = ["$3", "$4", "$5", "$6"];
        let above_cond = before(board.order, ROW, params);
        let below_cond = before(board.order, params, ROW);
        let query = |cond: String, order: String, n: usize| async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RECORD} FROM ludus_leaderboard_records \
                     WHERE leaderboard = $1 AND period_ms = $2 AND {cond} ORDER BY {order} LIMIT $7"
            )))
            .bind(id)
            .bind(period)
            .bind(values.0)
            .bind(values.1)
            .bind(values.2)
            .bind(values.3)
            .bind(n as i64)
            .fetch_all(&self.pool)
            .await
        };
        let want_above = (limit - 1) / 2;
        let above = query(above_cond, order_by(board.order, true), want_above).await?;
        let below = query(
            below_cond,
            order_by(board.order, false),
            limit - 1 - above.len(),
        )
        .await?;
        let mut records = Vec::with_capacity(limit);
        let top_rank = rank - above.len() as u64;
        for (i, row) in above.iter().rev().enumerate() {
            records.push(record(row, top_rank + i as u64)?);
        }
        records.push(record(&row, rank)?);
        for (i, row) in below.iter().enumerate() {
            records.push(record(row, rank + 1 + i as u64)?);
        }
        Ok(records)
    }
}

/// ORDER BY for `order` (reversed: from the far end).
fn order_by(order: Order, reversed: bool) -> String {
    let (first, ties) = match (order, reversed) {
        (Order::Descending, false) => ("DESC", "ASC"),
        (Order::Ascending, false) => ("ASC", "ASC"),
        (Order::Descending, true) => ("ASC", "DESC"),
        (Order::Ascending, true) => ("DESC", "DESC"),
    };
    format!("score {first}, subscore {first}, updated_ms {ties}, owner {ties}")
}

fn encode_cursor(r: &Record) -> String {
    hex::encode(format!(
        "{} {} {} {} {}",
        r.rank, r.score, r.subscore, r.updated_ms, r.owner
    ))
}

fn decode_cursor(cursor: &str) -> Result<(u64, [i64; 4]), StorageError> {
    let bad = || StorageError::Invalid("the cursor is not one this server gave".into());
    let text = String::from_utf8(hex::decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let parts: Vec<i64> = text
        .split(' ')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [rank, s, ss, t, o] if rank >= 1 => Ok((rank as u64, [s, ss, t, o])),
        _ => Err(bad()),
    }
}
