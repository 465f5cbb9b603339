//! A small in-process Kubernetes API server for the block claims: no API server can run on
//! this machine, so this fake implements the few endpoints the agent uses, with the one
//! property the claims rely on: an object name is created once (a second create is 409
//! AlreadyExists), under one lock, as etcd does. Nodes, the KraftyBlock objects (list, get,
//! create) and deletes with a uid precondition; no garbage collector unless a test asks for it.
//! It answers 403 to any request the chart's RBAC for address blocks would refuse
//! (`tests/fixtures/rbac-address-blocks.json`, which tests/deploy checks the chart grants).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

const BLOCKS_PATH: &str = "/apis/krafty.io/v1alpha1/kraftyblocks";
const NODES_PATH: &str = "/api/v1/nodes";

#[derive(Default)]
struct State {
    /// Node name -> uid.
    nodes: BTreeMap<String, String>,
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
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
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

    /// Registers (or re-registers, with a new uid) a Node.
    pub fn add_node(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        let uid = state.uid("node");
        state.nodes.insert(name.into(), uid);
    }

    pub fn node_uid(&self, name: &str) -> String {
        self.state.lock().unwrap().nodes[name].clone()
    }

    /// Deletes a Node; with `collect_garbage`, also the objects it owns, as Kubernetes'
    /// garbage collector would.
    pub fn delete_node(&self, name: &str, collect_garbage: bool) {
        let mut state = self.state.lock().unwrap();
        let uid = state.nodes.remove(name).expect("a registered node");
        if collect_garbage {
            state.blocks.retain(|_, block| {
                block["metadata"]["ownerReferences"][0]["uid"].as_str() != Some(uid.as_str())
            });
        }
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
        if let Err(refusal) = authorize(&method, &path) {
            return Response::builder()
                .status(StatusCode::FORBIDDEN)
                .body(Body::from(serde_json::to_vec(&refusal).unwrap()))
                .unwrap();
        }
        let query = request.uri().query().unwrap_or("").to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut state = self.state.lock().unwrap();
        let (status, answer) = match (&method, path.as_str()) {
            (&Method::GET, NODES_PATH) => (StatusCode::OK, node_list(&state)),
            (&Method::GET, node) if node.starts_with(&format!("{NODES_PATH}/")) => {
                let name = &node[NODES_PATH.len() + 1..];
                match state.nodes.get(name) {
                    Some(uid) => (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": name, "uid": uid}}),
                    ),
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
}

/// What the chart's RBAC grants the agent for address blocks: API group -> resource -> verbs.
fn granted() -> Value {
    serde_json::from_str(include_str!("../fixtures/rbac-address-blocks.json")).unwrap()
}

/// The RBAC check of one request (the paths the fake serves; others are left to 404).
fn authorize(method: &Method, path: &str) -> Result<(), Value> {
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

fn node_list(state: &State) -> Value {
    let items: Vec<Value> = state
        .nodes
        .iter()
        .map(|(name, uid)| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": {"name": name, "uid": uid}})
        })
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
           "metadata": {"resourceVersion": "1"}, "items": items})
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
