//! The JSON API: every MetricsService read that the protos annotate with
//! `google.api.http` (AIP-127), served on the web side as proto3 JSON, the way grpcurl
//! prints the same call. No maintained Rust crate transcodes HTTP/JSON to a tonic
//! service from those annotations (grpc-gateway and Envoy's transcoder are Go and C++),
//! so this module does, with prost-reflect for the descriptors and the JSON mapping. A
//! request's path and query become the request message, which goes through the gRPC
//! service in process, so that its checks, errors and limits are the API's own; an error
//! comes back as a `google.rpc.Status` in JSON under the HTTP code AIP-193 gives it.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions, Value,
};
use tonic::{Code, body::Body};
use tower_service::Service;

use crate::grpc::{ApiError, MetricsWithWatch, proto_json};

use super::{WebState, openapi};

/// The service whose annotated reads are served.
const SERVICE: &str = "runrate.v1.MetricsService";

/// The gRPC service the JSON API calls, with the gRPC side's message limits, and its
/// watch hub.
type Transcoded = MetricsWithWatch;

pub struct JsonApi {
    routes: Vec<Route>,
    service: Transcoded,
    status: MessageDescriptor,
    /// The OpenAPI document of the routes, as served.
    openapi: Bytes,
}

/// One annotated method: its HTTP path template, parsed.
struct Route {
    method: MethodDescriptor,
    grpc_path: String,
    segments: Vec<Segment>,
    /// The custom method suffix (`:compareProviders`), if any.
    verb: Option<String>,
    /// Field names of the template's variables, by index.
    variables: Vec<String>,
}

enum Segment {
    Literal(String),
    /// One path segment, bound to the variable at this index when inside `{…}`.
    Any(Option<usize>),
    /// A literal inside a variable's pattern, part of the variable's value.
    BoundLiteral(String, usize),
}

/// Why a template in the protos cannot be served; found at start-up.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP rule `{template}` of {method} cannot be served: {why}")]
pub struct RuleError {
    method: String,
    template: String,
    why: &'static str,
}

impl JsonApi {
    pub fn new(service: Transcoded) -> anyhow::Result<JsonApi> {
        let pool = proto_json::descriptor_pool()?;
        let rule_extension = pool
            .get_extension_by_name("google.api.http")
            .ok_or_else(|| anyhow::anyhow!("the protos do not define google.api.http"))?;
        let service_descriptor = pool
            .get_service_by_name(SERVICE)
            .ok_or_else(|| anyhow::anyhow!("the protos do not define {SERVICE}"))?;
        let mut routes = Vec::new();
        for method in service_descriptor.methods() {
            let options = method.options();
            if !options.has_extension(&rule_extension) {
                continue;
            }
            let rule = options.get_extension(&rule_extension);
            let Some(template) = rule
                .as_message()
                .and_then(|rule| rule.get_field_by_name("get"))
                .and_then(|get| get.as_str().map(str::to_owned))
                .filter(|get| !get.is_empty())
            else {
                continue;
            };
            routes.push(Route::parse(&method, &template)?);
        }
        // A custom method's path would also fit the plain template of its resource
        // (`periods/2026-q1:compareProviders` is one segment): custom methods first.
        routes.sort_by_key(|route| route.verb.is_none());
        let status = pool
            .get_message_by_name("google.rpc.Status")
            .ok_or_else(|| anyhow::anyhow!("the protos do not define google.rpc.Status"))?;
        let operations: Vec<openapi::Operation> = routes.iter().map(Route::operation).collect();
        let openapi = Bytes::from(openapi::document(&operations, &status).to_string());
        Ok(JsonApi {
            routes,
            service,
            status,
            openapi,
        })
    }

    async fn answer(
        &self,
        path: &str,
        query: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Response {
        let Some((route, bound)) = self
            .routes
            .iter()
            .find_map(|route| route.matches(path).map(|bound| (route, bound)))
        else {
            return self.error(Code::NotFound, format!("no API method is at `{path}`"));
        };
        let mut request = match route.request(bound, query) {
            Ok(request) => request,
            Err(invalid) => return self.status_response(&invalid.into()),
        };
        if route.method.is_server_streaming() {
            if let Some(id) = last_event_id
                && request
                    .get_field_by_name(RESUME_TOKEN)
                    .and_then(|token| token.as_str().map(str::is_empty))
                    == Some(true)
            {
                request.set_field_by_name(RESUME_TOKEN, Value::String(id.to_owned()));
            }
            return match self.open_stream(route, request).await {
                Ok(events) => events,
                Err(status) => self.status_response(&status),
            };
        }
        match self.call(route, request).await {
            Ok(answer) => json_response(StatusCode::OK, &answer),
            Err(status) => self.status_response(&status),
        }
    }

    /// Opens a server-streaming call and answers with its messages as server-sent
    /// events, read from the call only as the client takes them.
    async fn open_stream(
        &self,
        route: &Route,
        request: DynamicMessage,
    ) -> Result<Response, tonic::Status> {
        let (head, body) = self.send(route, request).await?.into_parts();
        if let Some(status) = tonic::Status::from_header_map(&head.headers)
            && status.code() != Code::Ok
        {
            return Err(status);
        }
        let events = EventStream {
            grpc: body,
            buffer: BytesMut::new(),
            output: route.method.output(),
            status: self.status.clone(),
            ended: false,
        };
        Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            axum::body::Body::new(events),
        )
            .into_response())
    }

    /// Sends the request through the gRPC service; the answer as it comes.
    async fn send(
        &self,
        route: &Route,
        request: DynamicMessage,
    ) -> Result<http::Response<Body>, tonic::Status> {
        let encoded = request.encode_to_vec();
        let mut framed = BytesMut::with_capacity(5 + encoded.len());
        framed.put_u8(0);
        framed.put_u32(encoded.len() as u32);
        framed.put_slice(&encoded);
        let call = http::Request::builder()
            .method(http::Method::POST)
            .uri(&route.grpc_path)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Body::new(Full::new(framed.freeze())))
            .map_err(|err| tonic::Status::internal(err.to_string()))?;
        let mut service = self.service.clone();
        let Ok(response) = service.call(call).await;
        Ok(response)
    }

    /// Sends the request through the gRPC service and reads its answer.
    async fn call(
        &self,
        route: &Route,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, tonic::Status> {
        let (head, body) = self.send(route, request).await?.into_parts();
        // A trailers-only answer carries its status in the headers.
        if let Some(status) = tonic::Status::from_header_map(&head.headers)
            && status.code() != Code::Ok
        {
            return Err(status);
        }
        let collected = body
            .collect()
            .await
            .map_err(|err| tonic::Status::internal(err.to_string()))?;
        if let Some(status) = collected
            .trailers()
            .and_then(tonic::Status::from_header_map)
            && status.code() != Code::Ok
        {
            return Err(status);
        }
        let mut data = collected.to_bytes();
        if data.len() < 5 || data[0] != 0 {
            return Err(tonic::Status::internal(
                "the answer is not one plain gRPC message",
            ));
        }
        data.advance(5);
        DynamicMessage::decode(route.method.output(), data)
            .map_err(|err| tonic::Status::internal(err.to_string()))
    }

    fn error(&self, code: Code, message: String) -> Response {
        self.status_response(&tonic::Status::new(code, message))
    }

    /// A status as the `google.rpc.Status` it carries in its details (with the error
    /// details the service attached), or one made of its code and message.
    fn status_response(&self, status: &tonic::Status) -> Response {
        let carried = Some(status.details())
            .filter(|details| !details.is_empty())
            .and_then(|details| DynamicMessage::decode(self.status.clone(), details).ok());
        let body = carried.unwrap_or_else(|| {
            let mut body = DynamicMessage::new(self.status.clone());
            body.set_field_by_name("code", Value::I32(status.code() as i32));
            body.set_field_by_name("message", Value::String(status.message().to_owned()));
            body
        });
        json_response(http_status(status.code()), &body)
    }
}

/// `GET /openapi.json`: the JSON API as an OpenAPI 3.0 document.
pub async fn openapi_document(State(state): State<WebState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.json_api.openapi.clone(),
    )
        .into_response()
}

pub async fn handle(
    State(state): State<WebState>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    state
        .json_api
        .answer(uri.path(), query.as_deref(), last_event_id)
        .await
}

/// The request field a browser's `Last-Event-ID` fills in.
const RESUME_TOKEN: &str = "resume_token";

/// A server-streaming call's gRPC answer as server-sent events: each message one event,
/// `data` its proto3 JSON and `id` its resume token; a status that ends the call in
/// error, an `error` event whose data is the `google.rpc.Status`. One message is held at
/// a time: the call is read only as the client reads.
struct EventStream {
    grpc: Body,
    /// Bytes of the call not yet made into events.
    buffer: BytesMut,
    output: MessageDescriptor,
    status: MessageDescriptor,
    ended: bool,
}

impl EventStream {
    /// The next whole gRPC message in the buffer, as its event.
    fn next_event(&mut self) -> Option<Result<Bytes, tonic::Status>> {
        let length = self.buffer.get(1..5)?;
        let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
        if self.buffer.len() < 5 + length {
            return None;
        }
        self.buffer.advance(5);
        let message = self.buffer.split_to(length);
        Some(
            DynamicMessage::decode(self.output.clone(), message.freeze())
                .map_err(|err| tonic::Status::internal(err.to_string()))
                .map(|message| {
                    let id = message
                        .get_field_by_name(RESUME_TOKEN)
                        .and_then(|token| token.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    server_sent_event(None, &id, &message)
                }),
        )
    }

    fn error_event(&self, status: &tonic::Status) -> Bytes {
        let mut body = DynamicMessage::new(self.status.clone());
        if let Ok(carried) = DynamicMessage::decode(self.status.clone(), status.details())
            && !status.details().is_empty()
        {
            body = carried;
        } else {
            body.set_field_by_name("code", Value::I32(status.code() as i32));
            body.set_field_by_name("message", Value::String(status.message().to_owned()));
        }
        server_sent_event(Some("error"), "", &body)
    }
}

/// One event: `event` (when not the default), `id` (when any), and the message's JSON as
/// its one `data` line (proto3 JSON, written compact, has no line breaks).
fn server_sent_event(event: Option<&str>, id: &str, message: &DynamicMessage) -> Bytes {
    let mut text = Vec::new();
    if let Some(event) = event {
        text.extend_from_slice(format!("event: {event}\n").as_bytes());
    }
    if !id.is_empty() {
        text.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    text.extend_from_slice(b"data: ");
    let mut serializer = serde_json::Serializer::new(&mut text);
    if message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .is_err()
    {
        text.extend_from_slice(b"{}");
    }
    text.extend_from_slice(b"\n\n");
    Bytes::from(text)
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.next_event() {
                Some(Ok(event)) => return Poll::Ready(Some(Ok(http_body::Frame::data(event)))),
                Some(Err(status)) => {
                    this.ended = true;
                    let event = this.error_event(&status);
                    return Poll::Ready(Some(Ok(http_body::Frame::data(event))));
                }
                None => {}
            }
            let ending = match std::task::ready!(Pin::new(&mut this.grpc).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.buffer.extend_from_slice(&data);
                        continue;
                    }
                    Err(frame) => frame
                        .into_trailers()
                        .ok()
                        .and_then(|trailers| tonic::Status::from_header_map(&trailers)),
                },
                Some(Err(status)) => Some(status),
                None => None,
            };
            this.ended = true;
            if let Some(status) = ending.filter(|status| status.code() != Code::Ok) {
                let event = this.error_event(&status);
                return Poll::Ready(Some(Ok(http_body::Frame::data(event))));
            }
        }
    }
}

fn json_response(status: StatusCode, message: &DynamicMessage) -> Response {
    let mut body = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut body);
    if let Err(err) = message.serialize_with_options(&mut serializer, &SerializeOptions::new()) {
        tracing::error!(error = %err, "cannot write an answer as JSON");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(body),
    )
        .into_response()
}

/// The HTTP code AIP-193 (google.rpc.Code) gives a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("a valid code"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Route {
    fn parse(method: &MethodDescriptor, template: &str) -> Result<Route, RuleError> {
        let fail = |why| RuleError {
            method: method.full_name().to_owned(),
            template: template.to_owned(),
            why,
        };
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| fail("it does not start with /"))?;
        let (rest, verb) = match rest.rsplit_once(':') {
            Some((path, verb)) if !verb.contains(['/', '}']) => (path, Some(verb.to_owned())),
            _ => (rest, None),
        };
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut remaining = rest;
        while !remaining.is_empty() {
            if let Some(inside) = remaining.strip_prefix('{') {
                let (variable, after) = inside
                    .split_once('}')
                    .ok_or_else(|| fail("a { is not closed"))?;
                let (field, pattern) = variable.split_once('=').unwrap_or((variable, "*"));
                if method.input().get_field_by_name(field).is_none() {
                    return Err(fail("a variable names no field of the request"));
                }
                let index = variables.len();
                variables.push(field.to_owned());
                for part in pattern.split('/') {
                    segments.push(match part {
                        "*" => Segment::Any(Some(index)),
                        "**" | "" => return Err(fail("only * and literals are supported")),
                        literal => Segment::BoundLiteral(literal.to_owned(), index),
                    });
                }
                remaining = after.strip_prefix('/').unwrap_or(after);
            } else {
                let (part, after) = remaining.split_once('/').unwrap_or((remaining, ""));
                segments.push(match part {
                    "*" => Segment::Any(None),
                    literal => Segment::Literal(literal.to_owned()),
                });
                remaining = after;
            }
        }
        Ok(Route {
            grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
            method: method.clone(),
            segments,
            verb,
            variables,
        })
    }

    /// The route in OpenAPI terms: each `*` of the template its own path parameter,
    /// named after the collection before it (`providers/{provider}`), and the request
    /// fields the query may set.
    fn operation(&self) -> openapi::Operation {
        let mut path = String::new();
        let mut path_parameters: Vec<openapi::PathParameter> = Vec::new();
        let mut previous = "";
        for segment in &self.segments {
            path.push('/');
            match segment {
                Segment::Literal(literal) | Segment::BoundLiteral(literal, _) => {
                    path.push_str(literal);
                    previous = literal;
                }
                Segment::Any(_) => {
                    let mut name = previous.strip_suffix('s').unwrap_or(previous).to_owned();
                    if name.is_empty() || path_parameters.iter().any(|known| known.name == name) {
                        name = format!("segment{}", path_parameters.len() + 1);
                    }
                    path.push_str(&format!("{{{name}}}"));
                    let wildcard = self.method.name() == "ListFacts";
                    path_parameters.push(openapi::PathParameter { name, wildcard });
                }
            }
        }
        if let Some(verb) = &self.verb {
            path.push(':');
            path.push_str(verb);
        }
        let query_fields = self
            .method
            .input()
            .fields()
            .filter(|field| !self.variables.iter().any(|bound| bound == field.name()))
            .filter(query_settable)
            .collect();
        openapi::Operation {
            method: self.method.clone(),
            path,
            path_parameters,
            query_fields,
        }
    }

    /// The variables' values when `path` fits this template.
    fn matches(&self, path: &str) -> Option<Vec<String>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut bound: Vec<Vec<String>> = vec![Vec::new(); self.variables.len()];
        for (part, segment) in parts.iter().zip(&self.segments) {
            let part = percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .ok()?
                .into_owned();
            match segment {
                Segment::Literal(literal) if *literal == part => {}
                Segment::BoundLiteral(literal, index) if *literal == part => {
                    bound[*index].push(part)
                }
                Segment::Any(variable) if !part.is_empty() && !part.contains('/') => {
                    if let Some(index) = variable {
                        bound[*index].push(part);
                    }
                }
                _ => return None,
            }
        }
        Some(bound.into_iter().map(|parts| parts.join("/")).collect())
    }

    /// The request message: the path's variables, then the query's fields by their
    /// proto or JSON names, each read as the proto3 JSON mapping reads a string.
    fn request(&self, bound: Vec<String>, query: Option<&str>) -> Result<DynamicMessage, ApiError> {
        let input = self.method.input();
        let mut fields = serde_json::Map::new();
        for (field, value) in self.variables.iter().zip(bound) {
            fields.insert(field.clone(), serde_json::Value::String(value));
        }
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let field = input
                .get_field_by_name(&key)
                .or_else(|| input.get_field_by_json_name(&key))
                .ok_or_else(|| {
                    ApiError::invalid(
                        &key,
                        format!("is not a parameter of {}", self.method.name()),
                    )
                })?;
            if self
                .variables
                .iter()
                .any(|variable| variable == field.name())
            {
                return Err(ApiError::invalid(&key, "is given by the path"));
            }
            let value = match field.kind() {
                Kind::Bool => match value.as_ref() {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    other => {
                        return Err(ApiError::invalid(
                            &key,
                            format!("is `{other}`, not true or false"),
                        ));
                    }
                },
                _ if !query_settable(&field) => {
                    return Err(ApiError::invalid(&key, "cannot be given in the query"));
                }
                _ => serde_json::Value::String(value.into_owned()),
            };
            if fields.insert(field.name().to_owned(), value).is_some() {
                return Err(ApiError::invalid(&key, "is given more than once"));
            }
        }
        DynamicMessage::deserialize_with_options(
            input,
            serde_json::Value::Object(fields),
            &DeserializeOptions::new(),
        )
        .map_err(|err| ApiError::invalid("query", format!("does not make a request: {err}")))
    }
}

/// Whether the query may set a request field: any single value but a message, except a
/// timestamp (as RFC 3339 text).
fn query_settable(field: &FieldDescriptor) -> bool {
    !field.is_list()
        && !field.is_map()
        && match field.kind() {
            Kind::Message(message) => message.full_name() == "google.protobuf.Timestamp",
            _ => true,
        }
}
