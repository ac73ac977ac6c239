//! The directory of the upgrade socket, checked at start-up. On `SIGQUIT`
//! Pingora hands the listening sockets to whatever process listens on
//! that path, so a directory another local user can write would let that
//! user put a socket there first and receive the proxy's listeners.

use std::fs::{DirBuilder, Metadata};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};

use anyhow::{Context as _, bail};

use crate::config::UpgradeSocket;

/// Permission bits that let the group or other users add entries.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Makes sure the socket's directory belongs to this user or root and that
/// no one else can write it. The default directory is created with mode
/// 0700 when missing; a configured one must exist.
pub fn prepare(socket: &UpgradeSocket) -> anyhow::Result<()> {
    let Some(directory) = socket.path().parent() else {
        bail!(
            "proxy.upgrade_socket = \"{}\" names no directory",
            socket.path().display()
        );
    };
    let metadata = match socket {
        UpgradeSocket::Default(_) => {
            match DirBuilder::new().mode(0o700).create(directory) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!(
                            "cannot create {}, the default directory of the upgrade socket; \
                             set proxy.upgrade_socket",
                            directory.display()
                        )
                    });
                }
            }
            // Not followed: a link planted here could lead anywhere.
            std::fs::symlink_metadata(directory)
        }
        UpgradeSocket::Configured(_) => std::fs::metadata(directory),
    }
    .with_context(|| {
        format!(
            "cannot read {}, the directory of the upgrade socket",
            directory.display()
        )
    })?;

    if let Some(problem) = directory_problem(&metadata, nix::unistd::geteuid().as_raw()) {
        bail!(
            "{}, the directory of the upgrade socket {}, {problem}; another local user could \
             receive the listening sockets on an upgrade. Choose a directory that only \
             edge-proxy's user can write, such as /run/edge-proxy, in proxy.upgrade_socket",
            directory.display(),
            socket.path().display()
        );
    }
    Ok(())
}

/// Returns why a directory with `metadata` is unsafe for the upgrade
/// socket of a process running as `uid`, if it is.
fn directory_problem(metadata: &Metadata, uid: u32) -> Option<String> {
    if !metadata.is_dir() {
        return Some("is not a directory".to_owned());
    }
    if metadata.uid() != uid && metadata.uid() != 0 {
        return Some(format!(
            "belongs to uid {}, neither this process's uid {uid} nor root",
            metadata.uid()
        ));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Some(format!("can be written by other users (mode {mode:o})"));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    use super::*;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn default_directory_is_created_private() {
        let parent = tempfile::tempdir().expect("temp dir");
        let directory = parent.path().join("edge-proxy-test");
        let socket = UpgradeSocket::Default(directory.join("upgrade.sock"));

        prepare(&socket).expect("created");

        let metadata = std::fs::symlink_metadata(&directory).expect("exists");
        assert!(metadata.is_dir());
        assert_eq!(metadata.mode() & 0o777, 0o700);
        prepare(&socket).expect("an existing private directory is kept");
    }

    #[test]
    fn default_directory_may_not_be_a_link() {
        let parent = tempfile::tempdir().expect("temp dir");
        let target = parent.path().join("target");
        std::fs::create_dir(&target).expect("mkdir");
        set_mode(&target, 0o700);
        let link = parent.path().join("edge-proxy-test");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");

        let error = prepare(&UpgradeSocket::Default(link.join("upgrade.sock")))
            .expect_err("a link is rejected");

        assert!(
            error.to_string().contains("is not a directory"),
            "{error:#}"
        );
    }

    #[test]
    fn directory_writable_by_others_is_rejected() {
        let directory = tempfile::tempdir().expect("temp dir");
        set_mode(directory.path(), 0o1777);

        let error = prepare(&UpgradeSocket::Configured(
            directory.path().join("upgrade.sock"),
        ))
        .expect_err("a shared directory is rejected");

        let message = error.to_string();
        assert!(message.contains("mode 1777"), "{message}");
        assert!(message.contains("proxy.upgrade_socket"), "{message}");
    }

    #[test]
    fn group_writable_default_directory_is_rejected() {
        let parent = tempfile::tempdir().expect("temp dir");
        let directory = parent.path().join("edge-proxy-test");
        std::fs::create_dir(&directory).expect("mkdir");
        set_mode(&directory, 0o770);

        let error =
            prepare(&UpgradeSocket::Default(directory.join("upgrade.sock"))).expect_err("rejected");

        assert!(error.to_string().contains("mode 770"), "{error:#}");
    }

    #[test]
    fn private_configured_directory_is_accepted() {
        let directory = tempfile::tempdir().expect("temp dir");
        set_mode(directory.path(), 0o755);

        prepare(&UpgradeSocket::Configured(
            directory.path().join("upgrade.sock"),
        ))
        .expect("accepted");
    }

    #[test]
    fn missing_configured_directory_is_an_error() {
        let directory = tempfile::tempdir().expect("temp dir");
        let missing = directory.path().join("missing").join("upgrade.sock");

        let error = prepare(&UpgradeSocket::Configured(missing)).expect_err("missing");

        assert!(error.to_string().contains("cannot read"), "{error:#}");
    }

    #[test]
    fn foreign_owner_is_rejected() {
        let directory = tempfile::tempdir().expect("temp dir");
        let own_uid = nix::unistd::geteuid().as_raw();
        // Root-owned directories are accepted, so as root the directory
        // goes to another user; otherwise the check runs as another uid.
        let checking_uid = if own_uid == 0 {
            std::os::unix::fs::chown(directory.path(), Some(65_534), None).expect("chown");
            0
        } else {
            own_uid + 1
        };
        let metadata = std::fs::metadata(directory.path()).expect("metadata");

        let problem = directory_problem(&metadata, checking_uid).expect("rejected");

        assert!(problem.contains("belongs to uid"), "{problem}");
    }
}
