//! The Kubernetes side against kube's mock service (tower-test): no API server runs here, so
//! each test plays the API server and checks the exact requests.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tower_test::mock::{self, Handle, SendResponse};

use krafty_installer::attachments::{AttachmentCleaner, CleanupError, Reconciler, StoredRecord};
use krafty_installer::cluster::annotation::{run_annotator, ANNOTATION};
use krafty_installer::cluster::events::{run_publisher, Notice, Notifier};
use krafty_installer::cluster::pods::run_orphan_reconciler;
use krafty_installer::install::InstalledPlugin;
use krafty_installer::metrics::Metrics;

type ApiServer = Handle<Request<Body>, Response<Body>>;

const NODE: &str = "node-a";

/// Waits for the client's next request (failing after a while rather than hanging).
async fn next_request(server: &mut ApiServer) -> (Request<Body>, SendResponse<Response<Body>>) {
    tokio::time::timeout(Duration::from_secs(10), server.next_request())
        .await
        .expect("no request within 10 s")
        .expect("the client went away")
}

/// Asserts that the client sends nothing for a while.
async fn assert_quiet(server: &mut ApiServer) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(300), server.next_request()).await
    {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn respond(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn query_pairs(request: &Request<Body>) -> Vec<(String, String)> {
    let query = request.uri().query().unwrap_or("");
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                key.to_string(),
                value.replace("%3D", "=").replace("%2F", "/"),
            )
        })
        .collect()
}

fn has_query(request: &Request<Body>, key: &str, value: &str) -> bool {
    query_pairs(request)
        .iter()
        .any(|(k, v)| k == key && v == value)
}

fn plugin(name: &str, sha: &str) -> InstalledPlugin {
    InstalledPlugin {
        name: name.into(),
        version: "0.1.0".into(),
        sha256: sha.into(),
        cni_versions: vec!["1.0.0".into(), "1.1.0".into()],
    }
}

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(&[]))
}

fn metric(metrics: &Metrics, line_start: &str) -> String {
    metrics
        .encode()
        .lines()
        .find(|line| line.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start}"))
        .to_string()
}

#[tokio::test]
async fn the_node_annotation_is_applied_server_side_retried_and_not_repeated() {
    let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (installed, receiver) = watch::channel(Vec::new());
    let shutdown = CancellationToken::new();
    let metrics = metrics();
    let task = tokio::spawn(run_annotator(
        Api::<Node>::all(client),
        NODE.into(),
        receiver,
        Arc::clone(&metrics),
        shutdown.clone(),
    ));

    assert_quiet(&mut server).await; // nothing is applied before anything is installed
    installed.send_replace(vec![
        plugin("krafty-vrf", "aa"),
        plugin("krafty-bridge", "bb"),
    ]);

    let check = |request: &Request<Body>| {
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), "/api/v1/nodes/node-a");
        assert!(
            has_query(request, "fieldManager", "krafty-installer"),
            "{}",
            request.uri()
        );
        assert!(has_query(request, "force", "true"), "{}", request.uri());
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
    };
    let expected_value = json!({
        "krafty-bridge": {"version": "0.1.0", "sha256": "bb", "cniVersions": ["1.0.0", "1.1.0"]},
        "krafty-vrf": {"version": "0.1.0", "sha256": "aa", "cniVersions": ["1.0.0", "1.1.0"]},
    });
    let check_body = |body: &Value, value: &Value| {
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["kind"], "Node");
        assert_eq!(body["metadata"]["name"], NODE);
        let annotations = body["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(
            annotations.len(),
            1,
            "only the one annotation is owned: {body}"
        );
        let annotation: Value =
            serde_json::from_str(annotations[ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(&annotation, value);
        assert_eq!(
            body.as_object().unwrap().len(),
            3,
            "nothing but the annotation: {body}"
        );
    };

    // The API server fails once: the same patch comes again.
    let (request, send) = next_request(&mut server).await;
    check(&request);
    check_body(&body_json(request).await, &expected_value);
    respond(
        send,
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is sad", "reason": "InternalError", "code": 500
        }),
    );
    let (request, send) = next_request(&mut server).await;
    check(&request);
    check_body(&body_json(request).await, &expected_value);
    respond(
        send,
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    );
    assert!(metric(&metrics, "krafty_installer_errors_total{kind=\"annotate\"}").ends_with(" 1"));

    // The same set again is not applied again; a changed one is.
    installed.send_replace(vec![
        plugin("krafty-bridge", "bb"),
        plugin("krafty-vrf", "aa"),
    ]);
    assert_quiet(&mut server).await;
    installed.send_replace(vec![plugin("krafty-vrf", "cc")]);
    let (request, send) = next_request(&mut server).await;
    check(&request);
    check_body(
        &body_json(request).await,
        &json!({"krafty-vrf": {"version": "0.1.0", "sha256": "cc", "cniVersions": ["1.0.0", "1.1.0"]}}),
    );
    respond(
        send,
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}),
    );

    stop(shutdown, task).await;
}

#[tokio::test]
async fn events_are_posted_about_the_node() {
    let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (notifier, notices) = Notifier::channel();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_publisher(
        client,
        NODE.into(),
        notices,
        metrics(),
        shutdown.clone(),
    ));

    notifier.send(Notice::PluginRestored(plugin("krafty-veth", "dd")));
    let (request, send) = next_request(&mut server).await;
    assert_eq!(request.method(), Method::POST);
    assert_eq!(
        request.uri().path(),
        "/apis/events.k8s.io/v1/namespaces/default/events"
    );
    let event = body_json(request).await;
    assert_eq!(event["reason"], "PluginRestored");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["action"], "Restore");
    assert_eq!(event["regarding"]["kind"], "Node");
    assert_eq!(event["regarding"]["name"], NODE);
    assert_eq!(event["reportingController"], "krafty.dev/installer");
    assert_eq!(event["reportingInstance"], "krafty-installer-node-a");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("restored 0.1.0 (sha256 dd)"),
        "{event}"
    );
    respond(send, StatusCode::CREATED, &event);

    stop(shutdown, task).await;
}

/// Records what it is asked to clean up and removes the record, as the real cleaner will.
#[derive(Clone, Default)]
struct RecordingCleaner {
    cleaned: Arc<Mutex<Vec<String>>>,
}

impl RecordingCleaner {
    fn cleaned(&self) -> BTreeSet<String> {
        self.cleaned.lock().unwrap().iter().cloned().collect()
    }
}

impl AttachmentCleaner for RecordingCleaner {
    async fn clean_up(&self, attachment: &StoredRecord) -> Result<(), CleanupError> {
        self.cleaned
            .lock()
            .unwrap()
            .push(attachment.record.container_id.clone());
        fs::remove_file(&attachment.path).map_err(|e| CleanupError::Failed(Box::new(e)))
    }
}

/// The plugins' layout: `<state dir>/attachments/<network>/<container id>.<ifname>.json`.
fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("attachments").join("net-a")
}

/// A record as krafty-veth writes it (the fields the installer does not read included).
fn write_record(state_dir: &Path, container: &str, pod: &str, uid: &str, netns: &Path) {
    let record = json!({
        "network": "net-a", "containerId": container, "ifname": "net1",
        "netns": netns, "podNamespace": "default", "podName": pod, "podUid": uid,
        "devices": [{"name": "veth1234", "kind": "veth", "shared": false}],
        "addresses": ["172.16.10.10/24"], "gateways": [], "created": "2026-11-22T00:00:00Z",
    });
    let dir = records_dir(state_dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(format!("{container}.net1.json")),
        record.to_string(),
    )
    .unwrap();
}

fn pod(name: &str, uid: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid, "resourceVersion": resource_version},
        "spec": {"nodeName": NODE, "containers": []},
    })
}

/// Cancels a background task and waits for it to end cleanly.
async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task ends within 5 s of its shutdown")
        .expect("the task did not panic");
}

/// The pod watch and orphan scans of node [`NODE`] against the mock API server, until the
/// returned token is cancelled.
fn start_reconciler(
    client: Client,
    reconciler: Reconciler<RecordingCleaner>,
    interval: Duration,
    settle: Duration,
    metrics: &Arc<Metrics>,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_orphan_reconciler(
        Api::<Pod>::all(client),
        NODE.into(),
        reconciler,
        interval,
        settle,
        Arc::clone(metrics),
        shutdown.clone(),
    ));
    (task, shutdown)
}

async fn wait_for_cleaned(cleaner: &RecordingCleaner, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    for _ in 0..500 {
        if cleaner.cleaned() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cleaner.cleaned(), expected);
}

#[tokio::test]
async fn the_pod_watch_covers_this_node_and_drives_orphan_cleanup() {
    let state = tempfile::tempdir().unwrap();
    let netns_dir = tempfile::tempdir().unwrap();
    let live_netns = netns_dir.path().join("cni-live");
    fs::write(&live_netns, b"").unwrap();
    let gone_netns = netns_dir.path().join("cni-gone");
    // Pod exists (matching UID), netns gone: kept.
    write_record(state.path(), "c-live", "web-0", "uid-web", &gone_netns);
    // Pod exists, no UID recorded: kept.
    write_record(state.path(), "c-live-no-uid", "web-0", "", &gone_netns);
    // Pod gone, netns still there (teardown in progress): kept.
    write_record(
        state.path(),
        "c-tearing-down",
        "old-1",
        "uid-old-1",
        &live_netns,
    );
    // Pod gone, netns gone: orphaned.
    write_record(state.path(), "c-orphan", "old-2", "uid-old-2", &gone_netns);
    // Same name as a live pod, other UID (the pod was recreated): orphaned.
    write_record(
        state.path(),
        "c-recreated",
        "web-0",
        "uid-web-before",
        &gone_netns,
    );
    // Pod exists until the watch reports its deletion.
    write_record(
        state.path(),
        "c-deleted-later",
        "db-0",
        "uid-db",
        &gone_netns,
    );
    fs::write(
        records_dir(state.path()).join("unreadable.json"),
        b"{\"network\": ",
    )
    .unwrap();

    let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let cleaner = RecordingCleaner::default();
    let metrics = metrics();
    let (notifier, mut notices) = Notifier::channel();
    let (task, shutdown) = start_reconciler(
        client,
        Reconciler::new(
            state.path().to_path_buf(),
            cleaner.clone(),
            Arc::clone(&metrics),
            notifier,
        ),
        Duration::from_secs(3600),
        Duration::from_millis(50),
        &metrics,
    );

    // The initial list: only this node's pods.
    let (request, send) = next_request(&mut server).await;
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri().path(), "/api/v1/pods");
    assert!(
        has_query(&request, "fieldSelector", "spec.nodeName=node-a"),
        "{}",
        request.uri()
    );
    assert!(!has_query(&request, "watch", "true"));
    respond(
        send,
        StatusCode::OK,
        &json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "100"},
            "items": [pod("web-0", "uid-web", "90"), pod("db-0", "uid-db", "95")],
        }),
    );

    // The watch, from the list's resource version, same selector.
    let (request, send) = next_request(&mut server).await;
    assert!(has_query(&request, "watch", "true"), "{}", request.uri());
    assert!(
        has_query(&request, "fieldSelector", "spec.nodeName=node-a"),
        "{}",
        request.uri()
    );
    assert!(
        has_query(&request, "resourceVersion", "100"),
        "{}",
        request.uri()
    );

    wait_for_cleaned(&cleaner, &["c-orphan", "c-recreated"]).await;

    // db-0 is deleted: its attachment is now an orphan too.
    let deleted = json!({"type": "DELETED", "object": pod("db-0", "uid-db", "101")});
    send.send_response(
        Response::builder()
            .body(Body::from(format!("{deleted}\n").into_bytes()))
            .unwrap(),
    );
    wait_for_cleaned(&cleaner, &["c-orphan", "c-recreated", "c-deleted-later"]).await;

    let mut remaining: Vec<String> = fs::read_dir(records_dir(state.path()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    remaining.sort();
    assert_eq!(
        remaining,
        [
            "c-live-no-uid.net1.json",
            "c-live.net1.json",
            "c-tearing-down.net1.json",
            "unreadable.json"
        ]
    );
    assert_eq!(
        metric(&metrics, "krafty_installer_reconciled_attachments_total"),
        "krafty_installer_reconciled_attachments_total 3"
    );
    let mut noticed = BTreeSet::new();
    while let Ok(notice) = notices.try_recv() {
        match notice {
            Notice::AttachmentCleanedUp(stored) => noticed.insert(stored.record.container_id),
            other => panic!("unexpected notice {other:?}"),
        };
    }
    assert_eq!(noticed, cleaner.cleaned());

    stop(shutdown, task).await;
}

#[tokio::test]
async fn nothing_is_cleaned_up_before_the_pod_list_is_complete() {
    let state = tempfile::tempdir().unwrap();
    write_record(
        state.path(),
        "c-1",
        "web-0",
        "uid-web",
        &state.path().join("no-netns"),
    );

    let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let cleaner = RecordingCleaner::default();
    let metrics = metrics();
    let (task, shutdown) = start_reconciler(
        client,
        Reconciler::new(
            state.path().to_path_buf(),
            cleaner.clone(),
            Arc::clone(&metrics),
            Notifier::disabled(),
        ),
        Duration::from_millis(10),
        Duration::from_millis(10),
        &metrics,
    );

    // The list fails (RBAC missing, say): the store never becomes ready.
    let (_, send) = next_request(&mut server).await;
    respond(
        send,
        StatusCode::FORBIDDEN,
        &json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "pods is forbidden", "reason": "Forbidden", "code": 403
        }),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cleaner.cleaned().is_empty());
    assert!(records_dir(state.path()).join("c-1.net1.json").exists());
    assert!(metric(
        &metrics,
        "krafty_installer_errors_total{kind=\"pod_watch\"}"
    )
    .ends_with(" 1"));

    stop(shutdown, task).await;
}

/// The channel a notifier feeds is bounded; a full queue drops, never blocks an install.
#[tokio::test]
async fn a_full_event_queue_drops_instead_of_blocking() {
    let (notifier, mut notices): (Notifier, mpsc::Receiver<Notice>) = Notifier::channel();
    for n in 0..1000 {
        notifier.send(Notice::InstallFailed(format!("failure {n}")));
    }
    let mut received = 0;
    while notices.try_recv().is_ok() {
        received += 1;
    }
    assert!(received > 0 && received < 1000, "{received}");
}
