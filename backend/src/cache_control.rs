//! `Cache-Control: no-store` on every item response.
//!
//! Item responses, errors included, are one user's data, chosen by a
//! header that edge-proxy sets. A shared cache in front of either program
//! that keyed them by URL alone could serve them to another user, and a
//! browser would keep them on disk.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::items::ITEM_PATH;

/// Adds `Cache-Control: no-store` to responses under [`ITEM_PATH`],
/// whatever their status.
pub async fn no_store_for_items(request: Request, next: Next) -> Response {
    let is_item_path = is_item_path(request.uri().path());
    let mut response = next.run(request).await;
    if is_item_path {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Returns whether `path` is the item collection or below it.
fn is_item_path(path: &str) -> bool {
    path.strip_prefix(ITEM_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths_are_matched_whole() {
        for path in ["/api/v1/item", "/api/v1/item/", "/api/v1/item/7"] {
            assert!(is_item_path(path), "{path}");
        }
        for path in ["/api/v1/items", "/api/v1/openapi.json", "/healthz"] {
            assert!(!is_item_path(path), "{path}");
        }
    }
}
