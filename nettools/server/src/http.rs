//! Just enough HTTP/1.x: read one request head, answer once, close. Every malformed input maps
//! to an error status; nothing here panics on what a client sends.

use std::io::{self, BufRead, Write};

/// Longest request head accepted (request line plus headers). Real clients send a few hundred
/// bytes; the cap keeps a misbehaving one from making the server buffer without end.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without its query string.
    pub path: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The head is not HTTP/1.x: answered with 400.
    Malformed(&'static str),
    /// The head exceeds [`MAX_HEAD_BYTES`]: answered with 431.
    TooLarge,
    /// The client closed the connection before finishing its head: nothing to answer.
    Closed,
}

/// Parses `METHOD SP TARGET SP HTTP/1.x`.
pub fn parse_request_line(line: &str) -> Result<Request, RequestError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("method is not an HTTP token"));
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(RequestError::Malformed(
            "version is not HTTP/1.0 or HTTP/1.1",
        ));
    }
    if !target.starts_with('/') {
        return Err(RequestError::Malformed("target is not an absolute path"));
    }
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string();
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    Ok(Request { method, path })
}

/// Reads the request head (up to the empty line) and parses its request line. Headers are read
/// and ignored: no route depends on them, and the connection closes after one answer.
pub fn read_request(reader: &mut impl BufRead) -> Result<Request, RequestError> {
    let mut consumed = 0;
    let mut request_line = None;
    loop {
        let line = read_line_bounded(reader, MAX_HEAD_BYTES - consumed)?;
        consumed += line.len();
        let text = std::str::from_utf8(&line)
            .map_err(|_| RequestError::Malformed("request head is not UTF-8"))?;
        let text = text
            .strip_suffix('\n')
            .ok_or(RequestError::Closed)?
            .trim_end_matches('\r');
        match request_line {
            None if text.is_empty() => {
                // RFC 9112 §2.2: a server should ignore empty lines before the request line.
            }
            None => request_line = Some(parse_request_line(text)?),
            Some(request) if text.is_empty() => return Ok(request),
            Some(_) => {}
        }
    }
}

/// One line including its `\n`, or what came before end of input; `TooLarge` past `limit`.
fn read_line_bounded(reader: &mut impl BufRead, limit: usize) -> Result<Vec<u8>, RequestError> {
    let mut line = Vec::new();
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(RequestError::Closed),
        };
        if buffer.is_empty() {
            return Ok(line);
        }
        let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(newline) => (&buffer[..=newline], true),
            None => (buffer, false),
        };
        if line.len() + chunk.len() > limit {
            return Err(RequestError::TooLarge);
        }
        line.extend_from_slice(chunk);
        let used = chunk.len();
        reader.consume(used);
        if done {
            return Ok(line);
        }
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra header lines, each without its CRLF.
    pub headers: Vec<String>,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            headers: Vec::new(),
        }
    }

    pub fn json(body: String) -> Response {
        Response {
            status: 200,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    /// Writes the response; a HEAD request gets the headers only.
    pub fn write_to(&self, out: &mut impl Write, head_only: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for header in &self.headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if !head_only {
            out.write_all(self.body.as_bytes())?;
        }
        out.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read(bytes: &[u8]) -> Result<Request, RequestError> {
        read_request(&mut Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn request_line_with_query_string() {
        assert_eq!(
            parse_request_line("GET /healthz?verbose=1 HTTP/1.1"),
            Ok(Request {
                method: Method::Get,
                path: "/healthz".into()
            })
        );
        assert_eq!(
            parse_request_line("HEAD / HTTP/1.0").unwrap().method,
            Method::Head
        );
        assert_eq!(
            parse_request_line("DELETE / HTTP/1.1").unwrap().method,
            Method::Other("DELETE".into())
        );
    }

    #[test]
    fn malformed_request_lines_are_rejected() {
        for line in [
            "",
            "GET",
            "GET /",
            "GET / HTTP/1.1 extra",
            "GET  / HTTP/1.1",
            "get / HTTP/1.1",
            "GET / HTTP/2",
            "GET / SPDY/3",
            "GET http://example/ HTTP/1.1",
            "GET * HTTP/1.1",
            "G\u{e9}T / HTTP/1.1",
        ] {
            assert!(
                matches!(parse_request_line(line), Err(RequestError::Malformed(_))),
                "{line:?} was accepted"
            );
        }
    }

    #[test]
    fn full_head_is_read_and_headers_ignored() {
        let request =
            read(b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\n\r\nbody").unwrap();
        assert_eq!(request.path, "/healthz");
        // Bare LF line ends are tolerated, and so are empty lines before the request line.
        assert_eq!(read(b"\r\n\nGET / HTTP/1.0\n\n").unwrap().path, "/");
    }

    #[test]
    fn truncated_heads_are_closed_connections() {
        assert_eq!(read(b""), Err(RequestError::Closed));
        assert_eq!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Err(RequestError::Closed)
        );
        assert_eq!(read(b"GET / HTTP/1.1"), Err(RequestError::Closed));
    }

    #[test]
    fn oversized_and_binary_heads_are_rejected() {
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(read(&long), Err(RequestError::TooLarge));
        let many_headers = "X: y\r\n".repeat(MAX_HEAD_BYTES / 6 + 1);
        assert_eq!(
            read(format!("GET / HTTP/1.1\r\n{many_headers}\r\n").as_bytes()),
            Err(RequestError::TooLarge)
        );
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\n\xff\xfe\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let mut out = Vec::new();
        Response::text(404, "not found")
            .write_to(&mut out, false)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 10\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nnot found\n"), "{text}");

        let mut head_only = Vec::new();
        Response::text(200, "ok")
            .write_to(&mut head_only, true)
            .unwrap();
        let text = String::from_utf8(head_only).unwrap();
        assert!(
            text.contains("Content-Length: 3\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
    }
}
