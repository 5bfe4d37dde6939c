//! The pages of sign-in, companies, users, the audit log and the company settings.

pub mod audit;
pub mod companies;
pub mod home;
pub mod login;
pub mod password;
pub mod settings;
pub mod users;
