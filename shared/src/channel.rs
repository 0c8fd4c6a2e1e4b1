//! Channel names (issue 23), checked the same way by the server and the
//! wrapper: `namespace:name`, or a bare name in the default namespace; at
//! most [`MAX_CHANNEL_BYTES`] bytes of `[A-Za-z0-9_.\-:@=]`. The namespace
//! is what comes before the first `:`.

/// The longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 255;

/// Whether `byte` may appear in a channel name.
pub fn allowed_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-' | b':' | b'@' | b'=')
}

/// The namespace of channel `name` (`""` for a bare name); `None` when
/// `name` is not a channel name (empty, too long, or a byte outside the
/// set): the server answers it with `bad_channel`.
pub fn namespace_of(name: &str) -> Option<&str> {
    if name.is_empty() || name.len() > MAX_CHANNEL_BYTES || !name.bytes().all(allowed_byte) {
        return None;
    }
    Some(name.split_once(':').map_or("", |(namespace, _)| namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_split_at_the_first_colon() {
        assert_eq!(namespace_of("lobby"), Some(""));
        assert_eq!(namespace_of("chat:lobby"), Some("chat"));
        assert_eq!(namespace_of("chat:room:42@x=y.z_-"), Some("chat"));
        assert_eq!(namespace_of(":x"), Some(""));
        for bad in ["", "a b", "chat/1", "é", "a\0", &"x".repeat(256)] {
            assert_eq!(namespace_of(bad), None, "{bad:?}");
        }
        assert_eq!(namespace_of(&"x".repeat(255)), Some(""));
    }
}
