//! Whether a company or a user may work: each a word list with one string form.

use crate::vocabulary;

vocabulary! {
    /// A property company on the platform.
    pub enum CompanyStatus {
        /// Its staff and tenants work normally.
        Active = "active",
        /// Suspended by platform staff: nobody of the company signs in; platform staff may
        /// still look into it.
        Suspended = "suspended",
    }
}

vocabulary! {
    /// A staff or tenant account.
    pub enum UserStatus {
        Active = "active",
        /// Deactivated by an admin: cannot sign in, its sessions are ended.
        Inactive = "inactive",
    }
}
