//! A disk that fails write-back: the server stops at the first failed flush
//! (exit status 3), and a restart recovers from what the disk really holds,
//! so the round still ends with every bet stored exactly once.
//!
//! The failing disk is ext4 on a loop device over a tmpfs smaller than the
//! device: once the tmpfs is full, write-back to the device fails and `fsync`
//! reports it. Making one needs root and the usual tools; where that is not
//! possible the test says so and does nothing.

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs a system tool; its trimmed standard output, or `None` if it failed.
fn tool(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A small ext4 file system whose device runs out of room for its writes.
struct FailingDisk {
    backing: PathBuf,
    image: PathBuf,
    device: Option<String>,
    mount_point: PathBuf,
}

impl FailingDisk {
    /// A 128 MiB device over 8 MiB of memory, mounted; `None` where this
    /// machine does not allow one.
    fn make(dir: &Path) -> Option<FailingDisk> {
        let backing = dir.join("backing");
        let mount_point = dir.join("disk");
        std::fs::create_dir(&backing).ok()?;
        std::fs::create_dir(&mount_point).ok()?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        tool(
            "mount",
            &["-t", "tmpfs", "-o", "size=8m", "tmpfs", &path(&backing)],
        )?;
        let mut disk = FailingDisk {
            image: backing.join("disk.img"),
            backing,
            device: None,
            mount_point,
        };
        tool("truncate", &["-s", "128M", &path(&disk.image)])?;
        tool(
            "mkfs.ext4",
            &[
                "-q",
                "-O",
                "^has_journal",
                "-N",
                "128",
                "-E",
                "lazy_itable_init=1,nodiscard",
                &path(&disk.image),
            ],
        )?;
        disk.attach()?;
        Some(disk)
    }

    fn attach(&mut self) -> Option<()> {
        let image = self.image.to_string_lossy().into_owned();
        let device = tool("losetup", &["-f", "--show", &image])?;
        let mount_point = self.mount_point.to_string_lossy().into_owned();
        let mounted = tool("mount", &["-o", "noinit_itable", &device, &mount_point]);
        self.device = Some(device);
        mounted.map(drop)
    }

    fn detach(&mut self) {
        let _ = tool("umount", &[&self.mount_point.to_string_lossy()]);
        if let Some(device) = self.device.take() {
            let _ = tool("losetup", &["-d", &device]);
        }
    }

    /// The memory comes back, the file system is checked and mounted again:
    /// what it holds is what the device really kept.
    fn repair(&mut self) {
        self.detach();
        let backing = self.backing.to_string_lossy().into_owned();
        tool("mount", &["-o", "remount,size=256m", &backing]).expect("grow the tmpfs");
        // e2fsck exits 1 when it fixed something: that is expected here.
        let status = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&self.image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run e2fsck");
        assert!(
            matches!(status.code(), Some(0..=2)),
            "e2fsck failed: {status}"
        );
        self.attach().expect("mount the repaired file system");
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        self.detach();
        let _ = tool("umount", &["-l", &self.backing.to_string_lossy()]);
    }
}

/// The agency's bet number `index`: a document of its own, so every bet is distinct.
fn bet(index: u32) -> Vec<u8> {
    good_bet(&(10_000_000 + index).to_string(), (index % 10_000) as u16)
}

/// Sends the bets numbered `from..` in batches of 100 until `total` or the
/// first reply that is not an ack; returns how many were acknowledged.
fn send_until_refused(stream: &mut std::net::TcpStream, from: u32, total: u32) -> u32 {
    let mut acked = from;
    while acked < total {
        let count = 100.min(total - acked);
        let bets: Vec<Vec<u8>> = (acked..acked + count).map(bet).collect();
        let message = bets_message(1, acked, count as u16, &bets);
        if stream.write_all(&message).is_err() {
            break;
        }
        match read_wire(stream) {
            Wire::BetsAck(n) if u32::from(n) == count => acked += count,
            _ => break,
        }
    }
    acked
}

#[test]
fn a_failed_flush_stops_the_server_and_a_restart_recovers_every_bet_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut disk) = FailingDisk::make(dir.path()) else {
        eprintln!(
            "skipped: cannot make a failing disk here (needs root, tmpfs, a loop device and mkfs.ext4)"
        );
        return;
    };
    // More bets than the 8 MiB of memory under the device can hold.
    let total = 400_000;
    let bets_file = disk.mount_point.join("bets.csv");
    let logs = tempfile::tempdir().unwrap();

    let mut server = ServerProcess::start_in(1, &[], logs.path(), &bets_file);
    let (mut stream, stored, _) = session(server.port, 1);
    assert_eq!(stored, 0);
    let acked = send_until_refused(&mut stream, 0, total);
    assert!(acked < total, "the disk never failed ({acked} bets acked)");
    let (status, log) = server.wait_for_exit_and_log();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains("action: almacenar | result: fail") && log.contains("could not flush"),
        "{log}"
    );
    assert!(log.contains("action: exit | result: fail"), "{log}");
    drop(stream);

    // A restart reads back what the disk holds, never counting the damage;
    // the agency resumes from there and finishes.
    disk.repair();
    let server = ServerProcess::start_in(1, &[], logs.path(), &bets_file);
    let (mut stream, stored, _) = session(server.port, 1);
    eprintln!("acked before the failure: {acked}; held by the disk: {stored}");
    assert_eq!(send_until_refused(&mut stream, stored, total), total);
    let all: Vec<Vec<u8>> = (0..total).map(bet).collect();
    assert!(
        matches!(
            exchange(&mut stream, &finish_of(1, &all)),
            Wire::FinishAck(1, _)
        ),
        "the round's digest matches: every bet once, in order"
    );
    let rows = server.stored_rows();
    assert_eq!(rows.len(), total as usize);
    let documents: std::collections::HashSet<&str> = rows
        .iter()
        .filter_map(|row| row.split(',').nth(3))
        .collect();
    assert_eq!(documents.len(), total as usize, "no bet stored twice");
}
