//! Guest output in the server log.

use std::sync::Arc;

use super::function::Function;
use super::quota::AppQuota;

/// Writes what one invocation wrote to `stream` to the server log: one
/// event per stream, its newlines escaped (a guest cannot forge log lines or
/// multiply events), and only as much as the app's log allowance has left.
pub(super) fn emit(
    function: &Function,
    quota: &Arc<AppQuota>,
    request_id: &str,
    stream: &str,
    text: &str,
    dropped: usize,
) {
    if text.is_empty() && dropped == 0 {
        return;
    }
    // The allowance counts the bytes written to the log, escapes included.
    let escaped = text.escape_debug().to_string();
    let mut keep = quota.take_log_bytes(escaped.len());
    while !escaped.is_char_boundary(keep) {
        keep -= 1;
    }
    // Past its allowance an app writes no event; what it dropped is
    // counted and reported once per interval.
    if keep == 0 {
        quota.count_unlogged(escaped.len() + dropped);
        return;
    }
    let dropped = dropped + (escaped.len() - keep);
    tracing::info!(
        target: "kiln::guest",
        request_id,
        app = %function.app,
        function = %function.name,
        stream,
        dropped,
        "{}",
        &escaped[..keep],
    );
}
