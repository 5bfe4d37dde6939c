//! Values that must be valid, built only through checking constructors ("parse, don't
//! validate"): company slugs, tenant schema names, usernames, phone numbers, passwords.
//! A `SchemaName` in particular can only come from a company id, never from request text,
//! because it is spliced into SQL as an identifier.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused; the message is shown to the user next to the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub &'static str);

/// A company's login slug: 2–32 characters, lowercase ASCII letters, digits and `-`, starting
/// with a letter. It is what users type in the "company" field of the login form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CompanySlug(String);

impl CompanySlug {
    pub const LEN_MAX: usize = 32;

    pub fn parse(text: &str) -> Result<Self, NameError> {
        let text = text.trim().to_ascii_lowercase();
        let ok_len = (2..=Self::LEN_MAX).contains(&text.len());
        let ok_first = text.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        let ok_chars = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok_len && ok_first && ok_chars && !text.ends_with('-') {
            Ok(CompanySlug(text))
        } else {
            Err(NameError(
                "2–32 lowercase letters, digits or '-', starting with a letter",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CompanySlug {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CompanySlug::parse(&value)
    }
}

impl From<CompanySlug> for String {
    fn from(value: CompanySlug) -> Self {
        value.0
    }
}

impl fmt::Display for CompanySlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PostgreSQL schema that holds one company's data: `c_<company id>`. Built only from the
/// numeric id, so it is always a safe identifier to splice into SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// The schema of the company with this id.
    pub fn for_company(company_id: i64) -> Self {
        assert!(company_id > 0, "company ids come from an identity column");
        SchemaName(format!("c_{company_id}"))
    }

    /// The platform's own schema.
    pub fn control() -> Self {
        SchemaName("control".into())
    }

    /// Re-checks a name read back from `control.company` (defence in depth: it was written by
    /// `for_company`, but a schema name is spliced into SQL and must never be anything else).
    pub fn from_stored(text: &str) -> Result<Self, NameError> {
        let digits = text.strip_prefix("c_").unwrap_or("");
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 18 {
            Ok(SchemaName(text.to_owned()))
        } else if text == "control" {
            Ok(SchemaName::control())
        } else {
            Err(NameError("not a PowerTab schema name"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A login name: 2–64 characters of letters, digits, `.`, `_`, `-` or `@`. Shop tenants use
/// their phone number, which also fits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let text = text.trim();
        let ok_len = (2..=64).contains(&text.chars().count());
        let ok_chars = text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if ok_len && ok_chars {
            Ok(Username(text.to_owned()))
        } else {
            Err(NameError(
                "2–64 characters: letters, digits, '.', '_', '-' or '@'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Username::parse(&value)
    }
}

impl From<Username> for String {
    fn from(value: Username) -> Self {
        value.0
    }
}

/// A mainland China mobile number: 11 digits starting with 1 (an optional +86 is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let national = compact.strip_prefix("+86").unwrap_or(&compact);
        if national.len() == 11
            && national.starts_with('1')
            && national.bytes().all(|b| b.is_ascii_digit())
        {
            Ok(PhoneNumber(national.to_owned()))
        } else {
            Err(NameError("an 11-digit mobile number starting with 1"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        PhoneNumber::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

/// A new password that meets the policy: 10–128 characters with at least one letter and one
/// digit. Existing passwords are never re-checked against the policy, only verified.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

impl NewPassword {
    pub const LEN_MIN: usize = 10;
    pub const LEN_MAX: usize = 128;

    pub fn parse(text: &str) -> Result<Self, NameError> {
        let len = text.chars().count();
        if !(Self::LEN_MIN..=Self::LEN_MAX).contains(&len) {
            return Err(NameError("10–128 characters"));
        }
        let has_letter = text.chars().any(|c| c.is_alphabetic());
        let has_digit = text.chars().any(|c| c.is_ascii_digit());
        if !(has_letter && has_digit) {
            return Err(NameError("needs at least one letter and one digit"));
        }
        Ok(NewPassword(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_slugs_are_lowercased_and_checked() {
        assert_eq!(
            CompanySlug::parse(" Wanda-Plaza ").unwrap().as_str(),
            "wanda-plaza"
        );
        for bad in [
            "",
            "a",
            "1abc",
            "ab_c",
            "ab c",
            "abc-",
            "a".repeat(33).as_str(),
            "商场",
        ] {
            assert!(CompanySlug::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schema_names_come_only_from_ids_or_checked_text() {
        assert_eq!(SchemaName::for_company(42).as_str(), "c_42");
        assert!(SchemaName::from_stored("c_42").is_ok());
        assert!(SchemaName::from_stored("control").is_ok());
        for bad in ["c_", "c_4; drop table x", "public", "c_-1", "C_1"] {
            assert!(SchemaName::from_stored(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames_and_phones_are_checked() {
        assert!(Username::parse("op.zhang@mall").is_ok());
        assert!(Username::parse("x").is_err());
        assert!(Username::parse("with space").is_err());
        assert_eq!(
            PhoneNumber::parse("+86 138-0013-8000").unwrap().as_str(),
            "13800138000"
        );
        assert!(PhoneNumber::parse("2380013800").is_err());
        assert!(PhoneNumber::parse("23800138000").is_err());
    }

    #[test]
    fn passwords_follow_the_policy_and_never_print() {
        assert!(NewPassword::parse("short1").is_err());
        assert!(NewPassword::parse("onlyletterslong").is_err());
        assert!(NewPassword::parse("12345678901").is_err());
        let good = NewPassword::parse("correct horse 9").unwrap();
        assert_eq!(format!("{good:?}"), "NewPassword(***)");
    }
}

/// Broker usernames and prefixes the platform keeps for itself. A gateway's identity is its MQTT
/// broker username, so a tenant naming a gateway `powertab-admin` would otherwise make
/// provisioning suspend or delete PowerTab's own login (every company's gateways locked out).
const RESERVED_IDENTITY_PREFIXES: [&str; 3] = ["powertab", "pt-gw-", "$"];
const RESERVED_IDENTITIES: [&str; 6] = [
    "admin",
    "root",
    "mosquitto",
    "dynsec",
    "dynamic-security",
    "anonymous",
];

/// Whether `identity` is a name the platform keeps for itself (case-insensitive).
pub fn is_reserved_gateway_identity(identity: &str) -> bool {
    let lower = identity.trim().to_ascii_lowercase();
    RESERVED_IDENTITY_PREFIXES
        .iter()
        .any(|p| lower.starts_with(p))
        || RESERVED_IDENTITIES.contains(&lower.as_str())
}

#[cfg(test)]
mod reserved_tests {
    use super::is_reserved_gateway_identity;

    #[test]
    fn the_platforms_broker_names_are_reserved_in_any_case() {
        for name in [
            "powertab-admin",
            "PowerTab-Ingest",
            "powertab",
            "pt-gw-x",
            "$SYS",
            "Admin",
            " admin ",
        ] {
            assert!(is_reserved_gateway_identity(name), "{name}");
        }
        for name in ["gw-admin", "dtu-0001", "pt-0001", "my-powertab"] {
            assert!(!is_reserved_gateway_identity(name), "{name}");
        }
    }
}
