//! The tariff pages: plans and versions (`plans`) and the preview.

pub mod plans;
pub mod preview;
