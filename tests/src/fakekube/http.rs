//! HTTP serving and routing of the fake API.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::kubelet::{self, ProcessSpec, Stop, MAX_GRACE_SECS};
use super::store::{ns_name, ApiError, Kind, WatchEvent};
use super::stream::{self, SessionKind, StreamOpts};
use super::{lock, name_suffix, now_rfc3339, Shared};

type Body = BoxBody<Bytes, Infallible>;
type Resp = Response<Body>;

/// A response body fed by a channel (watches, followed logs): chunked on the wire.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Accepts connections forever.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn full(code: u16, content_type: &str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn json_resp(code: u16, v: &Value) -> Resp {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_resp(e: &ApiError) -> Resp {
    json_resp(e.code, &e.status())
}

fn streaming(content_type: &str, rx: mpsc::Receiver<Bytes>) -> Resp {
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed request.
struct Req {
    method: Method,
    segs: Vec<String>,
    query: Vec<(String, String)>,
    content_type: String,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn q_all(&self, k: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1" | "True"))
    }
}

fn parse_head(method: Method, uri: &hyper::Uri) -> Req {
    let segs = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let query = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect();
    Req {
        method,
        segs,
        query,
        content_type: String::new(),
        body: Bytes::new(),
    }
}

async fn handle(shared: Arc<Shared>, mut req: Request<Incoming>) -> Resp {
    let accept = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut r = parse_head(req.method().clone(), req.uri());
    r.content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if std::env::var_os("FAKEKUBE_TRACE").is_some() {
        eprintln!("fakekube: {} {} (accept {accept})", req.method(), req.uri());
    }
    let segs: Vec<&str> = r.segs.iter().map(String::as_str).collect();
    if let ["api", "v1", "namespaces", _, "pods", _, sub @ ("attach" | "exec")] = segs.as_slice() {
        let kind = if *sub == "exec" {
            SessionKind::Exec
        } else {
            SessionKind::Attach
        };
        return match upgrade(&shared, &r, kind, &mut req) {
            Ok(resp) => resp,
            Err(e) => error_resp(&e),
        };
    }
    match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => r.body = b.to_bytes(),
        Err(e) => {
            return error_resp(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )))
        }
    }
    match route(&shared, &r).await {
        Ok(resp) => resp,
        Err(e) => error_resp(&e),
    }
}

fn not_found_path() -> ApiError {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details = Some(json!({}));
    e
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

async fn route(shared: &Arc<Shared>, r: &Req) -> Result<Resp, ApiError> {
    let segs: Vec<&str> = r.segs.iter().map(String::as_str).collect();
    let get = r.method == Method::GET;
    let post = r.method == Method::POST;
    let del = r.method == Method::DELETE;
    let patch = r.method == Method::PATCH;
    match segs.as_slice() {
        ["version"] if get => Ok(json_resp(200, &version())),
        ["healthz" | "livez" | "readyz"] if get => Ok(full(200, "text/plain", b"ok".to_vec())),
        ["api"] if get => Ok(json_resp(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", shared.port)}],
            }),
        )),
        ["apis"] if get => Ok(json_resp(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        )),
        ["api", "v1"] if get => Ok(json_resp(200, &resource_list())),
        ["api", "v1", "namespaces"] if get => list(shared, r, Kind::Namespace, None),
        ["api", "v1", "namespaces"] if post => create_namespace(shared, r),
        ["api", "v1", "namespaces", ns] if get => get_one(shared, Kind::Namespace, "", ns),
        ["api", "v1", "namespaces", ns] if patch => {
            patch_object(shared, r, Kind::Namespace, "", ns)
        }
        ["api", "v1", "namespaces", ns, "pods", name] if patch => {
            patch_object(shared, r, Kind::Pod, ns, name)
        }
        ["api", "v1", "namespaces", ns, "pods"] if get => list(shared, r, Kind::Pod, Some(ns)),
        ["api", "v1", "namespaces", ns, "pods"] if post => create_pod(shared, r, ns),
        ["api", "v1", "namespaces", ns, "pods", name] if get => {
            get_one(shared, Kind::Pod, ns, name)
        }
        ["api", "v1", "namespaces", ns, "pods", name, "status"] if get => {
            get_one(shared, Kind::Pod, ns, name)
        }
        ["api", "v1", "namespaces", ns, "pods", name] if del => delete_pod(shared, r, ns, name),
        ["api", "v1", "namespaces", ns, "pods", name, "log"] if get => pod_log(shared, r, ns, name),
        ["api", "v1", "namespaces", ns, "events"] if get => list(shared, r, Kind::Event, Some(ns)),
        ["api", "v1", "namespaces", ns, "events", name] if get => {
            get_one(shared, Kind::Event, ns, name)
        }
        ["api", "v1", "pods"] if get => list(shared, r, Kind::Pod, None),
        ["api", "v1", "events"] if get => list(shared, r, Kind::Event, None),
        ["api", "v1", "nodes"] if get => list(shared, r, Kind::Node, None),
        ["api", "v1", "nodes", name] if get => get_one(shared, Kind::Node, "", name),
        ["api", "v1", "namespaces"]
        | ["api", "v1", "namespaces", _]
        | ["api", "v1", "namespaces", _, "pods" | "events"]
        | ["api", "v1", "namespaces", _, "pods" | "events", _]
        | ["api", "v1", "namespaces", _, "pods", _, "status" | "log"]
        | ["api", "v1", "pods" | "events" | "nodes"]
        | ["api", "v1", "nodes", _] => Err(method_not_allowed()),
        _ => Err(not_found_path()),
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn resource_list() -> Value {
    let all = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event", "verbs": all, "shortNames": ["ev"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["ns"]},
            {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node", "verbs": all, "shortNames": ["no"]},
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": all,
             "shortNames": ["po"], "categories": ["all"]},
            {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
            {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
            {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
            {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get", "patch", "update"]},
        ],
    })
}

// ---------------------------------------------------------------------------------------
// Selectors.

enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<(String, bool, String)>,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let s = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(s.split(',').map(|v| v.trim().to_string()).collect())
}

fn fields_for(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pod => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Kind::Event => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Kind::Node => &["metadata.name", "spec.unschedulable"],
        Kind::Namespace => &["metadata.name", "status.phase"],
    }
}

impl Selectors {
    fn parse(kind: Kind, labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        let mut sel = Selectors {
            labels: Vec::new(),
            fields: Vec::new(),
        };
        for term in split_top(labels.unwrap_or("")) {
            let bad = || {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector: {term:?}"
                ))
            };
            let req = if let Some((k, v)) = term.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), parse_set(v).ok_or_else(bad)?)
            } else if let Some((k, v)) = term.split_once(" in ") {
                LabelReq::In(k.trim().into(), parse_set(v).ok_or_else(bad)?)
            } else if let Some(k) = term.strip_prefix('!') {
                LabelReq::NotExists(k.trim().into())
            } else if term
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelReq::Exists(term.clone())
            } else {
                return Err(bad());
            };
            sel.labels.push(req);
        }
        for term in split_top(fields.unwrap_or("")) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                )));
            };
            let k = k.trim();
            if !fields_for(kind).contains(&k) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            sel.fields.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(sel)
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str().map(str::to_string);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k).as_deref() == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k).as_deref() != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.contains(&l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| !vs.contains(&l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(k, eq, v)| {
                let path = if k == "source" {
                    "source.component"
                } else {
                    k.as_str()
                };
                let mut cur = obj;
                for p in path.split('.') {
                    cur = &cur[p];
                }
                let actual = match cur {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Null => {
                        if k == "spec.unschedulable" {
                            "false".into()
                        } else {
                            String::new()
                        }
                    }
                    other => other.to_string(),
                };
                (actual == *v) == *eq
            })
    }
}

// ---------------------------------------------------------------------------------------
// Reads.

fn list_kind(kind: Kind) -> String {
    format!("{}List", kind.kind())
}

fn get_one(shared: &Arc<Shared>, kind: Kind, ns: &str, name: &str) -> Result<Resp, ApiError> {
    let obj = shared
        .store
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?;
    Ok(json_resp(200, &obj))
}

fn list(shared: &Arc<Shared>, r: &Req, kind: Kind, ns: Option<&str>) -> Result<Resp, ApiError> {
    let sel = Selectors::parse(kind, r.q("labelSelector"), r.q("fieldSelector"))?;
    if r.flag("watch") {
        return watch(shared, r, kind, ns, sel);
    }
    let (items, rv) = shared.store.list(kind, ns);
    let items: Vec<Value> = items.into_iter().filter(|o| sel.matches(o)).collect();
    Ok(json_resp(
        200,
        &json!({
            "kind": list_kind(kind),
            "apiVersion": "v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    ))
}

fn watch(
    shared: &Arc<Shared>,
    r: &Req,
    kind: Kind,
    ns: Option<&str>,
    sel: Selectors,
) -> Result<Resp, ApiError> {
    let send_initial = r.flag("sendInitialEvents");
    let since = match r.q("resourceVersion") {
        _ if send_initial => None,
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {s:?}: not a number"))
        })?),
    };
    let timeout = r.q("timeoutSeconds").and_then(|s| s.parse::<u64>().ok());
    let ns = ns.map(str::to_string);
    let (first, rv_now, mut brx) = shared.store.watch(kind, since);
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let line = move |etype: &str, obj: &Value| -> Bytes {
        let mut b = serde_json::to_vec(&json!({"type": etype, "object": obj})).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    };
    let wanted = move |obj: &Value| {
        let (ons, _) = ns_name(obj);
        ns.as_deref().is_none_or(|n| !kind.namespaced() || n == ons) && sel.matches(obj)
    };
    // What a watcher with selectors sees of a change: an object that starts matching is
    // ADDED, one that stops matching is DELETED, as the apiserver's watch cache does it.
    let classify = move |ev: &WatchEvent| -> Option<&'static str> {
        let now = wanted(&ev.object);
        match (ev.etype, &ev.prev) {
            ("MODIFIED", Some(prev)) => match (wanted(prev), now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
            (etype, _) => now.then_some(etype),
        }
    };
    tokio::spawn(async move {
        let deadline = async {
            match timeout {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        for ev in first {
            let Some(etype) = classify(&ev) else { continue };
            if tx.send(line(etype, &ev.object)).await.is_err() {
                return;
            }
        }
        if send_initial {
            let bookmark = json!({
                "kind": kind.kind(),
                "apiVersion": "v1",
                "metadata": {
                    "resourceVersion": rv_now.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            });
            let mut b = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": bookmark}))
                .unwrap_or_default();
            b.push(b'\n');
            if tx.send(Bytes::from(b)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = &mut deadline => return,
                ev = brx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= rv_now || ev.kind != kind {
                            continue;
                        }
                        let Some(etype) = classify(&ev) else { continue };
                        if tx.send(line(etype, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                    // Too slow a reader: end the watch; the client re-lists, as with a real
                    // apiserver's "too old resource version".
                    Err(_) => return,
                },
            }
        }
    });
    Ok(streaming("application/json", rx))
}

// ---------------------------------------------------------------------------------------
// Writes.

fn parse_body(r: &Req) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json: {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not a JSON object",
        ));
    }
    Ok(v)
}

fn dry_run(r: &Req) -> bool {
    r.q("dryRun") == Some("All")
}

fn create_namespace(shared: &Arc<Shared>, r: &Req) -> Result<Resp, ApiError> {
    let mut obj = parse_body(r)?;
    if obj["kind"].is_string() && obj["kind"] != "Namespace" {
        return Err(ApiError::bad_request(format!(
            "expected kind Namespace, got {}",
            obj["kind"]
        )));
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    obj["status"] = json!({"phase": "Active"});
    obj["spec"] = json!({"finalizers": ["kubernetes"]});
    if dry_run(r) {
        return Ok(json_resp(201, &obj));
    }
    let created = shared.store.create(Kind::Namespace, obj)?;
    Ok(json_resp(201, &created))
}

fn invalid(name: &str, detail: &str) -> ApiError {
    let mut e = ApiError::new(422, "Invalid", format!("Pod {name:?} is invalid: {detail}"));
    e.details = Some(json!({"name": name, "kind": "Pod"}));
    e
}

fn create_pod(shared: &Arc<Shared>, r: &Req, ns: &str) -> Result<Resp, ApiError> {
    let mut pod = parse_body(r)?;
    if pod["kind"].is_string() && pod["kind"] != "Pod" {
        return Err(ApiError::bad_request(format!(
            "expected kind Pod, got {}",
            pod["kind"]
        )));
    }
    if !pod["metadata"].is_object() {
        pod["metadata"] = json!({});
    }
    match pod["metadata"]["namespace"].as_str() {
        Some(n) if !n.is_empty() && n != ns => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => pod["metadata"]["namespace"] = json!(ns),
    }
    shared
        .store
        .get(Kind::Namespace, "", ns)
        .ok_or_else(|| ApiError::not_found(Kind::Namespace, ns))?;
    let mut name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        if let Some(g) = pod["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
        {
            name = format!("{g}{}", name_suffix());
            pod["metadata"]["name"] = json!(name);
        }
    }
    if name.is_empty() {
        return Err(invalid(
            "",
            "metadata.name: Required value: name or generateName is required",
        ));
    }
    let Some(containers) = pod["spec"]["containers"]
        .as_array_mut()
        .filter(|c| !c.is_empty())
    else {
        return Err(invalid(&name, "spec.containers: Required value"));
    };
    for (i, c) in containers.iter_mut().enumerate() {
        if c["name"].as_str().is_none_or(str::is_empty) {
            return Err(invalid(
                &name,
                &format!("spec.containers[{i}].name: Required value"),
            ));
        }
        let Some(image) = c["image"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
        else {
            return Err(invalid(
                &name,
                &format!("spec.containers[{i}].image: Required value"),
            ));
        };
        if c["imagePullPolicy"].is_null() {
            let latest =
                image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':');
            c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
        }
        if c["terminationMessagePath"].is_null() {
            c["terminationMessagePath"] = json!("/dev/termination-log");
            c["terminationMessagePolicy"] = json!("File");
        }
    }
    let spec = &mut pod["spec"];
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("serviceAccountName", json!("default")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
        ("priority", json!(0)),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    pod["status"] = json!({"phase": "Pending", "qosClass": kubelet::qos_class(&pod)});
    if let Some(m) = pod["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("uid");
        m.remove("creationTimestamp");
        m.remove("deletionTimestamp");
    }
    if dry_run(r) {
        return Ok(json_resp(201, &pod));
    }
    let created = shared.store.create(Kind::Pod, pod)?;
    kubelet::start_pod(shared, &created);
    Ok(json_resp(201, &created))
}

fn delete_pod(shared: &Arc<Shared>, r: &Req, ns: &str, name: &str) -> Result<Resp, ApiError> {
    let body_grace = if r.body.is_empty() {
        None
    } else {
        let opts = parse_body(r)?;
        opts["gracePeriodSeconds"].as_i64()
    };
    let query_grace = match r.q("gracePeriodSeconds") {
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {s:?}")))?,
        ),
        None => None,
    };
    let pod = shared
        .store
        .get(Kind::Pod, ns, name)
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let grace = query_grace
        .or(body_grace)
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0) as u64;
    if dry_run(r) || pod["metadata"]["deletionTimestamp"].is_string() {
        return Ok(json_resp(200, &pod));
    }
    let updated = shared
        .store
        .update(Kind::Pod, ns, name, |p| {
            p["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        })
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let key = (ns.to_string(), name.to_string());
    let r = kubelet::PodRef::of(&updated);
    let handed = lock(&shared.stops).get(&key).is_some_and(|(uid, tx)| {
        *uid == r.uid
            && tx
                .send(Some(Stop::Delete(grace.min(MAX_GRACE_SECS))))
                .is_ok()
    });
    if handed {
        return Ok(json_resp(200, &updated));
    }
    kubelet::finish_delete(shared, &r);
    Ok(json_resp(200, &updated))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (_, Some(p)) => {
            *target = json!({});
            merge_patch(target, &Value::Object(p.clone()));
        }
        _ => *target = patch.clone(),
    }
}

/// PATCH with a merge patch (`application/merge-patch+json`) or a strategic merge patch
/// (`application/strategic-merge-patch+json`, applied as a merge patch: lists are replaced,
/// not merged by key). Identity fields cannot change; a pod's spec is immutable but for
/// `activeDeadlineSeconds`, and its status is not changed through the main resource.
fn patch_object(
    shared: &Arc<Shared>,
    r: &Req,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Resp, ApiError> {
    let media = r.content_type.split(';').next().unwrap_or("").trim();
    if media != "application/merge-patch+json" && media != "application/strategic-merge-patch+json"
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (fakekube); got {media:?}"),
        ));
    }
    let patch = parse_body(r)?;
    let current = shared
        .store
        .get(kind, ns, name)
        .ok_or_else(|| ApiError::not_found(kind, name))?;
    let mut next = current.clone();
    merge_patch(&mut next, &patch);
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "deletionTimestamp",
    ] {
        next["metadata"][k] = current["metadata"][k].clone();
    }
    if let Some(m) = next["metadata"].as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    next["kind"] = current["kind"].clone();
    next["apiVersion"] = current["apiVersion"].clone();
    next["status"] = current["status"].clone();
    if kind == Kind::Pod {
        let mut a = current["spec"].clone();
        let mut b = next["spec"].clone();
        for s in [&mut a, &mut b] {
            if let Some(o) = s.as_object_mut() {
                o.remove("activeDeadlineSeconds");
            }
        }
        if a != b {
            let mut e = ApiError::new(
                422,
                "Invalid",
                format!("Pod {name:?} is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"),
            );
            e.details = Some(json!({"name": name, "kind": "Pod"}));
            return Err(e);
        }
    }
    if dry_run(r) {
        return Ok(json_resp(200, &next));
    }
    let updated = shared
        .store
        .update_if(
            kind,
            ns,
            name,
            |o| o["metadata"]["uid"] == current["metadata"]["uid"],
            |o| *o = next,
        )
        .ok_or_else(|| ApiError::not_found(kind, name))?;
    Ok(json_resp(200, &updated))
}

// ---------------------------------------------------------------------------------------
// Logs, attach, exec.

/// The container a subresource request names (`container=`), or the only/default one.
fn pick_container(pod: &Value, requested: Option<&str>, name: &str) -> Result<String, ApiError> {
    let names: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            if let Some(d) =
                pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str()
            {
                if names.iter().any(|n| n == d) {
                    return Ok(d.to_string());
                }
            }
            match names.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                ))),
            }
        }
    }
}

fn container_rt(
    shared: &Shared,
    ns: &str,
    name: &str,
    c: &str,
) -> Option<Arc<kubelet::ContainerRt>> {
    lock(&shared.containers)
        .get(&(ns.to_string(), name.to_string()))?
        .iter()
        .find(|(n, _)| n == c)
        .map(|(_, rt)| rt.clone())
}

fn waiting_error(pod: &Value, c: &str, name: &str) -> ApiError {
    let reason = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == c)
        .and_then(|s| s["state"]["waiting"]["reason"].as_str().map(str::to_string))
        .unwrap_or_else(|| "ContainerCreating".into());
    let why = match reason.as_str() {
        "ErrImagePull" | "ImagePullBackOff" => "trying and failing to pull image",
        _ => reason.as_str(),
    };
    ApiError::bad_request(format!(
        "container {c:?} in pod {name:?} is waiting to start: {why}"
    ))
}

fn tail(log: &[u8], lines: Option<usize>) -> Vec<u8> {
    let Some(n) = lines else { return log.to_vec() };
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let mut start = body.len();
    let mut seen = 0;
    while start > 0 {
        if body[start - 1] == b'\n' {
            seen += 1;
            if seen == n {
                break;
            }
        }
        start -= 1;
    }
    if n == 0 {
        return Vec::new();
    }
    log[start..].to_vec()
}

fn pod_log(shared: &Arc<Shared>, r: &Req, ns: &str, name: &str) -> Result<Resp, ApiError> {
    let pod = shared
        .store
        .get(Kind::Pod, ns, name)
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let c = pick_container(&pod, r.q("container"), name)?;
    let tail_lines = match r.q("tailLines") {
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid tailLines {s:?}")))?,
        ),
        None => None,
    };
    let Some(rt) = container_rt(shared, ns, name, &c) else {
        if lock(&shared.inserted).contains(&(ns.to_string(), name.to_string())) {
            return Ok(full(200, "text/plain", Vec::new()));
        }
        return Err(waiting_error(&pod, &c, name));
    };
    let snapshot = tail(&lock(&rt.log), tail_lines);
    if !r.flag("follow") {
        return Ok(full(200, "text/plain", snapshot));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut offset = lock(&rt.log).len();
    tokio::spawn(async move {
        if !snapshot.is_empty() && tx.send(Bytes::from(snapshot)).await.is_err() {
            return;
        }
        loop {
            let done = rt.exit_code().is_some();
            let chunk = {
                let log = lock(&rt.log);
                let c = log[offset.min(log.len())..].to_vec();
                offset = log.len();
                c
            };
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if done {
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    Ok(streaming("text/plain", rx))
}

/// Validates an attach/exec request, answers `101 Switching Protocols` and runs the session
/// on the upgraded connection.
fn upgrade(
    shared: &Arc<Shared>,
    r: &Req,
    kind: SessionKind,
    req: &mut Request<Incoming>,
) -> Result<Resp, ApiError> {
    if r.method != Method::GET && r.method != Method::POST {
        return Err(method_not_allowed());
    }
    let (ns, name) = (r.segs[3].clone(), r.segs[5].clone());
    let pod = shared
        .store
        .get(Kind::Pod, &ns, &name)
        .ok_or_else(|| ApiError::not_found(Kind::Pod, &name))?;
    let c = pick_container(&pod, r.q("container"), &name)?;
    let opts = StreamOpts {
        stdin: r.flag("stdin"),
        stdout: r.flag("stdout"),
        stderr: r.flag("stderr"),
    };
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let command = r.q_all("command");
    if kind == SessionKind::Exec && command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let headers = req.headers();
    let upgrade_hdr = headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if upgrade_hdr.is_empty() {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    if upgrade_hdr != "websocket" {
        return Err(ApiError::bad_request(format!(
            "fakekube only streams over WebSocket (v4/v5.channel.k8s.io), not {upgrade_hdr:?}"
        )));
    }
    let key = headers
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?
        .as_bytes()
        .to_vec();
    let protocol = stream::choose_protocol(
        headers
            .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "no supported WebSocket subprotocol; expected one of {:?}",
            stream::PROTOCOLS
        ))
    })?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if kind == SessionKind::Attach && (phase == "Succeeded" || phase == "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot attach a container in a completed pod; current phase is {phase}"
        )));
    }
    let Some(main) = container_rt(shared, &ns, &name, &c) else {
        if lock(&shared.inserted).contains(&(ns.to_string(), name.to_string())) {
            return Err(ApiError::bad_request(format!(
                "fakekube: pod {name:?} was inserted by the test; its containers are not run by the fake kubelet"
            )));
        }
        return Err(waiting_error(&pod, &c, &name));
    };
    let (rt, rx) = match kind {
        SessionKind::Attach => {
            let rx = main.subscribe();
            (main, rx)
        }
        SessionKind::Exec => {
            if main.exit_code().is_some() {
                return Err(ApiError::bad_request(format!(
                    "cannot exec in a stopped container: container {c:?} in pod {name:?} is not running"
                )));
            }
            let image = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == c.as_str())
                .and_then(|x| x["image"].as_str())
                .unwrap_or("");
            let dir = shared.images.get(image).cloned().unwrap_or_default();
            let program = kubelet::resolve_in_image(&dir, &command[0]).ok_or_else(|| {
                ApiError::new(500, "InternalError", format!(
                    "Internal error occurred: error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: exec: {:?}: executable file not found in $PATH: unknown",
                    command[0]
                ))
            })?;
            let env = vec![
                (
                    "PATH".to_string(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                ),
                ("HOME".to_string(), "/root".to_string()),
            ];
            // Spawned only once the client completes the upgrade (below); validated here.
            let spec = ProcessSpec {
                program,
                args: command[1..].to_vec(),
                env,
                cwd: "/".into(),
                pipe_stdin: opts.stdin,
                stdin_once: true,
            };
            let on_upgrade = hyper::upgrade::on(&mut *req);
            let shared = shared.clone();
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                match kubelet::spawn_process(&shared, spec) {
                    Ok((rt, rx)) => {
                        stream::session(upgraded, rt, rx, opts, SessionKind::Exec).await
                    }
                    Err(e) => stream::fail(upgraded, &format!("failed to start exec: {e}")).await,
                }
            });
            return Ok(switching(&key, protocol));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut *req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            stream::session(upgraded, rt, rx, opts, SessionKind::Attach).await;
        }
    });
    Ok(switching(&key, protocol))
}

fn switching(key: &[u8], protocol: &str) -> Resp {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Req {
        let uri: hyper::Uri = uri.parse().expect("uri");
        parse_head(Method::GET, &uri)
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            t,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
        let mut t = json!({"a": "foo"});
        merge_patch(&mut t, &json!("bar"));
        assert_eq!(t, json!("bar"));
        let mut t = json!({"e": null, "a": 1});
        merge_patch(&mut t, &json!({"a": {"bb": {"ccc": null}}}));
        assert_eq!(t, json!({"e": null, "a": {"bb": {}}}));
    }

    #[test]
    fn query_and_selectors() {
        let r = req("/api/v1/pods?labelSelector=app%3Dweb%2Ctier+in+(a%2Cb)&fieldSelector=spec.nodeName%3Dnode-a&x");
        assert_eq!(r.q("labelSelector"), Some("app=web,tier in (a,b)"));
        assert_eq!(r.q("x"), Some(""));
        let sel = Selectors::parse(Kind::Pod, r.q("labelSelector"), r.q("fieldSelector"))
            .expect("selectors");
        let pod = |tier: &str, node: &str| json!({"metadata": {"labels": {"app": "web", "tier": tier}}, "spec": {"nodeName": node}});
        assert!(sel.matches(&pod("a", "node-a")));
        assert!(!sel.matches(&pod("c", "node-a")));
        assert!(!sel.matches(&pod("b", "node-b")));
        assert!(Selectors::parse(Kind::Pod, None, Some("spec.color=red")).is_err());
        assert!(Selectors::parse(Kind::Pod, Some("a in (b"), None).is_err());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
