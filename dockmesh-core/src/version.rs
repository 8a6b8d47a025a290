//! Version parsing, upgrade rules and plans.
