//! A small in-process Kubernetes API server for the block claims and the peer watch: no API
//! server can run on this machine, so this fake implements the few endpoints the agent uses,
//! with the one property the claims rely on: an object name is created once (a second create
//! is 409 AlreadyExists), under one lock, as etcd does. Nodes (get, list, full or as metadata,
//! and watch), the pods of every namespace (list and watch), the KraftyBlock objects (list,
//! get, create) and deletes with a uid precondition; no garbage collector unless a test asks
//! for it. A watch is a long poll: it answers with the events newer than its resourceVersion
//! once there are any (or nothing after a few seconds), and the client watches again from the
//! last one, as after an API server's watch timeout. A test can lose events as etcd's
//! compaction does ([`FakeApi::delete_pod_unseen`]): a watch from before then is answered 410
//! Gone, and the client must list again. It answers 403 to any request the chart's RBAC would refuse
//! (`tests/fixtures/rbac-address-blocks.json` and `rbac-node-peers.json`, which tests/deploy
//! checks the chart grants).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

const BLOCKS_PATH: &str = "/apis/krafty.io/v1alpha1/kraftyblocks";
const NODES_PATH: &str = "/api/v1/nodes";
const PODS_PATH: &str = "/api/v1/pods";

/// How long a watch with nothing new waits before it answers (empty).
const WATCH_POLL: Duration = Duration::from_secs(5);

struct FakeNode {
    uid: String,
    addresses: Vec<IpAddr>,
    resource_version: u64,
}

impl FakeNode {
    fn object(&self, name: &str) -> Value {
        let addresses: Vec<Value> = self
            .addresses
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
            .chain([json!({"type": "Hostname", "address": name})])
            .collect();
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "uid": self.uid,
                            "resourceVersion": self.resource_version.to_string()},
               "status": {"addresses": addresses}})
    }
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, FakeNode>,
    /// The resourceVersion of the last change to a Node or pod.
    resource_version: u64,
    /// Every change to a Node or pod: (resourceVersion, collection path, watch event type,
    /// object).
    events: Vec<(u64, &'static str, &'static str, Value)>,
    /// Pod `namespace/name` -> object.
    pods: BTreeMap<String, Value>,
    /// Watches from a resourceVersion below this one are answered 410 Gone.
    compacted: u64,
    /// Block object name -> object.
    blocks: BTreeMap<String, Value>,
    next_uid: u64,
    /// Lists answer as if from a cache that has seen nothing yet (an API server may serve
    /// lists from its watch cache): only the create's AlreadyExists tells who holds what.
    stale_lists: bool,
    already_exists: usize,
}

impl State {
    fn uid(&mut self, what: &str) -> String {
        self.next_uid += 1;
        format!("{what}-uid-{}", self.next_uid)
    }

    /// Records a change to Node `name` (its object as it is now, or as it was when deleted).
    fn node_event(&mut self, kind: &'static str, name: &str, node: &FakeNode) {
        self.events
            .push((node.resource_version, NODES_PATH, kind, node.object(name)));
    }
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    /// The last Node or pod change's resourceVersion, for the watches waiting on it.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for FakeApi {
    fn default() -> FakeApi {
        FakeApi {
            state: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl FakeApi {
    pub fn new() -> FakeApi {
        FakeApi::default()
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        Client::new(service, "default")
    }

    /// Registers (or re-registers, with a new uid) a Node without addresses.
    pub fn add_node(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        let uid = state.uid("node");
        self.put_node(&mut state, name, uid, Vec::new());
    }

    /// Registers a Node with these InternalIP addresses, or changes an existing Node's.
    pub fn set_node(&self, name: &str, addresses: &[IpAddr]) {
        let mut state = self.state.lock().unwrap();
        let uid = match state.nodes.get(name) {
            Some(node) => node.uid.clone(),
            None => state.uid("node"),
        };
        self.put_node(&mut state, name, uid, addresses.to_vec());
    }

    fn put_node(&self, state: &mut State, name: &str, uid: String, addresses: Vec<IpAddr>) {
        state.resource_version += 1;
        let node = FakeNode {
            uid,
            addresses,
            resource_version: state.resource_version,
        };
        let kind = if state.nodes.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.node_event(kind, name, &node);
        state.nodes.insert(name.into(), node);
        self.changes.send_replace(state.resource_version);
    }

    pub fn node_uid(&self, name: &str) -> String {
        self.state.lock().unwrap().nodes[name].uid.clone()
    }

    /// Deletes a Node; with `collect_garbage`, also the objects it owns, as Kubernetes'
    /// garbage collector would.
    pub fn delete_node(&self, name: &str, collect_garbage: bool) {
        let mut state = self.state.lock().unwrap();
        let mut node = state.nodes.remove(name).expect("a registered node");
        state.resource_version += 1;
        node.resource_version = state.resource_version;
        state.node_event("DELETED", name, &node);
        self.changes.send_replace(state.resource_version);
        let uid = node.uid;
        if collect_garbage {
            state.blocks.retain(|_, block| {
                block["metadata"]["ownerReferences"][0]["uid"].as_str() != Some(uid.as_str())
            });
        }
    }

    /// Creates or changes pod `namespace/name`, running on `node`, with Multus' network-status
    /// annotation `network_status`.
    pub fn set_pod(&self, namespace: &str, name: &str, node: &str, network_status: &Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let key = format!("{namespace}/{name}");
        let uid = match state.pods.get(&key) {
            Some(pod) => pod["metadata"]["uid"].clone(),
            None => json!(state.uid("pod")),
        };
        let kind = if state.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": namespace, "name": name, "uid": uid,
                         "resourceVersion": state.resource_version.to_string(),
                         "annotations": {"k8s.v1.cni.cncf.io/network-status":
                                         network_status.to_string()}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running"}});
        let version = state.resource_version;
        state.events.push((version, PODS_PATH, kind, pod.clone()));
        state.pods.insert(key, pod);
        self.changes.send_replace(version);
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        let mut pod = state
            .pods
            .remove(&format!("{namespace}/{name}"))
            .expect("a created pod");
        state.resource_version += 1;
        let version = state.resource_version;
        pod["metadata"]["resourceVersion"] = json!(version.to_string());
        state.events.push((version, PODS_PATH, "DELETED", pod));
        self.changes.send_replace(version);
    }

    /// Deletes a pod with no watch event for it: the history up to now is compacted away, so
    /// every watch from before gets 410 Gone and only a new list shows the pod gone.
    pub fn delete_pod_unseen(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state
            .pods
            .remove(&format!("{namespace}/{name}"))
            .expect("a created pod");
        state.resource_version += 1;
        state.compacted = state.resource_version;
        state.events.clear();
        self.changes.send_replace(state.resource_version);
    }

    pub fn set_stale_lists(&self, stale: bool) {
        self.state.lock().unwrap().stale_lists = stale;
    }

    /// How many creates were refused with AlreadyExists.
    pub fn already_exists(&self) -> usize {
        self.state.lock().unwrap().already_exists
    }

    /// Every block object, by name.
    pub fn blocks(&self) -> BTreeMap<String, Value> {
        self.state.lock().unwrap().blocks.clone()
    }

    /// `(block CIDR, node)` of every block object.
    pub fn holders(&self) -> Vec<(String, String)> {
        self.blocks()
            .values()
            .map(|block| {
                let spec = &block["spec"];
                (
                    spec["cidr"].as_str().unwrap().to_string(),
                    spec["node"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        if let Err(refusal) = authorize(&method, &path, &query) {
            return Response::builder()
                .status(StatusCode::FORBIDDEN)
                .body(Body::from(serde_json::to_vec(&refusal).unwrap()))
                .unwrap();
        }
        if method == Method::GET && is_watch(&query) {
            if let Some(collection) = [NODES_PATH, PODS_PATH].into_iter().find(|p| *p == path) {
                return self.watch(collection, &query).await;
            }
        }
        let metadata_only = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("PartialObjectMetadata"));
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut state = self.state.lock().unwrap();
        let (status, answer) = match (&method, path.as_str()) {
            (&Method::GET, NODES_PATH) => (StatusCode::OK, node_list(&state, metadata_only)),
            (&Method::GET, PODS_PATH) => (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "PodList",
                       "metadata": {"resourceVersion": state.resource_version.to_string()},
                       "items": state.pods.values().cloned().collect::<Vec<_>>()}),
            ),
            (&Method::GET, node) if node.starts_with(&format!("{NODES_PATH}/")) => {
                let name = &node[NODES_PATH.len() + 1..];
                match state.nodes.get(name) {
                    Some(node) => (StatusCode::OK, node.object(name)),
                    None => not_found("nodes", name),
                }
            }
            (&Method::GET, BLOCKS_PATH) => {
                let network = label_selector_network(&query);
                let items: Vec<Value> = if state.stale_lists {
                    Vec::new()
                } else {
                    state
                        .blocks
                        .values()
                        .filter(|b| {
                            network
                                .as_deref()
                                .is_none_or(|n| b["metadata"]["labels"]["krafty.io/network"] == n)
                        })
                        .cloned()
                        .collect()
                };
                (
                    StatusCode::OK,
                    json!({"apiVersion": "krafty.io/v1alpha1", "kind": "KraftyBlockList",
                           "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (&Method::GET, block) if block.starts_with(&format!("{BLOCKS_PATH}/")) => {
                let name = &block[BLOCKS_PATH.len() + 1..];
                match state.blocks.get(name) {
                    Some(existing) => (StatusCode::OK, existing.clone()),
                    None => not_found("kraftyblocks.krafty.io", name),
                }
            }
            (&Method::POST, BLOCKS_PATH) => create_block(&mut state, body),
            (&Method::DELETE, block) if block.starts_with(&format!("{BLOCKS_PATH}/")) => {
                let name = &block[BLOCKS_PATH.len() + 1..];
                let precondition = body["preconditions"]["uid"].as_str();
                match state.blocks.get(name) {
                    None => not_found("kraftyblocks.krafty.io", name),
                    Some(existing)
                        if precondition.is_some()
                            && existing["metadata"]["uid"].as_str() != precondition =>
                    {
                        status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            "the uid precondition failed",
                        )
                    }
                    Some(_) => {
                        let removed = state.blocks.remove(name).unwrap();
                        (StatusCode::OK, removed)
                    }
                }
            }
            _ => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the fake serves no {method} {path}"),
            ),
        };
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap()
    }

    /// The events of `collection` newer than the watch's resourceVersion, as a watch body
    /// (one JSON event a line), once there are any or after [`WATCH_POLL`].
    async fn watch(&self, collection: &str, query: &str) -> Response<Body> {
        let since: u64 = query_value(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let news = |state: &State| {
            since < state.compacted
                || state
                    .events
                    .iter()
                    .any(|(version, path, _, _)| *version > since && *path == collection)
        };
        let mut changes = self.changes.subscribe();
        let wait = changes.wait_for(|_| news(&self.state.lock().unwrap()));
        let _ = tokio::time::timeout(WATCH_POLL, wait).await;
        let state = self.state.lock().unwrap();
        if since < state.compacted {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {since} ({})", state.compacted)}});
            return Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(format!("{gone}\n").into_bytes()))
                .unwrap();
        }
        let body: String = state
            .events
            .iter()
            .filter(|(version, path, _, _)| *version > since && *path == collection)
            .map(|(_, _, kind, object)| format!("{}\n", json!({"type": kind, "object": object})))
            .collect();
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(body.into_bytes()))
            .unwrap()
    }
}

/// What the chart's RBAC grants the agent for address blocks and for the Node watch (the
/// union of both fixtures): API group -> resource -> verbs.
fn granted() -> Value {
    let mut granted: Value =
        serde_json::from_str(include_str!("../fixtures/rbac-address-blocks.json")).unwrap();
    let peers: Value =
        serde_json::from_str(include_str!("../fixtures/rbac-node-peers.json")).unwrap();
    for (group, resources) in peers.as_object().unwrap() {
        for (resource, verbs) in resources.as_object().unwrap() {
            let merged = granted[group][resource]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut merged: Vec<Value> = merged
                .into_iter()
                .chain(verbs.as_array().unwrap().iter().cloned())
                .collect();
            merged.sort_by_key(|v| v.to_string());
            merged.dedup();
            granted[group][resource] = Value::Array(merged);
        }
    }
    granted
}

fn is_watch(query: &str) -> bool {
    matches!(query_value(query, "watch"), Some("true" | "1"))
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// The RBAC check of one request (the paths the fake serves; others are left to 404).
fn authorize(method: &Method, path: &str, query: &str) -> Result<(), Value> {
    let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/krafty.io/v1alpha1/") {
        ("krafty.io", rest)
    } else {
        return Ok(());
    };
    let (resource, named) = match rest.split_once('/') {
        Some((resource, _)) => (resource, true),
        None => (rest, false),
    };
    let verb = match (method, named) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if is_watch(query) => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::DELETE, _) => "delete",
        _ => "other",
    };
    let verbs = &granted()[group][resource];
    if verbs
        .as_array()
        .is_some_and(|v| v.iter().any(|g| g == verb))
    {
        Ok(())
    } else {
        let message = format!("the chart grants no {verb} on {resource:?} of group {group:?}");
        Err(status(StatusCode::FORBIDDEN, "Forbidden", &message).1)
    }
}

fn create_block(state: &mut State, mut block: Value) -> (StatusCode, Value) {
    let name = block["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() || block["kind"] != "KraftyBlock" {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not a KraftyBlock");
    }
    if state.blocks.contains_key(&name) {
        state.already_exists += 1;
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("kraftyblocks.krafty.io {name:?} already exists"),
        );
    }
    let uid = state.uid("block");
    block["metadata"]["uid"] = json!(uid);
    block["metadata"]["resourceVersion"] = json!("1");
    state.blocks.insert(name, block.clone());
    (StatusCode::CREATED, block)
}

/// The Nodes, as full objects or (for a metadata list) as their metadata.
fn node_list(state: &State, metadata_only: bool) -> Value {
    let version = state.resource_version.to_string();
    let items: Vec<Value> = state
        .nodes
        .iter()
        .map(|(name, node)| match metadata_only {
            true => json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                           "metadata": {"name": name, "uid": node.uid}}),
            false => node.object(name),
        })
        .collect();
    match metadata_only {
        true => json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                       "metadata": {"resourceVersion": version}, "items": items}),
        false => json!({"apiVersion": "v1", "kind": "NodeList",
                        "metadata": {"resourceVersion": version}, "items": items}),
    }
}

/// The network of a `labelSelector=krafty.io/network=NAME` query.
fn label_selector_network(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("labelSelector=")?;
        let decoded = value.replace("%2F", "/").replace("%3D", "=");
        decoded
            .strip_prefix("krafty.io/network=")
            .map(str::to_string)
    })
}

fn not_found(what: &str, name: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{what} {name:?} not found"),
    )
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
               "reason": reason, "message": message, "code": code.as_u16()}),
    )
}
