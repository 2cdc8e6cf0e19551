//! Deterministic generator of agency CSV files.
//!
//! `cargo run --release --example gen_bets -- --agencies 5 --bets 10000 --out data`
//! writes `data/agency-1.csv` .. `agency-5.csv` in the course format: no header,
//! CRLF, UTF-8, `first_name,last_name,document,birthdate,number`. The same
//! arguments always give the same bytes (a fixed-seed SplitMix64 generator), so
//! the committed default data can be regenerated and checked. Names carry accents,
//! documents are 7 or 8 digits, birthdates are real dates from 1940 to 2006, and
//! about one bet in `--winner-every` plays the winning number 7574.

use lottery::is_leap_year;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const FIRST_NAMES: &[&str] = &[
    "Santiago",
    "Mateo",
    "Joaquín",
    "Tomás",
    "Benjamín",
    "Lucía",
    "Sofía",
    "María José",
    "Valentina",
    "Martina",
    "Agustín",
    "Tiago",
    "Nicolás",
    "Camila",
    "Ramón",
    "Inés",
    "José Luis",
    "Ana María",
    "Julián",
    "Florencia",
    "Ángel",
    "Mía",
    "Zoe",
    "Emilia",
    "Iñaki",
    "Begoña",
    "Facundo",
    "Renée",
    "Chloé",
    "Lautaro",
    "Agustina",
    "Micaela",
];
const LAST_NAMES: &[&str] = &[
    "González",
    "Rodríguez",
    "Gómez",
    "Fernández",
    "López",
    "Díaz",
    "Martínez",
    "Pérez",
    "García",
    "Sánchez",
    "Romero",
    "Sosa",
    "Álvarez",
    "Torres",
    "Ruiz",
    "Ramírez",
    "Muñoz",
    "Benítez",
    "Acuña",
    "Ibáñez",
    "De la Fuente",
    "Núñez",
    "Peña",
    "O'Connor",
    "Lorca",
    "Zambrano",
    "Rivera",
    "Quiroga",
    "Güemes",
    "Castaño",
    "Echeverría",
    "Ortiz",
];
const WINNING_NUMBER: u32 = 7574;

/// SplitMix64: tiny, fast, and the same sequence on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

struct Args {
    agencies: u32,
    bets: u64,
    out: PathBuf,
    seed: u64,
    winner_every: u64,
}

const USAGE: &str =
    "usage: gen_bets [--agencies N] [--bets TOTAL] [--out DIR] [--seed S] [--winner-every K]

Writes DIR/agency-1.csv .. agency-N.csv: TOTAL bets in all, no header, CRLF,
UTF-8. The same arguments always give the same bytes.
  --agencies N       agency files to write             [default: 5]
  --bets TOTAL       bets over all the files           [default: 10000]
  --out DIR          where to write them               [default: data]
  --seed S           the generator's seed              [default: 2026]
  --winner-every K   about one bet in K plays 7574     [default: 500]";

/// What the command line asks for.
enum Command {
    Generate(Args),
    Help,
}

fn parse_args() -> Result<Command, String> {
    let mut args = Args {
        agencies: 5,
        bets: 10_000,
        out: PathBuf::from("data"),
        seed: 2026,
        winner_every: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(Command::Help);
        }
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument {flag:?}"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} needs a whole number, got {value:?}"))
        };
        match flag.as_str() {
            "--agencies" => {
                args.agencies = u32::try_from(number()?)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or("--agencies must be 1 or more")?
            }
            "--bets" => args.bets = number()?,
            "--seed" => args.seed = number()?,
            "--winner-every" => args.winner_every = number()?.max(1),
            "--out" => args.out = PathBuf::from(&value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Command::Generate(args))
}

fn generate(args: &Args) -> std::io::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let per_agency = args.bets / u64::from(args.agencies);
    let remainder = args.bets % u64::from(args.agencies);
    for agency in 1..=args.agencies {
        let mut rng = SplitMix64(args.seed ^ (u64::from(agency) << 32));
        let count = per_agency + u64::from(u64::from(agency) <= remainder);
        let path = args.out.join(format!("agency-{agency}.csv"));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for _ in 0..count {
            let first = rng.pick(FIRST_NAMES);
            let last = rng.pick(LAST_NAMES);
            let document = 10_000_000 + rng.below(35_000_000);
            let year = 1940 + rng.below(67);
            let month = 1 + rng.below(12);
            let days = match month {
                2 if is_leap_year(year as u32) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let day = 1 + rng.below(days);
            let number = if rng.below(args.winner_every) == 0 {
                u64::from(WINNING_NUMBER)
            } else {
                rng.below(10_000)
            };
            write!(
                out,
                "{first},{last},{document},{year:04}-{month:02}-{day:02},{number}\r\n"
            )?;
        }
        out.flush()?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Command::Generate(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gen_bets: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match generate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_bets: could not write to {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}
