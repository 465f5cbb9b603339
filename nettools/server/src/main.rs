//! nettools-server: a tiny HTTP server for the nettools pod. `GET /` answers with the pod's
//! interfaces, addresses and routes as JSON, so a krafty attachment can be inspected with one
//! `curl`; `GET /healthz` answers `ok` for the probes. One thread per connection, one request
//! per connection; standard library only.
//!
//! Usage: nettools-server [--listen ADDR:PORT | --listen PORT]
//! The environment variable NETTOOLS_LISTEN is used when --listen is not given; the default is
//! 0.0.0.0:8080.

mod http;
mod report;

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, RequestError, Response};

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const LISTEN_ENV: &str = "NETTOOLS_LISTEN";
/// Connections served at once; more are answered 503 at once rather than given a thread each.
const MAX_CONNECTIONS: usize = 64;
/// A client that sends nothing for this long loses its connection (and its thread).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Report,
    Health,
    NotFound,
    MethodNotAllowed,
}

fn route(request: &Request) -> Route {
    match (&request.method, request.path.as_str()) {
        (Method::Get | Method::Head, "/") => Route::Report,
        (Method::Get | Method::Head, "/healthz") => Route::Health,
        (Method::Other(_), "/" | "/healthz") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

fn respond(request: &Request) -> Response {
    match route(request) {
        Route::Report => Response::json(report::build(&report::hostname(), &report::run_command)),
        Route::Health => Response::text(200, "ok"),
        Route::NotFound => Response::text(404, "not found"),
        Route::MethodNotAllowed => {
            let mut response = Response::text(405, "method not allowed");
            response.headers.push("Allow: GET, HEAD".into());
            response
        }
    }
}

fn serve(stream: TcpStream) {
    // Timeouts and write errors only mean the client went away: nothing to report or recover.
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut reader = BufReader::new(&stream);
    let (response, head_only) = match http::read_request(&mut reader) {
        Ok(request) => (respond(&request), request.method == Method::Head),
        Err(RequestError::Malformed(why)) => (Response::text(400, why), false),
        Err(RequestError::TooLarge) => (Response::text(431, "request head too large"), false),
        Err(RequestError::Closed) => return,
    };
    let _ = response.write_to(&mut &stream, head_only);
}

/// `--listen` wins over the environment, which wins over the default. A bare port listens on
/// every IPv4 address.
fn listen_address(args: &[String], env: Option<String>) -> Result<SocketAddr, String> {
    let mut listen = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--listen=") {
            listen = Some(value.to_string());
        } else if arg == "--listen" {
            listen = Some(args.next().ok_or("--listen needs a value")?.clone());
        } else {
            return Err(format!("unknown argument {arg:?}"));
        }
    }
    let text = listen.or(env).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is neither ADDR:PORT nor a port number"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: nettools-server [--listen ADDR:PORT | --listen PORT]   (env {LISTEN_ENV}, default {DEFAULT_LISTEN})");
        return ExitCode::SUCCESS;
    }
    let address = match listen_address(&args, std::env::var(LISTEN_ENV).ok()) {
        Ok(address) => address,
        Err(e) => {
            eprintln!("nettools-server: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(address) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("nettools-server: cannot listen on {address}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("nettools-server: listening on {address}");
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        // accept() fails for reasons of one connection (reset before accept, fd limit for a
        // moment); the listener itself stays usable.
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = Response::text(503, "busy").write_to(&mut &stream, false);
            continue;
        }
        let active = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                serve(stream);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // The closure (and the stream) was dropped, closing the connection.
            eprintln!("nettools-server: cannot start a thread for a connection");
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Request {
        Request {
            method,
            path: path.into(),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(&request(Method::Get, "/")), Route::Report);
        assert_eq!(route(&request(Method::Head, "/")), Route::Report);
        assert_eq!(route(&request(Method::Get, "/healthz")), Route::Health);
        assert_eq!(route(&request(Method::Get, "/healthz/")), Route::NotFound);
        assert_eq!(route(&request(Method::Get, "/metrics")), Route::NotFound);
        assert_eq!(
            route(&request(Method::Other("POST".into()), "/")),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route(&request(Method::Other("POST".into()), "/x")),
            Route::NotFound
        );
    }

    #[test]
    fn listen_address_precedence() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            listen_address(&[], None).unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            listen_address(&[], Some("9000".into())).unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(
            listen_address(&args(&["--listen", "127.0.0.1:81"]), Some("9000".into())).unwrap(),
            "127.0.0.1:81".parse().unwrap()
        );
        assert_eq!(
            listen_address(&args(&["--listen=[::1]:82"]), None).unwrap(),
            "[::1]:82".parse().unwrap()
        );
        assert!(listen_address(&args(&["--listen"]), None).is_err());
        assert!(listen_address(&args(&["--listen", "localhost"]), None).is_err());
        assert!(listen_address(&args(&["--port", "1"]), None).is_err());
        assert!(listen_address(&[], Some("70000".into())).is_err());
    }
}
