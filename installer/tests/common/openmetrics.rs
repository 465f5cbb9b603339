//! A strict parser for the OpenMetrics text the installer serves: every line must be a
//! descriptor, a sample of the family just described, or the final `# EOF`.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub families: HashMap<String, Family>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    pub fn samples_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

const KINDS: [&str; 8] = [
    "counter",
    "gauge",
    "info",
    "stateset",
    "histogram",
    "gaugehistogram",
    "summary",
    "unknown",
];

pub fn parse(text: &str) -> Result<Exposition, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with \"# EOF\\n\"")?;
    let mut out = Exposition::default();
    let mut current: Option<String> = None;
    let mut finished: HashSet<String> = HashSet::new();
    let mut seen: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for (number, line) in body.lines().enumerate() {
        let at = |what: String| format!("line {}: {what}: {line:?}", number + 1);
        if let Some(descriptor) = line.strip_prefix("# ") {
            let (keyword, rest) = descriptor
                .split_once(' ')
                .ok_or_else(|| at("bad descriptor".into()))?;
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            check_name(name).map_err(at)?;
            if current.as_deref() != Some(name) {
                if out.families.contains_key(name) || finished.contains(name) {
                    return Err(at(format!(
                        "family {name} is described twice or not contiguously"
                    )));
                }
                if let Some(previous) = current.take() {
                    finished.insert(previous);
                }
                out.families.insert(
                    name.to_string(),
                    Family {
                        kind: "unknown".into(),
                        help: None,
                        unit: None,
                    },
                );
                current = Some(name.to_string());
            }
            let family = out.families.get_mut(name).unwrap();
            match keyword {
                "TYPE" if KINDS.contains(&value) => family.kind = value.to_string(),
                "HELP" => family.help = Some(value.to_string()),
                "UNIT" => {
                    if !name.ends_with(&format!("_{value}")) {
                        return Err(at(format!("{name} does not end with its unit {value}")));
                    }
                    family.unit = Some(value.to_string());
                }
                _ => return Err(at("unknown descriptor or type".into())),
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(at("stray comment or blank line".into()));
        }
        let (name, labels, rest) = split_sample(line).map_err(at)?;
        let family = current
            .clone()
            .ok_or_else(|| at("sample before any descriptor".into()))?;
        let kind = &out.families[&family].kind;
        let allowed: Vec<String> = match kind.as_str() {
            "counter" => vec![format!("{family}_total"), format!("{family}_created")],
            "histogram" => ["bucket", "sum", "count", "created"]
                .iter()
                .map(|suffix| format!("{family}_{suffix}"))
                .collect(),
            "info" => vec![format!("{family}_info")],
            _ => vec![family.clone()],
        };
        if !allowed.contains(&name.to_string()) {
            return Err(at(format!(
                "sample {name} does not belong to {kind} family {family}"
            )));
        }
        let mut parts = rest.split(' ');
        let value = parse_value(parts.next().unwrap_or("")).map_err(at)?;
        if let Some(timestamp) = parts.next() {
            timestamp
                .parse::<f64>()
                .map_err(|_| at("bad timestamp".into()))?;
        }
        if parts.next().is_some() {
            return Err(at("trailing text".into()));
        }
        if kind == "counter" && value < 0.0 {
            return Err(at("negative counter".into()));
        }
        if !seen.insert((name.to_string(), labels.clone())) {
            return Err(at("duplicate series".into()));
        }
        out.samples.push(Sample {
            family,
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

/// `name{labels} rest` → (name, labels, rest).
fn split_sample(line: &str) -> Result<(&str, BTreeMap<String, String>, &str), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, quoted) = inner.split_once("=\"").ok_or("label without =\"")?;
            check_name(label)?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                let (index, c) = chars.next().ok_or("unterminated label value")?;
                match c {
                    '"' => break index + 1,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    c => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            inner = &quoted[end..];
            if let Some(after) = inner.strip_prefix(',') {
                inner = after;
            } else if !inner.starts_with('}') {
                return Err("expected ',' or '}' after a label".into());
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    Ok((name, labels, rest))
}
