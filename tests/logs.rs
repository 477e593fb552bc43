//! A process's log lines: plain text without colour codes when stderr is a file, and with
//! `--log-format json` (given after the subcommand, as every global flag may be) one JSON
//! object per line, with the level, the target and the event's fields.

mod support;

use std::process::{Command, Stdio};

use support::{Processes, wait_for_text};

#[test]
fn log_files_are_plain_text_or_one_json_object_per_line() {
    let mut nodes = Processes::start(3);
    let text = wait_for_text(&nodes.log(1), "node serving", 0);
    assert!(!text.contains('\u{1b}'), "colour codes in a log file:\n{text}");

    // Node 3 again, logging JSON into a file of its own.
    nodes.kill(3);
    let path = nodes.log(3).with_extension("json.log");
    let file = std::fs::File::create(&path).unwrap();
    let child = nodes
        .command(3, false)
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    nodes.children.insert(3, child);
    wait_for_text(&path, "node serving", 0);
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = nodes.children.get_mut(&3).unwrap().wait().unwrap();
    assert!(status.success(), "node 3 stopped with {status}");

    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    let serving = lines
        .iter()
        .find(|line| line["fields"]["message"] == "node serving")
        .expect("the line saying the node serves");
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["target"], "mosaic_server::node");
    assert_eq!(serving["fields"]["node_id"], "3");
    assert_eq!(serving["fields"]["address"], nodes.addresses[&3].as_str());
    assert!(lines.iter().any(|line| line["fields"]["message"] == "node stopped"), "{log}");
}
