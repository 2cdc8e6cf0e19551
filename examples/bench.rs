//! The benchmark behind `make bench`: the real binaries, side by side with the
//! physical limits of the machine for the same bytes.
//!
//! For each workload it starts the release `server` (already listening before
//! any client starts), launches one `client` process per agency, and measures:
//! end-to-end wall time (first client started → last agency has its winners, by
//! the stamp of that client's log line; the processes' exit comes after),
//! ingest throughput (bets / time between the server's first and last stored
//! batch), the draw's own time, peak RSS of the server and of the largest client
//! (VmHWM from /proc), and bytes on the wire. In the same run it measures the
//! floor for the same CSV bytes: a plain copy through loopback TCP (no parsing,
//! no storage), a plain append of them to a file with one fsync, and one process
//! start per agency (the client binary, asked for its help); the wall time is
//! shown divided by their sum.
//! Every bet is checked to be stored: the server's draw reports how many rows it
//! read back, which must be the workload's bet count.
//! Each figure is the median of `BENCH_RUNS` runs (default 5), with min and max
//! of the wall time. The table goes to stdout and to `bench-data/results.csv`.
//!
//! Generated data lives in `bench-data/` (ignored by git) and is made once with
//! `gen_bets`. `BENCH_WORKLOADS=official,1m` picks workloads by name.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The server's log lines, filled by a reader thread.
type SharedLog = Arc<Mutex<Vec<String>>>;

const BIN_DIR: &str = "target/release";
const BENCH_DIR: &str = "bench-data";

struct Workload {
    name: &'static str,
    agencies: u32,
    bets: u64,
    source: Source,
}

/// Where a workload's agency files come from.
enum Source {
    /// Files as they are.
    Files(PathBuf),
    /// Each file of a directory, repeated this many times.
    Repeated(PathBuf, u32),
    /// Made by `gen_bets`.
    Generated,
}

#[derive(Default, Clone)]
struct RunFigures {
    wall_ms: f64,
    /// First client started → every client process has exited.
    exited_ms: f64,
    ingest_ms: f64,
    draw_ms: f64,
    server_rss_kib: u64,
    client_rss_kib: u64,
    wire_bytes: u64,
    stored_rows: u64,
    copy_ms: f64,
    disk_ms: f64,
    starts_ms: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Milliseconds since 1970 of a log line's stamp.
fn log_ms(line: &str) -> Option<f64> {
    lottery::stamp_ms(line).map(|ms| ms as f64)
}

/// Milliseconds since 1970 now, on the clock the log stamps come from.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn agency_file(dir: &Path, agency: u32) -> PathBuf {
    dir.join(format!("agency-{agency}.csv"))
}

fn ensure_data(workload: &Workload) -> Result<PathBuf, String> {
    let from = match &workload.source {
        Source::Files(dir) => return Ok(dir.clone()),
        Source::Repeated(from, times) => Some((from, *times)),
        Source::Generated => None,
    };
    let dir =
        PathBuf::from(BENCH_DIR).join(format!("{}-agencies-{}", workload.bets, workload.agencies));
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(dir);
    }
    if let Some((from, times)) = from {
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for agency in 1..=workload.agencies {
            let bytes = fs::read(agency_file(from, agency)).map_err(|e| e.to_string())?;
            fs::write(agency_file(&dir, agency), bytes.repeat(times as usize))
                .map_err(|e| e.to_string())?;
        }
        File::create(&marker).map_err(|e| e.to_string())?;
        return Ok(dir);
    }
    eprintln!(
        "bench: generating {} bets over {} agencies in {}",
        workload.bets,
        workload.agencies,
        dir.display()
    );
    let status = Command::new(format!("{BIN_DIR}/examples/gen_bets"))
        .args(["--agencies", &workload.agencies.to_string()])
        .args(["--bets", &workload.bets.to_string()])
        .arg("--out")
        .arg(&dir)
        .status()
        .map_err(|e| format!("could not run gen_bets (run `make bench`, which builds it): {e}"))?;
    if !status.success() {
        return Err("gen_bets failed".into());
    }
    File::create(&marker).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Removes a bets file the bench wrote and the FINISH records beside it, so
/// the next run is a new round.
fn remove_round(bets_file: &Path) {
    let _ = fs::remove_file(bets_file);
    let mut records = bets_file.as_os_str().to_owned();
    records.push(".finished");
    let _ = fs::remove_file(PathBuf::from(records));
}

/// Starts the server and returns it with its port and a shared copy of its log.
fn start_server(workload: &Workload, bets_file: &Path) -> Result<(Child, u16, SharedLog), String> {
    let mut child = Command::new(format!("{BIN_DIR}/server"))
        .env("SERVER_IP", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("SERVER_AGENCIES", workload.agencies.to_string())
        .env("SERVER_BETS_FILE", bets_file)
        // Each agency's one GET_WINNERS waits for the draw instead of polling:
        // a thousand agencies polling every second would add a thousand
        // connections a second to the figures.
        .env("SERVER_DRAW_WAIT_MS", "600000")
        .env("LOGGING_LEVEL", "INFO")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start the server (run `make bench`): {e}"))?;
    let stderr = child.stderr.take().ok_or("no server stderr")?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut lines) = sink.lock() {
                lines.push(line);
            }
        }
    });
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let port = log.lock().ok().and_then(|lines| {
            lines.iter().find_map(|l| {
                l.split("server_port: ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u16>()
                    .ok()
            })
        });
        if let Some(port) = port {
            return Ok((child, port, log));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let lines = log.lock().map(|l| l.join("\n")).unwrap_or_default();
            return Err(format!(
                "the server exited ({status}) before it was ready:\n{lines}"
            ));
        }
        if Instant::now() > end {
            let _ = child.kill();
            return Err("the server did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where the clients' logs go: memory (`/dev/shm`) when the machine has it. They
/// are the bench's own instrument, not the system's data, and creating a thousand
/// of them on the disk here took 9.5 s of one 1000-agency run's start loop
/// (ext4 truncating the previous run's files; 0.01 ms each on tmpfs).
fn client_logs_dir() -> PathBuf {
    let memory = Path::new("/dev/shm");
    if memory.is_dir() {
        memory.join(format!("lottery-bench-{}", std::process::id()))
    } else {
        PathBuf::from(BENCH_DIR).join("run").join("clients")
    }
}

fn run_system(
    workload: &Workload,
    data: &Path,
    logs_dir: &Path,
    run: usize,
) -> Result<RunFigures, String> {
    let run_dir = PathBuf::from(BENCH_DIR).join("run");
    fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let bets_file = run_dir.join(format!("bets-{}-{run}.csv", workload.name));
    remove_round(&bets_file); // the bench's own output of an earlier run
    let (mut server, port, log) = start_server(workload, &bets_file)?;

    // Client logs go to files, not pipes: a thousand pipes would need a
    // thousand reader threads here.
    fs::create_dir_all(logs_dir).map_err(|e| format!("{}: {e}", logs_dir.display()))?;
    let client_log = |agency: u32| logs_dir.join(format!("agency-{agency}.log"));
    // The wall time ends at the last agency's winners, read from the stamps of
    // the clients' own log lines: the processes exiting afterwards (seconds for
    // a thousand of them) and this loop's sampling pace are not part of it.
    let started_ms = now_ms();
    let mut last_winners_ms = started_ms;
    let mut pending: Vec<(u32, Child)> = Vec::new();
    for agency in 1..=workload.agencies {
        let log_file = File::create(client_log(agency)).map_err(|e| e.to_string())?;
        let child = Command::new(format!("{BIN_DIR}/client"))
            .env("CLI_ID", agency.to_string())
            .env("CLI_SERVER_ADDRESS", format!("127.0.0.1:{port}"))
            .env("CLI_DATA_FILE", agency_file(data, agency))
            .env("CLI_RETRY_INTERVAL_MS", "10")
            .env("CLI_TIMEOUT_S", "600")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("could not start client {agency}: {e}"))?;
        pending.push((agency, child));
    }
    // Sample the clients' high-water marks while they run; read their logs.
    let mut client_rss = 0;
    let mut wire_bytes = 0u64;
    // A peak (VmHWM) only grows, and every client holds its peak until the
    // draw, so a thousand of them are sampled less often.
    let sample_every = Duration::from_millis(if workload.agencies > 100 { 500 } else { 10 });
    while !pending.is_empty() {
        let mut still = Vec::with_capacity(pending.len());
        for (agency, mut child) in pending {
            if let Some(kib) = vm_hwm_kib(child.id()) {
                client_rss = client_rss.max(kib);
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    let text = fs::read_to_string(client_log(agency)).unwrap_or_default();
                    if !status.success() {
                        let _ = server.kill();
                        return Err(format!("client {agency} failed:\n{text}"));
                    }
                    wire_bytes += text
                        .lines()
                        .find(|l| l.contains("action: apuestas_enviadas"))
                        .and_then(|l| l.split("bytes: ").nth(1)?.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    let winners = text
                        .lines()
                        .find(|l| l.contains("action: consulta_ganadores | result: success"));
                    let Some(winners_ms) = winners.and_then(log_ms) else {
                        let _ = server.kill();
                        return Err(format!("client {agency} logged no winners:\n{text}"));
                    };
                    last_winners_ms = last_winners_ms.max(winners_ms);
                }
                _ => still.push((agency, child)),
            }
        }
        pending = still;
        if !pending.is_empty() {
            std::thread::sleep(sample_every);
        }
    }
    let wall_ms = last_winners_ms - started_ms;
    let exited_ms = now_ms() - started_ms;
    let server_rss = vm_hwm_kib(server.id()).unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();

    let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
    let stored: Vec<f64> = lines
        .iter()
        .filter(|l| l.contains("action: apuesta_recibida | result: success"))
        .filter_map(|l| log_ms(l))
        .collect();
    let ingest_ms = match (stored.first(), stored.last()) {
        (Some(first), Some(last)) => (last - first).max(1.0),
        _ => 0.0,
    };
    let draw = lines
        .iter()
        .find(|l| l.contains("action: sorteo | result: success"))
        .ok_or("no draw in the server log")?;
    let value = |key: &str| -> Result<f64, String> {
        draw.split(&format!("{key}: "))
            .nth(1)
            .and_then(|rest| rest.split(' ').next()?.parse::<f64>().ok())
            .ok_or_else(|| format!("no {key} in the draw's log line: {draw}"))
    };
    let draw_ms = value("draw_ms")?;
    let stored_rows = value("apuestas")? as u64;
    remove_round(&bets_file);
    Ok(RunFigures {
        wall_ms,
        exited_ms,
        ingest_ms,
        draw_ms,
        server_rss_kib: server_rss,
        client_rss_kib: client_rss,
        wire_bytes,
        stored_rows,
        ..RunFigures::default()
    })
}

/// Connections the copy baseline runs at once, each with its own sender and
/// reader thread.
const COPY_STREAMS: usize = 5;

/// The agency files' bytes pushed through loopback TCP, one connection per
/// agency file, `COPY_STREAMS` at once, into readers that discard them. Each
/// reader drains one connection after another with one buffer: a thread and a
/// buffer per connection would make the baseline measure thread starts, not
/// the bytes' way through loopback.
fn baseline_copy(data: &Path, agencies: u32) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let unclaimed = Arc::new(AtomicUsize::new(agencies as usize));
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..COPY_STREAMS {
        let listener = listener.try_clone().map_err(|e| e.to_string())?;
        let unclaimed = Arc::clone(&unclaimed);
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // Each connection is claimed before it is accepted, so the readers
            // together accept exactly one per agency file.
            while unclaimed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            }
        }));
    }
    let files: Vec<PathBuf> = (1..=agencies).map(|a| agency_file(data, a)).collect();
    let chunks: Vec<Vec<PathBuf>> = files
        .chunks(files.len().div_ceil(COPY_STREAMS))
        .map(<[PathBuf]>::to_vec)
        .collect();
    let senders: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || -> std::io::Result<()> {
                for path in chunk {
                    let mut stream = TcpStream::connect(address)?;
                    let mut file = File::open(path)?;
                    std::io::copy(&mut file, &mut stream)?;
                }
                Ok(())
            })
        })
        .collect();
    for s in senders {
        s.join()
            .map_err(|_| "copy thread panicked")?
            .map_err(|e| e.to_string())?;
    }
    for r in readers {
        r.join().map_err(|_| "copy reader panicked")?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// The agency files' bytes appended to one file in 8 KiB writes, then one fsync.
fn baseline_disk(data: &Path, agencies: u32) -> Result<f64, String> {
    let path = PathBuf::from(BENCH_DIR).join("run").join("baseline.bin");
    let _ = fs::remove_file(&path);
    let started = Instant::now();
    let mut out = File::create(&path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 8192];
    for agency in 1..=agencies {
        let mut file = File::open(agency_file(data, agency)).map_err(|e| e.to_string())?;
        loop {
            let n = file.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        }
    }
    out.sync_all().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let _ = fs::remove_file(&path);
    Ok(elapsed)
}

/// One process start per agency, all at once: the client binary asked for
/// its help, which it prints and exits.
fn baseline_starts(agencies: u32) -> Result<f64, String> {
    let started = Instant::now();
    let children = (0..agencies)
        .map(|_| {
            Command::new(format!("{BIN_DIR}/client"))
                .arg("--help")
                .stdout(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    for mut child in children {
        child.wait().map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

const USAGE: &str = "usage: bench (no arguments; run it with `make bench`)

Runs the release server and clients on each workload and prints the table.
  BENCH_RUNS=N                      runs per workload          [default: 5]
  BENCH_WORKLOADS=official,1m,...   workloads by name: official, official-x10, 1m, 10m, 1m-1000ag";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("bench: unexpected argument {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let logs_dir = client_logs_dir();
    let outcome = bench(&logs_dir);
    if logs_dir.starts_with("/dev/shm") {
        let _ = fs::remove_dir_all(&logs_dir);
    }
    outcome
}

fn bench(logs_dir: &Path) -> ExitCode {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let only: Option<Vec<String>> = std::env::var("BENCH_WORKLOADS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let official = Path::new("../shared/data");
    let mut workloads = Vec::new();
    if official.join("agency-1.csv").exists() {
        workloads.push(Workload {
            name: "official",
            agencies: 5,
            bets: 78_697,
            source: Source::Files(official.to_path_buf()),
        });
        // The round `make bench-instructions` counts: each file ten times.
        workloads.push(Workload {
            name: "official-x10",
            agencies: 5,
            bets: 786_970,
            source: Source::Repeated(official.to_path_buf(), 10),
        });
    } else {
        eprintln!("bench: ../shared/data not found; the official workload is skipped");
    }
    workloads.push(Workload {
        name: "1m",
        agencies: 5,
        bets: 1_000_000,
        source: Source::Generated,
    });
    workloads.push(Workload {
        name: "10m",
        agencies: 5,
        bets: 10_000_000,
        source: Source::Generated,
    });
    workloads.push(Workload {
        name: "1m-1000ag",
        agencies: 1000,
        bets: 1_000_000,
        source: Source::Generated,
    });
    workloads.retain(|w| {
        only.as_ref()
            .is_none_or(|names| names.iter().any(|n| n == w.name))
    });

    let header = "workload,bets,agencies,runs,wall_ms_median,wall_ms_min,wall_ms_max,ingest_bets_per_s,draw_ms,server_rss_mib,client_rss_mib,wire_mib,copy_ms,disk_ms,starts_ms,floor_ms,wall_over_floor";
    let mut csv = vec![header.to_string()];
    println!(
        "{:<12} {:>9} {:>5} | {:>8} {:>8} {:>8} | {:>11} {:>7} | {:>6} {:>6} | {:>8} | {:>7} {:>7} {:>7} | {:>8} {:>6}",
        "workload",
        "bets",
        "ag",
        "wall ms",
        "min",
        "max",
        "ingest b/s",
        "draw ms",
        "srvMiB",
        "cliMiB",
        "wire MiB",
        "copy ms",
        "disk ms",
        "start ms",
        "floor ms",
        "÷floor"
    );
    let bench_started = Instant::now();
    for workload in &workloads {
        let workload_started = Instant::now();
        let data = match ensure_data(workload) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("bench: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut figures = Vec::new();
        for run in 0..runs {
            let mut f = match run_system(workload, &data, logs_dir, run) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("bench: {} run {run}: {e}", workload.name);
                    return ExitCode::FAILURE;
                }
            };
            if f.stored_rows != workload.bets {
                eprintln!(
                    "bench: {} stored {} rows, expected {}",
                    workload.name, f.stored_rows, workload.bets
                );
                return ExitCode::FAILURE;
            }
            // A failed baseline is said, and shows as NaN in its columns.
            f.copy_ms = baseline_copy(&data, workload.agencies).unwrap_or_else(|e| {
                eprintln!("bench: {} copy baseline failed: {e}", workload.name);
                f64::NAN
            });
            f.disk_ms = baseline_disk(&data, workload.agencies).unwrap_or_else(|e| {
                eprintln!("bench: {} disk baseline failed: {e}", workload.name);
                f64::NAN
            });
            f.starts_ms = baseline_starts(workload.agencies).unwrap_or_else(|e| {
                eprintln!(
                    "bench: {} process start baseline failed: {e}",
                    workload.name
                );
                f64::NAN
            });
            eprintln!(
                "bench: {} run {}: {:.0} ms (every client exited after {:.0} ms)",
                workload.name,
                run + 1,
                f.wall_ms,
                f.exited_ms
            );
            figures.push(f);
        }
        let pick =
            |get: fn(&RunFigures) -> f64| median(&mut figures.iter().map(get).collect::<Vec<_>>());
        let wall = pick(|f| f.wall_ms);
        let min = figures.iter().map(|f| f.wall_ms).fold(f64::MAX, f64::min);
        let max = figures.iter().map(|f| f.wall_ms).fold(0.0, f64::max);
        let ingest = workload.bets as f64 / (pick(|f| f.ingest_ms) / 1000.0);
        let draw = pick(|f| f.draw_ms);
        let server_rss = pick(|f| f.server_rss_kib as f64) / 1024.0;
        let client_rss = pick(|f| f.client_rss_kib as f64) / 1024.0;
        let wire = pick(|f| f.wire_bytes as f64) / (1024.0 * 1024.0);
        let copy = pick(|f| f.copy_ms);
        let disk = pick(|f| f.disk_ms);
        let starts = pick(|f| f.starts_ms);
        // The floor of each run, then its median: the parts come from one run.
        let floor = pick(|f| f.copy_ms + f.disk_ms + f.starts_ms);
        println!(
            "{:<12} {:>9} {:>5} | {:>8.0} {:>8.0} {:>8.0} | {:>11.0} {:>7.0} | {:>6.1} {:>6.1} | {:>8.1} | {:>7.0} {:>7.0} {:>7.0} | {:>8.0} {:>6.1}",
            workload.name,
            workload.bets,
            workload.agencies,
            wall,
            min,
            max,
            ingest,
            draw,
            server_rss,
            client_rss,
            wire,
            copy,
            disk,
            starts,
            floor,
            wall / floor
        );
        csv.push(format!(
            "{},{},{},{runs},{wall:.0},{min:.0},{max:.0},{ingest:.0},{draw:.0},{server_rss:.1},{client_rss:.1},{wire:.1},{copy:.0},{disk:.0},{starts:.0},{floor:.0},{:.2}",
            workload.name, workload.bets, workload.agencies, wall / floor
        ));
        eprintln!(
            "bench: {} took {:.0} s for {runs} runs with their baselines",
            workload.name,
            workload_started.elapsed().as_secs_f64()
        );
    }
    println!(
        "bench: {} workloads in {:.0} s",
        workloads.len(),
        bench_started.elapsed().as_secs_f64()
    );
    let results = PathBuf::from(BENCH_DIR).join("results.csv");
    if let Err(e) = fs::write(&results, csv.join("\n") + "\n") {
        eprintln!("bench: could not write {}: {e}", results.display());
        return ExitCode::FAILURE;
    }
    println!("results: {}", results.display());
    ExitCode::SUCCESS
}
