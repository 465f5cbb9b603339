//! The history of what krafty did to each network namespace: one JSON line per invocation.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry<'a> {
    pub time: String,
    pub plugin: &'a str,
    pub command: &'a str,
    pub container_id: &'a str,
    pub network: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub args: &'a [(String, String)],
    pub duration_us: u128,
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<LoggedError>,
}

#[derive(Debug, Serialize)]
pub struct LoggedError {
    pub code: u32,
    pub msg: String,
}

/// Appends `entry` as one line. One `write` of the whole line on an O_APPEND descriptor keeps
/// lines of concurrent invocations whole; the final component must not be a symlink.
pub fn append(path: &Path, entry: &Entry<'_>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    }
    let mut line = serde_json::to_vec(entry)?;
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.write_all(&line)
}

/// `2026-11-22T08:30:00.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_336_200_123_456);
        assert_eq!(rfc3339(t), "2026-11-22T08:30:00.123456Z");
        // 2024-02-29 (a leap day) at noon.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_208_000)),
            "2024-02-29T12:00:00.000000Z"
        );
    }

    #[test]
    fn appends_whole_lines_and_refuses_symlinks() {
        let dir = std::env::temp_dir().join(format!("krafty-log-test-{}", std::process::id()));
        let path = dir.join("sub").join("krafty.log");
        let entry = Entry {
            time: rfc3339(SystemTime::now()),
            plugin: "krafty-vrf",
            command: "ADD",
            container_id: "abc",
            network: "krafty",
            ifname: "net1",
            netns: "/run/netns/x",
            pod_namespace: "default",
            pod_name: "p",
            pod_uid: "u",
            args: &[],
            duration_us: 42,
            outcome: "error",
            error: Some(LoggedError {
                code: 7,
                msg: "bad".into(),
            }),
        };
        append(&path, &entry).unwrap();
        append(&path, &entry).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["containerId"], "abc");
        assert_eq!(lines[0]["durationUs"], 42);
        assert_eq!(lines[0]["error"]["code"], 7);

        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(append(&link, &entry).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
