//! SDK errors as [`ProviderError`]s: throttling, 5xx and transport errors are transient;
//! 401/403 are authorization errors; 409 (a conflict with a resource that exists, often not
//! ours) and other 4xx mean the request cannot work as asked; credentials that cannot be found
//! or are misconfigured are configuration errors, said in a few lines of what to provide.

use std::error::Error;

use aws_sdk_apigatewayv2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tollbridge_provider::ProviderError;

/// Classifies a failed call of `operation`.
pub fn classify<E>(operation: &str, error: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    if let Some(credentials) = credentials_error(&error) {
        return credentials;
    }
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().unwrap_or_default().to_string();
    let message = match error.message() {
        Some(m) => format!("{operation}: {code}: {m}"),
        None => format!("{operation}: {}", causes(&error)),
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

/// What to provide when no credentials were found.
const NO_CREDENTIALS: &str = "no AWS credentials found: the provider looked in the environment \
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), a profile (AWS_PROFILE, ~/.aws/credentials), a web \
identity token (IRSA: AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE), EKS Pod Identity or ECS \
container credentials, and the instance metadata service. In EKS, annotate the chart's \
ServiceAccount with eks.amazonaws.com/role-arn (IRSA) or add a Pod Identity association; \
elsewhere set the environment or a profile. aws.roleARN in the ProviderConfig is then assumed \
with those credentials.";

/// A failure to get credentials, as a configuration error (retrying does not make them
/// appear) naming what to provide; `None` for any other failure. A timeout of a credentials
/// source stays transient.
fn credentials_error(error: &(dyn Error + 'static)) -> Option<ProviderError> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut source: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(credentials) = e.downcast_ref::<CredentialsError>() {
            return Some(match credentials {
                CredentialsError::CredentialsNotLoaded(_) => ProviderError::Invalid(NO_CREDENTIALS.into()),
                CredentialsError::ProviderTimedOut(_) => {
                    ProviderError::Transient(format!("AWS credentials: {}", causes(credentials)))
                }
                CredentialsError::InvalidConfiguration(_) => ProviderError::Invalid(format!(
                    "AWS credentials are misconfigured: {}",
                    causes(credentials)
                )),
                // STS or the credentials endpoint failing (throttled, 5xx, unreachable, or a
                // role refusing): retried; the message says what to check if it lasts.
                _ => ProviderError::Transient(format!(
                    "AWS credentials could not be obtained: {} (if this lasts, check the role, its \
                     trust policy and aws.roleARN)",
                    causes(credentials)
                )),
            });
        }
        source = e.source();
    }
    None
}

/// An error and its causes, each said once (the SDK's own rendering appends a Debug dump).
fn causes(error: &(dyn Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut source: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        source = e.source();
    }
    said.join(": ")
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

#[cfg(test)]
mod tests {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_apigatewayv2::operation::get_apis::GetApisError;
    use aws_smithy_runtime_api::client::result::ConnectorError;

    use super::*;

    fn failed_for(credentials: CredentialsError) -> ProviderError {
        let connector = ConnectorError::other(Box::new(credentials), None);
        classify("GetApis", SdkError::<GetApisError, HttpResponse>::dispatch_failure(connector))
    }

    #[test]
    fn missing_credentials_are_a_configuration_error_saying_what_to_provide() {
        let error = failed_for(CredentialsError::not_loaded("no credentials found in chain"));
        assert!(!error.is_retryable(), "{error}");
        let text = error.to_string();
        assert_eq!(text, format!("invalid configuration: {NO_CREDENTIALS}"));
        for needle in [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "IRSA",
            "Pod Identity",
            "eks.amazonaws.com/role-arn",
            "roleARN",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(!text.contains("DispatchFailure") && !text.contains('{'), "no Debug dump: {text}");
        assert!(text.len() < 600, "{} characters", text.len());
    }

    #[test]
    fn other_credential_failures_are_said_plainly() {
        let timed_out = failed_for(CredentialsError::provider_timed_out(std::time::Duration::from_secs(5)));
        assert!(timed_out.is_retryable(), "{timed_out}");
        let refused = failed_for(CredentialsError::provider_error(
            "AccessDenied: not authorized to perform sts:AssumeRoleWithWebIdentity",
        ));
        assert!(refused.is_retryable(), "STS failing may pass: {refused}");
        assert!(
            refused.to_string().contains("sts:AssumeRoleWithWebIdentity")
                && !refused.to_string().contains("ProviderError(")
        );
        let misconfigured = failed_for(CredentialsError::invalid_configuration("profile `x` not found"));
        assert!(matches!(misconfigured, ProviderError::Invalid(_)), "{misconfigured}");
        assert!(misconfigured.to_string().contains("profile `x` not found"));
    }
}
