//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `GET /api/v1/openapi.json`.
//!
//! It documents the default user-id header name; a deployment that
//! configures another name still serves this document unchanged.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{OpenApi as OpenApiDocument, PathItem};
use utoipa::{Modify, OpenApi};

use crate::config::DEFAULT_USER_ID_HEADER;

/// Path of the item collection with a trailing slash, as annotated.
const COLLECTION_WITH_SLASH: &str = "/api/v1/item/";
/// The same collection without the slash, which is served too.
const COLLECTION_WITHOUT_SLASH: &str = "/api/v1/item";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "item-api",
        description = "Items of the calling user, guarded by PostgreSQL row-level security. \
                       The caller is identified by a header set by edge-proxy."
    ),
    paths(
        crate::items::list_items,
        crate::items::create_item,
        crate::items::get_item,
        crate::items::update_item,
        crate::items::delete_item,
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::metrics,
        openapi_json,
    ),
    components(schemas(
        crate::items::Item,
        crate::item_input::CreateItem,
        crate::item_input::UpdateItem,
        crate::error::Problem,
        crate::error::FieldError,
    )),
    modifiers(&UserIdHeader, &CollectionWithoutSlash),
    tags(
        (name = "items", description = "Create, read, update and delete items"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct UserIdHeader;

impl Modify for UserIdHeader {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user_id",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                DEFAULT_USER_ID_HEADER,
                "User id set by edge-proxy after it verified the session token",
            ))),
        );
    }
}

/// Copies the collection's operations to the path without the trailing
/// slash, with distinct operation ids as OpenAPI requires.
struct CollectionWithoutSlash;

impl Modify for CollectionWithoutSlash {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let Some(item) = openapi.paths.paths.get(COLLECTION_WITH_SLASH) else {
            return;
        };
        let mut alias: PathItem = item.clone();
        for operation in [&mut alias.get, &mut alias.post].into_iter().flatten() {
            if let Some(id) = &operation.operation_id {
                operation.operation_id = Some(format!("{id}_without_slash"));
            }
        }
        openapi
            .paths
            .paths
            .insert(COLLECTION_WITHOUT_SLASH.to_owned(), alias);
    }
}

/// Returns the OpenAPI document, built once.
pub fn document() -> &'static OpenApiDocument {
    static DOCUMENT: OnceLock<OpenApiDocument> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// Serves the OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "This OpenAPI document"))
)]
pub async fn openapi_json() -> Json<&'static OpenApiDocument> {
    Json(document())
}
