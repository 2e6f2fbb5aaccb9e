//! Route lookup.
