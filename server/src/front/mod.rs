//! Front-ends: one per dialect, each translating its wire format to hub calls
//! and hub events back to its wire format. Policy lives in the hub.

pub mod accounts;
pub mod babel;
pub mod chatos;
pub mod relay;
pub mod rooms;
