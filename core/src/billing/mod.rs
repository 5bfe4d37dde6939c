//! Billing (the prepaid-money issue): shop accounts, the double-entry ledger and its check, the
//! rating worker that turns counted energy into charges, held readings and their release, the
//! counter's sales, refunds (退電) and corrections (沖正). Money is posted here and nowhere else.
//! Empty until that issue lands; its home is fixed now so the layout shows where money lives.
