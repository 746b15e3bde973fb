//! The OpenAPI 3 document of the HTTP/JSON API, generated from the protos: the bindings give
//! the paths, the messages the schemas, the protos' comments the descriptions. Nothing in it is
//! written by hand; `docs/openapi.json` is this output (a test keeps them equal) and the deploy
//! checks validate it.

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};

use crate::bindings::{Binding, Bindings};

/// The comment written above a definition in its proto file (`path` as in `SourceCodeInfo`).
fn comment(file: &prost_reflect::FileDescriptor, path: &[i32]) -> String {
    file.file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.clone())
        .map(|c| {
            c.lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn message_comment(m: &MessageDescriptor) -> String {
    comment(&m.parent_file(), m.path())
}

fn field_comment(f: &FieldDescriptor) -> String {
    comment(&f.parent_file(), f.path())
}

fn method_comment(m: &MethodDescriptor) -> String {
    comment(&m.parent_file(), m.path())
}

fn enum_comment(e: &EnumDescriptor) -> String {
    comment(&e.parent_file(), e.path())
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The schema of one value of a field's kind (not the list or map around it).
fn kind_schema(kind: &Kind) -> Value {
    match kind {
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        // The proto3 JSON mapping writes 64-bit integers as strings.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Double => json!({"type": "number", "format": "double"}),
        Kind::Enum(e) => schema_ref(e.full_name()),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" => json!({"type": "string", "example": "1.5s"}),
            _ => schema_ref(m.full_name()),
        },
    }
}

fn field_schema(f: &FieldDescriptor) -> Value {
    let mut s = if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return json!({});
        };
        let value = entry.map_entry_value_field();
        json!({"type": "object", "additionalProperties": kind_schema(&value.kind())})
    } else if f.is_list() {
        json!({"type": "array", "items": kind_schema(&f.kind())})
    } else {
        kind_schema(&f.kind())
    };
    let doc = field_comment(f);
    if !doc.is_empty() {
        // A $ref takes no siblings in OpenAPI 3.0: wrap it.
        if s.get("$ref").is_some() {
            s = json!({"allOf": [s], "description": doc});
        } else if let Value::Object(o) = &mut s {
            o.insert("description".into(), Value::String(doc));
        }
    }
    s
}

fn message_schema(m: &MessageDescriptor) -> Value {
    let properties: Map<String, Value> = m
        .fields()
        .map(|f| (f.name().to_owned(), field_schema(&f)))
        .collect();
    let mut s = json!({"type": "object", "properties": properties});
    let doc = message_comment(m);
    if !doc.is_empty() {
        s["description"] = Value::String(doc);
    }
    s
}

fn enum_schema(e: &EnumDescriptor) -> Value {
    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
    let mut s = json!({"type": "string", "enum": names});
    let doc = enum_comment(e);
    if !doc.is_empty() {
        s["description"] = Value::String(doc);
    }
    s
}

/// Every message and enum reachable from `m`, by full name.
fn collect(m: &MessageDescriptor, schemas: &mut Map<String, Value>) {
    if schemas.contains_key(m.full_name())
        || matches!(
            m.full_name(),
            "google.protobuf.Timestamp" | "google.protobuf.Duration"
        )
    {
        return;
    }
    schemas.insert(m.full_name().to_owned(), message_schema(m));
    for f in m.fields() {
        let kind = if f.is_map() {
            match f.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                k => k,
            }
        } else {
            f.kind()
        };
        match kind {
            Kind::Message(child) => collect(&child, schemas),
            Kind::Enum(e) => {
                schemas
                    .entry(e.full_name().to_owned())
                    .or_insert_with(|| enum_schema(&e));
            }
            _ => {}
        }
    }
}

/// The query parameters of a binding without a body: the request's fields that are not path
/// variables, one level of nesting written `a.b`.
fn query_parameters(b: &Binding) -> Vec<Value> {
    let path: Vec<&str> = b.path_fields().collect();
    let mut out = Vec::new();
    for f in b.method.input().fields() {
        if path.contains(&f.name()) {
            continue;
        }
        match f.kind() {
            Kind::Message(m)
                if !f.is_list()
                    && !matches!(
                        m.full_name(),
                        "google.protobuf.Timestamp" | "google.protobuf.Duration"
                    ) =>
            {
                for inner in m.fields() {
                    out.push(json!({
                        "name": format!("{}.{}", f.name(), inner.name()),
                        "in": "query",
                        "schema": field_schema(&inner),
                    }));
                }
            }
            _ => {
                let mut p = json!({"name": f.name(), "in": "query", "schema": field_schema(&f)});
                if f.is_list() {
                    p["explode"] = Value::Bool(true);
                }
                out.push(p);
            }
        }
    }
    out
}

fn operation(b: &Binding) -> Value {
    let service = b.method.parent_service();
    let input = b.method.input();
    let mut params: Vec<Value> = b
        .path_fields()
        .map(|name| {
            let schema = input
                .get_field_by_name(name)
                .map_or_else(|| json!({"type": "string"}), |f| field_schema(&f));
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    if b.body.is_none() {
        params.extend(query_parameters(b));
    }
    if b.server_streaming() {
        params.push(json!({
            "name": "Last-Event-ID",
            "in": "header",
            "description": "The id (cursor) of the last event processed: the stream resumes after it.",
            "schema": {"type": "string"},
        }));
    }
    let mut op = json!({
        "operationId": format!("{}_{}", service.name(), b.method.name()),
        "tags": [service.name()],
        "description": method_comment(&b.method),
        "parameters": params,
        "responses": {
            "default": {
                "description": "An error: the gRPC code's HTTP status, the message, and details such as field violations.",
                "content": {"application/json": {"schema": schema_ref("Error")}},
            }
        },
    });
    if let Some(body) = &b.body {
        let schema = if body == "*" {
            schema_ref(input.full_name())
        } else {
            input
                .get_field_by_name(body)
                .map_or_else(|| json!({}), |f| field_schema(&f))
        };
        let schema = if b.method.is_client_streaming() {
            json!({"type": "array", "items": schema})
        } else {
            schema
        };
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    let output = schema_ref(b.method.output().full_name());
    op["responses"]["200"] = if b.server_streaming() {
        json!({
            "description": format!("Server-Sent Events: each `data` is one {} in JSON, its `id` the cursor; an `error` event ends a failed stream.", b.method.output().name()),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        })
    } else {
        json!({"description": "OK", "content": {"application/json": {"schema": output}}})
    };
    op
}

/// The document.
pub fn document(bindings: &Bindings) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for b in bindings.all() {
        collect(&b.method.input(), &mut schemas);
        collect(&b.method.output(), &mut schemas);
        let item = paths
            .entry(b.template.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        item[b.verb.as_str().to_ascii_lowercase()] = operation(b);
    }
    // Details of errors are google.protobuf.Any in the proto3 JSON: `@type` and the fields.
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {"error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer", "description": "The HTTP status."},
                    "message": {"type": "string"},
                    "status": {"type": "string", "description": "The gRPC code's name (INVALID_ARGUMENT, …)."},
                    "details": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"@type": {"type": "string"}},
                        "additionalProperties": true,
                    }},
                },
            }},
        }),
    );
    let mut sorted: Vec<(String, Value)> = schemas.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "gridroute",
            "version": "v1",
            "description": "Incident routing for city grid governance: every RPC of gridroute.v1 over HTTP/JSON (proto3 JSON mapping with the protos' field names). Streams are Server-Sent Events. Generated from the protos.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": Map::from_iter(sorted),
        },
    })
}
