//! SDK errors as [`ProviderError`]s: throttling, 5xx and transport errors are transient;
//! 401/403 are authorization errors; 409 (a conflict with a resource that exists, often not
//! ours) and other 4xx mean the request cannot work as asked.

use std::error::Error;

use aws_sdk_apigatewayv2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tollbridge_provider::ProviderError;

/// Classifies a failed call of `operation`.
pub fn classify<E>(operation: &str, error: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().unwrap_or_default().to_string();
    let message = match error.message() {
        Some(m) => format!("{operation}: {code}: {m}"),
        None => format!("{operation}: {}", aws_smithy_types::error::display::DisplayErrorContext(&error)),
    };
    match (status, code.as_str()) {
        (_, "TooManyRequestsException" | "ThrottlingException" | "LimitExceededException") => {
            ProviderError::Transient(message)
        }
        (Some(401 | 403), _) | (_, "AccessDeniedException" | "UnauthorizedException") => {
            ProviderError::Unauthorized(message)
        }
        // Before the transient statuses: a conflict answered without a status (a replayed or
        // modeled error) is still a conflict.
        (Some(409), _) | (_, "ConflictException") => ProviderError::Invalid(format!(
            "{message} (a conflict with an existing resource: retrying will not help until it is resolved)"
        )),
        (Some(429), _) | (Some(500..=599), _) | (None, _) => ProviderError::Transient(message),
        _ => ProviderError::Invalid(message),
    }
}

/// `error` with what was being done (`create domain-name api.example.com`) in front of its
/// message; the variant, and so retry behaviour, stays.
pub fn during(what: impl std::fmt::Display, error: ProviderError) -> ProviderError {
    match error {
        ProviderError::Transient(m) => ProviderError::Transient(format!("{what}: {m}")),
        ProviderError::Invalid(m) => ProviderError::Invalid(format!("{what}: {m}")),
        ProviderError::AddressNotUsable(m) => ProviderError::AddressNotUsable(format!("{what}: {m}")),
        ProviderError::Unauthorized(m) => ProviderError::Unauthorized(format!("{what}: {m}")),
        ProviderError::Other(m) => ProviderError::Other(format!("{what}: {m}")),
    }
}

/// A delete whose target is already gone succeeded.
pub fn gone_ok<T, E>(
    operation: &str,
    result: Result<T, SdkError<E, HttpResponse>>,
) -> Result<(), ProviderError>
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(classify(operation, e)),
    }
}

/// Whether the call failed because its target does not exist.
pub fn not_found<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    error.code() == Some("NotFoundException")
        || error.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}
