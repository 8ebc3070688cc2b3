//! Calling the HTTP/JSON API of a test server and reading its answers.

use serde_json::Value;

use super::Server;

/// `method path` with `body` (none when null); the status and the JSON answer.
pub fn call(server: &Server, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (code, answer) = server
        .http_call(method, path, &text, &[])
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let value = serde_json::from_str(&answer).unwrap_or_else(|e| {
        panic!("{method} {path} answered {code} with non-JSON {answer:?}: {e}")
    });
    (code, value)
}

/// As [`call`], failing the test unless the answer is 200.
pub fn ok(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let (code, value) = call(server, method, path, &body);
    assert_eq!(code, 200, "{method} {path}: {value}");
    value
}

/// A 64-bit integer of the protobuf JSON mapping (a string) or a number.
pub fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not an integer: {v}")),
        Value::Number(n) => n.as_i64().unwrap(),
        _ => panic!("not an integer: {v}"),
    }
}
