//! Bytes of one mail → who sent it, to whom, and every calendar object in it. Pure.

use crate::model::Extracted;

/// Limits on the MIME walk. Hostile mail must not make it unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeLimits {
    /// Deepest nesting of multiparts and forwarded messages followed.
    pub max_depth: usize,
    /// Most MIME parts looked at in one mail.
    pub max_parts: usize,
    /// Largest calendar object kept (bytes, decoded).
    pub max_calendar_bytes: usize,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self { max_depth: 16, max_parts: 1000, max_calendar_bytes: 1 << 20 }
    }
}

/// Walks the mail and returns its sender, recipients and calendar objects.
pub fn extract(_raw: &[u8], _limits: &MimeLimits) -> Extracted {
    Extracted::default()
}
