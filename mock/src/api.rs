//! The `/api` request path: rate limit, fault knobs, authentication, scope check, then the
//! resource handlers, with answers in JSON or XML as the client's `Accept` asks.

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::{
    bump, codec, data, json_response, scopes, stream, xml_response, MockBody, Shared, MAX_JSON_BODY,
};

/// Response format and error key of one API request.
struct Format {
    json: bool,
    /// The `<resource>` in `{"errors": {"<resource>": [...]}}`.
    key: String,
}

impl Format {
    fn of(headers: &HeaderMap, segments: &[&str]) -> Self {
        let json = headers.get_all(header::ACCEPT).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("application/json"))
        });
        Format {
            json,
            key: segments.first().copied().unwrap_or("api").to_owned(),
        }
    }

    fn error(&self, status: StatusCode, message: &str) -> Response<MockBody> {
        if self.json {
            json_response(
                status,
                &json!({ "errors": { self.key.clone(): [message] } }),
            )
        } else {
            xml_response(status, codec::xml_errors(message))
        }
    }

    fn one(&self, status: StatusCode, res: &scopes::Resource, row: &Value) -> Response<MockBody> {
        if self.json {
            json_response(status, row)
        } else {
            xml_response(status, codec::xml_one(res.xml_singular, row))
        }
    }

    fn list(&self, res: &scopes::Resource, rows: &[Value]) -> Response<MockBody> {
        if self.json {
            json_response(StatusCode::OK, &Value::Array(rows.to_vec()))
        } else if rows.is_empty() {
            // Coupa's documented XML/JSON asymmetry for an empty search (docs/coupa-api.md §1).
            self.error(
                StatusCode::NOT_FOUND,
                "No results match your search criteria.",
            )
        } else {
            xml_response(
                StatusCode::OK,
                codec::xml_list(res.xml_plural, res.xml_singular, rows),
            )
        }
    }
}

pub(super) async fn api(shared: &Shared, req: Request<Incoming>) -> Response<MockBody> {
    bump(&shared.counters.api_requests);
    shared.record(&req);
    let (parts, body) = req.into_parts();
    let segments: Vec<&str> = parts.uri.path()["/api".len()..]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let fmt = Format::of(&parts.headers, &segments);

    if !shared.rate_limit_allows() {
        bump(&shared.counters.rate_limited);
        let mut resp = fmt.error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        if let Some(secs) = shared.faults.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }
    let delay = shared.faults.api_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = shared.faults.api_failure() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = fmt.error(status, &format!("Injected failure ({})", status.as_u16()));
        let throttling =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        if let (true, Some(secs)) = (throttling, shared.faults.retry_after()) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }
    let Some(grant) = shared.authenticate(&parts.headers) else {
        bump(&shared.counters.unauthorized);
        return fmt.error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: missing, invalid, expired or revoked API key or OAuth token",
        );
    };
    let Some(accepted) = scopes::accepted_scopes(&parts.method, &segments) else {
        return fmt.error(StatusCode::NOT_FOUND, "Unknown resource");
    };
    if !grant.allows_any(&accepted) {
        bump(&shared.counters.forbidden);
        return fmt.error(
            StatusCode::FORBIDDEN,
            &format!("Forbidden: the access token lacks scope {}", accepted[0]),
        );
    }
    route(shared, &parts, &segments, body, &fmt).await
}

/// The resource handlers, reached only by authenticated, authorised requests.
async fn route(
    shared: &Shared,
    parts: &http::request::Parts,
    segments: &[&str],
    body: Incoming,
    fmt: &Format,
) -> Response<MockBody> {
    let m = &parts.method;
    let read = *m == Method::GET || *m == Method::HEAD;
    let not_found = || fmt.error(StatusCode::NOT_FOUND, "Record not found");
    let id_of = |s: &str| s.parse::<u64>().ok();

    // `accepted_scopes` answered `Some`, so there is at least one segment.
    if segments[0] == "attachments" {
        return match (segments, read) {
            ([_, id], true) if id_of(id).is_some() => {
                stream::download(shared, *m == Method::HEAD).await
            }
            _ => not_found(),
        };
    }
    // `accepted_scopes` already proved the resource exists.
    let Some(res) = scopes::resource(segments[0]) else {
        return not_found();
    };
    match segments {
        [_] if read => {
            let q = data::ListQuery::parse(parts.uri.query());
            fmt.list(res, &shared.store.list(res.name, &q))
        }
        [_] if *m == Method::POST => match read_fields(parts, body, fmt).await {
            Ok(Some(fields)) => fmt.one(
                StatusCode::CREATED,
                res,
                &shared.store.create(res.name, fields, true),
            ),
            // Crude XML support: the mock cannot map XML onto fields, so it keeps just an id.
            Ok(None) => fmt.one(
                StatusCode::CREATED,
                res,
                &shared.store.create(res.name, Map::new(), false),
            ),
            Err(resp) => resp,
        },
        [_] => fmt.error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        [_, id] => {
            let Some(id) = id_of(id) else {
                return not_found();
            };
            if read {
                return shared
                    .store
                    .get(res.name, id)
                    .map_or_else(not_found, |row| fmt.one(StatusCode::OK, res, &row));
            }
            match *m {
                Method::PUT | Method::PATCH => {
                    let fields = match read_fields(parts, body, fmt).await {
                        Ok(fields) => fields.unwrap_or_default(),
                        Err(resp) => return resp,
                    };
                    let exported = codec::parse_pairs(parts.uri.query().unwrap_or(""))
                        .into_iter()
                        .find(|(k, _)| k == "exported")
                        .map(|(_, v)| v.eq_ignore_ascii_case("true"));
                    shared
                        .store
                        .update(res.name, id, fields, exported)
                        .map_or_else(not_found, |row| fmt.one(StatusCode::OK, res, &row))
                }
                Method::DELETE => shared
                    .store
                    .delete(res.name, id)
                    .map_or_else(not_found, |row| fmt.one(StatusCode::OK, res, &row)),
                _ => fmt.error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            }
        }
        [_, id, "attachments"] => {
            let Some(id) = id_of(id).filter(|id| shared.store.get(res.name, *id).is_some()) else {
                return not_found();
            };
            match *m {
                Method::POST => stream::upload_attachment(shared, res.name, id, body).await,
                Method::GET | Method::HEAD => fmt.list(
                    &scopes::ATTACHMENTS,
                    &shared.attachments.of_parent(res.name, id),
                ),
                _ => fmt.error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            }
        }
        ["invoices", id, "image_scan"] if *m == Method::PUT => {
            match id_of(id).filter(|id| shared.store.get("invoices", *id).is_some()) {
                Some(id) => stream::upload_image_scan(shared, id, body).await,
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// Reads a small JSON body into fields. `Ok(None)` for an XML body (crude support: the caller
/// keeps only an id); an empty body is an empty object. Errors are ready-made 400/413 answers.
async fn read_fields(
    parts: &http::request::Parts,
    body: Incoming,
    fmt: &Format,
) -> Result<Option<Map<String, Value>>, Response<MockBody>> {
    let bytes = match Limited::new(body, MAX_JSON_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(fmt.error(
                StatusCode::BAD_REQUEST,
                &format!("Could not read the request body: {e}"),
            ))
        }
    };
    let is_xml = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("xml"))
        || bytes.trim_ascii_start().starts_with(b"<");
    if is_xml {
        return Ok(None);
    }
    if bytes.trim_ascii().is_empty() {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(fmt.error(StatusCode::BAD_REQUEST, "Expected a JSON object")),
        Err(e) => Err(fmt.error(StatusCode::BAD_REQUEST, &format!("Invalid JSON: {e}"))),
    }
}
