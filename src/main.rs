fn main() {
    eprintln!(
        "ringmq {}: the broker is not built yet; see README.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
