//! The command line: every setting has a default, so the example runs with none.

use std::time::Duration;

pub const USAGE: &str = "\
usage: cargo run --example http_dashboard -- [options]

  --requests N          requests per load run (plain, then hedged)       [2000]
  --rate R              requests per second, open loop                   [400]
  --port P              the dashboard's port on 127.0.0.1 (0: any free)  [0]
  --deadline-ms MS      the dashboard's deadline per request             [500]
  --hedge-ms MS         hedge the orders call after MS without an answer [15]
  --recs-timeout-ms MS  the optional recommendations call's own timeout  [30]
  --profile SPEC        the profile backend                              [ms=1-3]
  --orders SPEC         the orders backend              [ms=1-5,stall=0.02,stall-ms=250]
  --recs SPEC           the recommendations backend     [ms=1-5,stall=0.01,stall-ms=250]
  --svg PATH            where to write the latency picture  [target/http_latency.svg]
  --seed N              the backends' random seed                         [2013]
  --smoke               a short run (300 requests) that checks what it shows, for CI
  --trace               print failfast's tracing spans for the first requests
                        (needs `--features tracing`)

SPEC is a comma-separated list of: ms=MIN-MAX (latency, uniform), fail=P (fraction of
requests answered 500), stall=P (fraction that stall), stall-ms=MS (how long a stall lasts).";

/// The most requests a load run sends (each keeps its latency in memory).
const MAX_REQUESTS: usize = 1_000_000;

/// How one backend behaves.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub min_ms: u64,
    pub max_ms: u64,
    pub fail: f64,
    pub stall: f64,
    pub stall_ms: u64,
}

impl Spec {
    fn parse(flag: &str, text: &str) -> Result<Spec, String> {
        let mut spec = Spec {
            min_ms: 1,
            max_ms: 5,
            fail: 0.0,
            stall: 0.0,
            stall_ms: 250,
        };
        for part in text.split(',').filter(|part| !part.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or(format!("{flag}: expected key=value, got {part:?}"))?;
            let bad = |what: &str| format!("{flag}: {key}={value:?} is not {what}");
            match key {
                "ms" => {
                    let (min, max) = value.split_once('-').unwrap_or((value, value));
                    spec.min_ms = min.parse().map_err(|_| bad("MIN-MAX milliseconds"))?;
                    spec.max_ms = max.parse().map_err(|_| bad("MIN-MAX milliseconds"))?;
                    if spec.min_ms > spec.max_ms {
                        return Err(bad("MIN-MAX with MIN <= MAX"));
                    }
                }
                "fail" | "stall" => {
                    let p: f64 = value.parse().map_err(|_| bad("a fraction"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(bad("a fraction between 0 and 1"));
                    }
                    if key == "fail" {
                        spec.fail = p;
                    } else {
                        spec.stall = p;
                    }
                }
                "stall-ms" => spec.stall_ms = value.parse().map_err(|_| bad("milliseconds"))?,
                _ => return Err(format!("{flag}: unknown key {key:?}")),
            }
        }
        Ok(spec)
    }
}

pub struct Args {
    pub requests: usize,
    pub rate: u32,
    pub port: u16,
    pub deadline: Duration,
    pub hedge_after: Duration,
    pub recs_timeout: Duration,
    pub profile: Spec,
    pub orders: Spec,
    pub recs: Spec,
    pub svg: String,
    pub seed: u64,
    pub smoke: bool,
    pub trace: bool,
}

/// The arguments, `None` for `--help`.
pub fn parse() -> Result<Option<Args>, String> {
    let mut args = Args {
        requests: 2000,
        rate: 400,
        port: 0,
        deadline: Duration::from_millis(500),
        hedge_after: Duration::from_millis(15),
        recs_timeout: Duration::from_millis(30),
        profile: Spec::parse("--profile", "ms=1-3")?,
        orders: Spec::parse("--orders", "ms=1-5,stall=0.02,stall-ms=250")?,
        recs: Spec::parse("--recs", "ms=1-5,stall=0.01,stall-ms=250")?,
        svg: "target/http_latency.svg".into(),
        seed: 2013,
        smoke: false,
        trace: false,
    };
    let (mut requests, mut rate) = (None, None);
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{arg} needs a value"));
        let ms = |text: String| -> Result<Duration, String> {
            let ms: u64 = text
                .parse()
                .map_err(|_| format!("{text:?}: milliseconds"))?;
            Ok(Duration::from_millis(ms))
        };
        match arg.as_str() {
            "--requests" => {
                let n: usize = value()?
                    .parse()
                    .map_err(|err| format!("--requests: {err}"))?;
                if !(1..=MAX_REQUESTS).contains(&n) {
                    return Err(format!("--requests must be 1 to {MAX_REQUESTS}"));
                }
                requests = Some(n);
            }
            "--rate" => {
                let r: u32 = value()?.parse().map_err(|err| format!("--rate: {err}"))?;
                if !(1..=100_000).contains(&r) {
                    return Err("--rate must be 1 to 100000".into());
                }
                rate = Some(r);
            }
            "--port" => args.port = value()?.parse().map_err(|err| format!("--port: {err}"))?,
            "--deadline-ms" => {
                args.deadline = ms(value()?)?;
                if args.deadline.is_zero() {
                    return Err("--deadline-ms must be at least 1".into());
                }
            }
            "--hedge-ms" => args.hedge_after = ms(value()?)?,
            "--recs-timeout-ms" => args.recs_timeout = ms(value()?)?,
            "--profile" => args.profile = Spec::parse("--profile", &value()?)?,
            "--orders" => args.orders = Spec::parse("--orders", &value()?)?,
            "--recs" => args.recs = Spec::parse("--recs", &value()?)?,
            "--svg" => args.svg = value()?,
            "--seed" => args.seed = value()?.parse().map_err(|err| format!("--seed: {err}"))?,
            "--smoke" => args.smoke = true,
            "--trace" => args.trace = true,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // A smoke run is short unless told otherwise.
    args.requests = requests.unwrap_or(if args.smoke { 300 } else { args.requests });
    args.rate = rate.unwrap_or(if args.smoke { 300 } else { args.rate });
    Ok(Some(args))
}
