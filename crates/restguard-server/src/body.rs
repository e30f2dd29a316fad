//! Request bodies as DRF parses them (JSON or form), and DRF-style field validation.

use axum::{
    extract::{FromRequest, Request},
    http::header,
};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Number, Value};

use crate::{app::AppState, error::ApiError};

/// The parsed body: DRF's `request.data` for an object payload.
#[derive(Debug, Default)]
pub(crate) struct Data(pub(crate) Map<String, Value>);

impl FromRequest<AppState> for Data {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let limit = state.body_limit;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if bytes.is_empty() {
            return Ok(Data::default());
        }
        match content_type.as_deref() {
            Some("application/json") => parse_json(&bytes).map(Data),
            Some(ct) if ct.starts_with("application/") && ct.ends_with("+json") => {
                parse_json(&bytes).map(Data)
            }
            Some("application/x-www-form-urlencoded") => parse_form(&bytes).map(Data),
            Some(other) => Err(ApiError::UnsupportedMediaType(other.to_owned())),
            None => Err(ApiError::UnsupportedMediaType(String::new())),
        }
    }
}

fn parse_json(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: StrictValue =
        serde_json::from_slice(bytes).map_err(|e| ApiError::Parse(e.to_string()))?;
    match value.0 {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::non_field(&format!(
            "Invalid data. Expected a dictionary, but got {}.",
            python_type_name(&other)
        ))),
    }
}

fn python_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn parse_form(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(bytes).map_err(|e| ApiError::Parse(format!("form: {e}")))?;
    // A repeated field keeps its last value, as Django's QueryDict.get does.
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

/// A JSON value whose objects may not repeat a member (CONTRACT §10).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        Ok(StrictValue(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_none<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(StrictValue(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictValue, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate member {key:?}")));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(StrictValue(Value::Object(map)))
    }
}

/// Rules for a DRF `CharField`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CharRules {
    pub(crate) required: bool,
    pub(crate) allow_blank: bool,
    pub(crate) trim: bool,
    pub(crate) max_length: Option<usize>,
}

impl CharRules {
    /// Required, not blank, trimmed.
    pub(crate) const REQUIRED: CharRules = CharRules {
        required: true,
        allow_blank: false,
        trim: true,
        max_length: None,
    };
}

/// Collects DRF-style field errors while reading fields.
pub(crate) struct Fields<'a> {
    data: &'a Map<String, Value>,
    errors: Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(data: &'a Data) -> Self {
        Self {
            data: &data.0,
            errors: Map::new(),
        }
    }

    fn error(&mut self, field: &str, message: String) {
        self.errors.insert(field.to_owned(), json!([message]));
    }

    /// A `CharField`.
    pub(crate) fn char(&mut self, field: &str, rules: CharRules) -> Option<String> {
        let value = match self.data.get(field) {
            None => {
                if rules.required {
                    self.error(field, "This field is required.".into());
                }
                return None;
            }
            Some(Value::Null) => {
                self.error(field, "This field may not be null.".into());
                return None;
            }
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                self.error(field, "Not a valid string.".into());
                return None;
            }
        };
        let value = if rules.trim {
            value.trim().to_owned()
        } else {
            value
        };
        if value.is_empty() || (value.trim().is_empty() && rules.trim) {
            if !rules.allow_blank {
                self.error(field, "This field may not be blank.".into());
                return None;
            }
            return Some(String::new());
        }
        // DRF runs every validator and reports every failure, in this order.
        let mut problems = Vec::new();
        if let Some(max) = rules.max_length {
            if value.chars().count() > max {
                problems.push(Value::String(format!(
                    "Ensure this field has no more than {max} characters."
                )));
            }
        }
        if value.contains('\0') {
            problems.push(Value::String("Null characters are not allowed.".into()));
        }
        if !problems.is_empty() {
            self.errors.insert(field.to_owned(), Value::Array(problems));
            return None;
        }
        Some(value)
    }

    /// An optional `IntegerField` with bounds; `null` counts as absent.
    pub(crate) fn optional_int(&mut self, field: &str, min: i64, max: i64) -> Option<i64> {
        let n = match self.data.get(field) {
            None | Some(Value::Null) => return None,
            Some(Value::Number(n)) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                    .map(|f| f as i64)
            }),
            // DRF: `int(re.sub(r"\.0*\s*$", "", data))`, so "60.0" and " 60 " are 60.
            Some(Value::String(s)) if s.len() <= 1000 => {
                let s = s.trim();
                let s = match s.rfind('.') {
                    Some(dot) if s[dot + 1..].bytes().all(|b| b == b'0') => &s[..dot],
                    _ => s,
                };
                s.trim_start().parse().ok()
            }
            Some(_) => None,
        };
        let Some(n) = n else {
            self.error(field, "A valid integer is required.".into());
            return None;
        };
        if n < min {
            self.error(
                field,
                format!("Ensure this value is greater than or equal to {min}."),
            );
            return None;
        }
        if n > max {
            self.error(
                field,
                format!("Ensure this value is less than or equal to {max}."),
            );
            return None;
        }
        Some(n)
    }

    /// `Err` with every collected field error, if any.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// DRF's `User.username` max length.
pub(crate) const USERNAME_MAX: usize = 150;

/// The `{"username","password"}` every password endpoint reads (DRF's `AuthTokenSerializer`,
/// Simple JWT's `TokenObtainSerializer`): the username trimmed and at most 150 characters,
/// the password untrimmed; both required and not blank.
pub(crate) struct LoginFields {
    pub(crate) username: String,
    pub(crate) password: restguard_core::secret::SecretString,
}

impl LoginFields {
    /// The fields, or DRF's field errors.
    pub(crate) fn parse(data: &Data) -> Result<LoginFields, ApiError> {
        let mut fields = Fields::new(data);
        let username = fields.char(
            "username",
            CharRules {
                max_length: Some(USERNAME_MAX),
                ..CharRules::REQUIRED
            },
        );
        let password = fields.char(
            "password",
            CharRules {
                trim: false,
                ..CharRules::REQUIRED
            },
        );
        fields.finish()?;
        match (username, password) {
            (Some(username), Some(password)) => Ok(LoginFields {
                username,
                password: restguard_core::secret::SecretString::new(password),
            }),
            // `finish` reported every missing field already.
            _ => Err(ApiError::non_field(
                "Unable to log in with provided credentials.",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_members_are_refused() {
        assert!(matches!(
            parse_json(br#"{"a":1,"a":2}"#),
            Err(ApiError::Parse(_))
        ));
        assert!(matches!(
            parse_json(br#"{"a":{"b":1,"b":1}}"#),
            Err(ApiError::Parse(_))
        ));
        assert!(parse_json(br#"{"a":1,"b":2}"#).is_ok());
        assert!(matches!(parse_json(b"[1]"), Err(ApiError::Validation(_))));
    }

    #[test]
    fn char_field_messages() {
        let data = Data(
            serde_json::from_str::<Map<String, Value>>(
                r#"{"a":" ","b":null,"c":[1],"d":5,"e":"xyz"}"#,
            )
            .unwrap(),
        );
        let mut f = Fields::new(&data);
        assert_eq!(f.char("a", CharRules::REQUIRED), None);
        assert_eq!(f.char("b", CharRules::REQUIRED), None);
        assert_eq!(f.char("c", CharRules::REQUIRED), None);
        assert_eq!(f.char("d", CharRules::REQUIRED), Some("5".into()));
        assert_eq!(
            f.char(
                "e",
                CharRules {
                    max_length: Some(2),
                    ..CharRules::REQUIRED
                }
            ),
            None
        );
        assert_eq!(f.char("missing", CharRules::REQUIRED), None);
        let Err(ApiError::Validation(errors)) = f.finish() else {
            panic!("expected errors")
        };
        assert_eq!(errors["a"], json!(["This field may not be blank."]));
        assert_eq!(errors["b"], json!(["This field may not be null."]));
        assert_eq!(errors["c"], json!(["Not a valid string."]));
        assert_eq!(
            errors["e"],
            json!(["Ensure this field has no more than 2 characters."])
        );
        assert_eq!(errors["missing"], json!(["This field is required."]));
    }

    #[test]
    fn null_characters_and_decimal_integers() {
        let data = Data(
            serde_json::from_str::<Map<String, Value>>(
                r#"{"a":"x\u0000y","b":"xx\u0000","c":"60.0","d":" 7. ","e":"6.5","f":"1e3"}"#,
            )
            .unwrap(),
        );
        let mut f = Fields::new(&data);
        assert_eq!(f.char("a", CharRules::REQUIRED), None);
        let short = CharRules {
            max_length: Some(2),
            ..CharRules::REQUIRED
        };
        assert_eq!(f.char("b", short), None);
        assert_eq!(f.optional_int("c", 1, 100), Some(60));
        assert_eq!(f.optional_int("d", 1, 100), Some(7));
        assert_eq!(f.optional_int("e", 1, 100), None);
        assert_eq!(f.optional_int("f", 1, 10_000), None);
        let Err(ApiError::Validation(errors)) = f.finish() else {
            panic!("expected errors")
        };
        assert_eq!(errors["a"], json!(["Null characters are not allowed."]));
        assert_eq!(
            errors["b"],
            json!([
                "Ensure this field has no more than 2 characters.",
                "Null characters are not allowed."
            ])
        );
        assert_eq!(errors["e"], json!(["A valid integer is required."]));
        assert_eq!(errors["f"], json!(["A valid integer is required."]));
    }
}
