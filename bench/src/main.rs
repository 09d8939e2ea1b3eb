//! `ringmq-bench <scenario> [options]`: see `ringmq-bench --help` and bench/README.md.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use ringmq_bench::flags::{Cli, ScenarioFlags};
use ringmq_bench::plan::{self, Plan};
use ringmq_bench::report::{Report, EXIT_ERRORS};
use ringmq_bench::{compare, plot, run, summary};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ringmq-bench: {e:#}");
            ExitCode::from(EXIT_ERRORS)
        }
    }
}

fn bench(cli: Cli) -> Result<u8> {
    match &cli.scenario {
        ScenarioFlags::Summarize { files } => {
            print!("{}", summary::summarize(files)?);
            return Ok(0);
        }
        ScenarioFlags::Compare { results } => {
            print!("{}", compare::compare(results)?);
            return Ok(0);
        }
        ScenarioFlags::Plot { results } => {
            for file in plot::plot(results)? {
                println!("{}", results.join(file).display());
            }
            return Ok(0);
        }
        _ => {}
    }
    let config = cli.scenario.validate()?;
    let run_id = plan::new_run_id();
    let plan = Plan::new(&config, &run_id);
    let outcome = run::run(&config, &plan)?;
    let report = Report::new(&config, &plan, &outcome);
    if config.json {
        // stdout stays one JSON object; people still see the summary.
        eprint!("{}", report.human());
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(report.exit_code())
}
