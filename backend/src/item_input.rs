//! Client input for the item routes, checked before any SQL runs: the
//! bodies [`CreateItem`] and [`UpdateItem`], the path id [`ItemId`] and the
//! list query [`ListParams`]. Each check that fails names its field in a
//! 422 response.
//!
//! The SQL check constraints enforce the same limits again. These checks
//! exist so a client learns which field is wrong instead of getting a
//! generic error.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use serde_json::Value;

use crate::error::{ApiError, FieldError};
use crate::json::JsonObject;

/// Maximum title length, in characters (Unicode code points, as
/// PostgreSQL's `char_length` counts them).
pub const MAX_TITLE_CHARS: usize = 255;
/// Maximum description length, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Number of items a list returns when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: i64 = 1_000;

/// Maximum length of an unknown key echoed back in an error, in characters.
const MAX_ECHOED_KEY_CHARS: usize = 64;

/// Body of `POST /api/v1/item/`.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({"title": "Buy milk", "description": "Two litres"}))]
pub struct CreateItem {
    /// 1 to 255 characters, no NUL characters.
    #[schema(min_length = 1, max_length = 255)]
    pub title: String,
    /// Up to 10,000 characters, no NUL characters; null or absent for none.
    #[schema(max_length = 10000)]
    pub description: Option<String>,
}

/// Body of `PUT /api/v1/item/{id}`: at least one of the fields. An absent
/// field keeps its value; `"description": null` clears the description.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({"title": "Buy oat milk"}))]
pub struct UpdateItem {
    /// New title: 1 to 255 characters, no NUL characters.
    #[schema(min_length = 1, max_length = 255, nullable = false)]
    pub title: Option<String>,
    /// New description, or null to clear it; absent keeps the current one.
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
}

/// Path id of an item: a positive 64-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemId(pub i64);

/// Paging of `GET /api/v1/item/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Number of items to skip, at least 0 (default 0).
    #[param(minimum = 0, default = 0)]
    pub skip: i64,
    /// Maximum number of items to return, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: i64,
}

/// Rules for one text field.
#[derive(Clone, Copy)]
struct TextRule {
    field: &'static str,
    min_chars: usize,
    max_chars: usize,
    nullable: bool,
}

const TITLE: TextRule = TextRule {
    field: "title",
    min_chars: 1,
    max_chars: MAX_TITLE_CHARS,
    nullable: false,
};
const DESCRIPTION: TextRule = TextRule {
    field: "description",
    min_chars: 0,
    max_chars: MAX_DESCRIPTION_CHARS,
    nullable: true,
};

/// The known fields of an item body, each with its value if present.
#[derive(Default)]
struct ItemFields {
    title: Option<Option<String>>,
    description: Option<Option<String>>,
}

impl CreateItem {
    /// Validates a body into a new item.
    ///
    /// # Errors
    ///
    /// Returns a 422 [`ApiError`] listing every bad, missing, unknown or
    /// repeated field.
    pub fn from_object(object: JsonObject) -> Result<Self, ApiError> {
        let (fields, mut errors) = read_fields(object);
        if fields.title.is_none() && !errors.iter().any(|error| error.field == "title") {
            errors.push(FieldError::new("title", "The title is required."));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }

        Ok(Self {
            title: fields
                .title
                .flatten()
                .expect("a present, valid title is a string"),
            description: fields.description.flatten(),
        })
    }
}

impl UpdateItem {
    /// Validates a body into a change to an item.
    ///
    /// # Errors
    ///
    /// Returns a 422 [`ApiError`] listing every bad, unknown or repeated
    /// field, or naming `body` when neither field is present.
    pub fn from_object(object: JsonObject) -> Result<Self, ApiError> {
        let had_members = !object.0.is_empty();
        let (fields, errors) = read_fields(object);
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        if fields.title.is_none() && fields.description.is_none() {
            let detail = if had_members {
                "Send at least one of title and description."
            } else {
                "The object is empty; send at least one of title and description."
            };
            return Err(ApiError::validation(vec![FieldError::new("body", detail)]));
        }

        Ok(Self {
            title: fields.title.flatten(),
            description: fields.description,
        })
    }
}

impl ItemId {
    /// Parses a path segment as a positive 64-bit integer, digits only.
    ///
    /// # Errors
    ///
    /// Returns a 422 [`ApiError`] for anything else, including `0`, signs,
    /// exponents and values above `i64::MAX`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::validation(vec![FieldError::new(
                "id",
                format!("The item id must be a whole number from 1 to {}.", i64::MAX),
            )])
        };
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid());
        }
        match text.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Self(id)),
            _ => Err(invalid()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ItemId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::validation(vec![FieldError::new(
                    "id",
                    "The item id is not valid text.",
                )])
            })?;
        Self::parse(&text)
    }
}

impl ListParams {
    /// Parses `skip` and `limit` from a query string; other parameters are
    /// ignored.
    ///
    /// # Errors
    ///
    /// Returns a 422 [`ApiError`] naming each parameter that is not an
    /// integer, out of range or given more than once.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if key == "skip" || key == "limit" {
                values
                    .entry(key.into_owned())
                    .or_default()
                    .push(value.into_owned());
            }
        }

        let mut errors = Vec::new();
        let skip = read_integer(&values, "skip", 0, 0, i64::MAX, &mut errors);
        let limit = read_integer(&values, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(Self { skip, limit })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let RawQuery(query) = RawQuery::from_request_parts(parts, state)
            .await
            .expect("RawQuery never rejects");
        Self::parse(query.as_deref())
    }
}

fn read_integer(
    values: &HashMap<String, Vec<String>>,
    name: &'static str,
    default: i64,
    min: i64,
    max: i64,
    errors: &mut Vec<FieldError>,
) -> i64 {
    let range_message = || format!("`{name}` must be a whole number from {min} to {max}.");
    match values.get(name).map(Vec::as_slice) {
        None => default,
        Some([text]) => match text.parse::<i64>() {
            Ok(value) if (min..=max).contains(&value) => value,
            _ => {
                errors.push(FieldError::new(name, range_message()));
                default
            }
        },
        Some(_) => {
            errors.push(FieldError::new(
                name,
                format!("`{name}` must be given at most once."),
            ));
            default
        }
    }
}

/// Sorts the members of a body into the known fields, collecting an error
/// for each unknown, repeated or invalid one.
fn read_fields(object: JsonObject) -> (ItemFields, Vec<FieldError>) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (key, _) in &object.0 {
        *counts.entry(key.clone()).or_default() += 1;
    }

    let mut fields = ItemFields::default();
    let mut errors = Vec::new();
    let mut reported = std::collections::HashSet::new();
    for (key, value) in object.0 {
        let count = counts.get(&key).copied().unwrap_or(1);
        if count > 1 {
            if reported.insert(key.clone()) {
                errors.push(FieldError::new(
                    echo_key(&key),
                    format!("The key appears {count} times; send each field once."),
                ));
            }
            continue;
        }

        let rule = match key.as_str() {
            "title" => TITLE,
            "description" => DESCRIPTION,
            _ => {
                errors.push(FieldError::new(
                    echo_key(&key),
                    "Unknown field; the allowed fields are title and description.",
                ));
                continue;
            }
        };
        match check_text(rule, value) {
            Ok(text) if rule.field == "title" => fields.title = Some(text),
            Ok(text) => fields.description = Some(text),
            Err(error) => errors.push(error),
        }
    }
    (fields, errors)
}

/// Checks one text field: its JSON type, NUL characters and length.
fn check_text(rule: TextRule, value: Value) -> Result<Option<String>, FieldError> {
    let field = rule.field;
    let text = match value {
        Value::String(text) => text,
        Value::Null if rule.nullable => return Ok(None),
        Value::Null => {
            return Err(FieldError::new(
                field,
                format!("The {field} must be a string, not null."),
            ));
        }
        other => {
            return Err(FieldError::new(
                field,
                format!(
                    "The {field} must be a string, not {}.",
                    json_type_name(&other)
                ),
            ));
        }
    };

    // PostgreSQL text cannot store U+0000, so it is rejected here rather
    // than failing inside the database.
    if text.contains('\0') {
        return Err(FieldError::new(
            field,
            format!("The {field} must not contain NUL characters (\\u0000)."),
        ));
    }
    let length = text.chars().count();
    if length < rule.min_chars || length > rule.max_chars {
        return Err(FieldError::new(
            field,
            format!(
                "The {field} must be {} to {} characters long; it has {length}.",
                rule.min_chars, rule.max_chars
            ),
        ));
    }
    Ok(Some(text))
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Shortens a client-supplied key before it is echoed in an error.
fn echo_key(key: &str) -> String {
    if key.chars().count() <= MAX_ECHOED_KEY_CHARS {
        key.to_owned()
    } else {
        let prefix: String = key.chars().take(MAX_ECHOED_KEY_CHARS).collect();
        format!("{prefix}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => JsonObject(map.into_iter().collect()),
            other => panic!("not an object: {other}"),
        }
    }

    fn error_fields(error: ApiError) -> Vec<String> {
        match error {
            ApiError::Validation { errors, .. } => {
                errors.into_iter().map(|error| error.field).collect()
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn create_accepts_title_and_description() {
        let item = CreateItem::from_object(object(json!({"title": "a", "description": "b"})))
            .expect("valid");
        assert_eq!(item.title, "a");
        assert_eq!(item.description.as_deref(), Some("b"));
    }

    #[test]
    fn create_requires_title() {
        let error = CreateItem::from_object(object(json!({"description": "b"})))
            .expect_err("title missing");
        assert_eq!(error_fields(error), ["title"]);
    }

    #[test]
    fn create_names_every_bad_field() {
        let error = CreateItem::from_object(object(json!({"title": 5, "description": [], "x": 1})))
            .expect_err("invalid");
        let mut fields = error_fields(error);
        fields.sort();
        assert_eq!(fields, ["description", "title", "x"]);
    }

    #[test]
    fn title_length_limits_count_characters() {
        let longest = "é".repeat(MAX_TITLE_CHARS);
        assert!(CreateItem::from_object(object(json!({ "title": longest }))).is_ok());

        let too_long = "é".repeat(MAX_TITLE_CHARS + 1);
        let error =
            CreateItem::from_object(object(json!({ "title": too_long }))).expect_err("too long");
        assert_eq!(error_fields(error), ["title"]);

        let error = CreateItem::from_object(object(json!({"title": ""}))).expect_err("too short");
        assert_eq!(error_fields(error), ["title"]);
    }

    #[test]
    fn description_over_limit_is_rejected() {
        let description = "x".repeat(MAX_DESCRIPTION_CHARS + 1);
        let error =
            CreateItem::from_object(object(json!({"title": "a", "description": description})))
                .expect_err("too long");
        assert_eq!(error_fields(error), ["description"]);
    }

    #[test]
    fn nul_character_is_rejected() {
        let error = CreateItem::from_object(object(json!({"title": "a\u{0}b"}))).expect_err("NUL");
        assert_eq!(error_fields(error), ["title"]);
    }

    #[test]
    fn duplicate_key_is_reported_once() {
        let body = JsonObject(vec![
            ("title".into(), json!("a")),
            ("title".into(), json!("b")),
            ("title".into(), json!("c")),
        ]);
        let error = CreateItem::from_object(body).expect_err("duplicate");
        assert_eq!(error_fields(error), ["title"]);
    }

    #[test]
    fn update_rejects_empty_object() {
        let error = UpdateItem::from_object(JsonObject(Vec::new())).expect_err("empty");
        assert_eq!(error_fields(error), ["body"]);
    }

    #[test]
    fn update_null_description_clears_it() {
        let update = UpdateItem::from_object(object(json!({"description": null}))).expect("valid");
        assert_eq!(update.title, None);
        assert_eq!(update.description, Some(None));
    }

    #[test]
    fn update_null_title_is_rejected() {
        let error = UpdateItem::from_object(object(json!({"title": null}))).expect_err("null");
        assert_eq!(error_fields(error), ["title"]);
    }

    #[test]
    fn item_id_accepts_positive_integers() {
        assert_eq!(ItemId::parse("1").expect("valid"), ItemId(1));
        assert_eq!(
            ItemId::parse("9223372036854775807").expect("valid"),
            ItemId(i64::MAX)
        );
    }

    #[test]
    fn item_id_rejects_everything_else() {
        for text in [
            "0",
            "-1",
            "+1",
            "abc",
            "1e3",
            "1.0",
            " 1",
            "",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert!(ItemId::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn list_params_default_to_0_and_100() {
        let params = ListParams::parse(None).expect("valid");
        assert_eq!(
            params,
            ListParams {
                skip: 0,
                limit: 100
            }
        );
    }

    #[test]
    fn list_params_reject_out_of_range_values() {
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=1000000", "limit"),
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("limit=1e3", "limit"),
            ("skip=-1", "skip"),
            ("skip=1.5", "skip"),
            ("skip=1&skip=2", "skip"),
        ] {
            let error = ListParams::parse(Some(query)).expect_err(query);
            assert_eq!(error_fields(error), [field], "{query}");
        }
    }

    #[test]
    fn list_params_ignore_other_parameters() {
        let params = ListParams::parse(Some("skip=5&limit=1000&sort=id")).expect("valid");
        assert_eq!(
            params,
            ListParams {
                skip: 5,
                limit: 1000
            }
        );
    }
}
