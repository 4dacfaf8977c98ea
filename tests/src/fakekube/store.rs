//! The object store: objects as JSON, one global resourceVersion, a watch history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{new_uid, now_rfc3339};

/// The resource types the fake API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Pod,
    Node,
    Namespace,
    Event,
}

impl Kind {
    /// The object's `kind`.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Event => "Event",
        }
    }

    /// The resource name in URLs and error messages.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Node => "nodes",
            Kind::Namespace => "namespaces",
            Kind::Event => "events",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub(crate) fn namespaced(self) -> bool {
        matches!(self, Kind::Pod | Kind::Event)
    }
}

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn not_found(kind: Kind, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural()),
        );
        e.details = Some(json!({"name": name, "kind": kind.plural()}));
        e
    }

    pub(crate) fn already_exists(kind: Kind, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.plural()),
        );
        e.details = Some(json!({"name": name, "kind": kind.plural()}));
        e
    }

    /// The `Status` object a real apiserver sends.
    pub(crate) fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// One change, as sent to watchers.
#[derive(Debug)]
pub(crate) struct WatchEvent {
    pub rv: u64,
    pub kind: Kind,
    pub etype: &'static str,
    pub object: Value,
    /// For MODIFIED: the object before the change (a watch with a selector turns a change
    /// into ADDED or DELETED when the object starts or stops matching, as the apiserver does).
    pub prev: Option<Value>,
}

type Key = (Kind, String, String);

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Arc<WatchEvent>>,
}

/// Objects, the global resourceVersion and the change feed.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

/// `metadata.namespace` and `metadata.name` of an object ("" when absent).
pub(crate) fn ns_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or("").to_string(),
        m["name"].as_str().unwrap_or("").to_string(),
    )
}

impl Store {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(8192);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: Vec::new(),
            }),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(
        &self,
        inner: &mut Inner,
        kind: Kind,
        etype: &'static str,
        object: Value,
        prev: Option<Value>,
    ) {
        let ev = Arc::new(WatchEvent {
            rv: inner.rv,
            kind,
            etype,
            object,
            prev,
        });
        inner.history.push(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// Stores a new object: sets kind, apiVersion, uid, creationTimestamp and resourceVersion.
    pub(crate) fn create(&self, kind: Kind, mut obj: Value) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the object is not a JSON object"));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let (ns, name) = ns_name(&obj);
        if name.is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", kind.kind()),
            ));
        }
        let key = (
            kind,
            if kind.namespaced() { ns } else { String::new() },
            name.clone(),
        );
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        inner.rv += 1;
        obj["kind"] = json!(kind.kind());
        obj["apiVersion"] = json!("v1");
        let m = &mut obj["metadata"];
        if !m["uid"].is_string() {
            m["uid"] = json!(new_uid());
        }
        if !m["creationTimestamp"].is_string() {
            m["creationTimestamp"] = json!(now_rfc3339());
        }
        m["resourceVersion"] = json!(inner.rv.to_string());
        inner.objects.insert(key, obj.clone());
        self.emit(&mut inner, kind, "ADDED", obj.clone(), None);
        Ok(obj)
    }

    /// One object.
    pub(crate) fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let ns = if kind.namespaced() { ns } else { "" };
        self.lock()
            .objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of a kind (in one namespace, or all), and the resourceVersion of the list.
    pub(crate) fn list(&self, kind: Kind, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Changes an object in place; emits MODIFIED. `None` when it does not exist.
    pub(crate) fn update(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        self.update_if(kind, ns, name, |_| true, f)
    }

    /// [`update`](Self::update) if the current object satisfies `cond` (e.g. its uid).
    pub(crate) fn update_if(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        cond: impl FnOnce(&Value) -> bool,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let ns = if kind.namespaced() { ns } else { "" };
        let mut inner = self.lock();
        let key = (kind, ns.to_string(), name.to_string());
        let prev = inner.objects.get(&key).filter(|o| cond(o))?.clone();
        let mut obj = prev.clone();
        f(&mut obj);
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.objects.insert(key, obj.clone());
        self.emit(&mut inner, kind, "MODIFIED", obj.clone(), Some(prev));
        Some(obj)
    }

    /// Removes an object; emits DELETED.
    pub(crate) fn delete(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        self.delete_if(kind, ns, name, |_| true)
    }

    /// [`delete`](Self::delete) if the current object satisfies `cond` (e.g. its uid).
    pub(crate) fn delete_if(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        cond: impl FnOnce(&Value) -> bool,
    ) -> Option<Value> {
        let ns = if kind.namespaced() { ns } else { "" };
        let mut inner = self.lock();
        let key = (kind, ns.to_string(), name.to_string());
        if !inner.objects.get(&key).is_some_and(cond) {
            return None;
        }
        let mut obj = inner.objects.remove(&key)?;
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.emit(&mut inner, kind, "DELETED", obj.clone(), None);
        Some(obj)
    }

    /// Starts a watch: the events to send first, and the live feed (subscribed atomically
    /// with the snapshot, so nothing is lost or duplicated). `since = None` means "send the
    /// current objects as ADDED", as the apiserver does for resourceVersion "" or "0".
    pub(crate) fn watch(
        &self,
        kind: Kind,
        since: Option<u64>,
    ) -> (
        Vec<Arc<WatchEvent>>,
        u64,
        broadcast::Receiver<Arc<WatchEvent>>,
    ) {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let first = match since {
            None => inner
                .objects
                .iter()
                .filter(|((k, _, _), _)| *k == kind)
                .map(|(_, v)| {
                    let rv = v["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    Arc::new(WatchEvent {
                        rv,
                        kind,
                        etype: "ADDED",
                        object: v.clone(),
                        prev: None,
                    })
                })
                .collect(),
            Some(since) => inner
                .history
                .iter()
                .filter(|e| e.kind == kind && e.rv > since)
                .cloned()
                .collect(),
        };
        (first, inner.rv, rx)
    }
}
