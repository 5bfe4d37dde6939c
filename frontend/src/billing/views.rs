//! View types of the counter: accounts as the counter shows them, the cashier's shift, and the
//! shops an account can be opened for. Money travels as integer fen and is formatted from
//! integers on the page.

use serde::{Deserialize, Serialize};

/// One account at the counter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CounterAccountView {
    pub id: String,
    pub shop: String,
    pub holder: String,
    pub state: String,
    pub meters: Vec<String>,
    pub wallet_fen: i64,
    pub deposit_fen: i64,
    pub available_fen: i64,
}

/// The counter page: the accounts found, the caller's shift, vacant shops for opening, and a
/// fresh idempotency key for each form (a refresh or double click posts once).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CounterView {
    pub accounts: Vec<CounterAccountView>,
    /// (opened at, float fen, cash taken fen) of the open shift.
    pub shift: Option<(String, i64, i64)>,
    /// (shop id, "building · number name") of shops without an open account.
    pub vacant_shops: Vec<(String, String)>,
    pub form_key: String,
    pub can_top_up: bool,
    pub can_refund: bool,
    pub can_open: bool,
    /// The receipt number of the movement just made (from the redirect), shown with the flash.
    pub receipt: Option<String>,
    /// Its transaction, for the print link.
    pub receipt_txn: Option<String>,
}

/// A receipt as printed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReceiptView {
    pub company: String,
    pub receipt_no: String,
    /// Local time of the property.
    pub at: String,
    /// The transaction kind (`top_up`, `refund`, …).
    pub kind: String,
    pub method: String,
    pub shop: String,
    pub holder: String,
    pub meters: Vec<String>,
    pub amount_fen: i64,
    pub available_fen: i64,
    pub memo: String,
    /// The shop's public QR link (company + meter; no secrets).
    pub qr_link: String,
}

/// One movement of the account page's statement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MovementView {
    pub txn_id: String,
    pub at: String,
    pub kind: String,
    pub receipt_no: String,
    pub method: String,
    pub memo: String,
    pub amount_fen: i64,
    pub balance_fen: i64,
    /// A counter top-up or refund not yet reversed.
    pub reversible: bool,
}

/// An account's own page: its card, its movements, and how it was settled when closed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountPageView {
    pub account: CounterAccountView,
    pub movements: Vec<MovementView>,
    /// (net fen: + owed to the tenant, − owed by the tenant; still to pay out fen).
    pub settlement: Option<(i64, i64)>,
    pub form_key: String,
    pub can_reverse: bool,
    pub can_close: bool,
}

/// A reversal waiting for an approver.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApprovalView {
    pub id: String,
    pub account_id: String,
    pub shop: String,
    pub amount_fen: i64,
    pub reason: String,
    pub requested_at: String,
    /// The caller asked for it (and so may not decide it).
    pub own: bool,
}

/// The approvals inbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApprovalsView {
    pub items: Vec<ApprovalView>,
    pub form_key: String,
    pub can_approve: bool,
}

/// The open-account form as typed (yuan, kWh).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpenAccountForm {
    pub shop_id: String,
    pub holder_name: String,
    #[serde(default)]
    pub holder_phone: String,
    #[serde(default)]
    pub reading_kwh: String,
    #[serde(default)]
    pub deposit: String,
    #[serde(default)]
    pub opening_credit: String,
}

/// Yuan with two decimals from integer fen (`AmountFen`'s own form); a negative available
/// balance reads as arrears on the page.
pub fn yuan(fen: i64) -> String {
    powertab_core::kernel::money::AmountFen::from_fen(fen).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn yuan_are_formatted_from_integers() {
        assert_eq!(super::yuan(123_456), "1234.56");
        assert_eq!(super::yuan(-5), "-0.05");
        assert_eq!(super::yuan(0), "0.00");
        assert_eq!(super::yuan(i64::MIN), "-92233720368547758.08");
    }
}
