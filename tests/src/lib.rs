//! End-to-end tests across Octet crates: the `octet` binary driven as a user would.
