//! Who may do what. Six roles (DESIGN.md: Tenancy, login and access) and the per-action rights a
//! company admin grants to operators. The server checks these on every action; the frontend uses
//! the same functions only to decide which links to show.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A user's role. Platform roles live in `control`; the others in a company schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    PlatformAdmin,
    /// Read-only platform staff.
    PlatformSupport,
    CompanyAdmin,
    Operator,
    /// Read-only company staff.
    Auditor,
    ShopTenant,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::PlatformAdmin,
        Role::PlatformSupport,
        Role::CompanyAdmin,
        Role::Operator,
        Role::Auditor,
        Role::ShopTenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::PlatformSupport => "platform_support",
            Role::CompanyAdmin => "company_admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::ShopTenant => "shop_tenant",
        }
    }

    /// Platform staff (stored in `control`, log in with an empty company).
    pub fn is_platform(self) -> bool {
        matches!(self, Role::PlatformAdmin | Role::PlatformSupport)
    }

    /// Company staff, the users that count toward the operator quota.
    pub fn is_company_staff(self) -> bool {
        matches!(self, Role::CompanyAdmin | Role::Operator | Role::Auditor)
    }

    /// Roles that can never change anything.
    pub fn is_read_only(self) -> bool {
        matches!(self, Role::PlatformSupport | Role::Auditor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// An action a company admin can grant to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Right {
    TopUp,
    Refund,
    Reversal,
    Approve,
    TripClose,
    KeepPower,
    Settings,
    Export,
    /// Open and close shop accounts (开户 / 销户).
    Accounts,
    /// Pay out refunds payable of closed accounts.
    Payout,
    /// Release or correct held readings.
    ReadingsReview,
    /// Close a booking day (日结).
    DailyClose,
    /// Grant emergency credit (应急电).
    EmergencyCredit,
}

impl Right {
    pub const ALL: [Right; 13] = [
        Right::TopUp,
        Right::Refund,
        Right::Reversal,
        Right::Approve,
        Right::TripClose,
        Right::KeepPower,
        Right::Settings,
        Right::Export,
        Right::Accounts,
        Right::Payout,
        Right::ReadingsReview,
        Right::DailyClose,
        Right::EmergencyCredit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Right::TopUp => "top_up",
            Right::Refund => "refund",
            Right::Reversal => "reversal",
            Right::Approve => "approve",
            Right::TripClose => "trip_close",
            Right::KeepPower => "keep_power",
            Right::Settings => "settings",
            Right::Export => "export",
            Right::Accounts => "accounts",
            Right::Payout => "payout",
            Right::ReadingsReview => "readings_review",
            Right::DailyClose => "daily_close",
            Right::EmergencyCredit => "emergency_credit",
        }
    }
}

impl FromStr for Right {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Right::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown right {s:?}"))
    }
}

/// What a company-scoped action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading company data: every company role but shop tenants.
    ReadCompany,
    /// Managing users, rights and company settings: company admins and platform admins.
    Administer,
    /// An operator action guarded by a right.
    Act(Right),
}

/// Whether a user with `role` and granted `rights` may do what `need` names, inside a company.
pub fn allows(role: Role, rights: &[Right], need: Need) -> bool {
    match need {
        Need::ReadCompany => !matches!(role, Role::ShopTenant),
        Need::Administer => matches!(role, Role::CompanyAdmin | Role::PlatformAdmin),
        // Exporting only reads; read-only roles may export what they can see.
        Need::Act(Right::Export) => match role {
            Role::CompanyAdmin | Role::PlatformAdmin | Role::Auditor | Role::PlatformSupport => {
                true
            }
            Role::Operator => rights.contains(&Right::Export),
            Role::ShopTenant => false,
        },
        Need::Act(right) => match role {
            Role::CompanyAdmin | Role::PlatformAdmin => true,
            Role::Operator => rights.contains(&right),
            Role::Auditor | Role::PlatformSupport | Role::ShopTenant => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        for right in Right::ALL {
            assert_eq!(right.as_str().parse::<Right>(), Ok(right));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn operators_act_only_with_granted_rights() {
        let granted = [Right::TopUp];
        assert!(allows(Role::Operator, &granted, Need::Act(Right::TopUp)));
        assert!(!allows(Role::Operator, &granted, Need::Act(Right::Refund)));
        assert!(!allows(Role::Operator, &granted, Need::Administer));
        assert!(allows(Role::Operator, &granted, Need::ReadCompany));
    }

    #[test]
    fn read_only_roles_never_act_but_may_export() {
        for role in [Role::Auditor, Role::PlatformSupport] {
            for right in Right::ALL {
                let expected = right == Right::Export;
                assert_eq!(
                    allows(role, &Right::ALL, Need::Act(right)),
                    expected,
                    "{role} {right:?}"
                );
            }
            assert!(!allows(role, &[], Need::Administer));
        }
    }

    #[test]
    fn shop_tenants_see_no_company_data() {
        assert!(!allows(Role::ShopTenant, &Right::ALL, Need::ReadCompany));
        assert!(!allows(
            Role::ShopTenant,
            &Right::ALL,
            Need::Act(Right::Export)
        ));
    }
}
