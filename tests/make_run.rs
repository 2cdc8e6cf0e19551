//! `make run` as a newcomer and a grader use it: every run a new round (even
//! two in the same second), and one merged output in the order of the events,
//! read the way a course grader's script reads it.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// `make run` with the test's binaries (no release build), its runs in `runs`;
/// returns its whole output (what the terminal shows).
fn make_run(runs: &Path, data: &Path, agencies: u32, extra: &[&str]) -> String {
    let bin = Path::new(SERVER_BIN).parent().unwrap();
    let mut command = Command::new("make");
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // The binaries are built already: the build step is taken as done.
        .args(["--no-print-directory", "-o", "build", "run"])
        .arg(format!("BIN={}", bin.display()))
        .arg(format!("RUN_DIR={}", runs.display()))
        .arg(format!("DATA_DIR={}", data.display()))
        .arg(format!("CLIENTS={agencies}"))
        .args(extra);
    // Into a file: a pipe read only at the end would fill and stop the run.
    let out = tempfile::NamedTempFile::new().unwrap();
    command
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap());
    let mut child = command.spawn().expect("make");
    let status = wait_child(&mut child);
    let _ = child.kill();
    let text = std::fs::read_to_string(out.path()).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{command:?}: {status:?}\n{text}"
    );
    text
}

/// The lines of the merged output, as a grader's script reads them.
fn merged_lines(output: &str) -> Vec<String> {
    output.lines().map(str::to_string).collect()
}

/// Every bet acknowledged before the draw, the draw before any winners.
fn assert_causal_order(lines: &[String], agencies: u32) {
    let positions = |needle: &str| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i)
            .collect()
    };
    let draw = positions("action: sorteo | result: success");
    assert_eq!(draw.len(), 1, "one draw:\n{}", lines.join("\n"));
    let received = positions("action: apuesta_recibida | result: success");
    let winners = positions("action: consulta_ganadores | result: success");
    assert!(!received.is_empty());
    assert_eq!(winners.len(), agencies as usize);
    assert!(
        received.iter().all(|&at| at < draw[0]),
        "a bet acknowledged after the draw"
    );
    assert!(
        winners.iter().all(|&at| at > draw[0]),
        "winners before the draw:\n{}",
        lines.join("\n")
    );
}

#[test]
fn the_merged_output_is_in_the_order_of_the_events_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let (data, runs) = (dir.path().join("data"), dir.path().join("runs"));
    std::fs::create_dir(&data).unwrap();
    write_agency_files(&data, 5, 200);
    let debug = [
        "LOGGING_LEVEL=DEBUG",
        "CLI_LOG_LEVEL=DEBUG",
        "CLI_BATCH_MAXAMOUNT=10",
    ];
    for agencies in [3, 5] {
        let output = make_run(&runs, &data, agencies, &debug);
        let lines = merged_lines(&output);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("server  | ") && l.contains("DEBUG")),
            "the run is at DEBUG"
        );
        assert_causal_order(&lines, agencies);
        // The run's log holds the same lines in the same order.
        let log = std::fs::read_link(runs.join("server.log")).unwrap();
        let id = log.to_string_lossy().replace("server-", "run-");
        let merged = std::fs::read_to_string(runs.join(id)).unwrap();
        let merged: Vec<String> = merged.lines().map(str::to_string).collect();
        assert_causal_order(&merged, agencies);
    }
}

#[test]
fn two_runs_in_the_same_second_each_report_their_own_winners() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut expected = Vec::new();
    let mut datas = Vec::new();
    for (name, rows) in [("a", 60), ("b", 90)] {
        let data = dir.path().join(name);
        std::fs::create_dir(&data).unwrap();
        let winners = write_agency_files(&data, 3, rows);
        expected.push(winners.iter().map(Vec::len).collect::<Vec<_>>());
        datas.push(data);
    }
    assert_ne!(
        expected[0], expected[1],
        "the two data sets differ in winners"
    );
    for (data, counts) in datas.iter().zip(&expected) {
        // The same stamp for both runs, as two runs within one second get.
        let output = make_run(&runs, data, 3, &["STAMP=20261203-000000"]);
        let text = output;
        assert!(!text.contains("ronda_recuperada"), "a new round:\n{text}");
        for (index, count) in counts.iter().enumerate() {
            let noun = if *count == 1 { "winner" } else { "winners" };
            let line = format!("agency {}: {count} {noun}", index + 1);
            assert!(text.contains(&line), "{line:?} in:\n{text}");
        }
    }
    let rounds = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("bets-20261203-000000-") && name.ends_with(".csv")
        })
        .count();
    assert_eq!(rounds, 2, "two rounds, two bets files");
}
