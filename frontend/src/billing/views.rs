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
    /// Printed before: this copy is a reprint (补打).
    pub reprint: bool,
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
    pub settlement: Option<SettlementView>,
    pub form_key: String,
    pub can_reverse: bool,
    pub can_close: bool,
    /// Pay out what a closed account is owed.
    pub can_payout: bool,
    /// Collect arrears of a closed account in arrears.
    pub can_collect: bool,
    /// Ask to write off arrears.
    pub can_write_off: bool,
    pub invoices: Vec<InvoiceView>,
    /// Record invoice requests (the counter's right).
    pub can_invoice: bool,
    /// Mark them issued or cancel them.
    pub can_issue: bool,
}

/// An invoice (发票) request of an account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InvoiceView {
    pub id: String,
    pub title: String,
    pub tax_number: String,
    pub amount_fen: i64,
    /// `requested`, `issued` or `cancelled`.
    pub state: String,
    pub invoice_number: String,
    pub requested_at: String,
}

/// One line of the day report: kind, method, count, amount.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DayLineView {
    pub kind: String,
    pub method: String,
    pub count: i64,
    pub amount_fen: i64,
}

/// A cashier shift as the books page lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShiftView {
    pub username: String,
    pub opened_at: String,
    pub closed_at: String,
    pub float_fen: i64,
    pub cash_taken_fen: i64,
    pub counted_cash_fen: Option<i64>,
    pub difference_fen: Option<i64>,
}

/// The books page (交班与日结): the day report, the close, the shifts and the latest closes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BooksView {
    /// The report's local date.
    pub day: String,
    pub day_closed: bool,
    pub lines: Vec<DayLineView>,
    /// Cashiers whose open shifts block the day's close.
    pub blocking: Vec<String>,
    /// The last closed date (empty: none yet).
    pub closed_through: String,
    /// (day, closed at) of the latest closes.
    pub closes: Vec<(String, String)>,
    pub shifts: Vec<ShiftView>,
    pub can_close: bool,
}

/// How a closed account was settled (the printable slip).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SettlementView {
    /// Local time of the close.
    pub closed_at: String,
    pub receipt_no: String,
    pub close_txn: Option<String>,
    pub deposit_returned_fen: i64,
    pub rounding_fen: i64,
    /// + owed to the tenant, − owed by the tenant, at the close.
    pub net_fen: i64,
    /// Still to pay out.
    pub payable_fen: i64,
    /// Still owed by the tenant.
    pub arrears_fen: i64,
    /// (meter number, final reading kWh, typed by hand).
    pub final_readings: Vec<(String, String, bool)>,
}

/// A request waiting for an approver: a reversal, a held reading's correction or a write-off.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApprovalView {
    pub id: String,
    /// `reversal`, `reading_correction` or `write_off`.
    pub kind: String,
    /// Where the subject is shown (the account, or the held readings page).
    pub link: String,
    /// The shop (and meter for a correction).
    pub subject: String,
    /// Money asked for (reversal, write-off).
    pub amount_fen: Option<i64>,
    /// Energy asked for (correction), kWh as text formatted from Wh.
    pub energy_kwh: Option<String>,
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

/// A meter whose rating stopped at a held reading.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HeldView {
    pub meter_id: String,
    pub meter: String,
    pub shop: String,
    pub account_id: String,
    pub reason: String,
    pub held_at: String,
    pub previous_at: String,
    pub previous_kwh: String,
    pub held_reading_at: String,
    pub held_kwh: String,
    /// The register difference, kWh (empty when the register went back).
    pub as_read_kwh: String,
    /// A correction waits for an approver.
    pub waiting: bool,
}

/// The held readings page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HeldPageView {
    pub items: Vec<HeldView>,
    pub form_key: String,
    pub can_review: bool,
    /// Energy above this (kWh) waits for an approver.
    pub approval_above_kwh: String,
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
