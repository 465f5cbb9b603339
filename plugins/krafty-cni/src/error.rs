//! The one error type of the krafty plugins and its mapping onto CNI error codes.
//!
//! Codes below 100 are the CNI specification's; 100 and above are krafty's own and are
//! documented in the README. Every variant says what went wrong in words a user can act on.

use serde::Serialize;

use crate::version::CniVersion;

/// CNI error codes, as numbers that appear on the wire.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NETLINK: u32 = 100;
    pub const NAMESPACE: u32 = 101;
    pub const IPAM: u32 = 102;
    pub const DEVICE_CONFLICT: u32 = 103;
    pub const CHECK_FAILED: u32 = 104;
    pub const STATE: u32 = 105;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {requested:?}: krafty supports {supported}")]
    IncompatibleVersion {
        requested: String,
        supported: String,
    },
    #[error("{0}")]
    UnsupportedField(String),
    #[error("{0}")]
    InvalidEnvironment(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    #[error("{0}")]
    TryAgainLater(String),
    #[error("{0}")]
    NotAvailable(String),
    #[error("netlink: {operation}: {reason}")]
    Netlink {
        operation: String,
        /// The kernel's answer, when it gave one (positive errno).
        errno: Option<i32>,
        reason: String,
    },
    #[error("network namespace {path}: {reason}")]
    Namespace { path: String, reason: String },
    /// The delegated IPAM plugin could not be run or did not answer sensibly.
    #[error("IPAM plugin {plugin:?}: {reason}")]
    Ipam { plugin: String, reason: String },
    /// The delegated IPAM plugin answered with a CNI error of its own: its code is kept.
    #[error("IPAM plugin {plugin:?} failed: {msg}")]
    IpamReported {
        plugin: String,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("device {name:?} exists but {reason}; krafty leaves it alone")]
    DeviceConflict { name: String, reason: String },
    #[error("CHECK failed: {0}")]
    CheckFailed(String),
    #[error("attachment state: {0}")]
    State(String),
    /// Several independent failures, e.g. from a teardown that kept going past errors.
    #[error("{}", join_messages(.0))]
    Multiple(Vec<Error>),
}

fn join_messages(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            Error::UnsupportedField(_) => code::UNSUPPORTED_FIELD,
            Error::InvalidEnvironment(_) => code::INVALID_ENVIRONMENT,
            Error::Io { .. } => code::IO_FAILURE,
            Error::Decode { .. } => code::DECODE_FAILURE,
            Error::InvalidConfig(_) => code::INVALID_CONFIG,
            Error::TryAgainLater(_) => code::TRY_AGAIN_LATER,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
            Error::Netlink { .. } => code::NETLINK,
            Error::Namespace { .. } => code::NAMESPACE,
            Error::Ipam { .. } => code::IPAM,
            Error::IpamReported { code, .. } => *code,
            Error::DeviceConflict { .. } => code::DEVICE_CONFLICT,
            Error::CheckFailed(_) => code::CHECK_FAILED,
            Error::State(_) => code::STATE,
            Error::Multiple(errors) => errors.first().map_or(code::NETLINK, Error::code),
        }
    }

    pub fn invalid_config(message: impl Into<String>) -> Error {
        Error::InvalidConfig(message.into())
    }

    pub fn invalid_env(message: impl Into<String>) -> Error {
        Error::InvalidEnvironment(message.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn incompatible_version(requested: &str) -> Error {
        Error::IncompatibleVersion {
            requested: requested.to_string(),
            supported: CniVersion::ALL.map(CniVersion::as_str).join(", "),
        }
    }

    /// Collapses the errors of a teardown that kept going: none is success, one is itself.
    pub fn from_all(mut errors: Vec<Error>) -> Result<(), Error> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Multiple(errors)),
        }
    }

    fn details(&self) -> String {
        match self {
            Error::IpamReported { details, .. } => details.clone(),
            _ => String::new(),
        }
    }

    /// The error as the CNI specification's JSON object.
    pub fn to_wire(&self, version: CniVersion) -> WireError {
        WireError {
            cni_version: version.as_str(),
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        }
    }
}

/// `{cniVersion, code, msg, details}` as printed on stdout.
#[derive(Debug, Serialize)]
pub struct WireError {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_specification() {
        assert_eq!(Error::incompatible_version("9.9.9").code(), 1);
        assert_eq!(Error::invalid_env("CNI_NETNS is required").code(), 4);
        assert_eq!(
            Error::Decode {
                what: "config".into(),
                reason: "eof".into()
            }
            .code(),
            6
        );
        assert_eq!(Error::invalid_config("x").code(), 7);
        assert_eq!(Error::TryAgainLater("busy".into()).code(), 11);
        assert_eq!(Error::NotAvailable("no vrf".into()).code(), 50);
    }

    #[test]
    fn delegated_ipam_errors_keep_their_code_and_details() {
        let err = Error::IpamReported {
            plugin: "host-local".into(),
            code: 11,
            msg: "no IP addresses available".into(),
            details: "range full".into(),
        };
        let wire = err.to_wire(CniVersion::V1_0_0);
        assert_eq!(wire.code, 11);
        assert_eq!(wire.details, "range full");
        assert!(wire.msg.contains("host-local"));
    }

    #[test]
    fn multiple_errors_report_all_messages_and_the_first_code() {
        let all = Error::from_all(vec![
            Error::invalid_config("first"),
            Error::CheckFailed("second".into()),
        ])
        .unwrap_err();
        assert_eq!(all.code(), 7);
        let text = all.to_string();
        assert!(text.contains("first") && text.contains("second"), "{text}");
        assert!(Error::from_all(Vec::new()).is_ok());
    }

    #[test]
    fn wire_format_is_the_specification_object() {
        let json =
            serde_json::to_value(Error::incompatible_version("0.1.0").to_wire(CniVersion::V0_4_0))
                .unwrap();
        assert_eq!(json["cniVersion"], "0.4.0");
        assert_eq!(json["code"], 1);
        assert!(json["msg"].as_str().unwrap().contains("0.1.0"));
        assert!(json.get("details").is_none());
    }
}
