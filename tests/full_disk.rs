//! A storage node whose disk fills up (docs/security.md "A full disk"): three nodes on one
//! small file system (a tmpfs this test mounts; it needs root), filled by another file until
//! less than the nodes' reserve is free. The nodes then refuse puts and appends with
//! `StorageFull` and serve reads and deletes; once the file is removed they take writes again
//! by themselves, without a restart, and every acknowledged write is there.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mosaic_client::{ClientError, Consistency, WriteOutcome};
use support::{GROUP, Processes, Role};

/// The file system's size, and the reserve each node keeps free on it.
const TMPFS_MIB: u64 = 512;
const RESERVE_BYTES: u64 = 64 << 20;
/// How long a node may take to notice a change of free space (it looks every second).
const NOTICE_MAX: Duration = Duration::from_secs(10);

/// A tmpfs mounted on a temporary directory, unmounted when dropped (after the processes
/// that use it: declare it before them).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: this test needs root");
        Self { dir }
    }

    /// A directory for the processes' data, on the tmpfs.
    fn root(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(self.dir.path()).unwrap()
    }

    fn available(&self) -> u64 {
        let output = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes a file of `bytes` bytes at `path`.
fn fill(path: &Path, bytes: u64) {
    let file = std::fs::File::create(path).unwrap();
    let chunk = vec![7_u8; 1 << 20];
    let mut writer = std::io::BufWriter::new(file);
    let mut written = 0;
    while written < bytes {
        let n = chunk.len().min(usize::try_from(bytes - written).unwrap());
        std::io::Write::write_all(&mut writer, &chunk[..n]).unwrap();
        written += n as u64;
    }
    std::io::Write::flush(&mut writer).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_serves_reads_and_takes_writes_again_once_space_is_freed() {
    let tmpfs = Tmpfs::mount(TMPFS_MIB);
    let settings = format!("disk-reserve-bytes = {RESERVE_BYTES}");
    let mut nodes = Processes::start_in(Role::Servers, 3, &settings, tmpfs.root());
    nodes.admin(&["group", "create", &GROUP.to_string()]);
    nodes.leader().await;
    let client = nodes.client();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        client.put(format!("key-{i}"), format!("value-{i}")).await.unwrap();
        acknowledged.push(i);
    }

    // Another file leaves half the reserve free: within a few seconds puts are refused.
    let filler = tmpfs.dir.path().join("filler");
    fill(&filler, tmpfs.available() - RESERVE_BYTES / 2);
    let deadline = Instant::now() + NOTICE_MAX;
    let refused = loop {
        let i = acknowledged.len();
        match client.put(format!("key-{i}"), format!("value-{i}")).await {
            Ok(_) => acknowledged.push(i),
            Err(error @ ClientError::StorageFull { .. }) => break error,
            Err(other) => panic!("a put failed otherwise: {other}"),
        }
        assert!(Instant::now() < deadline, "puts were still taken with the disk full");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.outcome(), WriteOutcome::NotApplied, "{refused}");
    assert!(refused.to_string().contains("disk is nearly full"), "{refused}");
    let refused_key = format!("key-{}", acknowledged.len());
    let append = client.append("key-0", "+").await.unwrap_err();
    assert!(matches!(append, ClientError::StorageFull { .. }), "{append}");
    // Reads are served, and deletes taken (they are how space is freed).
    for i in &acknowledged {
        let value = client.get(format!("key-{i}"), Consistency::Linearizable).await.unwrap();
        assert_eq!(value.as_deref(), Some(format!("value-{i}").as_bytes()), "key-{i}");
    }
    let deleted = acknowledged.pop().unwrap();
    client.delete(format!("key-{deleted}")).await.unwrap();
    // The command-line client says what happened and what to do.
    let output = nodes.kv(&["put", "cli-key", "x"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("free space in the node's data directory"), "{stderr}");

    // Space is freed: writes are taken again by the same processes.
    let pids: Vec<u32> = nodes.children.values().map(std::process::Child::id).collect();
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + NOTICE_MAX;
    loop {
        match client.put(refused_key.clone(), "after").await {
            Ok(_) => break,
            Err(ClientError::StorageFull { .. }) => {}
            Err(other) => panic!("a put failed otherwise: {other}"),
        }
        assert!(Instant::now() < deadline, "writes were not taken again after space was freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for child in nodes.children.values_mut() {
        assert!(child.try_wait().unwrap().is_none(), "a node exited");
    }
    assert_eq!(pids, nodes.children.values().map(std::process::Child::id).collect::<Vec<_>>());

    // Nothing acknowledged was lost; the deleted key is gone, the refused key holds only the
    // later write.
    for i in &acknowledged {
        let value = client.get(format!("key-{i}"), Consistency::Linearizable).await.unwrap();
        assert_eq!(value.as_deref(), Some(format!("value-{i}").as_bytes()), "key-{i}");
    }
    let gone = client.get(format!("key-{deleted}"), Consistency::Linearizable).await.unwrap();
    assert_eq!(gone, None);
    let after = client.get(refused_key, Consistency::Linearizable).await.unwrap();
    assert_eq!(after.as_deref(), Some(&b"after"[..]));
    drop(nodes);
}
