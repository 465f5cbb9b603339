"""nettools-server, built the way nettools/Dockerfile builds it (the crate alone, outside the
workspace) and exercised over real TCP on the loopback address."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def server(server_binary):
    port = free_port()
    process = subprocess.Popen([server_binary, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    try:
        wait_listening(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def exchange(port: int, request: bytes) -> bytes:
    """Sends raw bytes, returns everything the server answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def response(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    raw = exchange(port, request)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def test_healthz(server):
    status, headers, body = response(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"ok\n")
    assert headers["Content-Length"] == "3"
    assert headers["Connection"] == "close"


def test_root_reports_interfaces_and_routes_as_json(server):
    status, headers, body = response(server, b"GET /?pretty HTTP/1.1\r\n\r\n")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document["hostname"] == socket.gethostname()
    assert document["errors"] == []
    names = {interface["ifname"] for interface in document["interfaces"]}
    assert "lo" in names
    loopback = next(i for i in document["interfaces"] if i["ifname"] == "lo")
    assert {"127.0.0.1"} <= {a["local"] for a in loopback["addr_info"]}
    # Routes of every table: the local table always holds 127.0.0.1.
    assert any(r.get("dst") == "127.0.0.1" and r.get("table") == "local" for r in document["routes"])
    assert int(headers["Content-Length"]) == len(body)


def test_head_gets_headers_only(server):
    status, headers, body = response(server, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "3"


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"GET /metrics HTTP/1.1\r\n\r\n", 404),
        (b"GET /healthz/ HTTP/1.1\r\n\r\n", 404),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\n\r\n", 400),
        (b"GET http://elsewhere/ HTTP/1.1\r\n\r\n", 400),
        (b"\xff\xfe\xfd\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_requests_get_an_error_status(server, request_bytes, status):
    assert response(server, request_bytes)[0] == status


def test_method_not_allowed_names_the_allowed_ones(server):
    assert response(server, b"DELETE /healthz HTTP/1.1\r\n\r\n")[1]["Allow"] == "GET, HEAD"


def test_survives_clients_that_hang_up(server):
    assert exchange(server, b"") == b""
    assert exchange(server, b"GET / HTTP/1.1\r\nHost: half") == b""
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert response(server, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200


def test_listen_address_from_the_environment_and_bare_port(server_binary):
    port = free_port()
    process = subprocess.Popen([server_binary], env={"NETTOOLS_LISTEN": str(port)}, stderr=subprocess.PIPE)
    try:
        wait_listening(port)
        assert response(port, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("argv", [["--listen", "nowhere"], ["--port", "80"], ["--listen"]])
def test_bad_command_lines_exit_2(server_binary, argv):
    result = subprocess.run([server_binary, *argv], capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert result.stderr.startswith("nettools-server: ")
