//! What an HTTP request says, turned into the gRPC request message: the
//! path's parameters, the query string and the JSON body merged into one
//! JSON object, read in the protobuf JSON mapping.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tonic::Status;

use crate::Route;

/// An HTTP request on its way to a gRPC method.
pub struct Input {
    path: Vec<(String, String)>,
    query: Option<String>,
    headers: HeaderMap,
    body: axum::body::Body,
}

impl<S: Send + Sync> FromRequest<S> for Input {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Input, Response> {
        let (mut parts, body) = req.into_parts();
        let path = match Path::<Vec<(String, String)>>::from_request_parts(&mut parts, state).await
        {
            Ok(Path(p)) => p,
            Err(e) => return Err(crate::error(&invalid("path", e))),
        };
        Ok(Input {
            path,
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
        })
    }
}

use chronos_api::status::invalid;

impl Input {
    /// The request message `T` of `route`, carrying the caller's credentials.
    pub async fn message<T: DeserializeOwned>(
        self,
        route: &Route,
        limit: usize,
    ) -> Result<tonic::Request<T>, Status> {
        let bytes = axum::body::to_bytes(self.body, limit).await.map_err(|_| {
            Status::resource_exhausted(format!("body: larger than the limit of {limit} bytes"))
        })?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(invalid("body", "must be a JSON object")),
                Err(e) => return Err(invalid("body", format!("is not JSON: {e}"))),
            }
        };
        let mut root = Map::new();
        let target = if route.body.is_empty() {
            root = body;
            &mut root
        } else {
            root.insert(route.body.to_string(), Value::Object(body));
            match root.get_mut(route.body) {
                Some(Value::Object(m)) => m,
                _ => unreachable!("just inserted"),
            }
        };
        let prefix = if route.body.is_empty() {
            String::new()
        } else {
            format!("{}.", route.body)
        };
        for (name, value) in self.path {
            set(target, &prefix, &[name.as_str()], Value::String(value))?;
        }
        if let Some(query) = &self.query {
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                let value = match value.as_ref() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    v => Value::String(v.to_string()),
                };
                // `a.b=v` and `a[b]=v` (deepObject) both set field b of a.
                let name = name.replace('[', ".").replace(']', "");
                let steps: Vec<&str> = name.split('.').collect();
                set(&mut root, "", &steps, value)?;
            }
        }
        inline_payloads(&mut root)?;
        let root = Value::Object(root);
        let message = serde_path_to_error::deserialize(&root).map_err(|e| {
            let at = e.path().to_string();
            if at == "." {
                return invalid("body", e.inner());
            }
            match value_at(&root, &at) {
                Some(Value::Number(n))
                    if n.is_f64() && n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
                {
                    invalid(&at, format!("{n} is outside the range of a 64-bit integer"))
                }
                _ => invalid(&at, e.inner()),
            }
        })?;
        let mut request = tonic::Request::new(message);
        if let Some(auth) = self.headers.get(header::AUTHORIZATION) {
            let value = tonic::metadata::MetadataValue::try_from(auth.as_bytes())
                .map_err(|_| Status::unauthenticated("authorization: not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// The value at `path` as serde_path_to_error writes it (`a.b[2].c`).
fn value_at<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut at = root;
    for step in path.split('.') {
        let (name, index) = match step.split_once('[') {
            Some((name, rest)) => (name, rest.strip_suffix(']')?.parse::<usize>().ok()),
            None => (step, None),
        };
        if !name.is_empty() {
            at = at.get(name)?;
        }
        if let Some(i) = index {
            at = at.get(i)?;
        }
    }
    Some(at)
}

/// Sets field `steps` (nested objects) of `target` to `value`; the same
/// field given twice must agree.
fn set(
    target: &mut Map<String, Value>,
    prefix: &str,
    steps: &[&str],
    value: Value,
) -> Result<(), Status> {
    let field = || format!("{prefix}{}", steps.join("."));
    let Some((last, parents)) = steps.split_last() else {
        return Ok(());
    };
    let mut at = target;
    for step in parents {
        let entry = at
            .entry(step.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        at = match entry {
            Value::Object(m) => m,
            _ => return Err(invalid(&field(), "given both as a value and as an object")),
        };
    }
    match at.get(*last) {
        Some(old) if !same(old, &value) => Err(invalid(
            &field(),
            format!("given twice, as {old} and as {value}"),
        )),
        _ => {
            at.insert(last.to_string(), value);
            Ok(())
        }
    }
}

/// Equal as the protobuf JSON mapping reads them (`5` and `"5"` alike).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            n.to_string() == *s
        }
        _ => a == b,
    }
}

/// `payload_json` in an event or schedule: any JSON value, stored as its
/// compact text (the payload itself is bytes, base64 in JSON).
fn inline_payloads(root: &mut Map<String, Value>) -> Result<(), Status> {
    let mut places: Vec<(String, &mut Map<String, Value>)> = Vec::new();
    let mut events = None;
    for (name, value) in root.iter_mut() {
        match (name.as_str(), value) {
            ("event" | "schedule", Value::Object(m)) => places.push((name.clone(), m)),
            ("events", Value::Array(items)) => events = Some(items),
            _ => {}
        }
    }
    if let Some(items) = events {
        for (i, item) in items.iter_mut().enumerate() {
            if let Value::Object(m) = item {
                places.push((format!("events[{i}]"), m));
            }
        }
    }
    for (at, m) in places {
        let Some(json) = m.remove("payload_json") else {
            continue;
        };
        if m.contains_key("payload") {
            return Err(invalid(
                &format!("{at}.payload_json"),
                "set payload (base64) or payload_json, not both",
            ));
        }
        let text =
            serde_json::to_vec(&json).map_err(|e| invalid(&format!("{at}.payload_json"), e))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        m.insert("payload".into(), Value::String(encoded));
    }
    Ok(())
}

/// True when `path` fits route template `template` (`{name}` = one segment).
pub(crate) fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}
