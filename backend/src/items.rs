//! The item handlers. None of them checks ownership: each runs its
//! statement in a transaction acting as the caller (see
//! [`Database::begin_as`](crate::db::Database::begin_as)), and row-level
//! security hides or protects other users' rows. A row the caller may not
//! see is reported exactly like a row that does not exist: 404.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::identity::Identity;
use crate::item_input::{CreateItem, ItemId, ListParams, UpdateItem};
use crate::json::JsonObject;

/// Path prefix of an item's own URL, used for the `Location` header.
pub const ITEM_PATH: &str = "/api/v1/item";

// The statements are literals (sqlx rejects SQL built at run time). Each
// returns the columns of [`Item`] in order.
const LIST_ALL_ITEMS: &str =
    "select id, title, description, owner_id from api.items order by id limit $1 offset $2";
const LIST_OWN_ITEMS: &str = "select id, title, description, owner_id from api.items \
     where owner_id = api.current_user_id() order by id limit $1 offset $2";
const INSERT_ITEM: &str = "insert into api.items (title, description) values ($1, $2) \
     returning id, title, description, owner_id";
const SELECT_ITEM: &str = "select id, title, description, owner_id from api.items where id = $1";
const UPDATE_ITEM: &str = "update api.items \
     set title = coalesce($2, title), \
         description = case when $3 then $4 else description end \
     where id = $1 \
     returning id, title, description, owner_id";
const DELETE_ITEM: &str =
    "delete from api.items where id = $1 returning id, title, description, owner_id";

/// An item as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Item {
    /// Identifier assigned by the database.
    pub id: i64,
    /// 1 to 255 characters.
    pub title: String,
    /// Up to 10,000 characters, or null.
    pub description: Option<String>,
    /// User id of the creator.
    pub owner_id: String,
}

/// Lists the items the caller may see, ordered by id.
///
/// # Errors
///
/// 401 without a usable user id; 422 for bad `skip` or `limit`.
#[utoipa::path(
    get,
    path = "/api/v1/item/",
    tag = "items",
    params(ListParams),
    responses(
        (status = 200, description = "Items ordered by id", body = [Item]),
        (status = 401, description = "No usable user id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid skip or limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("user_id" = []))
)]
pub async fn list_items(
    State(state): State<AppState>,
    identity: Identity,
    params: ListParams,
) -> Result<Json<Vec<Item>>, ApiError> {
    let mut transaction = state.database().begin_as(&identity).await?;

    // Row-level security alone decides visibility. The explicit owner filter
    // for ordinary users is there so the planner uses the (owner_id, id)
    // index instead of filtering every row.
    let is_superuser: bool = sqlx::query_scalar("select api.is_superuser()")
        .fetch_one(&mut *transaction)
        .await?;
    let statement = if is_superuser {
        LIST_ALL_ITEMS
    } else {
        LIST_OWN_ITEMS
    };
    let items = sqlx::query_as::<_, Item>(statement)
        .bind(params.limit)
        .bind(params.skip)
        .fetch_all(&mut *transaction)
        .await?;

    transaction.commit().await?;
    Ok(Json(items))
}

/// Creates an item owned by the caller.
///
/// # Errors
///
/// 401 without a usable user id; 400, 413, 415 or 422 for a bad body.
#[utoipa::path(
    post,
    path = "/api/v1/item/",
    tag = "items",
    request_body(content = CreateItem, content_type = "application/json"),
    responses(
        (status = 201, description = "The new item", body = Item,
            headers(("Location" = String, description = "URL of the new item"))),
        (status = 400, description = "Malformed JSON or invalid UTF-8", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No usable user id", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json, its charset is not utf-8 or us-ascii, or the body has a Content-Encoding", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, missing, unknown or repeated field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("user_id" = []))
)]
pub async fn create_item(
    State(state): State<AppState>,
    identity: Identity,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let input = CreateItem::from_object(body)?;
    let mut transaction = state.database().begin_as(&identity).await?;

    let item = sqlx::query_as::<_, Item>(INSERT_ITEM)
        .bind(&input.title)
        .bind(&input.description)
        .fetch_one(&mut *transaction)
        .await?;

    transaction.commit().await.map_err(ApiError::from_commit)?;

    let location = HeaderValue::try_from(format!("{ITEM_PATH}/{}", item.id))
        .expect("a path of ASCII digits is a valid header value");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item),
    )
        .into_response())
}

/// Returns one item.
///
/// # Errors
///
/// 401 without a usable user id; 404 when absent or not visible; 422 for
/// a bad id.
#[utoipa::path(
    get,
    path = "/api/v1/item/{id}",
    tag = "items",
    params(("id" = i64, Path, minimum = 1, description = "Item id")),
    responses(
        (status = 200, description = "The item", body = Item),
        (status = 401, description = "No usable user id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a positive 64-bit integer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("user_id" = []))
)]
pub async fn get_item(
    State(state): State<AppState>,
    identity: Identity,
    id: ItemId,
) -> Result<Json<Item>, ApiError> {
    one_item(&state, &identity, id, SELECT_ITEM, ApiError::from).await
}

/// Changes the title and/or description of an item.
///
/// # Errors
///
/// 401 without a usable user id; 404 when absent or not visible, leaving
/// the row unchanged; 400, 413, 415 or 422 for a bad body or id.
#[utoipa::path(
    put,
    path = "/api/v1/item/{id}",
    tag = "items",
    params(("id" = i64, Path, minimum = 1, description = "Item id")),
    request_body(content = UpdateItem, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated item", body = Item),
        (status = 400, description = "Malformed JSON or invalid UTF-8", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No usable user id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json, its charset is not utf-8 or us-ascii, or the body has a Content-Encoding", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id, empty body, or invalid, unknown or repeated field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("user_id" = []))
)]
pub async fn update_item(
    State(state): State<AppState>,
    identity: Identity,
    id: ItemId,
    body: JsonObject,
) -> Result<Json<Item>, ApiError> {
    let input = UpdateItem::from_object(body)?;
    let mut transaction = state.database().begin_as(&identity).await?;

    let (description_given, description) = match input.description {
        Some(description) => (true, description),
        None => (false, None),
    };
    let item = sqlx::query_as::<_, Item>(UPDATE_ITEM)
        .bind(id.0)
        .bind(&input.title)
        .bind(description_given)
        .bind(&description)
        .fetch_optional(&mut *transaction)
        .await?;

    transaction.commit().await.map_err(ApiError::from_commit)?;
    item.map(Json).ok_or(ApiError::ItemNotFound(id.0))
}

/// Deletes an item and returns it as it was.
///
/// # Errors
///
/// 401 without a usable user id; 404 when absent or not visible (also on
/// a second delete); 422 for a bad id.
#[utoipa::path(
    delete,
    path = "/api/v1/item/{id}",
    tag = "items",
    params(("id" = i64, Path, minimum = 1, description = "Item id")),
    responses(
        (status = 200, description = "The deleted item", body = Item),
        (status = 401, description = "No usable user id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a positive 64-bit integer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("user_id" = []))
)]
pub async fn delete_item(
    State(state): State<AppState>,
    identity: Identity,
    id: ItemId,
) -> Result<Json<Item>, ApiError> {
    one_item(&state, &identity, id, DELETE_ITEM, ApiError::from_commit).await
}

/// Runs `statement`, whose only parameter is the item id, as the caller
/// and returns the item it returns, or 404 when it returns no row.
/// `commit_error` maps a failed `COMMIT`: [`ApiError::from_commit`] for a
/// statement that changes the item.
async fn one_item(
    state: &AppState,
    identity: &Identity,
    id: ItemId,
    statement: &'static str,
    commit_error: fn(sqlx::Error) -> ApiError,
) -> Result<Json<Item>, ApiError> {
    let mut transaction = state.database().begin_as(identity).await?;

    let item = sqlx::query_as::<_, Item>(statement)
        .bind(id.0)
        .fetch_optional(&mut *transaction)
        .await?;

    transaction.commit().await.map_err(commit_error)?;
    item.map(Json).ok_or(ApiError::ItemNotFound(id.0))
}
