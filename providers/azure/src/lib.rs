//! Azure API Management provider.
