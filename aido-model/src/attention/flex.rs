//! burn-flex (CPU): the defaults for now.

use super::AttentionBackend;

impl AttentionBackend for burn::backend::Flex {}
