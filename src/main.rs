fn main() {
    std::process::exit(pec::cli::main());
}
