//! View types of the tenant's pages. Money travels as integer fen, energy as integer Wh; both
//! are formatted from integers on the page.

use serde::{Deserialize, Serialize};

/// The QR landing page: the company a link names (`None`: no such company).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LandingView {
    pub slug: String,
    pub company_name: Option<String>,
    /// Someone is signed in here already as a tenant of this company.
    pub signed_in: bool,
}

/// One of the tenant's accounts in the switcher.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountChoice {
    pub id: String,
    pub shop: String,
    pub state: String,
}

/// One meter on the home page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MyMeterView {
    pub id: String,
    pub number: String,
    pub energy_wh: Option<i64>,
    /// Seconds since the newest reading.
    pub reading_age_s: Option<i64>,
    pub relay_closed: Option<bool>,
    /// Meter-side: what the meter itself says it holds, and how old that is.
    pub remaining_fen: Option<i64>,
    pub remaining_age_s: Option<i64>,
}

/// A usage bar: its label and Wh per TOU period (sharp, peak, flat, valley, deep valley).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UsageBar {
    pub label: String,
    pub title: String,
    pub by_period_wh: [i64; 5],
    pub charge_fen: i64,
}

/// A line of the tenant's statement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MyLine {
    pub at: String,
    pub kind: String,
    pub amount_fen: i64,
    pub balance_fen: i64,
    /// The transaction, where it has a receipt.
    pub receipt_txn: Option<String>,
    pub receipt_no: Option<String>,
}

/// A payment order in the tenant's list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MyOrderRow {
    pub id: String,
    pub created: String,
    pub amount_fen: i64,
    pub state: String,
}

/// The home of the selected account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MyAccountView {
    pub id: String,
    pub shop: String,
    pub state: String,
    pub meter_side: bool,
    pub available_fen: i64,
    pub deposit_fen: i64,
    /// `on`, `off` or `keep_power`.
    pub power: String,
    pub alarm_level: u8,
    pub days_left: Option<i64>,
    pub average_daily_fen: Option<i64>,
    pub meters: Vec<MyMeterView>,
    /// The emergency credit in force: amount and local expiry.
    pub emergency_in_force: Option<(i64, String)>,
    pub may_grant_emergency: bool,
    pub emergency_fen: i64,
    pub emergency_hours: i64,
    pub can_top_up: bool,
    pub days: Vec<UsageBar>,
    pub months: Vec<UsageBar>,
    pub lines: Vec<MyLine>,
    pub orders: Vec<MyOrderRow>,
}

/// `/my`: the switcher and the selected account (none before any is linked).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MyHomeView {
    pub accounts: Vec<AccountChoice>,
    pub selected: Option<MyAccountView>,
    pub company_slug: String,
    /// The company has a WeChat official account: whether this login is linked to the
    /// tenant's WeChat (`None`: nothing to link with).
    pub wechat_linked: Option<bool>,
    /// The page was opened inside WeChat's browser.
    pub in_wechat: bool,
}

/// `/my/top-up`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopUpView {
    pub account_id: String,
    pub shop: String,
    pub available_fen: i64,
    pub open: bool,
    pub presets_fen: Vec<i64>,
    pub min_fen: i64,
    pub max_fen: i64,
    /// Whether the company takes any online payment.
    pub payable: bool,
    /// Meter-side accounts: the meters to choose from (id, number) and the one chosen.
    pub meters: Vec<(String, String)>,
    pub meter_id: String,
}

/// `/my/orders/{id}`: where the payment stands.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MyOrderView {
    pub id: String,
    pub account_id: String,
    pub out_trade_no: String,
    pub amount_fen: i64,
    pub state: String,
    pub flag: Option<String>,
    pub meter_side: bool,
    pub created: String,
    pub paid: Option<String>,
    /// Nothing more will happen to it (credited, delivered, expired, …): the page stops
    /// refreshing.
    pub settled: bool,
    /// Meter-side: credited long ago and still not verified on the meter (the page stops
    /// waiting and says so; the credit is safe in the account).
    pub delivery_slow: bool,
    pub receipt_txn: Option<String>,
    /// Where to pay it while it waits for the payment.
    pub pay_url: Option<String>,
    pub available_fen: i64,
}

/// The kinds of message a tenant may turn off, and which are off.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MyPreferencesView {
    pub kinds: Vec<(String, bool)>,
}

/// The order states after which nothing more happens, for a platform- or meter-side account.
pub fn order_settled(state: &str, meter_side: bool) -> bool {
    match state {
        "created" | "paid" => false,
        "credited" => !meter_side,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_settled_once_credited_or_for_meter_side_delivered() {
        assert!(!order_settled("created", false));
        assert!(!order_settled("paid", false));
        assert!(order_settled("credited", false));
        assert!(!order_settled("credited", true));
        assert!(order_settled("delivered", true));
        assert!(order_settled("expired", true));
        assert!(order_settled("amount_mismatch", false));
    }
}
