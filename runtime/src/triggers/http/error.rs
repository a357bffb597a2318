//! Every error Kiln's HTTP server answers itself, for app requests and the
//! admin API alike: `{"error": {"code": "...", "message": "..."}}`, with the
//! status and stable code of each defined once, in [`ErrorCode`].

use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use super::ResponseBody;
use super::body::full_body;

macro_rules! error_codes {
    ($($variant:ident = ($status:literal, $code:literal),)*) => {
        /// A stable code a client can match on, with its status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for the README's tables and their test.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                let status = match self {
                    $(ErrorCode::$variant => $status,)*
                };
                StatusCode::from_u16(status).expect("the table holds valid statuses")
            }
        }
    };
}

error_codes! {
    // Requests to apps.
    BadRequest = (400, "bad_request"),
    AppNotFound = (404, "app_not_found"),
    RouteNotFound = (404, "route_not_found"),
    PlatformRouteNotFound = (404, "platform_route_not_found"),
    MethodNotAllowed = (405, "method_not_allowed"),
    RequestBodyTooLarge = (413, "request_body_too_large"),
    FunctionTrapped = (500, "function_trapped"),
    NoResponse = (500, "no_response"),
    FunctionError = (500, "function_error"),
    Overloaded = (503, "overloaded"),
    FunctionUnavailable = (503, "function_unavailable"),
    TooManyConnections = (503, "too_many_connections"),
    Timeout = (504, "timeout"),
    // Auth: the route check and the platform's auth endpoints.
    SignInRequired = (401, "sign_in_required"),
    InvalidToken = (401, "invalid_token"),
    InvalidCredentials = (401, "invalid_credentials"),
    InvalidRefreshToken = (401, "invalid_refresh_token"),
    MissingRole = (403, "missing_role"),
    SecondFactorRequired = (403, "second_factor_required"),
    UserDisabled = (403, "user_disabled"),
    NotAllowed = (403, "not_allowed"),
    InvalidInput = (400, "invalid_input"),
    WeakPassword = (400, "weak_password"),
    InvalidOneTimeToken = (400, "invalid_one_time_token"),
    UserNotFound = (404, "user_not_found"),
    EmailTaken = (409, "email_taken"),
    TooManyAttempts = (429, "too_many_attempts"),
    InvalidIdToken = (401, "invalid_id_token"),
    ProviderNotFound = (404, "provider_not_found"),
    ProviderEmailUnverified = (409, "provider_email_unverified"),
    IdentityInUse = (409, "identity_in_use"),
    ProviderUnavailable = (502, "provider_unavailable"),
    // Files: the platform's file endpoints.
    BucketNotFound = (404, "bucket_not_found"),
    InvalidFileKey = (400, "invalid_file_key"),
    FileAccessDenied = (403, "file_access_denied"),
    FileNotFound = (404, "file_not_found"),
    FileExists = (409, "file_exists"),
    FileTooLarge = (413, "file_too_large"),
    ContentTypeNotAllowed = (415, "content_type_not_allowed"),
    RangeNotSatisfiable = (416, "range_not_satisfiable"),
    ThumbnailSizeNotAllowed = (400, "thumbnail_size_not_allowed"),
    ThumbnailUnsupported = (415, "thumbnail_unsupported"),
    ThumbnailFailed = (422, "thumbnail_failed"),
    InvalidSignature = (403, "invalid_signature"),
    SignatureExpired = (403, "signature_expired"),
    FilesUnavailable = (503, "files_unavailable"),
    UploadNotFound = (404, "upload_not_found"),
    InvalidUploadOffset = (409, "upload_offset_mismatch"),
    // Data: the platform's data endpoints and the admin API's.
    CollectionNotFound = (404, "collection_not_found"),
    DocumentNotFound = (404, "document_not_found"),
    DataAccessDenied = (403, "data_access_denied"),
    WriteOutOfReach = (403, "write_out_of_reach"),
    HiddenField = (400, "hidden_field"),
    FieldNotSettable = (400, "field_not_settable"),
    RequiredField = (400, "required_field"),
    InvalidDocumentId = (400, "invalid_document_id"),
    WriteRefused = (403, "write_refused"),
    WriteInvalid = (400, "write_invalid"),
    WriteHookFailed = (500, "write_hook_failed"),
    WriteConflict = (409, "write_conflict"),
    DocumentExists = (409, "document_exists"),
    QueryLimitExceeded = (400, "query_limit_exceeded"),
    // The admin API.
    Unauthorized = (401, "unauthorized"),
    InvalidJson = (400, "invalid_json"),
    InvalidBody = (400, "invalid_body"),
    UnsupportedMediaType = (415, "unsupported_media_type"),
    InvalidQuery = (400, "invalid_query"),
    InvalidDigest = (400, "invalid_digest"),
    DigestMismatch = (400, "digest_mismatch"),
    InvalidAppName = (400, "invalid_app_name"),
    InvalidManifest = (400, "invalid_manifest"),
    InvalidComponents = (400, "invalid_components"),
    InvalidComponent = (400, "invalid_component"),
    UnsatisfiedImport = (400, "unsatisfied_import"),
    MissingExport = (400, "missing_export"),
    InvalidRoutes = (400, "invalid_routes"),
    AdminRouteNotFound = (404, "admin_route_not_found"),
    ComponentNotFound = (404, "component_not_found"),
    VersionNotFound = (404, "version_not_found"),
    TriggerNotFound = (404, "trigger_not_found"),
    ConcurrentDeploy = (409, "concurrent_deploy"),
    ComponentTooLarge = (413, "component_too_large"),
    Internal = (500, "internal"),
    Storage = (500, "storage"),
    Busy = (503, "busy"),
    PlatformDataUnavailable = (503, "platform_data_unavailable"),
}

/// An error answered to a client: its code and a message for the client
/// (the detail a client should not see goes to the log, by the caller).
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// A header the error needs (`Allow`, `WWW-Authenticate`, `Retry-After`).
    header: Option<(HeaderName, HeaderValue)>,
    /// The app's own code for a refusal (a write hook's), as `reason`.
    reason: Option<Box<str>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            header: None,
            reason: None,
        }
    }

    pub fn with_reason(mut self, reason: String) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some((name, value));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(reason) = &self.reason {
            error["reason"] = json!(&**reason);
        }
        json!({ "error": error }).to_string()
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = json_response(self.code.status(), self.body());
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A JSON response of the server itself.
pub fn json_value_response(status: StatusCode, body: Value) -> Response<ResponseBody> {
    json_response(status, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The `(status, code)` pairs of the README's error tables: rows of
    /// `| status | codes | when |` whose codes are in backticks.
    fn readme_codes() -> BTreeSet<(u16, String)> {
        let readme = include_str!("../../../../README.md");
        let mut codes = BTreeSet::new();
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, status, names, _when, _] = cells.as_slice() else {
                continue;
            };
            let Ok(status) = status.parse::<u16>() else {
                continue;
            };
            for name in names.split('`').skip(1).step_by(2) {
                codes.insert((status, name.to_string()));
            }
        }
        codes
    }

    #[test]
    fn the_readme_lists_every_error_code_with_its_status_and_no_other() {
        let code: BTreeSet<(u16, String)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.status().as_u16(), c.as_str().to_string()))
            .collect();
        let readme = readme_codes();
        let missing: Vec<_> = code.difference(&readme).collect();
        let unknown: Vec<_> = readme.difference(&code).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "not in the README: {missing:?}; in the README only: {unknown:?}"
        );
    }

    #[test]
    fn codes_are_unique() {
        let names: BTreeSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
