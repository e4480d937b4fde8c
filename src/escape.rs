//! Paths as they are printed: control characters escaped, so that one entry is always one line;
//! everything else, including bytes that are not UTF-8, as it is.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Appends `path` with control characters escaped.
pub(crate) fn escape_into(out: &mut Vec<u8>, path: &Path) {
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if c.is_control() => {
                    out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes())
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
}

/// `path` escaped as in the output, as a (lossy) string for messages.
pub(crate) fn display(path: &Path) -> String {
    let mut out = Vec::new();
    escape_into(&mut out, path);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            display(Path::new("a\nb\tc\u{1b}[31m\u{85}é")),
            "a\\nb\\tc\\u{1b}[31m\\u{85}é"
        );
        let mut out = Vec::new();
        escape_into(&mut out, Path::new(OsStr::from_bytes(b"x\xffy\n")));
        assert_eq!(out, b"x\xffy\\n");
    }
}
