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
    /// Meter-side accounts: credit the meters hold by the platform's reckoning, and credit
    /// bought but not yet verified on them.
    #[serde(default)]
    pub meter_side: bool,
    #[serde(default)]
    pub on_meter_fen: i64,
    #[serde(default)]
    pub in_transit_fen: i64,
    /// A meter-side account with several meters: (meter id, number) to choose the one a top-up
    /// credits; empty otherwise (the only meter, or platform-side).
    #[serde(default)]
    pub meter_choices: Vec<(String, String)>,
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
    /// The shop chosen to open (`?open=<shop id>`), with one reading row per meter.
    pub opening: Option<OpeningView>,
}

/// A vacant shop being opened, meter by meter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OpeningView {
    pub shop_id: String,
    pub shop: String,
    pub meters: Vec<OpeningMeterView>,
}

/// One meter of a shop being opened: what billing would count from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OpeningMeterView {
    pub meter_id: String,
    pub number: String,
    /// The latest stored reading (kWh) and its local time; empty without one.
    pub latest_kwh: String,
    pub latest_at: String,
    /// Fresh enough to open from: a typed reading is then not needed (and not taken).
    pub fresh: bool,
    /// A meter-side meter holding credit (yuan, as it reads back): the opening needs the
    /// operator to confirm that amount; empty when nothing is on it.
    #[serde(default)]
    pub remaining_on_meter: String,
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
    /// The shop-tenant users linked to the account (they see it on their phones).
    pub tenants: Vec<TenantView>,
    /// Link another tenant user (an open account, the accounts right).
    pub can_link: bool,
}

/// A shop-tenant user linked to an account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TenantView {
    pub username: String,
    pub display_name: String,
    pub linked_at: String,
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
    /// The one reading of a shop with one meter (the short form).
    #[serde(default)]
    pub reading_kwh: String,
    /// One row per meter (`meters[i][meter_id]`, `meters[i][reading_kwh]`), from the form of a
    /// chosen shop.
    #[serde(default)]
    pub meters: Vec<OpeningMeterForm>,
    #[serde(default)]
    pub deposit: String,
    #[serde(default)]
    pub opening_credit: String,
}

/// A meter row of the open-account form.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpeningMeterForm {
    pub meter_id: String,
    #[serde(default)]
    pub reading_kwh: String,
    /// For a meter-side meter holding credit: the yuan the operator confirms is on it.
    #[serde(default)]
    pub accept_remaining: String,
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
