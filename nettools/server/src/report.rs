//! The `GET /` document: the pod's hostname, interfaces with their addresses, and routes of
//! every table, as iproute2 reports them (`ip -j`). Without a JSON library the output of `ip`
//! is embedded as it comes, after checking it is one JSON array; a command that fails or prints
//! something else is reported under `errors` and its field is `null`, so the document stays
//! valid JSON whatever the pod's tools do.

use std::fmt::Write as _;
use std::process::Command;

/// What `GET /` reports, each field from one or more `ip` invocations.
const INTERFACES: &[&[&str]] = &[&["-j", "addr", "show"]];
/// `ip route` lists one address family at a time; both go into `routes`.
const ROUTES: &[&[&str]] = &[
    &["-j", "-4", "route", "show", "table", "all"],
    &["-j", "-6", "route", "show", "table", "all"],
];

/// Runs a program and returns its stdout, or a one-line reason it could not be had.
pub type Runner<'a> = &'a dyn Fn(&str, &[&str]) -> Result<String, String>;

pub fn run_command(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "{program} exited with {}: {}",
            output.status,
            stderr.trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("{program} printed non-UTF-8 output"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

pub fn build(hostname: &str, run: Runner) -> String {
    let mut errors = Vec::new();
    let interfaces = collect(INTERFACES, run, &mut errors);
    let routes = collect(ROUTES, run, &mut errors);
    let mut document = String::from("{");
    let _ = write!(document, "\"hostname\":{}", json_string(hostname));
    let _ = write!(document, ",\"interfaces\":{interfaces}");
    let _ = write!(document, ",\"routes\":{routes}");
    let errors: Vec<String> = errors.iter().map(|e| json_string(e)).collect();
    let _ = write!(document, ",\"errors\":[{}]}}", errors.join(","));
    document.push('\n');
    document
}

/// The concatenation of the arrays the commands print, or `null` if any of them failed.
fn collect(commands: &[&[&str]], run: Runner, errors: &mut Vec<String>) -> String {
    let errors_before = errors.len();
    let mut elements = Vec::new();
    for args in commands {
        let command = format!("ip {}", args.join(" "));
        match run("ip", args) {
            Ok(output) => match array_elements(&output) {
                Some("") => {}
                Some(inner) => elements.push(inner.to_string()),
                None => errors.push(format!("{command}: output is not a JSON array")),
            },
            Err(e) => errors.push(format!("{command}: {e}")),
        }
    }
    if errors.len() == errors_before {
        format!("[{}]", elements.join(","))
    } else {
        "null".to_string()
    }
}

/// The text between the outer brackets of a JSON array, trimmed. A shape check, not a parser:
/// `ip -j` either prints one array or fails.
fn array_elements(output: &str) -> Option<&str> {
    let inner = output.trim().strip_prefix('[')?.strip_suffix(']')?;
    Some(inner.trim())
}

pub fn json_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(args: &[&str]) -> Result<String, String> {
        match args {
            ["-j", "addr", "show"] => Ok("[{\"ifname\":\"lo\"},{\"ifname\":\"net1\"}]\n".into()),
            ["-j", "-4", "route", "show", "table", "all"] => Ok("[{\"dst\":\"default\"}]".into()),
            ["-j", "-6", "route", "show", "table", "all"] => Ok("[]".into()),
            _ => Err(format!("unexpected {args:?}")),
        }
    }

    #[test]
    fn document_embeds_both_route_families() {
        let document = build("nettools-1", &|_, args| fake(args));
        assert_eq!(
            document,
            "{\"hostname\":\"nettools-1\",\"interfaces\":[{\"ifname\":\"lo\"},{\"ifname\":\"net1\"}],\
             \"routes\":[{\"dst\":\"default\"}],\"errors\":[]}\n"
        );
    }

    #[test]
    fn failures_become_null_fields_and_errors() {
        let no_ipv6 = build("h", &|_, args| match args {
            ["-j", "-6", ..] => Err("ip exited with 1: no IPv6".into()),
            _ => fake(args),
        });
        assert_eq!(
            no_ipv6,
            "{\"hostname\":\"h\",\"interfaces\":[{\"ifname\":\"lo\"},{\"ifname\":\"net1\"}],\
             \"routes\":null,\"errors\":[\"ip -j -6 route show table all: ip exited with 1: no IPv6\"]}\n"
        );
        let old_ip = build("h", &|_, args| match args {
            ["-j", "addr", "show"] => Ok("Object \"addr\" is unknown".into()),
            _ => fake(args),
        });
        assert_eq!(
            old_ip,
            "{\"hostname\":\"h\",\"interfaces\":null,\"routes\":[{\"dst\":\"default\"}],\
             \"errors\":[\"ip -j addr show: output is not a JSON array\"]}\n"
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}é"),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }
}
