//! Storage for clients over HTTP, with their player token (`Authorization: Bearer` or
//! `?token=`): their own objects (read, conditional write, delete), others' public
//! objects, and leaderboards (top with a cursor, around a player). Every call checks
//! permissions in `storage`; a database error reaches the client as `internal` with an
//! id the node's log shows with the detail.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ClientError, Gateway, refuse};
use crate::storage::{Caller, Condition, ReadPerm, StorageError, WriteObject, WritePerm};

/// A request without a valid player token: answered 401 with the reason.
pub(super) struct Unauthorized(String);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        refuse(StatusCode::UNAUTHORIZED, self.0)
    }
}

/// The player a request's token names.
pub(super) fn player(
    gw: &Gateway,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<super::auth::Identity, Unauthorized> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer.or(query_token) else {
        return Err(Unauthorized(
            "this needs a player token: `Authorization: Bearer TOKEN` or `?token=`".into(),
        ));
    };
    gw.inner
        .auth
        .validate(token)
        .map_err(|e| Unauthorized(e.to_string()))
}

/// A storage error as an HTTP answer.
fn answer(e: StorageError) -> Response {
    let status = match &e {
        StorageError::NotFound => StatusCode::NOT_FOUND,
        StorageError::Conflict { .. } => StatusCode::CONFLICT,
        StorageError::Denied(_) => StatusCode::FORBIDDEN,
        StorageError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StorageError::Invalid(_) => StatusCode::BAD_REQUEST,
        StorageError::Unavailable(detail) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                ClientError::internal("using storage", detail).message,
            );
        }
    };
    refuse(status, e.to_string())
}

#[derive(Deserialize)]
pub(super) struct ObjectQuery {
    token: Option<String>,
    /// Whose object (default: the caller's own).
    owner: Option<u64>,
    /// For a delete: only at this version.
    version: Option<i64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(super) async fn get_object(
    State(gw): State<Gateway>,
    Path((collection, key)): Path<(String, String)>,
    Query(q): Query<ObjectQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match player(&gw, &headers, q.token.as_deref()) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let owner = q.owner.unwrap_or(who.player_id);
    match gw
        .inner
        .storage
        .read_object(Caller::Player(who.player_id), &collection, &key, owner)
        .await
    {
        Ok(object) => Json(object).into_response(),
        Err(e) => answer(e),
    }
}

pub(super) async fn list_objects(
    State(gw): State<Gateway>,
    Path(collection): Path<String>,
    Query(q): Query<ObjectQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match player(&gw, &headers, q.token.as_deref()) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    match gw
        .inner
        .storage
        .list_objects(
            Caller::Player(who.player_id),
            &collection,
            q.owner,
            q.limit.unwrap_or(20),
            q.cursor.as_deref(),
        )
        .await
    {
        Ok((objects, next)) => Json(json!({ "objects": objects, "cursor": next })).into_response(),
        Err(e) => answer(e),
    }
}

/// The body of a `PUT`: the value, and optionally the version it must replace (`0`:
/// only if there is none yet) and its permissions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutBody {
    value: serde_json::Value,
    version: Option<i64>,
    #[serde(default)]
    read: ReadPerm,
    #[serde(default)]
    write: WritePerm,
}

pub(super) async fn put_object(
    State(gw): State<Gateway>,
    Path((collection, key)): Path<(String, String)>,
    Query(q): Query<ObjectQuery>,
    headers: HeaderMap,
    body: Result<Json<PutBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let who = match player(&gw, &headers, q.token.as_deref()) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let body = match body {
        Ok(Json(body)) => body,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (expected {{\"value\": …, \"version\": N, \"read\": \"owner\"|\"public\"|\"none\", \"write\": \"owner\"|\"none\"}})",
                    e.body_text()
                ),
            );
        }
    };
    let condition = match body.version {
        None => Condition::Any,
        Some(0) => Condition::Absent,
        Some(v) => Condition::Version(v),
    };
    let write = WriteObject {
        collection,
        key,
        owner: q.owner.unwrap_or(who.player_id),
        value: body.value.to_string(),
        condition,
        read: body.read,
        write: body.write,
    };
    match gw
        .inner
        .storage
        .write_object(Caller::Player(who.player_id), write)
        .await
    {
        Ok(object) => Json(object).into_response(),
        Err(e) => answer(e),
    }
}

pub(super) async fn delete_object(
    State(gw): State<Gateway>,
    Path((collection, key)): Path<(String, String)>,
    Query(q): Query<ObjectQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match player(&gw, &headers, q.token.as_deref()) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let owner = q.owner.unwrap_or(who.player_id);
    match gw
        .inner
        .storage
        .delete_object(
            Caller::Player(who.player_id),
            &collection,
            &key,
            owner,
            q.version,
        )
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => answer(e),
    }
}

#[derive(Deserialize)]
pub(super) struct BoardQuery {
    token: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(super) async fn leaderboard_top(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    Query(q): Query<BoardQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match player(&gw, &headers, q.token.as_deref()) {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let storage = &gw.inner.storage;
    let (records, next) = match storage
        .top(&id, q.limit.unwrap_or(20), q.cursor.as_deref())
        .await
    {
        Ok(page) => page,
        Err(e) => return answer(e),
    };
    let mine = match storage.rank_of(&id, who.player_id).await {
        Ok(record) => Some(record),
        Err(StorageError::NotFound) => None,
        Err(e) => return answer(e),
    };
    Json(json!({ "records": records, "cursor": next, "mine": mine })).into_response()
}

pub(super) async fn leaderboard_around(
    State(gw): State<Gateway>,
    Path((id, owner)): Path<(String, u64)>,
    Query(q): Query<BoardQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = player(&gw, &headers, q.token.as_deref()) {
        return refused.into_response();
    }
    match gw
        .inner
        .storage
        .around(&id, owner, q.limit.unwrap_or(10))
        .await
    {
        Ok(records) => Json(json!({ "records": records })).into_response(),
        Err(e) => answer(e),
    }
}
