//! Policies for idempotent calls: when to start which attempt. They schedule attempts and
//! never reach up to calls or groups.

pub(crate) mod budget;
pub(crate) mod hedge;
pub(crate) mod retry;
