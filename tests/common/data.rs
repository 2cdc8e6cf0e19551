//! Agency data for the tests: the committed and official datasets, generated
//! files, and each agency's expected winners read straight from its CSV.

use std::path::{Path, PathBuf};

/// The committed default dataset.
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The official course dataset, when it sits beside the repository.
pub fn official_data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("agency-1.csv").exists().then_some(dir)
}

pub fn agency_file(dir: &Path, agency: u32) -> PathBuf {
    dir.join(format!("agency-{agency}.csv"))
}

/// An agency CSV's rows and the documents of its bets on 7574, in file order,
/// read without the crate's own parsing (the datasets hold no quoted fields).
pub fn expected_from_csv(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("read agency csv");
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let winners = rows
        .iter()
        .filter_map(|row| {
            let fields: Vec<&str> = row.trim_end().split(',').collect();
            (fields.len() == 5 && fields[4].parse::<u32>() == Ok(7574))
                .then(|| fields[2].to_string())
        })
        .collect();
    (rows.len(), winners)
}

/// The tests' one seeded generator (fastrand's): repeatable random data, the
/// next `u64` at each call.
pub fn seeded(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    move || rng.u64(..)
}

/// Writes `agencies` agency CSV files of `bets_each` rows into `dir` (CRLF, no
/// header) from a fixed-seed generator; every document is unique. Returns each
/// agency's winning documents in file order.
pub fn write_agency_files(dir: &Path, agencies: u32, bets_each: usize) -> Vec<Vec<String>> {
    let mut next = seeded(0x2545_F491_4F6C_DD1D);
    (1..=agencies)
        .map(|agency| {
            let mut text = String::with_capacity(bets_each * 48);
            let mut winners = Vec::new();
            for row in 0..bets_each {
                let number = if next().is_multiple_of(50) {
                    7574
                } else {
                    next() % 7574
                };
                let document = format!("{agency}{row:07}");
                if number == 7574 {
                    winners.push(document.clone());
                }
                text.push_str(&format!(
                    "Agustín {agency},Peña,{document},19{:02}-0{}-1{},{number}\r\n",
                    next() % 100,
                    1 + next() % 9,
                    next() % 10
                ));
            }
            std::fs::write(agency_file(dir, agency), text).expect("write csv");
            winners
        })
        .collect()
}
