//! The OpenAPI 3.1 document of the HTTP API, made from the route table and
//! the descriptors of the protobuf messages (their comments included), so
//! it cannot drift from what the server does.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{json, Map, Value};

use crate::{Route, ROUTES};

const PACKAGE: &str = "chronos.v1";

struct Messages<'a> {
    /// By full name (`.chronos.v1.Event`), with its comment per field.
    by_name: HashMap<String, (&'a DescriptorProto, HashMap<i32, String>)>,
    enums: HashMap<String, Vec<String>>,
}

impl<'a> Messages<'a> {
    fn of(set: &'a FileDescriptorSet) -> Messages<'a> {
        let mut by_name = HashMap::new();
        let mut enums = HashMap::new();
        for file in &set.file {
            let package = file.package();
            let comments: HashMap<Vec<i32>, String> = file
                .source_code_info
                .iter()
                .flat_map(|info| &info.location)
                .filter_map(|l| {
                    let text = l.leading_comments().trim();
                    (!text.is_empty()).then(|| (l.path.clone(), text.replace('\n', " ")))
                })
                .collect();
            for (i, m) in file.message_type.iter().enumerate() {
                let fields = (0..m.field.len() as i32)
                    .filter_map(|f| {
                        comments
                            .get(&vec![4, i as i32, 2, f])
                            .map(|c| (m.field[f as usize].number(), c.clone()))
                    })
                    .collect();
                let name = format!(".{package}.{}", m.name());
                for nested in &m.nested_type {
                    by_name.insert(
                        format!("{name}.{}", nested.name()),
                        (nested, HashMap::new()),
                    );
                }
                for e in &m.enum_type {
                    enums.insert(format!("{name}.{}", e.name()), values(e));
                }
                by_name.insert(name, (m, fields));
            }
            for e in &file.enum_type {
                enums.insert(format!(".{package}.{}", e.name()), values(e));
            }
        }
        Messages { by_name, enums }
    }

    fn message(&self, short: &str) -> Option<&'a DescriptorProto> {
        self.by_name
            .get(&format!(".{PACKAGE}.{short}"))
            .map(|(m, _)| *m)
    }

    fn is_map(&self, f: &FieldDescriptorProto) -> Option<&'a DescriptorProto> {
        if f.r#type() != Type::Message {
            return None;
        }
        let (m, _) = self.by_name.get(f.type_name())?;
        m.options
            .as_ref()
            .and_then(|o| o.map_entry)
            .unwrap_or(false)
            .then_some(*m)
    }

    fn field_schema(&self, f: &FieldDescriptorProto) -> Value {
        if let Some(entry) = self.is_map(f) {
            let value = entry.field.iter().find(|v| v.number() == 2);
            return json!({
                "type": "object",
                "additionalProperties": value.map_or(json!({}), |v| self.scalar(v)),
            });
        }
        let one = self.scalar(f);
        if f.label() == Label::Repeated {
            json!({ "type": "array", "items": one })
        } else {
            one
        }
    }

    fn scalar(&self, f: &FieldDescriptorProto) -> Value {
        match f.r#type() {
            Type::String => json!({ "type": "string" }),
            Type::Bool => json!({ "type": "boolean" }),
            Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Type::Uint32 | Type::Fixed32 => {
                json!({ "type": "integer", "format": "int32", "minimum": 0 })
            }
            // The protobuf JSON mapping writes 64-bit integers as strings
            // and reads numbers or strings.
            Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
                json!({ "type": ["string", "integer"], "format": "int64" })
            }
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Enum => json!({
                "type": "string",
                "enum": self.enums.get(f.type_name()).cloned().unwrap_or_default(),
            }),
            Type::Message | Type::Group => {
                let short = f.type_name().rsplit('.').next().unwrap_or_default();
                json!({ "$ref": format!("#/components/schemas/{short}") })
            }
        }
    }

    fn schema(&self, full: &str) -> Option<Value> {
        let (m, comments) = self.by_name.get(full)?;
        let mut properties = Map::new();
        for f in &m.field {
            let mut schema = self.field_schema(f);
            if let (Some(text), Value::Object(o)) = (comments.get(&f.number()), &mut schema) {
                o.insert("description".into(), Value::String(text.clone()));
            }
            properties.insert(f.name().to_string(), schema);
        }
        Some(json!({ "type": "object", "properties": properties }))
    }
}

fn values(e: &prost_types::EnumDescriptorProto) -> Vec<String> {
    e.value.iter().map(|v| v.name().to_string()).collect()
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn operation(msgs: &Messages<'_>, r: &Route) -> Value {
    let request = msgs.message(r.request);
    let field = |name: &str| request.and_then(|m| m.field.iter().find(|f| f.name() == name));
    let in_path = path_params(r.path);
    let mut parameters: Vec<Value> = Vec::new();
    for name in &in_path {
        // A path parameter fills a field of the body's message where there is one.
        let f = if r.body.is_empty() {
            field(name)
        } else {
            field(r.body)
                .and_then(|b| msgs.by_name.get(b.type_name()))
                .and_then(|(m, _)| m.field.iter().find(|f| f.name() == *name))
        };
        parameters.push(json!({
            "name": name, "in": "path", "required": true,
            "schema": f.map_or(json!({ "type": "string" }), |f| msgs.scalar(f)),
        }));
    }
    let query_fields: Vec<&FieldDescriptorProto> = match (r.method, r.body) {
        ("GET" | "DELETE", _) => request
            .map(|m| m.field.iter().collect())
            .unwrap_or_default(),
        (_, "") => Vec::new(),
        (_, body) => request
            .map(|m| m.field.iter().filter(|f| f.name() != body).collect())
            .unwrap_or_default(),
    };
    for f in query_fields {
        if in_path.contains(&f.name()) {
            continue;
        }
        let nested = f.r#type() == Type::Message && f.label() != Label::Repeated;
        let mut p = json!({
            "name": f.name(), "in": "query",
            "schema": if nested && msgs.is_map(f).is_none() { msgs.scalar(f) } else { msgs.field_schema(f) },
        });
        if nested {
            // `due_time[from_ts]=…` or `due_time.from_ts=…`; `headers[env]=…`.
            p["style"] = json!("deepObject");
            p["explode"] = json!(true);
        }
        parameters.push(p);
    }
    let answer = format!("#/components/schemas/{}", r.response);
    let ok = if r.stream {
        json!({ "description": "OK: one message per line, as they come, until the caller disconnects; an error after the first ends the stream with a line {\"error\": Error}",
            "content": { "application/x-ndjson": { "schema": { "$ref": answer } } } })
    } else {
        json!({ "description": "OK", "content": { "application/json": { "schema": { "$ref": answer } } } })
    };
    let mut op = json!({
        "operationId": format!("{}_{}", r.rpc.replace('.', "_"), r.method.to_lowercase()),
        "summary": r.summary,
        "description": format!("gRPC `chronos.v1.{}`, the same request and answer.", r.rpc),
        "parameters": parameters,
        "responses": {
            "200": ok,
            "default": { "description": "An error: the gRPC code and a message naming the field",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        },
    });
    if !matches!(r.method, "GET" | "DELETE") {
        let schema = if r.body.is_empty() {
            json!({ "$ref": format!("#/components/schemas/{}", r.request) })
        } else {
            field(r.body).map_or(json!({}), |f| msgs.scalar(f))
        };
        op["requestBody"] =
            json!({ "required": false, "content": { "application/json": { "schema": schema } } });
    }
    op
}

/// The document served at `/v1/openapi.json`.
pub fn document() -> Value {
    let set = FileDescriptorSet::decode(chronos_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let msgs = Messages::of(&set);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in ROUTES {
        paths
            .entry(r.path.to_string())
            .or_default()
            .insert(r.method.to_lowercase(), operation(&msgs, r));
    }
    let mut schemas = Map::new();
    let mut names: Vec<&String> = msgs
        .by_name
        .keys()
        .filter(|n| n.starts_with(&format!(".{PACKAGE}.")) && n.matches('.').count() == 3)
        .collect();
    names.sort();
    for full in names {
        if let Some(s) = msgs.schema(full) {
            schemas.insert(full.rsplit('.').next().unwrap_or_default().to_string(), s);
        }
    }
    schemas.insert(
        "Error".into(),
        json!({ "type": "object", "properties": {
            "code": { "type": "string", "description": "The gRPC status code's name, e.g. INVALID_ARGUMENT" },
            "message": { "type": "string", "description": "What is wrong, starting with the field's name" },
            "field": { "type": "string", "description": "For INVALID_ARGUMENT: the request field it is about, e.g. event.topic or events[3].payload" },
        }}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Chronos HTTP/JSON API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Each route calls one gRPC method of chronos.v1 in-process. Bodies and answers are the protobuf JSON mapping of its messages (field names as in the .proto; 64-bit integers as strings; bytes as base64, or `payload_json` for a JSON payload). With auth on, send `Authorization: Bearer <token>`.",
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}
