//! What one invocation of a function may use, set in the manifest's
//! `limits`, with safe defaults.

use std::time::Duration;

/// Limits every trigger applies to an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for one invocation, including streaming a response.
    pub timeout: Duration,
    /// Linear memory of one instance, in MiB.
    pub memory_mb: u32,
    /// Instances of this function running at once; more invocations wait.
    pub max_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_mb: 128,
            max_concurrency: 100,
        }
    }
}

impl Limits {
    /// The most memory any function may ask for; the pooling allocator
    /// reserves slots of this size.
    pub const MAX_MEMORY_MB: u32 = 4096;
    /// The longest timeout a function may ask for.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);

    /// Checks the limits are within what the server can grant; the error
    /// names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() || self.timeout > Self::MAX_TIMEOUT {
            return Err(format!(
                "timeout must be between 1ms and {}s",
                Self::MAX_TIMEOUT.as_secs()
            ));
        }
        if self.memory_mb == 0 || self.memory_mb > Self::MAX_MEMORY_MB {
            return Err(format!(
                "memory_mb must be between 1 and {}",
                Self::MAX_MEMORY_MB
            ));
        }
        if self.max_concurrency == 0 {
            return Err("max_concurrency must be at least 1".into());
        }
        Ok(())
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory_mb as usize * 1024 * 1024
    }
}
