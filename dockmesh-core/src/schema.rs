//! The schema guard.
