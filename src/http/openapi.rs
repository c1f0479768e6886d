//! The JSON API described as an OpenAPI 3.0 document, made at start-up from the same
//! descriptors and `google.api.http` rules the API is served from, so the two cannot
//! drift apart. Schemas follow the proto3 JSON mapping as the API writes it: lowerCamel
//! field names, 64-bit integers as strings, enums by name, well-known types as their JSON
//! forms; since proto3 JSON leaves out fields at their defaults, no field is required.
//!
//! The maintained generators do not fit: gnostic's and grpc-gateway's are Go protoc
//! plugins, `tonic-rest-openapi` rewrites gnostic's output, and `structured-proxy` is a
//! whole gateway of its own.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Value, json};

use crate::domain::{Quarter, ResourceId};

/// The status every error answer carries.
const STATUS: &str = "google.rpc.Status";

/// One served method: where, and which of its request's fields the query may set.
pub struct Operation {
    pub method: MethodDescriptor,
    /// The OpenAPI path, each bound segment a parameter: `/v1/providers/{provider}`.
    pub path: String,
    pub path_parameters: Vec<PathParameter>,
    pub query_fields: Vec<FieldDescriptor>,
}

pub struct PathParameter {
    /// Named after its collection: `provider`, `period`, …
    pub name: String,
    /// Whether `-` (every one) may stand for it (ListFacts' parent, AIP-159).
    pub wildcard: bool,
}

/// The whole document.
pub fn document(operations: &[Operation], status: &MessageDescriptor) -> Value {
    let mut schemas = BTreeMap::new();
    add_schema(status, &mut schemas);
    let mut paths = serde_json::Map::new();
    for operation in operations {
        add_schema(&operation.method.output(), &mut schemas);
        let mut parameters: Vec<Value> = operation
            .path_parameters
            .iter()
            .map(|parameter| {
                json!({
                    "name": parameter.name, "in": "path", "required": true,
                    "schema": { "type": "string", "pattern": path_pattern(parameter) },
                })
            })
            .collect();
        parameters.extend(operation.query_fields.iter().map(|field| {
            let mut schema = field_schema(field, &mut schemas);
            // Zero asks for the default; more than the most is cut to it.
            if field.name() == "page_size" {
                schema["minimum"] = json!(0);
            }
            json!({ "name": field.name(), "in": "query", "schema": schema })
        }));
        let answer = if operation.method.is_server_streaming() {
            json!({
                "description": format!(
                    "Server-sent events: each event's `data` is a {} in JSON, its `id` the resume token; an `error` event carries a google.rpc.Status",
                    operation.method.output().full_name()
                ),
                "content": { "text/event-stream": { "schema": { "type": "string" } } },
            })
        } else {
            json!({
                "description": "OK",
                "content": { "application/json": { "schema": reference(operation.method.output().full_name()) } },
            })
        };
        let item = json!({
            "get": {
                "operationId": operation.method.name(),
                "tags": [operation.method.parent_service().name()],
                "parameters": parameters,
                "responses": {
                    "200": answer,
                    "default": {
                        "description": "An error, as a google.rpc.Status with its details",
                        "content": { "application/json": { "schema": reference(STATUS) } },
                    },
                },
            }
        });
        paths.insert(operation.path.clone(), item);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "runrate JSON API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The MetricsService reads of runrate.v1 as JSON, as grpcurl prints the same gRPC calls.",
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// What a path parameter may be: as the gRPC side parses resource names
/// (`grpc::from_proto`).
fn path_pattern(parameter: &PathParameter) -> String {
    let id = |pattern: &str| match parameter.wildcard {
        true => format!("^(-|{})$", &pattern[1..pattern.len() - 1]),
        false => pattern.to_owned(),
    };
    match parameter.name.as_str() {
        "provider" | "metric" | "fact" => id(ResourceId::PATTERN),
        "period" => id(Quarter::PATTERN),
        // Positive numbers, digits only, no leading zero.
        "load" => "^[1-9][0-9]{0,17}$".to_owned(),
        "revision" => "^([1-9][0-9]{0,17}|first|latest)$".to_owned(),
        _ => "^[^/]+$".to_owned(),
    }
}

fn reference(full_name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{full_name}") })
}

/// Adds the schema of `message`, and of every message it holds, unless known.
fn add_schema(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) {
    if schemas.contains_key(message.full_name()) || well_known(message).is_some() {
        return;
    }
    // Taken first, so that a message holding itself ends the recursion.
    schemas.insert(message.full_name().to_owned(), Value::Null);
    let properties: serde_json::Map<String, Value> = message
        .fields()
        .map(|field| (field.json_name().to_owned(), field_schema(&field, schemas)))
        .collect();
    schemas.insert(
        message.full_name().to_owned(),
        json!({ "type": "object", "properties": properties }),
    );
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({ "type": "object" });
        };
        let value = entry.map_entry_value_field();
        return json!({ "type": "object", "additionalProperties": kind_schema(&value.kind(), schemas) });
    }
    let single = kind_schema(&field.kind(), schemas);
    if field.is_list() {
        json!({ "type": "array", "items": single })
    } else {
        single
    }
}

fn kind_schema(kind: &Kind, schemas: &mut BTreeMap<String, Value>) -> Value {
    match kind {
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0 })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
        Kind::Float | Kind::Double => json!({ "type": "number" }),
        Kind::Enum(descriptor) => {
            let names: Vec<String> = descriptor
                .values()
                .map(|value| value.name().to_owned())
                .collect();
            json!({ "type": "string", "enum": names })
        }
        Kind::Message(message) => {
            if let Some(schema) = well_known(message) {
                return schema;
            }
            add_schema(message, schemas);
            reference(message.full_name())
        }
    }
}

/// The JSON forms of the well-known types that have their own.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" | "google.protobuf.FieldMask" => json!({ "type": "string" }),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        // An Any holds its type's fields beside `@type`.
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": { "@type": { "type": "string" } },
            "additionalProperties": true,
        }),
        "google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array", "items": {} }),
        "google.protobuf.StringValue" => json!({ "type": "string" }),
        "google.protobuf.BoolValue" => json!({ "type": "boolean" }),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({ "type": "integer" })
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => json!({ "type": "string" }),
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({ "type": "number" }),
        "google.protobuf.BytesValue" => json!({ "type": "string", "format": "byte" }),
        _ => return None,
    })
}
