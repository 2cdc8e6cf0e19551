//! What a file is, for the three programs' readers of files from outside (the
//! bets file, the agency file, the tokens file): only a regular file is read,
//! and one that holds personal data or secrets should be for its owner alone.

use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

/// Mode of the files a program creates for personal data: its user's alone.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;

/// What a path is when it is not a regular file (a directory, a FIFO, a
/// device...), for the message; `None` for a regular file.
pub(crate) fn not_a_file(file_type: FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("directory")
    } else if file_type.is_fifo() {
        Some("FIFO (named pipe)")
    } else if file_type.is_char_device() || file_type.is_block_device() {
        Some("device")
    } else if file_type.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// Whether users other than the file's owner may read or write it.
pub(crate) fn open_to_others(meta: &Metadata) -> bool {
    meta.permissions().mode() & 0o077 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn only_a_regular_file_passes_and_others_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let kind =
            |path: &std::path::Path| not_a_file(std::fs::metadata(path).unwrap().file_type());
        assert_eq!(kind(&file), None);
        assert_eq!(kind(dir.path()), Some("directory"));
        assert_eq!(kind(std::path::Path::new("/dev/null")), Some("device"));
    }

    #[test]
    fn a_file_is_private_only_with_no_bits_for_group_or_others() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, open) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            let path = dir.path().join(format!("{mode:o}"));
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .mode(mode)
                .open(&path)
                .unwrap();
            // The process umask may take bits away, never add them.
            std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(open_to_others(&meta), open, "{mode:o}");
        }
    }
}
