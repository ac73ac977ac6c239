//! Request errors and their `application/problem+json` bodies (RFC 9457).
//!
//! One `match` in [`ApiError::status`] decides each status code. Database
//! and internal errors are logged once here, and the client gets a generic
//! sentence, so no database text reaches a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// SQLSTATEs of a statement that gave up, so its transaction did not
/// commit: cancelled by `statement_timeout` or `pg_cancel_backend`
/// (57014), or out of `lock_timeout` (55P03).
const TIMED_OUT_CODES: [&str; 2] = ["57014", "55P03"];

/// SQLSTATEs of a server that is shutting down, restarting or full, after
/// which a retry on another connection may succeed.
const UNAVAILABLE_CODES: [&str; 4] = ["57P01", "57P02", "57P03", "53300"];

/// SQLSTATE of a connection to a database that does not exist. Like the
/// class 28 codes (invalid authorization: a wrong password, a pg_hba.conf
/// rejection), it comes from the connection set-up, so it is reported as
/// "database unavailable" (503), as on `/readyz`.
const NO_SUCH_DATABASE_CODE: &str = "3D000";

/// Maximum number of field errors in a 422 body. Without it, a body made of
/// many short unknown keys would get a response many times its own size.
pub const MAX_FIELD_ERRORS: usize = 20;

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The user-id or email header is missing or unusable.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// No item with this id is visible to the caller.
    #[error("Item {0} was not found.")]
    ItemNotFound(i64),
    /// No route matches the path.
    #[error("No resource exists at this path.")]
    RouteNotFound,
    /// The route exists but not for this method.
    #[error("This method is not allowed on this path.")]
    MethodNotAllowed,
    /// The body is not JSON at all, or not UTF-8.
    #[error("{0}")]
    MalformedBody(String),
    /// The Content-Type is not `application/json`.
    #[error("The request body must be sent with Content-Type: application/json.")]
    UnsupportedMediaType,
    /// The Content-Type names a charset other than UTF-8.
    #[error("The request body must be UTF-8, so a charset parameter must be utf-8 (or us-ascii).")]
    UnsupportedCharset,
    /// The body has a content coding, such as gzip.
    #[error(
        "The request body must be sent without a content coding: only the Content-Encoding \
         identity is accepted."
    )]
    UnsupportedContentEncoding,
    /// The body is larger than the configured limit.
    #[error("The request body is larger than the server accepts.")]
    PayloadTooLarge,
    /// Well-formed input with invalid values.
    #[error("{detail}")]
    Validation {
        /// A plain sentence summarising the problem.
        detail: String,
        /// Each bad field with its own sentence.
        errors: Vec<FieldError>,
    },
    /// The database could not be reached in time.
    #[error("The database is unavailable.")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// A statement was cancelled, by `statement_timeout` or by an operator,
    /// so its transaction did not commit.
    #[error("The database did not finish in time.")]
    DatabaseTimedOut(#[source] sqlx::Error),
    /// The connection failed during `COMMIT`, so the change may or may not
    /// have been saved.
    #[error("The change may not have been saved.")]
    CommitUnknown(#[source] sqlx::Error),
    /// Any other database failure.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A failure inside the server that is not the database's, already
    /// logged where it happened.
    #[error("The server failed to process the request.")]
    Internal,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Name of the field, query parameter or path parameter; `body` for the
    /// body as a whole.
    pub field: String,
    /// Explanation of the problem, as a sentence.
    pub detail: String,
}

/// The error body sent to clients.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Short summary of the status, such as "Not Found".
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation of the failure, as a plain sentence.
    pub detail: String,
    /// The invalid fields; present on 422 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl FieldError {
    /// Creates a field error.
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

impl ApiError {
    /// Creates a 422 error from a list of bad fields, of which the body
    /// lists at most [`MAX_FIELD_ERRORS`].
    pub fn validation(mut errors: Vec<FieldError>) -> Self {
        let total = errors.len();
        let detail = match errors.as_slice() {
            [single] => format!("Field `{}` is invalid: {}", single.field, single.detail),
            _ if total > MAX_FIELD_ERRORS => format!(
                "{total} fields are invalid, and `errors` lists the first {MAX_FIELD_ERRORS}."
            ),
            _ => format!("{total} fields are invalid; see `errors` for each one."),
        };
        errors.truncate(MAX_FIELD_ERRORS);
        Self::Validation { detail, errors }
    }

    /// Maps an error of a transaction's `COMMIT`. A lost connection leaves
    /// the outcome unknown, since the server may have committed before the
    /// connection broke, so the response must not invite a plain retry.
    pub fn from_commit(error: sqlx::Error) -> Self {
        let connection_lost = match &error {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(database_error) => {
                has_code(database_error.as_ref(), &UNAVAILABLE_CODES)
            }
            _ => false,
        };
        if connection_lost {
            Self::CommitUnknown(error)
        } else {
            Self::from(error)
        }
    }

    /// Returns the HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::ItemNotFound(_) | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType
            | Self::UnsupportedCharset
            | Self::UnsupportedContentEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::DatabaseUnavailable(_) | Self::DatabaseTimedOut(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(_) | Self::CommitUnknown(_) | Self::Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::DatabaseUnavailable(_) => {
                "The database is unavailable; retry the request later.".into()
            }
            Self::DatabaseTimedOut(_) => {
                "The database did not finish the request in time, so nothing was changed. \
                 Retry the request later."
                    .into()
            }
            Self::Database(_) => "The server failed to process the request.".into(),
            Self::CommitUnknown(_) => "The database connection failed while the change was \
                saved, so it may or may not have been saved. Read the resource before \
                repeating the request."
                .into(),
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// Sorts a database error into unavailable (503), a constraint the
    /// input violated (422) or an internal failure (500).
    ///
    /// The 422 case is a safety net: handlers validate input first, so it
    /// only fires when the Rust checks and the SQL constraints disagree.
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Configuration(_) => Self::DatabaseUnavailable(error),
            sqlx::Error::Database(database_error)
                if has_code(database_error.as_ref(), &TIMED_OUT_CODES) =>
            {
                Self::DatabaseTimedOut(error)
            }
            sqlx::Error::Database(database_error)
                if has_code(database_error.as_ref(), &UNAVAILABLE_CODES)
                    || is_connection_rejected(database_error.as_ref()) =>
            {
                Self::DatabaseUnavailable(error)
            }
            sqlx::Error::Database(database_error) => {
                match constraint_violation(database_error.as_ref()) {
                    Some(field_error) => {
                        tracing::warn!(
                            code = ?database_error.code(),
                            constraint = ?database_error.constraint(),
                            "input passed validation but violated a database constraint"
                        );
                        Self::validation(vec![field_error])
                    }
                    None => Self::Database(error),
                }
            }
            _ => Self::Database(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Database(error) => tracing::error!(error = %error, "database error"),
            Self::DatabaseUnavailable(error) => {
                tracing::error!(error = %error, "database unavailable");
            }
            Self::DatabaseTimedOut(error) => {
                tracing::error!(error = %error, "a database statement was cancelled");
            }
            Self::CommitUnknown(error) => {
                tracing::error!(error = %error, "the connection failed during COMMIT, so the outcome is unknown");
            }
            _ => {}
        }

        let errors = match &self {
            Self::Validation { errors, .. } => Some(errors.clone()),
            _ => None,
        };
        let problem = Problem {
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            errors,
        };

        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if matches!(self, Self::UnsupportedContentEncoding) {
            // RFC 9110 section 15.5.16: a 415 caused by the content coding
            // names the accepted codings.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 section 11.6.1: a 401 carries a challenge. The token
            // itself is checked by edge-proxy in front of this service.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"item-api\""),
            );
        }
        response
    }
}

/// Reports whether a database error's SQLSTATE is one of `codes`.
fn has_code(error: &dyn sqlx::error::DatabaseError, codes: &[&str]) -> bool {
    error
        .code()
        .is_some_and(|code| codes.contains(&code.as_ref()))
}

/// Reports whether the server rejected the connection itself: class 28
/// (invalid authorization) or a missing database.
fn is_connection_rejected(error: &dyn sqlx::error::DatabaseError) -> bool {
    error
        .code()
        .is_some_and(|code| code.starts_with("28") || code == NO_SUCH_DATABASE_CODE)
}

/// Maps an integrity or data error to the field it concerns, or `None`
/// when the error is not caused by the request's values.
fn constraint_violation(error: &dyn sqlx::error::DatabaseError) -> Option<FieldError> {
    // SQLSTATE classes 22 (data exception) and 23 (integrity constraint
    // violation), limited to the codes that client values can cause.
    const INPUT_CODES: [&str; 6] = ["23502", "23505", "23514", "22001", "22021", "22P05"];
    let code = error.code()?;
    if !INPUT_CODES.contains(&code.as_ref()) {
        return None;
    }

    let field = match error.constraint() {
        Some(name) if name.contains("title") => "title",
        Some(name) if name.contains("description") => "description",
        _ => "body",
    };
    Some(FieldError::new(
        field,
        "The value is not allowed by the database's rules for this field.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown_fields(count: usize) -> Vec<FieldError> {
        (0..count)
            .map(|index| FieldError::new(format!("key{index}"), "Unknown field."))
            .collect()
    }

    #[test]
    fn validation_lists_at_most_the_limit() {
        let ApiError::Validation { detail, errors } = ApiError::validation(unknown_fields(500))
        else {
            panic!("not a validation error");
        };
        assert_eq!(errors.len(), MAX_FIELD_ERRORS);
        assert_eq!(errors[0].field, "key0");
        assert_eq!(
            detail,
            "500 fields are invalid, and `errors` lists the first 20."
        );
    }

    #[test]
    fn validation_at_the_limit_lists_all() {
        let ApiError::Validation { detail, errors } =
            ApiError::validation(unknown_fields(MAX_FIELD_ERRORS))
        else {
            panic!("not a validation error");
        };
        assert_eq!(errors.len(), MAX_FIELD_ERRORS);
        assert_eq!(detail, "20 fields are invalid; see `errors` for each one.");
    }

    #[test]
    fn lost_connection_at_commit_is_unknown_outcome() {
        let lost = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let error = ApiError::from_commit(sqlx::Error::Io(lost));
        assert!(matches!(error, ApiError::CommitUnknown(_)), "{error:?}");
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let detail = error.detail();
        assert!(
            detail.contains("may or may not have been saved"),
            "{detail}"
        );
        assert!(!detail.contains("reset"), "{detail}");
    }

    #[test]
    fn lost_connection_elsewhere_is_unavailable() {
        let lost = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let error = ApiError::from(sqlx::Error::Io(lost));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
